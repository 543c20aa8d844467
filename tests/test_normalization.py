"""Running statistics and VecNormalize-style normalization against direct computations."""

import numpy as np

from mdpo.rl.runners import Normalizer, RunningMeanStd


def test_running_mean_std_equals_batch_statistics():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 32, 5)]
    rms = RunningMeanStd((4,), epsilon=0.0)
    rms.count = 0.0
    rms.mean[:] = 0.0
    rms.var[:] = 0.0
    for batch in batches:
        if rms.count == 0:  # first batch defines the statistics when epsilon is 0
            rms.mean, rms.var, rms.count = batch.mean(0), batch.var(0), batch.shape[0]
        else:
            rms.update(batch)
    allx = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-12)
    assert rms.count == len(allx)


def test_observation_normalization_and_clip():
    norm = Normalizer((2,), normalize_obs=True, clip_obs=10.0)
    data = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], np.float32)
    norm.obs(data, update=True)
    # epsilon-count prior of 1e-4 at mean 0 / var 1, then three samples
    count = 1e-4 + 3
    mean = np.array([2.0, 1.0]) * 3 / count
    out = norm.obs(np.array([[2.0, 1.0]], np.float32))
    expected = (np.array([2.0, 1.0]) - mean) / np.sqrt(norm.obs_rms.var + 1e-8)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    far = norm.obs(np.array([[1e6, -1e6]], np.float32))
    np.testing.assert_array_equal(far, [[10.0, -10.0]])
    assert out.dtype == np.float32


def test_reward_normalization_divides_by_return_std():
    norm = Normalizer((1,), normalize_reward=True, gamma=0.5)
    rewards = [np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0])]
    dones = [np.array([False, False]), np.array([False, True]), np.array([False, False])]
    returns = np.zeros(2)
    seen = []
    ret_rms = RunningMeanStd(())
    for reward, done in zip(rewards, dones):
        out = norm.reward(reward, done)
        returns = returns * 0.5 + reward
        seen.append(returns.copy())
        ret_rms.update(returns)
        np.testing.assert_allclose(out, reward / np.sqrt(ret_rms.var + 1e-8), rtol=1e-6)
        returns[done] = 0.0
    np.testing.assert_allclose(norm.ret_rms.var, ret_rms.var)


def test_state_dict_round_trip():
    norm = Normalizer((3,), normalize_obs=True, normalize_reward=True)
    norm.obs(np.random.default_rng(0).normal(size=(10, 3)), update=True)
    norm.reward(np.ones(2), np.zeros(2, bool))
    other = Normalizer((3,))
    other.load_state_dict(norm.state_dict())
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(other.obs(x), norm.obs(x))
    assert other.normalize_reward and other.ret_rms.var == norm.ret_rms.var


def test_runner_normalization_equals_vecnormalize():
    """Observations (terminal ones included) and rewards as SB3's VecNormalize gives them."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from mdpo.rl.runners import VecEnvRunner, make_vec_env

    theirs = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2), gamma=0.95)
    theirs.seed(4)
    their_obs = theirs.reset()
    runner = VecEnvRunner(
        make_vec_env("CartPole-v1", 2),
        torch.device("cpu"),
        Normalizer((4,), normalize_obs=True, normalize_reward=True, gamma=0.95),
    )
    our_obs = runner.reset(seed=4)
    np.testing.assert_allclose(our_obs, their_obs, rtol=1e-5, atol=1e-6)
    actions = np.random.default_rng(0).integers(0, 2, size=(300, 2))
    roll = runner.rollout(300, lambda obs, t: (actions[t], actions[t]))
    finals = iter(roll.final_obs.numpy())
    for t in range(300):
        their_obs, their_rew, dones, infos = theirs.step(actions[t])
        np.testing.assert_allclose(roll.rewards[t].numpy(), their_rew, rtol=1e-5, atol=1e-6)
        next_obs = roll.obs[t + 1].numpy() if t + 1 < 300 else roll.last_obs.numpy()
        np.testing.assert_allclose(next_obs, their_obs, rtol=1e-5, atol=1e-5)
        for i in np.flatnonzero(dones):
            np.testing.assert_allclose(
                next(finals), infos[i]["terminal_observation"], rtol=1e-5, atol=1e-5
            )
    assert len(roll.final_obs) > 3
