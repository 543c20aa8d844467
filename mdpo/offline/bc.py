"""Behaviour cloning and filtered behaviour cloning: the offline baselines of OPPO.

``BC`` regresses the dataset's actions on its observations with an MLP and a tanh output
(mean squared error, actions scaled to [-1, 1]); ``filter_fraction=0.1`` trains on the 10% of
episodes of highest return only ("filtered BC", %BC in the Decision Transformer paper, by
episodes here). Same evaluation, normalization and model files as OPPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_int, check_number, check_sizes, mlp
from mdpo.offline.dataset import OfflineDataset
from mdpo.offline.learner import DatasetScaler, OfflineAgent


class BCPolicy(nn.Module):
    """``π(a | s)``: an MLP with a tanh output in [-1, 1], and the dataset's scaling.

    Args:
        obs_dim, act_dim: sizes.
        action_space: the env's action space (for the scaling buffers).
        net_arch: hidden layer sizes (``[256, 256]``).
        activation_fn: activation name (``"relu"``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_space,
        net_arch: list[int] | None = None,
        activation_fn: str = "relu",
    ):
        super().__init__()
        sizes = check_sizes(list([256, 256] if net_arch is None else net_arch))
        self.scaler = DatasetScaler(obs_dim, action_space)
        self.body = mlp(obs_dim, sizes, activation_fn)
        self.head = nn.Linear(sizes[-1] if sizes else obs_dim, act_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Unit actions for standardized observations."""
        return torch.tanh(self.head(self.body(observations)))


@register_algorithm
class BC(OfflineAgent):
    """Behaviour cloning (``filter_fraction=1``) or filtered BC (``filter_fraction=0.1``).

    A "timestep" of :meth:`learn` is one gradient step on ``batch_size`` transitions.

    Args:
        policy: ``"MlpPolicy"``.
        dataset: an :class:`~mdpo.offline.dataset.OfflineDataset` or a Minari dataset id / folder.
        learning_rate: Adam's learning rate (1e-4, OPPO's).
        batch_size: transitions per step (256).
        weight_decay: AdamW weight decay (1e-4, OPPO's).
        filter_fraction: train on the episodes of the top fraction of returns (1: all).
        max_grad_norm: gradient norm clip (0.25, OPPO's; ``None``: none).
        env_id, env_kwargs, ref_min_score, ref_max_score, data_root, policy_kwargs,
            tensorboard_log, verbose, seed, device: see :class:`OfflineAgent`.
    """

    algo_name = "BC"
    policy_aliases = {"MlpPolicy": BCPolicy}

    def __init__(
        self,
        policy: str | type[nn.Module],
        dataset: OfflineDataset | str | None,
        learning_rate: float | Schedule = 1e-4,
        batch_size: int = 256,
        weight_decay: float = 1e-4,
        filter_fraction: float = 1.0,
        max_grad_norm: float | None = 0.25,
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
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            dataset,
            learning_rate,
            env_id,
            env_kwargs,
            ref_min_score,
            ref_max_score,
            data_root,
            policy_kwargs,
            tensorboard_log,
            verbose,
            seed,
            device,
        )
        self.batch_size = check_int(batch_size, "batch_size")
        check_number(weight_decay, "weight_decay", non_negative=True)
        self.weight_decay = weight_decay
        check_number(filter_fraction, "filter_fraction", positive=True)
        if filter_fraction > 1:
            raise ValueError(f"filter_fraction must be in (0, 1], got {filter_fraction!r}")
        self.filter_fraction = float(filter_fraction)
        if max_grad_norm is not None:
            check_number(max_grad_norm, "max_grad_norm", positive=True)
        self.max_grad_norm = max_grad_norm
        self._finish_init(_init_setup_model)

    def _setup_model(self) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        self.model = self.policy_class(
            obs_dim, act_dim, self.action_space, **self.policy_kwargs
        ).to(self.device)
        self.policy = self.model
        self.scaler = self.model.scaler
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr_schedule(1.0), weight_decay=self.weight_decay
        )

    def _state_modules(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer}

    def _dataset_changed(self) -> None:
        data = (
            self.data.top_episodes(self.filter_fraction) if self.filter_fraction < 1 else self.data
        )
        obs, act = data.flat_transitions()
        self._train_obs = torch.as_tensor(self.scaler.observations(obs), device=self.device)
        self._train_actions = torch.as_tensor(self.scaler.actions_to_unit(act), device=self.device)
        self.train_episodes = len(data)

    def bc_loss(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``mean ‖π(s) − a‖²`` over a batch (per action dimension)."""
        return (self.model(observations) - actions).square().mean()

    def train_step(self) -> dict[str, torch.Tensor]:
        """One gradient step on a uniform batch of transitions."""
        self.model.train()
        self._update_learning_rate(self.optimizer)
        index = torch.randint(len(self._train_obs), (self.batch_size,), generator=self.rng)
        index = index.to(self.device)
        loss = self.bc_loss(self._train_obs[index], self._train_actions[index])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return {"loss": loss.detach()}

    def _act(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.model(obs), state
