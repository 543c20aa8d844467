"""The vectorized environment runners: the only place that steps environments during training.

They build (or wrap) a vector env in ``SAME_STEP`` autoreset mode, apply the optional
observation / reward normalization, keep episode statistics on the raw rewards, and hand a
whole rollout to the agent as torch tensors on the agent's device.

- :class:`VecEnvRunner` steps a gymnasium vector env: the per-step path stays in NumPy and
  the conversion to tensors happens once per rollout.
- :class:`TorchEnvRunner` steps a torch-native env (``env="torch:CartPole-v1"``, see
  :mod:`mdpo.rl.torch_classic`) whose batch lives on the agent's device: observations, actions
  and rewards never leave it, and nothing waits on the device during a rollout.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import batch_space

from mdpo.core.utils import get_device
from mdpo.rl.compiled import CompiledOnce
from mdpo.rl.torch_classic import TORCH_ENVS, TorchVectorEnv, make_torch_env

EnvSpec = str | gym.Env | VectorEnv | Callable[[], gym.Env]

#: Prefix of the env ids of torch-native envs (``"torch:CartPole-v1"``).
TORCH_PREFIX = "torch:"


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming ``env_id`` when gymnasium does not know it (or, for
    ``"torch:<id>"``, when there is no torch-native version of ``<id>``)."""
    if env_id.startswith(TORCH_PREFIX):
        name = env_id.removeprefix(TORCH_PREFIX)
        if name not in TORCH_ENVS:
            raise ValueError(
                f"unknown environment id {env_id!r}: torch-native envs are "
                f"{', '.join(TORCH_PREFIX + key for key in TORCH_ENVS)}"
            )
        return
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(f"unknown environment id {env_id!r}: {err}") from None
    except ModuleNotFoundError as err:
        raise ValueError(
            f"environment id {env_id!r} needs a module that is missing: {err}"
        ) from None


class LeanSyncVectorEnv(VectorEnv):
    """Sequential vector env in ``SAME_STEP`` autoreset mode with minimal per-step work.

    gymnasium's ``SyncVectorEnv`` merges every sub-env's info dict at every step; the runner
    reads only the final observations of finished episodes, so this env returns just those
    (``infos["final_obs"]`` / ``infos["_final_obs"]``, as ``SyncVectorEnv`` in ``SAME_STEP``
    mode) plus ``final_info``. It is the default ``"sync"`` vector env of the agents; use
    ``vec_env_cls="gymnasium-sync"`` for gymnasium's own.

    Args:
        env_fns: factories of the sub-envs.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.spec = first.spec
        self.render_mode = first.render_mode
        obs_space = first.observation_space
        if not isinstance(obs_space, gym.spaces.Box):
            self.close_extras()
            raise TypeError(f"LeanSyncVectorEnv needs a Box observation space, not {obs_space}")
        self._obs = np.zeros((self.num_envs, *obs_space.shape), obs_space.dtype)
        self._rewards = np.zeros(self.num_envs, np.float64)
        self._terminated = np.zeros(self.num_envs, bool)
        self._truncated = np.zeros(self.num_envs, bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every sub-env; an int seed gives sub-env ``i`` the seed ``seed + i``."""
        seeds = [None] * self.num_envs
        if isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        elif seed is not None:
            seeds = list(seed)
        for i, env in enumerate(self.envs):
            self._obs[i], _ = env.reset(seed=seeds[i], options=options)
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray):
        """Step every sub-env; finished ones are reset in the same step."""
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            if terminated or truncated:
                if not infos:
                    infos = {
                        "final_obs": np.full(self.num_envs, None, object),
                        "_final_obs": np.zeros(self.num_envs, bool),
                        "final_info": np.full(self.num_envs, None, object),
                        "_final_info": np.zeros(self.num_envs, bool),
                    }
                infos["final_obs"][i], infos["final_info"][i] = obs, info
                infos["_final_obs"][i] = infos["_final_info"][i] = True
                obs, _ = env.reset()
            self._obs[i] = obs
            self._rewards[i] = reward
            self._terminated[i] = terminated
            self._truncated[i] = truncated
        return (
            self._obs.copy(),
            self._rewards.copy(),
            self._terminated.copy(),
            self._truncated.copy(),
            infos,
        )

    def render(self):
        """Render every sub-env."""
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


