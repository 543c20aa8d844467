"""The runner on environments with known dynamics: autoreset, final observations, bootstrap."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from toy import make_counter

from mdpo import PPO
from mdpo.rl.runners import LeanSyncVectorEnv, Normalizer, VecEnvRunner, make_vec_env


def constant_policy(obs, t):
    action = np.zeros(obs.shape[0], np.int64)
    return action, action


def make_runner(n_envs=2, **counter_kwargs):
    venv = make_vec_env(lambda: make_counter(**counter_kwargs), n_envs)
    runner = VecEnvRunner(venv, torch.device("cpu"), Normalizer((2,)))
    runner.reset(seed=5)
    return runner


def test_autoreset_same_step_and_final_observations():
    runner = make_runner(n_envs=2, terminate_at=3)
    roll = runner.rollout(7, constant_policy)
    t_obs = roll.obs[:, :, 0].numpy()
    # steps in the episode: 0 1 2 | 0 1 2 | 0 (same for both envs)
    np.testing.assert_array_equal(t_obs[:, 0], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(roll.episode_starts[:, 0].numpy(), [1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(roll.terminated[:, 1].numpy(), [0, 0, 1, 0, 0, 1, 0])
    assert not roll.truncated.any()
    # final observations are the terminal ones (t = 3), not the reset observation
    assert roll.final_obs.shape == (4, 2)
    np.testing.assert_array_equal(roll.final_obs[:, 0].numpy(), [3, 3, 3, 3])
    np.testing.assert_array_equal(roll.final_step.numpy(), [2, 2, 5, 5])
    np.testing.assert_array_equal(roll.final_env.numpy(), [0, 1, 0, 1])
    np.testing.assert_array_equal(roll.last_obs[:, 0].numpy(), [1, 1])
    assert list(runner.ep_info_buffer) == [(3.0, 3)] * 4


def test_seeded_reset_gives_each_env_its_own_seed():
    runner = make_runner(n_envs=3)
    starts = runner.reset(seed=11)[:, 1]
    expected = [make_counter().reset(seed=11 + i)[0][1] for i in range(3)]
    np.testing.assert_array_equal(starts, expected)


def test_lean_sync_env_matches_gymnasium_sync_env():
    fns = [lambda: gym.make("CartPole-v1")] * 3
    ours = LeanSyncVectorEnv(fns)
    theirs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    rng = np.random.default_rng(0)
    o1, _ = ours.reset(seed=3)
    o2, _ = theirs.reset(seed=3)
    np.testing.assert_array_equal(o1, o2)
    for _ in range(300):
        actions = rng.integers(0, 2, size=3)
        r1, r2 = ours.step(actions), theirs.step(actions)
        for a, b in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(a, b)
        if r2[4].get("_final_obs") is not None and r2[4]["_final_obs"].any():
            mask = r2[4]["_final_obs"]
            np.testing.assert_array_equal(r1[4]["_final_obs"], mask)
            for i in np.flatnonzero(mask):
                np.testing.assert_array_equal(r1[4]["final_obs"][i], r2[4]["final_obs"][i])


@pytest.mark.parametrize(
    "kwargs,truncate",
    [
        ({"max_episode_steps": 4}, True),
        ({"terminate_at": 4}, False),
        ({"terminate_at": 4, "max_episode_steps": 4}, False),  # both: a terminal state wins
    ],
)
def test_bootstrap_through_truncation_not_termination(kwargs, truncate):
    """V(s) = 10·t through a hand-set value head; truncated episodes must get γ·V(final)."""
    agent = PPO(
        "MlpPolicy",
        lambda: make_counter(**kwargs),
        n_steps=6,
        batch_size=6,
        gamma=0.5,
        gae_lambda=1.0,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": {"pi": [4], "vf": []}},
    )
    with torch.no_grad():  # value head reads the raw observation: V = 10·t
        agent.policy.value_net.weight.copy_(torch.tensor([[10.0, 0.0]]))
        agent.policy.value_net.bias.zero_()
    agent.runner.reset(seed=0)
    roll = agent.runner.rollout(6, agent._rollout_policy())
    batch = agent._process_rollout(roll)
    # t: 0 1 2 3 | 0 1, episode ends on the 4th transition (index 3) with final obs t = 4
    returns = batch.returns.numpy()
    bootstrap = 0.5 * 40.0 if truncate else 0.0  # γ·V(final obs) only when truncated
    ep1 = [1 + 0.5 * (1 + 0.5 * (1 + 0.5 * (1 + bootstrap))), 0, 0, 0]
    ep1[1] = 1 + 0.5 * (1 + 0.5 * (1 + bootstrap))
    ep1[2] = 1 + 0.5 * (1 + bootstrap)
    ep1[3] = 1 + bootstrap
    last_v = 10.0 * 2  # after 6 steps the obs is t = 2
    ep2 = [1 + 0.5 * (1 + 0.5 * last_v), 1 + 0.5 * last_v]
    np.testing.assert_allclose(returns, ep1 + ep2, rtol=1e-6)


def test_vector_env_in_next_step_mode_is_refused():
    venv = SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="SAME_STEP"):
        make_vec_env(venv)
