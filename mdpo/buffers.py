"""Rollout storage and generalized advantage estimation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_episode_starts: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(λ) advantages and λ-returns over a ``[T, N]`` rollout.

    ``episode_starts[t]`` marks that ``obs[t]`` begins an episode, so the transition ``t − 1``
    ended one and is not bootstrapped. Time-limit truncations must already have
    ``γ·V(final_obs)`` folded into their reward (see :class:`~mdpo.agents.on_policy.OnPolicyAgent`),
    which bootstraps through truncation but not through termination.

    Args:
        rewards: ``[T, N]`` rewards.
        values: ``[T, N]`` value estimates ``V(obs[t])``.
        episode_starts: ``[T, N]`` episode-start flags of ``obs[t]``.
        last_values: ``[N]`` ``V`` of the observation after the last step.
        last_episode_starts: ``[N]`` whether that observation begins an episode.
        gamma: discount factor.
        gae_lambda: GAE's λ.

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` with ``returns = advantages + values``.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    last_gae = np.zeros_like(last_values)
    not_start = 1.0 - episode_starts.astype(rewards.dtype)
    next_non_terminal = 1.0 - last_episode_starts.astype(rewards.dtype)
    next_values = last_values
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
        advantages[t] = last_gae
        next_values, next_non_terminal = values[t], not_start[t]
    return advantages, advantages + values


@dataclass
class RolloutBatch:
    """Flat on-policy samples, all on one device.

    ``old_dist_params`` are the Gaussian means or categorical logits of the policy that
    collected the data (KL-based updates need the whole old distribution).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    old_dist_params: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def columns(self) -> tuple[torch.Tensor, ...]:
        """The tensors in declaration order (no copy)."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def __getitem__(self, index: torch.Tensor | slice) -> RolloutBatch:
        return RolloutBatch(*(column[index] for column in self.columns()))

    def minibatches(
        self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[RolloutBatch]:
        """Minibatches over a random permutation.

        The last one may be smaller (as SB3), or is dropped with ``drop_last`` (unless it is
        the only one).
        """
        size = len(self)
        shuffled = self[torch.randperm(size, generator=generator).to(self.obs.device)]
        stop = size - size % batch_size if drop_last and size >= batch_size else size
        for start in range(0, stop, batch_size):  # slices of the shuffled copy are views
            yield shuffled[start : start + batch_size]