VEC_ENV_CLASSES = ("sync", "async", "gymnasium-sync")


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:<current>`` are the same device."""

    def index(device: torch.device) -> int | None:
        if device.type == "cuda" and device.index is None:
            return torch.cuda.current_device()
        return device.index

    return a.type == b.type and index(a) == index(b)


class TorchToNumpy(VectorEnv):
    """A torch-native env behind gymnasium's NumPy interface (for evaluation and for code that
    expects NumPy arrays): actions in, observations, rewards and flags out as arrays; the final
    observations as ``SAME_STEP`` vector envs give them (an object array, ``None`` where no
    episode ended).

    Args:
        env: the torch-native env.
    """

    def __init__(self, env: TorchVectorEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = env.metadata
        self.render_mode = None
        self.spec = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every env (see :meth:`TorchVectorEnv.reset`)."""
        obs, info = self.env.reset(seed=seed, options=options)
        return obs.cpu().numpy(), info

    def step(self, actions: np.ndarray):
        """Step every env with NumPy actions."""
        action = torch.as_tensor(np.asarray(actions), device=self.env.device)
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = info["_final_obs"].cpu().numpy()
        infos: dict[str, Any] = {}
        if done.any():
            final = info["final_obs"].cpu().numpy()
            infos["final_obs"] = np.full(self.num_envs, None, object)
            for i in np.flatnonzero(done):
                infos["final_obs"][i] = final[i]
            infos["_final_obs"] = done
        return (
            obs.cpu().numpy(),
            reward.cpu().numpy(),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


def make_vec_env(
    env: EnvSpec,
    n_envs: int = 1,
    vec_env_cls: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> VectorEnv:
    """Build a vector env in ``SAME_STEP`` autoreset mode.

    Args:
        env: an env id (``"torch:<id>"`` for a torch-native env), a ``gymnasium.Env`` instance
            (``n_envs`` must be 1), a factory returning a ``gymnasium.Env``, or a
            ``VectorEnv`` (returned as is after checks).
        n_envs: number of environments.
        vec_env_cls: ``"sync"`` (one process, :class:`LeanSyncVectorEnv`), ``"async"`` (one
            process per env, gymnasium's ``AsyncVectorEnv``) or ``"gymnasium-sync"``
            (gymnasium's ``SyncVectorEnv``); not used by torch-native envs.
        env_kwargs: keyword arguments for ``gymnasium.make`` (for torch-native envs:
            ``dtype``, ``max_episode_steps``).
        device: for torch-native envs, the device whose tensors they return (what agents
            ask for); ``None`` gives them a NumPy interface on the CPU (:class:`TorchToNumpy`,
            for evaluation). Not used by gymnasium envs.

    Raises:
        ValueError: unknown env id, bad ``n_envs`` or ``vec_env_cls``, a vector env whose
            autoreset mode is not ``SAME_STEP``, or a torch-native env on another device.
    """
    if isinstance(env, TorchVectorEnv):
        if device is None:
            return TorchToNumpy(env)
        if not same_device(env.device, get_device(device)):
            raise ValueError(
                f"the torch-native env {env!r} lives on {env.device}, the agent on {device}; "
                f"build it with device={str(device)!r}"
            )
        return env
    if isinstance(env, VectorEnv):
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"the vector env uses autoreset_mode={mode}; mdpo needs AutoresetMode.SAME_STEP "
                "(pass autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP when creating it, "
                "or give an env id and n_envs instead)"
            )
        return env
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    if vec_env_cls not in VEC_ENV_CLASSES:
        raise ValueError(f"vec_env_cls must be one of {VEC_ENV_CLASSES}, got {vec_env_cls!r}")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a mapping of keyword arguments, got {env_kwargs!r}")
    if isinstance(env, str) and env.startswith(TORCH_PREFIX):
        check_env_id(env)
        name = env.removeprefix(TORCH_PREFIX)
        with _env_kwargs_named(env, env_kwargs):
            if device is None:
                return TorchToNumpy(make_torch_env(name, n_envs, "cpu", **(env_kwargs or {})))
            return make_torch_env(name, n_envs, device, **(env_kwargs or {}))
    if isinstance(env, str):
        check_env_id(env)
        kwargs = dict(env_kwargs or {})
        with _env_kwargs_named(env, env_kwargs):
            first = gym.make(env, **kwargs)  # made now: a wrong keyword is named at once
        env_fns = [lambda: gym.make(env, **kwargs) for _ in range(n_envs)]
        if vec_env_cls == "async" and n_envs > 1:
            first.close()  # the workers make their own
        else:
            env_fns[0] = lambda: first
    elif isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(
                "a gymnasium.Env instance can back only n_envs=1; pass an env id or a factory "
                f"for n_envs={n_envs}"
            )
        instance = env
        env_fns = [lambda: instance]
    elif callable(env):
        env_fns = [env] * n_envs
    else:
        raise ValueError(
            f"env must be an env id, a gymnasium.Env, a factory or a VectorEnv, got {type(env)}"
        )
    if vec_env_cls == "async" and n_envs > 1:
        return AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if vec_env_cls == "gymnasium-sync":
        return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        return LeanSyncVectorEnv(env_fns)
    except TypeError:  # not a Box observation space: the agent will name it
        return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)


