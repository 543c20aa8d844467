"""GAE against a plain per-episode loop written from the definition."""

import numpy as np
import pytest

from mdpo.rl.buffers import compute_gae


def reference_gae(rewards, values, dones, bootstrap, gamma, lam):
    """Per env, per step: δ_t = r_t + γ V_{t+1} (1 − done_t) − V_t; A_t = Σ (γλ)^k δ_{t+k}
    within the episode. ``dones[t]`` means transition t ended the episode; ``bootstrap`` is V
    after the last step."""
    steps, n_envs = rewards.shape
    adv = np.zeros_like(rewards)
    for env in range(n_envs):
        deltas = []
        for t in range(steps):
            next_value = values[t + 1, env] if t + 1 < steps else bootstrap[env]
            not_done = 0.0 if dones[t, env] else 1.0
            deltas.append(rewards[t, env] + gamma * next_value * not_done - values[t, env])
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                total += weight * deltas[k]
                if dones[k, env]:
                    break
                weight *= gamma * lam
            adv[t, env] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (1.0, 0.0)])
def test_gae_matches_plain_loop(gamma, lam):
    rng = np.random.default_rng(0)
    steps, n_envs = 40, 3
    rewards = rng.normal(size=(steps, n_envs)).astype(np.float64)
    values = rng.normal(size=(steps, n_envs))
    dones = rng.random((steps, n_envs)) < 0.15
    last_values = rng.normal(size=n_envs)
    # episode_starts[t] = the previous transition ended an episode
    starts = np.zeros_like(dones)
    starts[1:] = dones[:-1]
    starts[0] = True
    adv, ret = compute_gae(rewards, values, starts, last_values, dones[-1], gamma, lam)
    expected = reference_gae(rewards, values, dones, last_values, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-10, atol=1e-10)
    # the same on tensors (the path of accelerators): same numbers, tensors back
    import torch

    tensors = [torch.from_numpy(x) for x in (rewards, values, starts, last_values, dones[-1])]
    adv_t, ret_t = compute_gae(*tensors, gamma, lam)
    assert isinstance(adv_t, torch.Tensor) and isinstance(ret_t, torch.Tensor)
    np.testing.assert_allclose(adv_t.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret_t.numpy(), expected + values, rtol=1e-10, atol=1e-10)


def test_gae_with_lambda_one_gives_discounted_returns():
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.zeros_like(rewards)
    starts = np.array([[True], [False], [False], [True]])  # episode ends after step 2
    _, ret = compute_gae(rewards, values, starts, np.array([10.0]), np.array([False]), 0.5, 1.0)
    # hand-computed: 1 + .5·2 + .25·3 ; 2 + .5·3 ; 3 ; 4 + .5·10
    np.testing.assert_allclose(ret[:, 0], [2.75, 3.5, 3.0, 9.0])


def test_gae_matches_sb3_rollout_buffer():
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rng = np.random.default_rng(3)
    steps, n_envs = 32, 4
    buf = RolloutBuffer(
        steps,
        spaces.Box(-1, 1, (2,)),
        spaces.Discrete(2),
        "cpu",
        gae_lambda=0.9,
        gamma=0.97,
        n_envs=n_envs,
    )
    buf.rewards[:] = rng.normal(size=(steps, n_envs))
    buf.values[:] = rng.normal(size=(steps, n_envs))
    buf.episode_starts[:] = rng.random((steps, n_envs)) < 0.2
    last_values, dones = rng.normal(size=n_envs), rng.random(n_envs) < 0.5
    adv, ret = compute_gae(
        buf.rewards, buf.values, buf.episode_starts, last_values, dones, 0.97, 0.9
    )
    buf.compute_returns_and_advantage(torch.as_tensor(last_values), dones)
    np.testing.assert_allclose(adv, buf.advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, buf.returns, rtol=1e-5, atol=1e-6)
