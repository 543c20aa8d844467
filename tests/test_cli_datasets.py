"""Datasets made from our own agents (mdpo.cli.datasets): teachers and collection."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mdpo.cli.datasets import Teacher, collect, episodes_from_transitions, random_actor


# ----------------------------------------------------------------------------------- making
def test_episodes_from_transitions_and_collect():
    arrays = {
        "obs": np.arange(5, dtype=np.float32)[:, None],
        "next_obs": np.arange(1, 6, dtype=np.float32)[:, None],
        "actions": np.zeros((5, 1), np.float32),
        "rewards": np.ones(5),
        "terminations": np.array([False, True, False, False, False]),
        "truncations": np.zeros(5, bool),
        "first": np.array([True, False, True, False, False]),
    }
    episodes = episodes_from_transitions(arrays)
    assert [e.length for e in episodes] == [2, 3]
    assert episodes[0].terminations.tolist() == [False, True]
    assert episodes[1].truncations.tolist() == [False, False, True]  # cut by the stream's end
    np.testing.assert_array_equal(episodes[1].observations[:, 0], [2, 3, 4, 5])
    env = gym.make("Pendulum-v1")
    a = collect("Pendulum-v1", random_actor(env.action_space, 3), 3, steps=450)
    b = collect("Pendulum-v1", random_actor(env.action_space, 3), 3, steps=450)
    assert [e.length for e in a] == [200, 200, 50] and a[-1].truncations[-1]
    for x, y in zip(a, b, strict=True):  # deterministic given the seed
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.observations, y.observations)


def test_teacher_picks_expert_and_medium(tmp_path):
    teacher = Teacher(str(tmp_path), "Pendulum-v1", "PPO", 4096, 0, 1024)
    returns = [-1500.0, -1100.0, -700.0, -300.0, -500.0]
    teacher.state = {
        "complete": True,
        "references": {"random": -1200.0, "expert": -300.0},
        "snapshots": [{"step": 1000 * (i + 1), "mean_return": r} for i, r in enumerate(returns)],
    }
    assert teacher.expert()["step"] == 4000
    # a third of the way from random (-1200) to expert (-300): -900; -1100 and -700 tie at
    # 200 away, the first wins
    assert teacher.medium()["step"] == 2000
    with pytest.raises(ValueError, match="unknown teacher algorithm 'OPPO'"):
        Teacher(str(tmp_path / "x"), "Pendulum-v1", "OPPO")