@contextlib.contextmanager
def _env_kwargs_named(env_id: str, env_kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Turn an env constructor's refusal of a keyword into one line naming ``env_kwargs``."""
    try:
        yield
    except TypeError as err:
        raise ValueError(
            f"env_kwargs {env_kwargs!r} do not fit {env_id}: {str(err).splitlines()[0]}"
        ) from None


class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.), as SB3's, in float64."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch ``[B, *shape]`` into the statistics."""
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        self.var = (m2 + delta**2 * self.count * batch_count / total) / total
        self.count = total


class Normalizer:
    """Observation and reward normalization with VecNormalize's semantics.

    Observations: ``clip((o − μ) / sqrt(σ² + ε), ±clip_obs)`` with running statistics updated
    on every observation the envs return (terminal observations are normalized, not counted).
    Rewards: divided by the running std of the discounted return, clipped to ``±clip_reward``.

    Args:
        obs_shape: the observation shape.
        normalize_obs: normalize observations.
        normalize_reward: normalize rewards.
        gamma: discount of the return whose std scales the rewards.
        clip_obs: clip of normalized observations (10 as VecNormalize).
        clip_reward: clip of normalized rewards (10 as VecNormalize).
        epsilon: added to the variances.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        gamma: float = 0.99,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        epsilon: float = 1e-8,
    ):
        self.normalize_obs = normalize_obs
        self.normalize_reward = normalize_reward
        self.gamma = gamma
        self.clip_obs = clip_obs
        self.clip_reward = clip_reward
        self.epsilon = epsilon
        self.obs_rms = RunningMeanStd(obs_shape)
        self.ret_rms = RunningMeanStd(())
        self.returns: np.ndarray | None = None
        self.training = True

    def obs(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """Normalized float32 observations; ``update`` folds them into the statistics first."""
        if not self.normalize_obs:
            return np.asarray(obs, dtype=np.float32)
        if update and self.training:
            self.obs_rms.update(np.asarray(obs))
        scaled = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(scaled, -self.clip_obs, self.clip_obs).astype(np.float32)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scaled float32 rewards; updates the return statistics while training."""
        reward = np.asarray(reward, dtype=np.float32)
        if not self.normalize_reward:
            return reward
        if self.returns is None or self.returns.shape != reward.shape:
            self.returns = np.zeros(reward.shape, np.float64)
        if self.training:
            self.returns = self.returns * self.gamma + reward
            self.ret_rms.update(self.returns)
        scaled = np.clip(
            reward / np.sqrt(self.ret_rms.var + self.epsilon), -self.clip_reward, self.clip_reward
        )
        self.returns[done] = 0.0
        return scaled.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Statistics and settings as tensors and numbers (saved with the model)."""
        return {
            "normalize_obs": self.normalize_obs,
            "normalize_reward": self.normalize_reward,
            "gamma": self.gamma,
            "clip_obs": self.clip_obs,
            "clip_reward": self.clip_reward,
            "epsilon": self.epsilon,
            "obs_mean": torch.from_numpy(self.obs_rms.mean.copy()),
            "obs_var": torch.from_numpy(self.obs_rms.var.copy()),
            "obs_count": float(self.obs_rms.count),
            "ret_mean": float(self.ret_rms.mean),
            "ret_var": float(self.ret_rms.var),
            "ret_count": float(self.ret_rms.count),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote; raises ``ValueError`` on a shape mismatch."""
        mean = state["obs_mean"].numpy().astype(np.float64)
        if mean.shape != self.obs_rms.mean.shape:
            raise ValueError(
                f"normalization statistics have shape {mean.shape}, the observation space "
                f"{self.obs_rms.mean.shape}"
            )
        for key in ("normalize_obs", "normalize_reward", "gamma", "clip_obs", "clip_reward"):
            setattr(self, key, state[key])
        self.epsilon = state["epsilon"]
        self.obs_rms.mean = mean
        self.obs_rms.var = state["obs_var"].numpy().astype(np.float64)
        self.obs_rms.count = state["obs_count"]
        self.ret_rms.mean = np.float64(state["ret_mean"])
        self.ret_rms.var = np.float64(state["ret_var"])
        self.ret_rms.count = state["ret_count"]


