"""Small environments with known dynamics, for tests and examples."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observation ``[t, start]`` counts steps in the episode; every reward is 1.

    The episode terminates after ``terminate_at`` steps (when given); wrap it in a
    ``TimeLimit`` to truncate instead. ``start`` is drawn from the reset seed, so seeding is
    observable. Knowing obs, rewards and ends exactly lets tests check autoreset, final
    observations and bootstrapping.

    Args:
        terminate_at: terminate on this step (``None``: never).
        continuous: a Box action space ``[-1, 1]`` instead of ``Discrete(2)``; the action
            does not influence anything.
    """

    metadata = {"render_modes": []}

    def __init__(self, terminate_at: int | None = None, continuous: bool = False):
        self.terminate_at = terminate_at
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = (
            spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else spaces.Discrete(2)
        )
        self.t = 0
        self.start = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.start], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.start = float(self.np_random.integers(0, 1000))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._obs(), 1.0, terminated, False, {}


def make_counter(
    terminate_at: int | None = None, max_episode_steps: int | None = None, continuous: bool = False
) -> gym.Env:
    """A :class:`CounterEnv`, truncated by a ``TimeLimit`` when ``max_episode_steps`` is given."""
    env: gym.Env = CounterEnv(terminate_at, continuous)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    return env
