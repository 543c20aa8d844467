"""The online agent base: an environment stepped by a runner, observation and reward
normalization, and Stable-Baselines3's acting and env API, on the learner base
(:class:`mdpo.core.learner.Learner`)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mdpo.core.callbacks import BaseCallback, CallbackList
from mdpo.core.learner import Learner, NonFiniteLossError, json_policy_kwargs
from mdpo.core.registry import converter
from mdpo.core.utils import Schedule, check_int
from mdpo.rl.runners import (
    EnvSpec,
    Normalizer,
    Runner,
    TorchEnvRunner,
    TorchVectorEnv,
    VecEnvRunner,
    make_vec_env,
)

__all__ = ["Agent", "NonFiniteLossError", "json_policy_kwargs"]


class Agent(Learner):
    """Base of the online agents: environment, runner, normalization, acting (and, from
    :class:`~mdpo.core.learner.Learner`, device, seeding, logging, callbacks, save / load).

    Subclasses store every constructor argument under its own name (that is how the
    configuration is saved), implement :meth:`_setup_model` and :meth:`_learn_iteration`, and
    list what to save in :meth:`_state_modules`.

    Args:
        policy: ``"MlpPolicy"`` (the only policy alias for now) or a policy class.
        env: an env id, a ``gymnasium.Env``, a factory, a ``SAME_STEP`` vector env, or ``None``
            (only to load a model for inference). ``"torch:<id>"`` (e.g.
            ``"torch:CartPole-v1"``) or a :class:`~mdpo.rl.torch_classic.TorchVectorEnv` steps
            ``n_envs`` torch-native envs on the agent's device (see :mod:`mdpo.rl.torch_classic`).
        learning_rate: a float, or a schedule mapping progress remaining (1 → 0) to the rate.
        n_envs: number of parallel envs built from an env id or factory.
        vec_env_cls: ``"sync"`` or ``"async"`` vector env for ``n_envs > 1``.
        env_kwargs: keyword arguments for ``gymnasium.make`` (torch-native envs: ``dtype``,
            ``max_episode_steps``).
        normalize_obs: normalize observations with running statistics (VecNormalize-style).
        normalize_reward: scale rewards by the running std of the discounted return.
        policy_kwargs: keyword arguments for the policy class.
        stats_window_size: episodes averaged in ``rollout/ep_rew_mean`` and ``ep_len_mean``.
        tensorboard_log: folder of TensorBoard runs (one ``{tb_log_name}_{K}`` folder a run).
        verbose: 0 silent, 1 training tables, 2 debug.
        seed: seed of weights, sampling and envs; drawn at random (and stored) when ``None``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    algo_name: ClassVar[str] = "Agent"
    needs_env_runner: ClassVar[bool] = True

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule,
        n_envs: int = 1,
        vec_env_cls: str = "sync",
        env_kwargs: dict[str, Any] | None = None,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
        gamma: float = 0.99,
    ):
        super().__init__(
            policy,
            learning_rate,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.gamma = gamma  # the discount of reward normalization (the families check it)
        self.n_envs = check_int(n_envs, "n_envs")
        self.vec_env_cls = vec_env_cls
        self.env_kwargs = env_kwargs
        self.normalize_obs = bool(normalize_obs)
        self.normalize_reward = bool(normalize_reward)
        self.stats_window_size = check_int(stats_window_size, "stats_window_size")
        self.runner: Runner | None = None
        self.normalizer: Normalizer | None = None
        if env is not None:
            venv = make_vec_env(env, self.n_envs, vec_env_cls, env_kwargs, device=self.device)
            self._set_spaces(venv.single_observation_space, venv.single_action_space)
            self._attach(venv)

    # ----------------------------------------------------------------------------- set-up
    def _on_spaces_set(self) -> None:
        self.normalizer = Normalizer(
            self.observation_space.shape,
            self.normalize_obs,
            self.normalize_reward,
            gamma=self.gamma,
        )

    def _attach(self, venv: Any) -> None:
        """Use ``venv`` for training."""
        if self.runner is not None:
            self.runner.close()
        self.n_envs = venv.num_envs
        runner_class = TorchEnvRunner if isinstance(venv, TorchVectorEnv) else VecEnvRunner
        self.runner = runner_class(venv, self.device, self.normalizer, self.stats_window_size)

    def _finish_init(self, init_setup_model: bool) -> None:
        if self.runner is not None:
            self._check_env_settings()
        super()._finish_init(init_setup_model)

    def _check_env_settings(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Checks of hyperparameters against the env (e.g. batch vs rollout size)."""

    # ----------------------------------------------------------------------------- learning
    def _check_can_learn(self) -> None:
        if self.runner is None:
            raise ValueError("the agent has no environment: pass env= or call set_env() first")

    def _on_learn_setup(self, reset_num_timesteps: bool) -> None:
        if reset_num_timesteps or self.runner.needs_reset:
            # each env is seeded once, at its first reset; a resumed run (new envs) is seeded by
            # its step count so that it does not replay the episodes of the first run
            seed = None if self.runner.seeded else self.seed + self.num_timesteps
            self.runner.reset(seed=seed)

    def _step_counter(self, callback: BaseCallback):
        """The runner's per-step hook: count the step and run ``callback.on_step``; ``None``
        when there are no callbacks (the runner then skips the call, and the caller counts
        the steps of the whole rollout at once)."""
        if isinstance(callback, CallbackList) and not callback.callbacks:
            return None
        n_envs = self.n_envs

        def on_step() -> bool:
            self.num_timesteps += n_envs
            return callback.on_step()

        return on_step

    def _record_time_and_rollout(self) -> None:
        episodes = self.runner.ep_info_buffer
        if episodes:
            self.logger.record("rollout/ep_rew_mean", float(np.mean([r for r, _ in episodes])))
            self.logger.record("rollout/ep_len_mean", float(np.mean([n for _, n in episodes])))
        self.logger.record("time/iterations", self._iteration)
        self._record_time("time/fps")

    # ----------------------------------------------------------------------------- acting
    def _normalize_observation(self, obs: np.ndarray) -> np.ndarray:
        return self.normalizer.obs(obs)

    def _normalizer_state(self) -> dict[str, Any]:
        return self.normalizer.state_dict()

    def _load_normalizer_state(self, state: dict[str, Any]) -> None:
        self.normalizer.load_state_dict(state)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action for one observation or a batch.

        Args:
            observation: ``obs_shape`` or ``(batch, *obs_shape)``, unnormalized (the agent
                applies its own normalization statistics).
            state: recurrent state (unused by feed-forward policies; returned as given).
            episode_start: episode-start flags (for recurrent policies).
            deterministic: the mean / most likely action instead of a sample.

        Returns:
            ``(action, state)``; Box actions are clipped to the action bounds.
        """
        obs, batched = self._obs_to_tensor(observation)
        action = self._env_action(self.policy.act(obs, deterministic=deterministic).cpu().numpy())
        if not batched:
            action = action[0]
        return action, state

    # ----------------------------------------------------------------------------- env access
    def get_env(self) -> Any:
        """The training vector env (``None`` when the agent has none)."""
        return None if self.runner is None else self.runner.venv

    def set_env(self, env: EnvSpec, force_reset: bool = True) -> None:
        """Train on ``env`` from now on; its spaces must equal the agent's."""
        venv = make_vec_env(env, self.n_envs, self.vec_env_cls, self.env_kwargs, self.device)
        for name, mine, theirs in (
            ("observation", self.observation_space, venv.single_observation_space),
            ("action", self.action_space, venv.single_action_space),
        ):
            if mine != theirs:
                raise ValueError(
                    f"the new env's {name} space {theirs} differs from the agent's {mine}"
                )
        self._attach(venv)
        self._check_env_settings()

    # ----------------------------------------------------------------------------- interop
    def save_sb3(self, path: str) -> str:
        """Write this agent as a Stable-Baselines3 zip (see :func:`mdpo.interop.sb3.save`).

        Args:
            path: file path (``.zip`` appended when missing).

        Returns:
            The path written.
        """
        return converter("sb3").save(self, path)

    @classmethod
    def load_sb3(
        cls,
        path: str,
        env: EnvSpec | None = None,
        device: str | torch.device = "auto",
        vecnormalize: str | None = None,
        **kwargs: Any,
    ) -> Agent:
        """Load a Stable-Baselines3 zip into this class, never unpickling (see
        :func:`mdpo.interop.sb3.load`).

        Args:
            path: the SB3 ``.zip``.
            env: an env to continue training on (its spaces must match the file's).
            device: where to put the networks.
            vecnormalize: an SB3 ``VecNormalize.save`` file (read without unpickling).
            **kwargs: hyperparameters that override the file's.
        """
        sb3 = converter("sb3")
        generic = cls in (Agent, Learner) or getattr(cls, "__abstractmethods__", None)
        algo = None if generic else cls
        return sb3.load(
            path, algo=algo, env=env, device=device, vecnormalize=vecnormalize, **kwargs
        )
