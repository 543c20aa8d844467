"""Off-policy core: replay buffer, warm-up, the train_freq / gradient_steps schedule, targets.

Subclasses (SAC, off-policy MDPO) build their networks and write only :meth:`train`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from mdpo.core.serialization import Archive, ModelFileError, write_archive
from mdpo.core.utils import Schedule, check_bool, check_fraction, check_int
from mdpo.rl.base import Agent
from mdpo.rl.buffers import ReplayBuffer
from mdpo.rl.callbacks import BaseCallback
from mdpo.rl.compiled import loss_function
from mdpo.rl.networks import MixedPrecision
from mdpo.rl.runners import EnvSpec, Rollout

REPLAY_BUFFER_FORMAT = "mdpo-replay-buffer"
#: ``precision`` → the dtype of the networks' matrix products (None: float32 throughout)
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def parse_train_freq(train_freq: int | tuple[int, str] | list) -> int:
    """``train_freq`` as a number of vector steps; SB3's ``(n, "step")`` form is accepted.

    Raises:
        ValueError: not a positive int, or a unit other than ``"step"``.
    """
    if isinstance(train_freq, (tuple, list)):
        if len(train_freq) != 2 or train_freq[1] != "step":
            raise ValueError(
                f"train_freq={train_freq!r}: give an int or (n, 'step'); training every n "
                "episodes is not supported"
            )
        train_freq = train_freq[0]
    return check_int(train_freq, "train_freq")


class OffPolicyAgent(Agent):
    """Collects ``train_freq`` vector steps into a replay buffer, then runs ``gradient_steps``
    updates of :meth:`train` (SB3's schedule).

    The first ``learning_starts`` transitions use actions drawn uniformly from the action
    bounds; training starts once more than ``learning_starts`` transitions were collected.
    Transitions that end an episode by termination are not bootstrapped; time-limit
    truncations are, from the episode's real final observation.

    Actions live in ``[-1, 1]`` (the squashed policy's range) in the buffer and the networks,
    and are rescaled to the env's bounds when they are sent to it, as SB3 does.

    Args:
        policy, env, learning_rate, ...: see :class:`~mdpo.rl.base.Agent`.
        buffer_size: replay buffer capacity (transitions).
        learning_starts: transitions collected with uniform random actions before training.
        batch_size: minibatch size of each gradient step.
        tau: Polyak coefficient of the target networks (``θ' ← (1 − τ)θ' + τθ``).
        gamma: discount factor.
        train_freq: vector steps between training phases (an int, or SB3's ``(n, "step")``).
        gradient_steps: gradient steps per training phase; ``-1`` as many as transitions
            collected in the phase.
        precision: ``"float32"``, or ``"bfloat16"``: the networks' matrix products in
            bfloat16 under autocast (twice the float32 rate or more on CPUs with AVX-512 bf16
            or AMX, and on GPUs), parameters, losses, gradients and Adam in float32.
        compile_update: compile the losses of each gradient step with ``torch.compile``
            (forward and backward graphs; about half a minute at the first update); where
            it cannot compile, the update runs eagerly with a warning.
    """

    supported_action_spaces = (spaces.Box,)

    def __init__(
        self,
        policy: Any,
        env: EnvSpec | None,
        learning_rate: float | Schedule,
        buffer_size: int,
        learning_starts: int,
        batch_size: int,
        tau: float,
        gamma: float,
        train_freq: int | tuple[int, str],
        gradient_steps: int,
        precision: str = "float32",
        compile_update: bool = False,
        **kwargs: Any,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.compile_update = check_bool(compile_update, "compile_update")
        self._compiled_losses: dict[str, Any] = {}
        super().__init__(policy, env, learning_rate, gamma=check_fraction(gamma, "gamma"), **kwargs)
        if (
            precision == "bfloat16"
            and self.device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise ValueError(
                f"precision='bfloat16': the GPU {torch.cuda.get_device_name(self.device)} "
                "has no bfloat16 support; use precision='float32'"
            )
        self.buffer_size = check_int(buffer_size, "buffer_size")
        self.learning_starts = check_int(learning_starts, "learning_starts", minimum=0)
        self.batch_size = check_int(batch_size, "batch_size")
        self.tau = check_fraction(tau, "tau")
        self.train_freq = train_freq
        self._train_freq_steps = parse_train_freq(train_freq)
        if isinstance(gradient_steps, bool) or not isinstance(gradient_steps, int):
            raise ValueError(f"gradient_steps must be an int (-1 or more), got {gradient_steps!r}")
        if gradient_steps < -1:
            raise ValueError(f"gradient_steps must be -1 or more, got {gradient_steps}")
        self.gradient_steps = gradient_steps
        self.replay_buffer: ReplayBuffer | None = None
        self._episode_num = 0
        self._train_stats: dict[str, torch.Tensor] = {}
        self._train_stats_count = 0
        # training noise and minibatches come from a generator on the agent's device, so that
        # a gradient step never waits for a host-to-device copy
        train_seed = int(np.random.SeedSequence([self.seed, 2]).generate_state(1)[0])
        self.train_rng = torch.Generator(device=self.device).manual_seed(train_seed)

    @property
    def train_freq_steps(self) -> int:
        """Vector steps collected between two rounds of gradient steps."""
        return self._train_freq_steps

    def _set_spaces(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        super()._set_spaces(observation_space, action_space)
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(
                f"{self.algo_name} squashes actions into the action bounds, which must be "
                f"finite; the env has {action_space}"
            )

    @property
    def timesteps_per_iteration(self) -> int:
        """One training phase: ``train_freq × n_envs`` transitions."""
        return self._train_freq_steps * self.n_envs

    def _check_env_settings(self) -> None:
        if self.n_envs * self._train_freq_steps > self.buffer_size:
            raise ValueError(
                f"buffer_size={self.buffer_size} cannot hold one training phase of "
                f"n_envs × train_freq = {self.n_envs} × {self._train_freq_steps} transitions"
            )

    def _generators(self) -> dict[str, torch.Generator]:
        return {"agent": self.rng, "train": self.train_rng}

    def _finish_setup(self) -> None:
        """The end of a subclass's ``_setup_model``: the replay buffer, and the precision of
        the policy's networks."""
        obs_dim = int(np.prod(self.observation_space.shape))
        action_dim = int(np.prod(self.action_space.shape))
        self.replay_buffer = ReplayBuffer(self.buffer_size, obs_dim, action_dim, self.device)
        for module in self.policy.modules():
            if isinstance(module, MixedPrecision):
                module.compute_dtype = PRECISIONS[self.precision]
        self._compiled_losses = {}

    def _loss(self, name: str) -> Any:
        """The method ``name`` (a loss of the gradient step), compiled when
        ``compile_update`` is set (see :class:`mdpo.rl.compiled.CompiledOnce`)."""
        return loss_function(self, name, self.compile_update)

    @staticmethod
    @torch.no_grad()
    def _polyak_update(target: torch.Tensor, online: torch.Tensor, tau: float) -> None:
        """``θ' ← (1 − τ)θ' + τθ`` in one in-place operation on flat parameter vectors."""
        target.lerp_(online, tau)

    # ----------------------------------------------------------------------------- acting
    def _env_action(self, action: np.ndarray) -> np.ndarray:
        """Rescale squashed actions from ``[-1, 1]`` to the env's bounds (SB3's unscale)."""
        action = torch.from_numpy(np.asarray(action, np.float32))
        return self._unscale(action, *self._bounds(action.device)).numpy()

    def _bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The action bounds as tensors on ``device``."""
        low = torch.as_tensor(self.action_space.low, device=device)
        return low, torch.as_tensor(self.action_space.high, device=device)

    def _unscale(self, action: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` → the env's bounds ``[low, high]``."""
        action = action.reshape(-1, *self.action_space.shape)
        return torch.clamp(low + 0.5 * (action + 1.0) * (high - low), low, high)

    def _collection_policy(self):
        """``policy(obs, t) -> (env_action, stored_action)`` for the runner: tensors on the
        agent's device for torch-native envs, NumPy arrays for gymnasium ones."""
        n_envs, action_dim = self.n_envs, int(np.prod(self.action_space.shape))
        start, actor, dev = self.num_timesteps, self.policy.actor, self.device
        # the agent's CPU generator, except for torch-native envs on an accelerator: there the
        # noise is drawn on the device (training generator) so that no step waits for a copy
        generator = self.rng
        if self.runner.tensor_policy and dev.type != "cpu":
            generator = self.train_rng
        noise_shape, (low, high) = (n_envs, action_dim), self._bounds(dev)

        @torch.no_grad()
        def act(obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            if start + t * n_envs < self.learning_starts:  # warm-up: uniform in the bounds
                uniform = torch.rand(noise_shape, generator=generator, device=generator.device)
                action = (uniform * 2.0 - 1.0).to(dev)
            else:
                noise = torch.randn(noise_shape, generator=generator, device=generator.device)
                mean, log_std = actor(obs.reshape(n_envs, -1))
                action = torch.tanh(mean + torch.exp(log_std) * noise.to(dev))
            return self._unscale(action, low, high), action

        if self.runner.tensor_policy:
            return act

        def act_numpy(obs: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
            env_action, action = act(torch.from_numpy(obs).to(dev), t)
            return env_action.cpu().numpy(), action.cpu().numpy()

        return act_numpy

    def _store(self, rollout: Rollout) -> None:
        """Put a rollout's transitions in the replay buffer.

        The next observation of a step that ended an episode is that episode's final
        observation (not the first of the next one); only terminations mark ``done``.
        """
        steps, n_envs = rollout.rewards.shape
        next_obs = torch.cat([rollout.obs[1:], rollout.last_obs[None]])
        if len(rollout.final_step):
            next_obs[rollout.final_step, rollout.final_env] = rollout.final_obs
        count = steps * n_envs
        self.replay_buffer.add(
            rollout.obs.reshape(count, -1),
            rollout.actions.reshape(count, -1),
            next_obs.reshape(count, -1),
            rollout.rewards.reshape(count),
            rollout.terminated.reshape(count),
        )

    # ----------------------------------------------------------------------------- loop
    def _setup_learn(self, total_timesteps: int, reset_num_timesteps: bool, tb_log_name: str):
        super()._setup_learn(total_timesteps, reset_num_timesteps, tb_log_name)
        if reset_num_timesteps:
            self._episode_num = 0
        # storage for this run's transitions, allocated once (up to buffer_size)
        self.replay_buffer.reserve(self.replay_buffer.size + total_timesteps + self.n_envs)

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> OffPolicyAgent:
        """Train for ``total_timesteps`` environment steps.

        Args:
            total_timesteps: env transitions to collect (summed over the envs).
            callback: a callback, a list of callbacks, or a function ``f(locals, globals)``.
            log_interval: dump logs every this many episodes (SB3's off-policy meaning).
            tb_log_name: TensorBoard run name (default the algorithm's name).
            reset_num_timesteps: start counting at 0; False continues a previous run.
            progress_bar: show a progress bar.
        """
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    def _learn_iteration(self, callback: BaseCallback, log_interval: int) -> bool:
        callback.on_rollout_start()
        on_step = self._step_counter(callback)
        rollout = self.runner.rollout(self._train_freq_steps, self._collection_policy(), on_step)
        collected = rollout.rewards.numel()
        if on_step is None:
            self.num_timesteps += collected
        self._store(rollout)
        if rollout.stopped:  # as SB3: stop before training on the last transitions
            return False
        callback.on_rollout_end()
        self._iteration += 1
        self._update_progress()
        if self.num_timesteps > self.learning_starts:
            steps = self.gradient_steps if self.gradient_steps >= 0 else collected
            if steps > 0:
                self.train(steps)
        self._after_train()
        episodes = len(rollout.final_step)
        if episodes and log_interval:
            before = self._episode_num
            self._episode_num += episodes
            if self._episode_num // log_interval > before // log_interval:
                self._dump_logs()
        else:
            self._episode_num += episodes
        return True

    def _after_train(self) -> None:  # noqa: B027 - optional hook
        """Called after each training phase (e.g. to refresh a frozen policy)."""

    def _accumulate(self, **values: torch.Tensor) -> None:
        """Add detached training statistics to running sums (no host synchronisation)."""
        stats = self._train_stats
        for name, value in values.items():
            value = value.detach()
            if name in stats:
                stats[name] += value
            else:
                stats[name] = value.clone()
        self._train_stats_count += 1

    def _dump_logs(self) -> None:
        """Record the mean training statistics since the last dump, then write the logs."""
        if self._train_stats_count:
            # finiteness is checked here, where the statistics reach the host anyway, rather
            # than with a synchronisation in every gradient step
            self._check_finite(self._train_stats)
            for name, total in self._train_stats.items():
                self.logger.record(f"train/{name}", float(total) / self._train_stats_count)
            self._train_stats, self._train_stats_count = {}, 0
        self.logger.record("train/n_updates", self._n_updates)
        self._record_time_and_rollout()
        self.logger.record("time/episodes", self._episode_num)
        self.logger.dump(self.num_timesteps)

    @abstractmethod
    def train(self, gradient_steps: int) -> None:
        """Run ``gradient_steps`` gradient steps on minibatches from the replay buffer."""

    # ----------------------------------------------------------------------------- buffer files
    def save_replay_buffer(self, path: str) -> str:
        """Save the replay buffer to a zip of tensors (nothing pickled).

        Args:
            path: file path (``.zip`` appended when missing).

        Returns:
            The path written.
        """
        meta = {"format": REPLAY_BUFFER_FORMAT, "format_version": 1, "algo": self.algo_name}
        state = {k: v.cpu() for k, v in self.replay_buffer.state_dict().items()}
        return write_archive(path, {"mdpo": meta}, {"buffer": state})

    def load_replay_buffer(self, path: str) -> None:
        """Load a replay buffer saved by :meth:`save_replay_buffer`.

        Raises:
            ModelFileError: corrupt or foreign file.
            ValueError: the transitions do not fit this agent's spaces or buffer size.
        """
        buffer = self.replay_buffer
        # the most a buffer of this agent's capacity and spaces can weigh, plus headroom
        limit = buffer.capacity * (2 * buffer.obs_dim + buffer.action_dim + 2) * 4 + (1 << 20)
        with Archive(path, REPLAY_BUFFER_FORMAT, member_limit=limit) as archive:
            state = archive.tensors("buffer")
        try:
            if not isinstance(state, dict):
                raise TypeError("not a state dict")
            buffer.load_state_dict(state)
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as err:
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ModelFileError(
                f"{path!r} does not hold a valid replay buffer: {reason}"
            ) from None