@dataclass
class Rollout:
    """A rollout of ``T`` steps of ``N`` envs, as tensors on the agent's device.

    Attributes:
        obs: ``[T, N, *obs_shape]`` normalized observations the actions were taken in.
        actions: ``[T, N, *action_shape]`` actions as the policy produced them (before clipping).
        rewards: ``[T, N]`` (normalized) rewards.
        terminated: ``[T, N]`` the transition ended the episode in a terminal state.
        truncated: ``[T, N]`` the episode was cut (time limit) without a terminal state.
        episode_starts: ``[T, N]`` ``obs[t]`` is the first observation of an episode.
        final_obs: ``[M, *obs_shape]`` normalized last observations of the M episodes that
            ended in the rollout, at ``(final_step[i], final_env[i])``.
        last_obs: ``[N, *obs_shape]`` the observations after the last step.
        last_episode_starts: ``[N]`` whether ``last_obs`` starts an episode.
        stopped: a callback asked to stop; the rollout holds only the steps taken.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    episode_starts: torch.Tensor
    final_obs: torch.Tensor
    final_step: torch.Tensor
    final_env: torch.Tensor
    last_obs: torch.Tensor
    last_episode_starts: torch.Tensor
    stopped: bool = False


class Runner:
    """What both runners share: the env, the statistics of recent episodes, the reset state.

    Args:
        venv: the vector env (``SAME_STEP`` autoreset; see :func:`make_vec_env`).
        device: where rollouts are returned.
        normalizer: observation / reward normalization (its statistics belong to the agent).
        stats_window_size: number of recent episodes in the return / length statistics.
    """

    #: the policy given to :meth:`rollout` takes and returns torch tensors (else NumPy arrays)
    tensor_policy = False

    def __init__(
        self,
        venv: VectorEnv,
        device: torch.device,
        normalizer: Normalizer,
        stats_window_size: int = 100,
    ):
        self.venv = venv
        self.device = device
        self.normalizer = normalizer
        self.n_envs = venv.num_envs
        self.observation_space = venv.single_observation_space
        self.action_space = venv.single_action_space
        self.ep_info_buffer: deque[tuple[float, int]] = deque(maxlen=stats_window_size)
        self._obs: Any = None
        self.env_time = 0.0
        self.seeded = False

    @property
    def needs_reset(self) -> bool:
        """True until :meth:`reset` has been called."""
        return self._obs is None

    def close(self) -> None:
        """Close the vector env."""
        self.venv.close()


class VecEnvRunner(Runner):
    """Steps a gymnasium vector env for the agent (see :class:`Runner` for the arguments)."""

    def __init__(
        self,
        venv: VectorEnv,
        device: torch.device,
        normalizer: Normalizer,
        stats_window_size: int = 100,
    ):
        super().__init__(venv, device, normalizer, stats_window_size)
        self._ep_returns = np.zeros(self.n_envs, np.float64)
        self._ep_lengths = np.zeros(self.n_envs, np.int64)
        self._episode_starts = np.ones(self.n_envs, bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset all envs (env ``i`` gets ``seed + i``) and return normalized observations."""
        raw, _ = self.venv.reset(seed=seed)
        self.seeded = self.seeded or seed is not None
        self.normalizer.returns = None  # discounted returns restart with the episodes
        self._obs = self.normalizer.obs(raw, update=True)
        self._episode_starts = np.ones(self.n_envs, bool)
        self._ep_returns[:] = 0.0
        self._ep_lengths[:] = 0
        return self._obs

    def rollout(
        self,
        n_steps: int,
        policy: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
        on_step: Callable[[], bool] | None = None,
    ) -> Rollout:
        """Collect ``n_steps`` vector steps.

        Args:
            n_steps: number of vector steps (``n_steps * n_envs`` transitions).
            policy: ``policy(obs, t) -> (env_actions, stored_actions)`` on normalized NumPy
                observations ``[N, *obs_shape]``; ``env_actions`` go to the envs (clipped to the
                bounds), ``stored_actions`` into the rollout.
            on_step: called after every vector step; returning False stops the rollout.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before rollout()")
        n, obs_shape = self.n_envs, self.observation_space.shape
        obs_buf = np.empty((n_steps, n, *obs_shape), np.float32)
        rew_buf = np.empty((n_steps, n), np.float32)
        term_buf = np.empty((n_steps, n), bool)
        trunc_buf = np.empty((n_steps, n), bool)
        start_buf = np.empty((n_steps, n), bool)
        act_buf: np.ndarray | None = None
        final_obs, final_step, final_env = [], [], []
        obs, normalizer, step = self._obs, self.normalizer, self.venv.step
        env_time, stopped, t = 0.0, False, 0
        for t in range(n_steps):  # noqa: B007 - t is used after the loop
            env_action, action = policy(obs, t)
            if act_buf is None:
                act_buf = np.empty((n_steps, *action.shape), action.dtype)
            tic = time.perf_counter()
            raw, reward, terminated, truncated, info = step(env_action)
            env_time += time.perf_counter() - tic
            done = terminated | truncated
            self._ep_returns += reward
            self._ep_lengths += 1
            obs_buf[t] = obs
            act_buf[t] = action
            start_buf[t] = self._episode_starts
            term_buf[t] = terminated
            trunc_buf[t] = truncated
            rew_buf[t] = normalizer.reward(reward, done)
            obs = normalizer.obs(raw, update=True)
            if done.any():
                for i in np.flatnonzero(done):
                    self.ep_info_buffer.append(
                        (float(self._ep_returns[i]), int(self._ep_lengths[i]))
                    )
                    final_obs.append(normalizer.obs(info["final_obs"][i][None])[0])
                    final_step.append(t)
                    final_env.append(i)
                self._ep_returns[done] = 0.0
                self._ep_lengths[done] = 0
            self._episode_starts = done
            if on_step is not None and on_step() is False:
                stopped = True
                break
        self._obs = obs
        self.env_time += env_time
        steps = t + 1
        dev = self.device

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(dev)

        empty_final = np.empty((0, *obs_shape), np.float32)
        return Rollout(
            obs=tensor(obs_buf[:steps]),
            actions=tensor(act_buf[:steps]),
            rewards=tensor(rew_buf[:steps]),
            terminated=tensor(term_buf[:steps]),
            truncated=tensor(trunc_buf[:steps]),
            episode_starts=tensor(start_buf[:steps]),
            final_obs=tensor(np.stack(final_obs) if final_obs else empty_final),
            final_step=torch.as_tensor(final_step, dtype=torch.long, device=dev),
            final_env=torch.as_tensor(final_env, dtype=torch.long, device=dev),
            last_obs=tensor(obs),
            last_episode_starts=tensor(self._episode_starts.copy()),
            stopped=stopped,
        )


class NormStats(NamedTuple):
    """The normalization statistics as float64 tensors (counts 0-d), passed through the
    rollout step as values so that the step can be one compiled function."""

    obs_mean: torch.Tensor
    obs_var: torch.Tensor
    obs_count: torch.Tensor
    ret_mean: torch.Tensor
    ret_var: torch.Tensor
    ret_count: torch.Tensor
    returns: torch.Tensor


class TensorNormalizer:
    """The agent's :class:`Normalizer` computed with tensors on the runner's device.

    The NumPy normalizer stays the one source of the statistics (it is saved with the model
    and used by ``predict``): :meth:`pull` copies them here at the start of a rollout and
    :meth:`push` writes them back at its end (also when the rollout stops on an error), so
    they cross between host and device at those two points, not at every step; callbacks
    that run during a rollout (evaluation, checkpoints) see the statistics as they were at its
    start. Statistics are float64, updated with the same formulas. :meth:`obs` and
    :meth:`reward` are functions of the statistics (:class:`NormStats`, or None when nothing
    is normalized) that return the new ones.

    Args:
        normalizer: the agent's normalizer.
        device: where the tensors are.
    """

    def __init__(self, normalizer: Normalizer, device: torch.device):
        self.source = normalizer
        self.device = device

    def pull(self, n_envs: int) -> NormStats | None:
        """The statistics of the NumPy normalizer (None when it normalizes nothing)."""
        src, dev = self.source, self.device
        if not (src.normalize_obs or src.normalize_reward):
            return None
        returns = src.returns
        if returns is None or returns.shape != (n_envs,):
            returns = np.zeros(n_envs)

        def tensor(value: Any) -> torch.Tensor:
            return torch.as_tensor(value, dtype=torch.float64, device=dev)

        return NormStats(
            tensor(src.obs_rms.mean),
            tensor(src.obs_rms.var),
            tensor(float(src.obs_rms.count)),
            tensor(src.ret_rms.mean),
            tensor(src.ret_rms.var),
            tensor(float(src.ret_rms.count)),
            tensor(returns),
        )

    def push(self, stats: NormStats | None) -> None:
        """Write the statistics back to the NumPy normalizer."""
        if stats is None:
            return
        src = self.source
        src.obs_rms.mean = stats.obs_mean.cpu().numpy()
        src.obs_rms.var = stats.obs_var.cpu().numpy()
        src.obs_rms.count = float(stats.obs_count)
        src.ret_rms.mean = stats.ret_mean.cpu().numpy()
        src.ret_rms.var = stats.ret_var.cpu().numpy()
        src.ret_rms.count = float(stats.ret_count)
        src.returns = stats.returns.cpu().numpy()

    @staticmethod
    def _fold(mean, var, count, batch):
        """:meth:`RunningMeanStd.update` on tensors: ``(mean, var, count)`` after ``batch``."""
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, correction=0)
        batch_count = batch.shape[0]
        delta = batch_mean - mean
        total = count + batch_count
        new_mean = mean + delta * batch_count / total
        m2 = var * count + batch_var * batch_count + delta.square() * count * batch_count / total
        return new_mean, m2 / total, total

    def obs(
        self, stats: NormStats | None, obs: torch.Tensor, update: bool = False
    ) -> tuple[torch.Tensor, NormStats | None]:
        """Normalized float32 observations and the statistics; ``update`` folds the
        observations into them first."""
        src = self.source
        if stats is None or not src.normalize_obs:
            return obs.float(), stats
        if update and src.training:
            mean, var, count = self._fold(
                stats.obs_mean, stats.obs_var, stats.obs_count, obs.double()
            )
            stats = stats._replace(obs_mean=mean, obs_var=var, obs_count=count)
        scaled = (obs - stats.obs_mean) / torch.sqrt(stats.obs_var + src.epsilon)
        return scaled.clamp(-src.clip_obs, src.clip_obs).float(), stats

    def reward(
        self, stats: NormStats | None, reward: torch.Tensor, done: torch.Tensor
    ) -> tuple[torch.Tensor, NormStats | None]:
        """Scaled float32 rewards and the statistics (the return statistics move while
        training)."""
        src = self.source
        reward = reward.float()
        if stats is None or not src.normalize_reward:
            return reward, stats
        returns = stats.returns
        if src.training:
            returns = returns * src.gamma + reward
            mean, var, count = self._fold(stats.ret_mean, stats.ret_var, stats.ret_count, returns)
            stats = stats._replace(ret_mean=mean, ret_var=var, ret_count=count)
        scaled = reward / torch.sqrt(stats.ret_var + src.epsilon)
        stats = stats._replace(returns=returns.masked_fill(done, 0.0))
        return scaled.clamp(-src.clip_reward, src.clip_reward).float(), stats


def _cloned(outputs: Any) -> Any:
    """Copies of the tensors in nested tuples (named tuples included)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    if isinstance(outputs, tuple):
        items = [_cloned(x) for x in outputs]
        return type(outputs)(*items) if hasattr(outputs, "_fields") else tuple(items)
    return outputs


