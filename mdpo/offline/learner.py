"""The offline agent: learns from a fixed dataset instead of an environment.

Between the base and the offline algorithms (OPPO, behaviour cloning): it holds the dataset,
the observation normalization taken from it (saved in the model, so a loaded agent normalizes
as it was trained), actions scaled to [-1, 1], and the learn loop where one "timestep" is one
gradient step. Evaluation runs the policy in the real environment the dataset names and reports
D4RL-style normalized scores with the dataset's reference returns.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.callbacks import BaseCallback
from mdpo.core.learner import Learner
from mdpo.core.utils import Schedule, check_int
from mdpo.offline.dataset import OfflineDataset


class DatasetScaler(nn.Module):
    """Observation mean / std and action bounds of a dataset, kept as buffers (saved with the
    model): observations are standardized, actions mapped to [-1, 1] and back."""

    def __init__(self, obs_dim: int, action_space: spaces.Box):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.register_buffer("act_low", low)
        self.register_buffer("act_high", high)

    def fit(self, dataset: OfflineDataset) -> None:
        """Take the observation statistics of ``dataset`` (std + 1e-6, as the OPPO code)."""
        obs, _ = dataset.flat_transitions()
        self.obs_mean.copy_(torch.as_tensor(obs.mean(axis=0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(obs.std(axis=0) + 1e-6, dtype=torch.float32))

    def observations(self, obs: torch.Tensor | np.ndarray):
        """Standardized observations (tensor or array in, same kind out)."""
        if isinstance(obs, np.ndarray):
            mean, std = self.obs_mean.cpu().numpy(), self.obs_std.cpu().numpy()
            return ((obs - mean) / std).astype(np.float32)
        return (obs - self.obs_mean) / self.obs_std

    def actions_to_unit(self, actions: np.ndarray) -> np.ndarray:
        """Env actions → [-1, 1] (clipped: datasets may hold actions at the bounds)."""
        low, high = self.act_low.cpu().numpy(), self.act_high.cpu().numpy()
        return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def actions_from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → env actions."""
        return self.act_low + 0.5 * (unit + 1.0) * (self.act_high - self.act_low)


