"""Hand-made offline data for the tests: two short episodes whose numbers are easy to follow."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mdpo.offline.dataset import Episode, OfflineDataset

BOX1 = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
OBS2 = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


def hand_episode(length: int, first_reward: float, obs_offset: float = 0.0) -> Episode:
    """Observations ``[t + offset, -t]``, actions ``t / 10``, rewards ``first_reward + t``."""
    t = np.arange(length + 1, dtype=np.float32)
    obs = np.stack([t + obs_offset, -t], axis=1)
    actions = (np.arange(length, dtype=np.float32) / 10.0)[:, None]
    rewards = first_reward + np.arange(length, dtype=np.float64)
    terminations = np.zeros(length, bool)
    truncations = np.zeros(length, bool)
    truncations[-1] = True
    return Episode(obs, actions, rewards, terminations, truncations)


def hand_dataset() -> OfflineDataset:
    """Two episodes: 5 steps with rewards 0..4 and 3 steps with rewards 10..12."""
    return OfflineDataset(
        [hand_episode(5, 0.0), hand_episode(3, 10.0, 100.0)],
        "Pendulum-v1",
        OBS2,
        BOX1,
        ref_min_score=-10.0,
        ref_max_score=10.0,
    )
