"""Rollout storage and generalized advantage estimation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def compute_gae(
    rewards: Array,
    values: Array,
    episode_starts: Array,
    last_values: Array,
    last_episode_starts: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    """GAE(λ) advantages and λ-returns over a ``[T, N]`` rollout.

    ``episode_starts[t]`` marks that ``obs[t]`` begins an episode, so the transition ``t − 1``
    ended one and is not bootstrapped. Time-limit truncations must already have
    ``γ·V(final_obs)`` folded into their reward (see :class:`~mdpo.rl.on_policy.OnPolicyAgent`),
    which bootstraps through truncation but not through termination.

    The arguments are all NumPy arrays (cheapest per step on a CPU) or all tensors (no copy
    off an accelerator).

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
    if isinstance(rewards, torch.Tensor):
        zeros_like = torch.zeros_like
        not_start = (~episode_starts).to(rewards.dtype)
        next_non_terminal = (~last_episode_starts).to(rewards.dtype)
    else:
        zeros_like = np.zeros_like
        not_start = 1.0 - episode_starts.astype(rewards.dtype)
        next_non_terminal = 1.0 - last_episode_starts.astype(rewards.dtype)
    advantages = zeros_like(rewards)
    last_gae = zeros_like(last_values)
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


@dataclass
class ReplaySample:
    """A minibatch of transitions. ``dones`` is 1 for terminations only: truncated episodes
    are bootstrapped from ``next_obs`` (their real final observation)."""

    obs: torch.Tensor
    actions: torch.Tensor
    next_obs: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor


class ReplayBuffer:
    """Circular buffer of transitions, stored as torch tensors on the agent's device.

    Storage grows on demand up to ``capacity`` (a short run does not allocate a million rows),
    then old transitions are overwritten. Actions are stored as the policy produced them
    (squashed into ``[-1, 1]``).

    Args:
        capacity: the most transitions kept.
        obs_dim: flat observation size.
        action_dim: action size.
        device: where the tensors live.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device):
        self.capacity, self.obs_dim, self.action_dim = capacity, obs_dim, action_dim
        self.device = device
        self.pos, self.size = 0, 0
        self._allocate(0)

    def _allocate(self, rows: int) -> None:
        def grown(old: torch.Tensor | None, *shape: int) -> torch.Tensor:
            new = torch.zeros((rows, *shape), dtype=torch.float32, device=self.device)
            if old is not None:
                new[: old.shape[0]] = old
            return new

        self.obs = grown(getattr(self, "obs", None), self.obs_dim)
        self.next_obs = grown(getattr(self, "next_obs", None), self.obs_dim)
        self.actions = grown(getattr(self, "actions", None), self.action_dim)
        self.rewards = grown(getattr(self, "rewards", None))
        self.dones = grown(getattr(self, "dones", None))

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` transitions in all (at most ``capacity``)."""
        rows = min(rows, self.capacity)
        if rows > self.obs.shape[0]:
            self._allocate(rows)

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        next_obs: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
    ) -> None:
        """Append ``M`` transitions (flat ``[M, ...]`` tensors on any device)."""
        count = obs.shape[0]
        if self.obs.shape[0] < min(self.size + count, self.capacity):
            self.reserve(max(2 * self.obs.shape[0], self.size + count, 1024))
        index = (torch.arange(count) + self.pos) % self.capacity
        if count <= self.capacity - self.pos:  # the common case: one contiguous slice
            index = slice(self.pos, self.pos + count)
        columns = (self.obs, self.actions, self.next_obs, self.rewards, self.dones)
        for column, values in zip(columns, (obs, actions, next_obs, rewards, dones)):
            column[index] = values.reshape(count, *column.shape[1:]).to(column)
        self.pos = (self.pos + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplaySample:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("the replay buffer is empty")
        index = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
        return ReplaySample(
            self.obs[index],
            self.actions[index],
            self.next_obs[index],
            self.rewards[index],
            self.dones[index],
        )

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The stored transitions (in storage order) and the write position."""
        rows = self.size
        return {
            "obs": self.obs[:rows].clone(),
            "actions": self.actions[:rows].clone(),
            "next_obs": self.next_obs[:rows].clone(),
            "rewards": self.rewards[:rows].clone(),
            "dones": self.dones[:rows].clone(),
            "pos": torch.tensor(self.pos),
            "capacity": torch.tensor(self.capacity),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` when it does not fit this buffer."""
        rows = int(state["obs"].shape[0])
        shapes = {
            "obs": (rows, self.obs_dim),
            "next_obs": (rows, self.obs_dim),
            "actions": (rows, self.action_dim),
            "rewards": (rows,),
            "dones": (rows,),
        }
        for name, shape in shapes.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(
                    f"replay buffer column {name!r} has shape {tuple(state[name].shape)}, "
                    f"expected {shape}"
                )
        pos = int(state["pos"])
        full = rows == self.capacity
        if rows > self.capacity or (full and not 0 <= pos < rows) or (not full and pos != rows):
            raise ValueError(
                f"replay buffer state holds {rows} rows at position {pos}, which does not fit "
                f"a buffer of capacity {self.capacity}"
            )
        self.pos, self.size = 0, 0
        for name in shapes:  # the data held so far is replaced, not kept
            setattr(self, name, None)
        self._allocate(0)
        self.reserve(rows)
        for name in shapes:
            getattr(self, name)[:rows] = state[name].to(self.device)
        self.size, self.pos = rows, pos