class OfflineAgent(Learner):
    """Base of agents trained on an :class:`~mdpo.offline.dataset.OfflineDataset`.

    A "timestep" of :meth:`learn` is one gradient step. Subclasses implement
    :meth:`_setup_model` (setting ``self.scaler``), :meth:`train_step` (one gradient step,
    returning the values to log) and :meth:`_act` (normalized observations → unit actions).

    Args:
        policy: the policy's name.
        dataset: an :class:`OfflineDataset`, a Minari dataset id or folder, or ``None`` (to
            load a model).
        learning_rate: the optimizer's learning rate (a float or a schedule).
        env_id: the env of the dataset (taken from it; stored so that a loaded model can be
            evaluated).
        env_kwargs: keyword arguments of ``gymnasium.make`` for evaluation (the caller's; a
            dataset's own are not applied).
        ref_min_score, ref_max_score: the dataset's reference returns (taken from it).
        data_root: Minari's datasets folder when ``dataset`` is an id.
        policy_kwargs, tensorboard_log, verbose, seed, device: see
            :class:`~mdpo.core.learner.Learner`.
    """

    supported_action_spaces = (spaces.Box,)
    needs_env_runner = False

    def __init__(
        self,
        policy: str | type[nn.Module],
        dataset: OfflineDataset | str | None,
        learning_rate: float | Schedule,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        data_root: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
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
        self.env_kwargs = env_kwargs
        self.env_id = env_id
        self.ref_min_score = ref_min_score
        self.ref_max_score = ref_max_score
        self.data_root = data_root
        self.data: OfflineDataset | None = None
        self._pending_dataset = dataset

    def _finish_init(self, init_setup_model: bool) -> None:
        """Attach the dataset given to the constructor and build the model (subclasses call it
        at the end of their ``__init__``, once their hyperparameters are set)."""
        dataset, self._pending_dataset = self._pending_dataset, None
        if dataset is not None:
            self.set_dataset(dataset, fit_scaler=init_setup_model)
        elif init_setup_model:
            raise ValueError(f"{self.algo_name} needs a dataset (an OfflineDataset or a Minari id)")

    def set_dataset(self, dataset: OfflineDataset | str, fit_scaler: bool = False) -> None:
        """Train on ``dataset`` from now on (its spaces must be the agent's).

        Args:
            dataset: an :class:`OfflineDataset` or a Minari dataset id / folder.
            fit_scaler: build the model and take the observation statistics from this dataset
                (a new agent); a loaded agent keeps the statistics it was trained with.
        """
        if isinstance(dataset, str):
            dataset = OfflineDataset.load(dataset, self.data_root)
        if not isinstance(dataset, OfflineDataset):
            raise ValueError(f"dataset must be an OfflineDataset or a Minari id, got {dataset!r}")
        low, high = dataset.action_space.low, dataset.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(
                f"{self.algo_name} scales actions into [-1, 1]: the action space "
                f"{dataset.action_space} needs finite bounds with low < high"
            )
        if ":" in dataset.env_id:
            raise ValueError(
                f"dataset env id {dataset.env_id!r} names a module to import; "
                "only registered gymnasium ids are evaluated"
            )
        if self.observation_space is None:
            self._set_spaces(dataset.observation_space, dataset.action_space)
        elif (
            self.observation_space.shape != dataset.observation_space.shape
            or self.action_space != dataset.action_space
        ):
            raise ValueError(
                f"dataset {dataset.dataset_id or dataset.env_id!r} has spaces "
                f"{dataset.observation_space}, {dataset.action_space}; the agent has "
                f"{self.observation_space}, {self.action_space}"
            )
        self.data = dataset
        # env_kwargs are the caller's, never a file's (they reach gymnasium.make)
        self.env_id = self.env_id or dataset.env_id
        if self.ref_min_score is None:
            self.ref_min_score = dataset.ref_min_score
        if self.ref_max_score is None:
            self.ref_max_score = dataset.ref_max_score
        self._check_dataset(dataset)
        if fit_scaler:
            self._setup_model()
            self.scaler.fit(dataset)
        self._dataset_changed()

    def _check_dataset(self, dataset: OfflineDataset) -> None:  # noqa: B027 - optional hook
        """Checks of hyperparameters against the dataset."""

    def _dataset_changed(self) -> None:  # noqa: B027 - optional hook
        """Rebuild what depends on the dataset (samplers...)."""

    def _generators(self) -> dict[str, torch.Generator]:
        # dropout draws from torch's global CPU generator: saved too, so that a resumed run
        # repeats an uninterrupted one (loading a model sets the global generator's state)
        return {"agent": self.rng, "torch": torch.default_generator}

    def _check_can_learn(self) -> None:
        if self.data is None:
            raise ValueError(f"{self.algo_name} has no dataset: pass one or call set_dataset()")

    def get_env(self) -> OfflineDataset | None:
        """The dataset trained on."""
        return self.data

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """The same as :meth:`set_dataset` (the base class's name)."""
        self.set_dataset(env)

    # ----------------------------------------------------------------------------- learning
    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 100,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> OfflineAgent:
        """``total_timesteps`` gradient steps (see :meth:`Learner.learn` for the arguments;
        ``log_interval`` counts gradient steps)."""
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    @abstractmethod
    def train_step(self) -> dict[str, torch.Tensor]:
        """One gradient step; returns the values to log (tensors, read at log time only)."""

    def _learn_iteration(self, callback: BaseCallback, log_interval: int) -> bool:
        callback.on_rollout_start()  # a batch of the dataset plays the part of a rollout
        self._update_progress()
        values = self.train_step()
        self.num_timesteps += 1
        self._n_updates += 1
        self._iteration += 1
        if log_interval and self._iteration % log_interval == 0:
            self._check_finite(values)
            for name, value in values.items():
                self.logger.record(f"train/{name}", float(value))
            self._record_time("time/steps_per_second")
            self.logger.dump(self.num_timesteps)
        keep_going = callback.on_step()
        callback.on_rollout_end()
        return keep_going

    # ----------------------------------------------------------------------------- acting
    @abstractmethod
    def _act(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Unit actions for standardized observations ``[B, obs_dim]``; ``state`` is what the
        previous call returned for these episodes (``None`` at a start)."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The policy's action for one observation or a batch (deterministic: offline policies
        here are regressions of the actions).

        Args:
            observation: ``obs_shape`` or ``(batch, *obs_shape)``, unnormalized.
            state: what the previous call returned (policies with a history), or ``None``.
            episode_start: per-env flags; a true flag starts that env's history afresh.
            deterministic: unused (always the policy's action).

        Returns:
            ``(action, state)``.
        """
        obs, batched = self._obs_to_tensor(observation)
        if episode_start is not None and state is not None:
            state = self._reset_state(state, np.asarray(episode_start, bool).reshape(-1))
        self.model.eval()
        with torch.no_grad():
            unit, state = self._act(self.scaler.observations(obs), state)
            action = self.scaler.actions_from_unit(unit.clamp(-1.0, 1.0))
        action = self._env_action(action.cpu().numpy())
        return (action if batched else action[0]), state

    def _reset_state(self, state: Any, starts: np.ndarray) -> Any:
        """``state`` with the episodes flagged in ``starts`` started afresh."""
        return state

    def evaluate(
        self, n_episodes: int = 10, seed: int = 0, reset_options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the policy in the dataset's env.

        Args:
            n_episodes: episodes (env ``reset(seed=seed + i)`` for episode ``i``).
            seed: seed of the first episode.
            reset_options: ``options`` of every ``env.reset`` (e.g. Pendulum's initial-state
                range ``{"x_init": 1.0, "y_init": 1.0}``), to evaluate from the start states the
                dataset was collected from.

        Returns:
            ``returns``, ``lengths``, their mean, and ``normalized`` scores when the
            references are known.
        """

        check_int(n_episodes, "n_episodes")
        if self.env_id is None:
            raise ValueError(f"{self.algo_name} does not know its env: give env_id")
        env = gym.make(self.env_id, **(self.env_kwargs or {}))
        returns, lengths = [], []
        try:
            for i in range(n_episodes):
                obs, _ = env.reset(seed=seed + i, options=reset_options)
                state, total, steps, done = None, 0.0, 0, False
                while not done:
                    action, state = self.predict(obs, state)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    steps += 1
                    done = terminated or truncated
                returns.append(total)
                lengths.append(steps)
        finally:
            env.close()
        result: dict[str, Any] = {
            "returns": returns,
            "lengths": lengths,
            "mean_return": float(np.mean(returns)),
        }
        if self.ref_min_score is not None and self.ref_max_score is not None:
            span = self.ref_max_score - self.ref_min_score
            normalized = [100.0 * (r - self.ref_min_score) / span for r in returns]
            result["normalized"] = normalized
            result["mean_normalized"] = float(np.mean(normalized))
        return result
