"""Torch-native batched classic-control environments: N environments as tensors on any device.

Each class steps ``num_envs`` copies of a gymnasium classic-control environment at once with
the same equations as gymnasium 1.x (``gymnasium/envs/classic_control``), the same spaces,
the same episode limits (``TimeLimit``: ``truncated`` once ``max_episode_steps`` steps were
taken, also on a terminating step) and gymnasium's ``SAME_STEP`` autoreset: an environment
whose episode ended is reset within the same ``step``; ``infos["final_obs"]`` holds the
observation the episode ended in (meaningful where ``infos["_final_obs"]`` is true), and the
returned observation is the first of the next episode.

Observations are float32 (as gymnasium's); the state is kept in ``dtype``. float64 (the
default) is what gymnasium computes CartPole, Pendulum and Acrobot in; where gymnasium works
in float32 (MountainCarContinuous's state, Acrobot's initial state, Pendulum's torque terms
under NumPy 2's promotion rules) the float64 version rounds the same way or stays within
float32 precision of it. float32 is faster on some accelerators, but rounding differences
grow along the trajectories of Pendulum and Acrobot (both sensitive to their initial
conditions) until they visibly depart from gymnasium's within an episode. Acrobot departs
even in float64: last-bit differences (torch's vectorized sin / cos differ from the C
library's for a few arguments in a thousand, and the order of some roundings differs) are
amplified by the driven double pendulum; each step agrees to float32 precision (see
``tests/test_torch_envs.py``).

Actions are tensors on the env's device: integers ``[N]`` for ``Discrete`` spaces, ``[N, 1]``
floats for ``Box`` ones. They are not range-checked per step (that would synchronise a GPU
with the host every step); out-of-range discrete actions are undefined behaviour, as in
gymnasium.

Randomness: one ``torch.Generator`` on the env's device draws every initial state;
``reset(seed=s)`` reseeds it. The draws come from the same distributions as gymnasium's but
not the same numbers (gymnasium uses one NumPy generator per env), and one integer seeds the
whole batch (a list of per-env seeds is refused, and there is no ``reset_mask`` option). On
CPU only the envs that finished draw new states; on an accelerator every env draws and
``torch.where`` keeps the needed ones, which avoids a host synchronisation per step; the
streams therefore differ between devices.

Use them through the agents with ``env="torch:CartPole-v1"`` (see :data:`TORCH_ENVS`), or
directly::

    env = CartPole(num_envs=4096, device="cuda")
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(torch.randint(0, 2, (4096,), device="cuda"))
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mdpo.core.utils import get_device
from mdpo.rl.compiled import CompiledOnce


class TorchVectorEnv(VectorEnv):
    """Base of the torch-native batched environments.

    Subclasses give the spaces, :meth:`_initial_state`, :meth:`_dynamics` and
    :meth:`_observe`; this class does seeding, time limits and autoreset.

    Args:
        num_envs: number of environments.
        device: where the tensors live (``"cpu"``, ``"cuda"``, ``"auto"``...).
        dtype: dtype of the state, ``torch.float64`` (default: gymnasium's trajectories) or
            ``torch.float32``.
        max_episode_steps: episode length limit (default: gymnasium's registration of
            :attr:`gym_id`).
    """

    gym_id: ClassVar[str]
    state_dim: ClassVar[int]
    reset_options: ClassVar[tuple[str, ...]] = ("low", "high")
    single_observation_space: spaces.Box
    single_action_space: spaces.Space

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        max_episode_steps: int | None = None,
    ):

        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if max_episode_steps is None:
            max_episode_steps = gym.spec(self.gym_id).max_episode_steps
        if (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int)
            or max_episode_steps < 1
        ):
            raise ValueError(
                f"max_episode_steps must be a positive integer, got {max_episode_steps!r}"
            )
        self.num_envs = num_envs
        self.device = get_device(device)
        self.dtype = dtype
        self.max_episode_steps = max_episode_steps
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
        self.render_mode = None
        self.spec = None
        # component-major [state_dim, N]: every component is a contiguous row, so that the
        # elementwise arithmetic reads and writes contiguous memory (a [N, state_dim] layout
        # made each step's re-stacking cost more than its dynamics)
        self._state: torch.Tensor | None = None
        self.elapsed_steps = torch.zeros(num_envs, dtype=torch.int32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.seed()
        # on the CPU only finished envs draw new states (`done` is on the host anyway); on an
        # accelerator all draw and torch.where keeps the needed ones (no synchronisation)
        self.redraw_only_finished = self.device.type == "cpu"
        self._discrete = isinstance(self.single_action_space, spaces.Discrete)
        if not self._discrete:
            self._action_shape = (num_envs, *self.single_action_space.shape)
        self._advance_fn = self._advance  # or its compiled form, see compile_step
        #: whether the compiled step replays a CUDA graph, whose outputs the next replay
        #: overwrites (so they are copied before they are kept); a runner compiling its
        #: rollout step in the same mode on the same device copies its outputs likewise
        self.graph_outputs = False
        #: ``torch.compile``'s mode of the compiled step (``"default"`` for its default), or
        #: None for the eager step; a runner compiles its whole rollout step in the same mode
        self.compile_mode: str | None = None

    @property
    def state(self) -> torch.Tensor | None:
        """The states of the envs, ``[num_envs, state_dim]`` (a view; gymnasium's order of
        the components)."""
        return None if self._state is None else self._state.T

    @state.setter
    def state(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        if value.shape != (self.num_envs, self.state_dim):
            raise ValueError(
                f"state must have shape ({self.num_envs}, {self.state_dim}), got "
                f"{tuple(value.shape)}"
            )
        self._state = value.T.contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_envs={self.num_envs}, device={self.device}, "
            f"dtype={self.dtype}, max_episode_steps={self.max_episode_steps})"
        )

    # ----------------------------------------------------------------------------- hooks
    def _initial_state(self, n: int, options: dict[str, Any] | None) -> torch.Tensor:
        """``n`` initial states ``[state_dim, n]`` drawn from :attr:`generator`."""
        raise NotImplementedError

    def _dynamics(
        self, state: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every env (states ``[state_dim, N]``): ``(next_state, reward,
        terminated)``; ``next_state`` is a new tensor."""
        raise NotImplementedError

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """Float32 observations ``[n, obs_dim]`` of states ``[state_dim, n]``."""
        raise NotImplementedError

    @staticmethod
    def _columns(*components: torch.Tensor) -> torch.Tensor:
        """A float32 ``[n, k]`` batch from ``k`` rows of ``n`` values (written column by
        column: cheaper than ``torch.stack(..., dim=1)``)."""
        first = components[0]
        out = torch.empty(
            (first.shape[0], len(components)), dtype=torch.float32, device=first.device
        )
        for i, component in enumerate(components):
            out[:, i] = component
        return out

    def _uniform(self, n: int, low: Any, high: Any, size: int) -> torch.Tensor:
        """``[size, n]`` draws uniform in ``[low, high)`` in the state's dtype."""
        draw = torch.rand((size, n), generator=self.generator, dtype=self.dtype, device=self.device)
        return low + (high - low) * draw

    # ----------------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env.

        Args:
            seed: reseed the generator with this integer (``None`` continues its stream).
            options: the reset options of the gymnasium env (e.g. ``{"low": -0.1,
                "high": 0.1}`` for CartPole, ``{"x_init": ..., "y_init": ...}`` for
                Pendulum); they apply to this reset only, not to later autoresets (as in
                gymnasium's vector envs).

        Returns:
            ``(observations [num_envs, obs_dim] float32, {})``.
        """
        unknown = sorted(set(options or {}) - set(self.reset_options))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} takes the reset options {list(self.reset_options)}, got "
                f"{unknown} (every env is reset; there is no reset mask)"
            )
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(
                    f"{type(self).__name__} takes one integer seed for all its envs, got {seed!r}"
                )
            self.generator.manual_seed(int(seed))
        self._state = self._initial_state(self.num_envs, options)
        self.elapsed_steps.zero_()
        return self._observe(self._state), {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every env; finished ones are reset in the same step.

        Args:
            actions: ``int64 [num_envs]`` (Discrete) or ``[num_envs, *action_shape]`` (Box),
                on the env's device (NumPy arrays are converted).

        Returns:
            ``(obs, reward, terminated, truncated, infos)``: float32 observations (of the new
            episode where one ended), rewards in the state's dtype, bool flags, and
            ``infos = {"final_obs": [num_envs, obs_dim], "_final_obs": done}`` (when no env
            finished, ``obs`` and ``final_obs`` are the same tensor: copy before editing).
        """
        if self._state is None:
            raise RuntimeError(f"call reset() before step() on {type(self).__name__}")
        action = self._check_action(actions)
        if not self.redraw_only_finished:  # no host synchronisation: all draw, where() keeps
            fresh = self._fresh_states(None)
            outputs = self._advance_fn(self._state, self.elapsed_steps, action, fresh)
            if self.graph_outputs:  # a CUDA graph's outputs are overwritten by its next replay
                outputs = tuple(tensor.clone() for tensor in outputs)
            state, self.elapsed_steps, obs, final_obs, reward, terminated, truncated, done = outputs
            self._state = state
            return obs, reward, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}
        state, reward, terminated = self._dynamics(self._state, action)
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self.max_episode_steps
        done = terminated | truncated
        final_obs = self._observe(state)
        obs = final_obs  # the same tensor where no env finished
        index = done.nonzero().squeeze(1)  # the host sees `done` for free: redraw only those
        if len(index):
            fresh = self._fresh_states(index)
            state[:, index] = fresh  # `state` is this step's new tensor
            obs = final_obs.clone()
            obs[index] = self._observe(fresh)
        self.elapsed_steps.masked_fill_(done, 0)
        self._state = state
        return obs, reward, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}

    def _fresh_states(self, index: torch.Tensor | None) -> torch.Tensor:
        """New initial states ``[state_dim, m]`` for the envs ``index`` (None: every env),
        in index order."""
        return self._initial_state(self.num_envs if index is None else len(index), None)

    def _advance(
        self,
        state: torch.Tensor,
        elapsed: torch.Tensor,
        action: torch.Tensor,
        fresh: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """One step of every env with the new episodes' states ``fresh`` drawn beforehand:
        ``(state, elapsed, obs, final_obs, reward, terminated, truncated, done)``. A pure
        function of tensors (no generator, no host synchronisation), so that it can be
        compiled and captured in a CUDA graph."""
        state, reward, terminated = self._dynamics(state, action)
        elapsed = elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        done = terminated | truncated
        final_obs = self._observe(state)
        state = torch.where(done, fresh, state)
        obs = torch.where(done[:, None], self._observe(fresh), final_obs)
        return (
            state,
            elapsed.masked_fill(done, 0),
            obs,
            final_obs,
            reward,
            terminated,
            truncated,
            done,
        )

    def compile_step(self, mode: str | None = None) -> TorchVectorEnv:
        """Run each step's arithmetic as one compiled function (``torch.compile``; on a GPU
        ``mode="reduce-overhead"`` also captures it in a CUDA graph: one launch a step
        instead of dozens). New episodes' states are drawn for every env each step, as on
        an accelerator (so on the CPU the random streams differ from the uncompiled env's,
        which redraws only finished envs). A :class:`~mdpo.rl.runners.TorchEnvRunner`
        stepping this env for an on-policy agent compiles its whole rollout step (policy,
        sampling, this step, normalization) in the same mode. Returns the env.

        Args:
            mode: ``torch.compile``'s mode (default: ``"reduce-overhead"`` on CUDA, the
                default mode elsewhere).
        """
        if mode is None and self.device.type == "cuda":
            mode = "reduce-overhead"
        self.graph_outputs = mode in CUDA_GRAPH_MODES and self.device.type == "cuda"
        self.compile_mode = mode or "default"
        self.redraw_only_finished = False
        self._advance_fn = CompiledOnce(
            self._advance, type(self).__name__, what="the env step", mode=mode
        )
        return self

    def _check_action(self, actions: Any) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions), device=self.device)
        if self._discrete:
            if actions.shape != (self.num_envs,) or actions.is_floating_point():
                raise ValueError(
                    f"{type(self).__name__} takes integer actions of shape ({self.num_envs},), "
                    f"got {actions.dtype} {tuple(actions.shape)}"
                )
            return actions
        if actions.shape != self._action_shape:
            raise ValueError(
                f"{type(self).__name__} takes actions of shape {self._action_shape}, got "
                f"{tuple(actions.shape)}"
            )
        return actions.to(self.dtype)

    def render(self) -> None:
        """Not supported: render the gymnasium env of :attr:`gym_id` instead."""
        raise NotImplementedError(
            f"{type(self).__name__} does not render; use gymnasium.make({self.gym_id!r})"
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release."""


#: ``torch.compile`` modes that capture CUDA graphs (whose outputs the next replay overwrites)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def _reset_bounds(options: dict[str, Any] | None, low: float, high: float) -> tuple[float, float]:
    """gymnasium's ``maybe_parse_reset_bounds``: ``options["low"]`` / ``["high"]`` or the
    defaults, checked."""
    if options is None:
        return low, high
    low, high = options.get("low", low), options.get("high", high)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"reset option {name!r} must be a number, got {value!r}")
    if low > high:
        raise ValueError(f"reset option low={low} is greater than high={high}")
    return float(low), float(high)


class CartPole(TorchVectorEnv):
    """``CartPole-v1`` (gymnasium's ``CartPoleEnv``: Euler integration, reward 1 per step).

    State ``(x, ẋ, θ, θ̇)``, observed as is; actions 0 (push left) and 1 (push right).
    """

    gym_id = "CartPole-v1"
    state_dim = 4
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4
    _high = np.array(
        [x_threshold * 2, np.inf, theta_threshold_radians * 2, np.inf], dtype=np.float32
    )
    single_observation_space = spaces.Box(-_high, _high, dtype=np.float32)
    single_action_space = spaces.Discrete(2)

    def _initial_state(self, n: int, options: dict[str, Any] | None) -> torch.Tensor:
        low, high = _reset_bounds(options, -0.05, 0.05)
        return self._uniform(n, low, high, 4)

    def _dynamics(self, state, action):
        x, x_dot, theta, theta_dot = state
        force = action.to(state.dtype).mul_(2 * self.force_mag).sub_(self.force_mag)  # ±10
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        # gymnasium's default "euler" integrator: positions move with the old velocities
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        reward = torch.ones_like(x)
        return torch.stack((x, x_dot, theta, theta_dot)), reward, terminated

    def _observe(self, state):
        return self._columns(*state)


class Pendulum(TorchVectorEnv):
    """``Pendulum-v1`` (gymnasium's ``PendulumEnv``, ``g = 10``).

    State ``(θ, θ̇)``, observed as ``(cos θ, sin θ, θ̇)``; reward
    ``−(normalize(θ)² + 0.1 θ̇² + 0.001 u²)`` with the torque ``u`` clipped to ±2.
    """

    gym_id = "Pendulum-v1"
    state_dim = 2
    reset_options = ("x_init", "y_init")
    max_speed, max_torque, dt, g, m, l = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0  # noqa: E741
    _high = np.array([1.0, 1.0, max_speed], dtype=np.float32)
    single_observation_space = spaces.Box(-_high, _high, dtype=np.float32)
    single_action_space = spaces.Box(-max_torque, max_torque, shape=(1,), dtype=np.float32)

    def _initial_state(self, n: int, options: dict[str, Any] | None) -> torch.Tensor:
        x, y = math.pi, 1.0  # gymnasium's DEFAULT_X, DEFAULT_Y
        if options is not None:
            x, y = options.get("x_init", x), options.get("y_init", y)
            for name, value in (("x_init", x), ("y_init", y)):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise ValueError(f"reset option {name!r} must be a number, got {value!r}")
        # Python scalars, not a bound tensor: building one would copy from the host (and so
        # wait for the device) at every step of an accelerator's autoreset
        theta = self._uniform(n, -float(x), float(x), 1)
        return torch.cat((theta, self._uniform(n, -float(y), float(y), 1)))

    def _dynamics(self, state, action):
        th, thdot = state
        # gymnasium computes the torque terms in the action's float32 (NumPy's promotion of
        # python floats), the rest in float64; doing the same keeps float64 runs on its path
        u = action[:, 0].float().clamp(-self.max_torque, self.max_torque)
        angle = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        costs = angle.square() + 0.1 * thdot.square() + (0.001 * u.square()).to(th.dtype)
        torque = (3.0 / (self.m * self.l**2) * u).to(th.dtype)
        newthdot = thdot + (3 * self.g / (2 * self.l) * torch.sin(th) + torque) * self.dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        newth = th + newthdot * self.dt
        terminated = torch.zeros_like(th, dtype=torch.bool)
        return torch.stack((newth, newthdot)), -costs, terminated

    def _observe(self, state):
        th, thdot = state
        return self._columns(torch.cos(th), torch.sin(th), thdot)


class MountainCarContinuous(TorchVectorEnv):
    """``MountainCarContinuous-v0`` (gymnasium's ``Continuous_MountainCarEnv``).

    State ``(position, velocity)``, observed as is; reward 100 on reaching the goal minus
    ``0.1 a²`` of the action as given (gymnasium squares the unclipped action; the force is
    clipped to ±1).
    """

    gym_id = "MountainCarContinuous-v0"
    state_dim = 2
    min_action, max_action = -1.0, 1.0
    min_position, max_position, max_speed = -1.2, 0.6, 0.07
    goal_position, goal_velocity, power = 0.45, 0.0, 0.0015
    single_observation_space = spaces.Box(
        np.array([min_position, -max_speed], dtype=np.float32),
        np.array([max_position, max_speed], dtype=np.float32),
        dtype=np.float32,
    )
    single_action_space = spaces.Box(min_action, max_action, shape=(1,), dtype=np.float32)

    def _initial_state(self, n: int, options: dict[str, Any] | None) -> torch.Tensor:
        low, high = _reset_bounds(options, -0.6, -0.4)
        position = self._uniform(n, low, high, 1)
        return torch.cat((position, torch.zeros_like(position)))

    def _dynamics(self, state, action):
        position, velocity = state
        raw = action[:, 0]
        force = raw.clamp(self.min_action, self.max_action)
        velocity = velocity + force * self.power - 0.0025 * torch.cos(3 * position)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        # the left wall stops the car
        velocity = torch.where((position == self.min_position) & (velocity < 0), 0.0, velocity)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = 100.0 * terminated.to(state.dtype) - 0.1 * raw.square()
        return torch.stack((position, velocity)), reward, terminated

    def _observe(self, state):
        return self._columns(*state)


class Acrobot(TorchVectorEnv):
    """``Acrobot-v1`` (gymnasium's ``AcrobotEnv``, "book" dynamics, one RK4 step of 0.2 s).

    State ``(θ1, θ2, θ̇1, θ̇2)``, observed as ``(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)``;
    actions 0, 1, 2 apply torques −1, 0, +1; reward −1 per step until the tip rises above
    the bar (``−cos θ1 − cos(θ1 + θ2) > 1``).
    """

    gym_id = "Acrobot-v1"
    state_dim = 4
    dt = 0.2
    link_length_1, link_mass_1, link_mass_2 = 1.0, 1.0, 1.0
    link_com_pos_1, link_com_pos_2, link_moi = 0.5, 0.5, 1.0
    max_vel_1, max_vel_2 = 4 * math.pi, 9 * math.pi
    _high = np.array([1.0, 1.0, 1.0, 1.0, max_vel_1, max_vel_2], dtype=np.float32)
    single_observation_space = spaces.Box(-_high, _high, dtype=np.float32)
    single_action_space = spaces.Discrete(3)

    def _initial_state(self, n: int, options: dict[str, Any] | None) -> torch.Tensor:
        low, high = _reset_bounds(options, -0.1, 0.1)
        # gymnasium draws in float64 and stores float32
        return self._uniform(n, low, high, 4).float().to(self.dtype)

    def _derivatives(self, s: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """``ds/dt`` of the states ``[4, n]`` under ``torque`` (gymnasium's ``_dsdt``)."""
        m1, m2, l1 = self.link_mass_1, self.link_mass_2, self.link_length_1
        lc1, lc2, g = self.link_com_pos_1, self.link_com_pos_2, 9.8
        i1 = i2 = self.link_moi
        theta1, theta2, dtheta1, dtheta2 = s
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + i2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (
            torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2
        ) / (m2 * lc2**2 + i2 - d2**2 / d1)
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack((dtheta1, dtheta2, ddtheta1, ddtheta2))

    @staticmethod
    def _wrap(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """gymnasium's ``wrap``: shift by whole periods into ``[low, high]``."""
        period = high - low
        x = torch.where(x > high, x - torch.ceil((x - high) / period) * period, x)
        return torch.where(x < low, x + torch.ceil((low - x) / period) * period, x)

    def _dynamics(self, state, action):
        torque = action.to(state.dtype) - 1  # in the state's dtype: uint8 0 - 1 would wrap
        dt = self.dt
        k1 = self._derivatives(state, torque)
        k2 = self._derivatives(state + dt / 2.0 * k1, torque)
        k3 = self._derivatives(state + dt / 2.0 * k2, torque)
        k4 = self._derivatives(state + dt * k3, torque)
        ns = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        theta1, theta2, dtheta1, dtheta2 = ns
        theta1 = self._wrap(theta1, -math.pi, math.pi)
        theta2 = self._wrap(theta2, -math.pi, math.pi)
        dtheta1 = dtheta1.clamp(-self.max_vel_1, self.max_vel_1)
        dtheta2 = dtheta2.clamp(-self.max_vel_2, self.max_vel_2)
        terminated = -torch.cos(theta1) - torch.cos(theta2 + theta1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(state.dtype)
        return torch.stack((theta1, theta2, dtheta1, dtheta2)), reward, terminated

    def _observe(self, state):
        theta1, theta2, dtheta1, dtheta2 = state
        angles = (torch.cos(theta1), torch.sin(theta1), torch.cos(theta2), torch.sin(theta2))
        return self._columns(*angles, dtheta1, dtheta2)


#: The torch-native envs by gymnasium id; agents take them as ``env="torch:<id>"``.
TORCH_ENVS: dict[str, type[TorchVectorEnv]] = {
    cls.gym_id: cls for cls in (CartPole, Pendulum, MountainCarContinuous, Acrobot)
}


def make_torch_env(
    env_id: str, num_envs: int = 1, device: str | torch.device = "cpu", **kwargs: Any
) -> TorchVectorEnv:
    """Build the torch-native version of a gymnasium env.

    Args:
        env_id: a gymnasium id with a torch-native version (a key of :data:`TORCH_ENVS`).
        num_envs: number of environments.
        device: where the tensors live.
        **kwargs: ``dtype`` and ``max_episode_steps`` (see :class:`TorchVectorEnv`), and
            ``compile=True`` to step through one compiled function
            (:meth:`TorchVectorEnv.compile_step`).

    Raises:
        ValueError: an id without a torch-native version, or a bad argument.
    """
    if env_id not in TORCH_ENVS:
        raise ValueError(
            f"no torch-native version of {env_id!r}; available: {', '.join(TORCH_ENVS)}"
        )
    allowed = {"dtype", "max_episode_steps", "compile"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(
            f"torch:{env_id} takes the keyword arguments {sorted(allowed)}, got {sorted(unknown)}"
        )
    if isinstance(kwargs.get("dtype"), str):  # from JSON / the CLI: "float64"
        name = kwargs["dtype"].removeprefix("torch.")
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {kwargs['dtype']!r}")
        kwargs["dtype"] = getattr(torch, name)
    compiled = kwargs.pop("compile", False)
    if not isinstance(compiled, bool):
        raise ValueError(f"compile must be true or false, got {compiled!r}")
    env = TORCH_ENVS[env_id](num_envs, device=device, **kwargs)
    return env.compile_step() if compiled else env