@dataclass
class TensorPolicy:
    """A rollout policy as a pure function of tensors, so that a runner can compile it
    together with the env's step: ``act(obs, *[x[t] for x in per_step], *fixed) ->
    (env_action, stored_action)``, its randomness drawn up front into ``per_step``.

    Attributes:
        act: the function (on normalized observations ``[N, *obs_shape]``).
        per_step: tensors ``[T, ...]`` of which step ``t`` gets row ``t`` (sampling noise).
        fixed: what every step gets whole: tensors, dicts of tensors (action bounds,
            parameters) or Python numbers (constants of the compiled step).
    """

    act: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    per_step: tuple[torch.Tensor, ...]
    fixed: tuple[Any, ...] = ()

    def step_inputs(self, t: int) -> tuple[torch.Tensor, ...]:
        """Row ``t`` of each of :attr:`per_step`."""
        return tuple(x[t] for x in self.per_step)

    def __call__(self, obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The actions of step ``t`` (the runner's ``policy(obs, t)`` interface)."""
        return self.act(obs, *self.step_inputs(t), *self.fixed)


class TorchEnvRunner(Runner):
    """Steps a torch-native env (:class:`mdpo.rl.torch_classic.TorchVectorEnv`) on the agent's
    device: the rollout is written into preallocated tensors there, episode statistics are
    gathered once at the end of the rollout, and nothing in the loop waits for the device
    (see :class:`Runner` for the arguments).

    When the env's step is compiled (``env_kwargs={"compile": True}``, see
    :meth:`~mdpo.rl.torch_classic.TorchVectorEnv.compile_step`) and the policy is a
    :class:`TensorPolicy` (the on-policy agents'), the whole rollout step (policy and
    sampling, the env's step, normalization, episode statistics) runs as one compiled
    function, captured in a CUDA graph on a GPU. Outside it stay the draws of new initial
    states (the env's generator), the writes into the rollout's tensors and, under CUDA
    graphs, copies of the step's outputs (the next replay overwrites them).
    """

    tensor_policy = True

    def __init__(
        self,
        venv: TorchVectorEnv,
        device: torch.device,
        normalizer: Normalizer,
        stats_window_size: int = 100,
    ):
        super().__init__(venv, device, normalizer, stats_window_size)
        self.tensor_normalizer = TensorNormalizer(normalizer, device)
        self._ep_returns = torch.zeros(self.n_envs, dtype=torch.float64, device=device)
        self._ep_lengths = torch.zeros(self.n_envs, dtype=torch.int32, device=device)
        self._episode_starts = torch.ones(self.n_envs, dtype=torch.bool, device=device)
        mode = getattr(venv, "compile_mode", None)
        self._captured_step: CompiledOnce | None = None
        if mode is not None:
            self._captured_step = CompiledOnce(
                self._policy_env_step,
                type(venv).__name__,
                what="the rollout step",
                mode=None if mode == "default" else mode,
            )

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset all envs (the env's generator gets ``seed``) and return normalized
        observations."""
        raw, _ = self.venv.reset(seed=seed)
        self.seeded = self.seeded or seed is not None
        self.normalizer.returns = None  # discounted returns restart with the episodes
        normalizer = self.tensor_normalizer
        stats = normalizer.pull(self.n_envs)
        self._obs, stats = normalizer.obs(stats, raw, update=True)
        normalizer.push(stats)
        self._episode_starts.fill_(True)
        self._ep_returns.zero_()
        self._ep_lengths.zero_()
        return self._obs

    def _after_env_step(
        self,
        raw: torch.Tensor,
        final_raw: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        ep_returns: torch.Tensor,
        ep_lengths: torch.Tensor,
        stats: NormStats | None,
    ) -> tuple[Any, ...]:
        """What the runner makes of an env step: ``(reward, obs, final_obs, ep_returns,
        ep_lengths, next_ep_returns, next_ep_lengths, stats)``, normalized as the NumPy
        runner does (the final observations with the statistics after the step), the episode
        statistics at the step and after the finished ones restart."""
        ep_returns, ep_lengths = ep_returns + reward, ep_lengths + 1
        reward, stats = self.tensor_normalizer.reward(stats, reward, done)
        obs, stats = self.tensor_normalizer.obs(stats, raw, update=True)
        final_obs, _ = self.tensor_normalizer.obs(stats, final_raw)
        return (
            reward,
            obs,
            final_obs,
            ep_returns,
            ep_lengths,
            ep_returns.masked_fill(done, 0.0),
            ep_lengths.masked_fill(done, 0),
            stats,
        )

    def _policy_env_step(
        self,
        policy: TensorPolicy,
        obs: torch.Tensor,
        step_inputs: tuple[torch.Tensor, ...],
        env_state: torch.Tensor,
        elapsed: torch.Tensor,
        fresh: torch.Tensor,
        ep_returns: torch.Tensor,
        ep_lengths: torch.Tensor,
        stats: NormStats | None,
    ) -> tuple[Any, ...]:
        """One rollout step as a pure function of tensors (the compiled path): the policy's
        actions, the env's step from ``env_state`` with the new episodes' states ``fresh``
        drawn beforehand, then :meth:`_after_env_step`. Returns ``(action, terminated,
        truncated, done, env_state, elapsed, *after_env_step)``."""
        venv = self.venv
        env_action, action = policy.act(obs, *step_inputs, *policy.fixed)
        env_state, elapsed, raw, final_raw, reward, terminated, truncated, done = venv._advance(
            env_state, elapsed, venv._check_action(env_action), fresh
        )
        after = self._after_env_step(raw, final_raw, reward, done, ep_returns, ep_lengths, stats)
        return (action, terminated, truncated, done, env_state, elapsed, *after)

    def _step(
        self,
        policy: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
        t: int,
        obs: torch.Tensor,
        stats: NormStats | None,
    ) -> tuple[Any, ...]:
        """Step ``t`` of a rollout: ``(action, terminated, truncated, done,
        *after_env_step)``, through the compiled step where there is one."""
        venv = self.venv
        # (env_time counts eager env steps only: a compiled step has no env part to time)
        if self._captured_step is not None and isinstance(policy, TensorPolicy):
            outputs = self._captured_step(
                policy,
                obs,
                policy.step_inputs(t),
                venv._state,
                venv.elapsed_steps,
                venv._fresh_states(None),
                self._ep_returns,
                self._ep_lengths,
                stats,
            )
            if venv.graph_outputs:  # a CUDA graph's outputs are overwritten by its next replay
                outputs = _cloned(outputs)
            action, terminated, truncated, done, venv._state, venv.elapsed_steps = outputs[:6]
            return (action, terminated, truncated, done, *outputs[6:])
        env_action, action = policy(obs, t)
        tic = time.perf_counter()
        raw, reward, terminated, truncated, info = venv.step(env_action)
        self.env_time += time.perf_counter() - tic
        done = info["_final_obs"]
        after = self._after_env_step(
            raw, info["final_obs"], reward, done, self._ep_returns, self._ep_lengths, stats
        )
        return (action, terminated, truncated, done, *after)

    def rollout(
        self,
        n_steps: int,
        policy: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
        on_step: Callable[[], bool] | None = None,
    ) -> Rollout:
        """Collect ``n_steps`` vector steps.

        Args:
            n_steps: number of vector steps (``n_steps * n_envs`` transitions).
            policy: ``policy(obs, t) -> (env_actions, stored_actions)`` on normalized
                observations ``[N, *obs_shape]`` (tensors on the device; a
                :class:`TensorPolicy` can be compiled with the env's step); ``env_actions``
                go to the envs, ``stored_actions`` into the rollout.
            on_step: called after every vector step; returning False stops the rollout.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before rollout()")
        n, obs_shape, dev = self.n_envs, self.observation_space.shape, self.device
        obs_buf = torch.empty((n_steps, n, *obs_shape), dtype=torch.float32, device=dev)
        final_buf = torch.empty_like(obs_buf)
        rew_buf = torch.empty((n_steps, n), dtype=torch.float32, device=dev)
        flags = torch.empty((4, n_steps, n), dtype=torch.bool, device=dev)
        term_buf, trunc_buf, start_buf, done_buf = flags.unbind(0)
        ep_return_buf = torch.empty((n_steps, n), dtype=torch.float64, device=dev)
        ep_length_buf = torch.empty((n_steps, n), dtype=torch.int32, device=dev)
        act_buf: torch.Tensor | None = None
        normalizer = self.tensor_normalizer
        stats = normalizer.pull(n)
        obs, stopped, t = self._obs, False, 0
        try:
            for t in range(n_steps):  # noqa: B007 - t is used after the loop
                with torch.no_grad():
                    step = self._step(policy, t, obs, stats)
                action, terminated, truncated, done, reward, next_obs, final_obs = step[:7]
                ep_returns, ep_lengths, self._ep_returns, self._ep_lengths, stats = step[7:]
                if act_buf is None:
                    act_buf = torch.empty((n_steps, *action.shape), dtype=action.dtype, device=dev)
                obs_buf[t] = obs
                act_buf[t] = action
                start_buf[t] = self._episode_starts
                term_buf[t] = terminated
                trunc_buf[t] = truncated
                done_buf[t] = done
                ep_return_buf[t] = ep_returns
                ep_length_buf[t] = ep_lengths
                rew_buf[t] = reward
                final_buf[t] = final_obs
                obs, self._episode_starts = next_obs, done
                if on_step is not None and on_step() is False:
                    stopped = True
                    break
        finally:  # the agent's statistics and the last observations stay whole on errors
            normalizer.push(stats)
            self._obs = obs
        steps = t + 1
        final_step, final_env = done_buf[:steps].nonzero(as_tuple=True)
        episodes = zip(
            ep_return_buf[final_step, final_env].tolist(),
            ep_length_buf[final_step, final_env].tolist(),
            strict=True,
        )
        self.ep_info_buffer.extend(episodes)
        return Rollout(
            obs=obs_buf[:steps],
            actions=act_buf[:steps],
            rewards=rew_buf[:steps],
            terminated=term_buf[:steps],
            truncated=trunc_buf[:steps],
            episode_starts=start_buf[:steps],
            final_obs=final_buf[final_step, final_env],
            final_step=final_step,
            final_env=final_env,
            last_obs=obs,
            last_episode_starts=self._episode_starts.clone(),
            stopped=stopped,
        )
