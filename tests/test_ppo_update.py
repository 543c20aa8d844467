"""PPO's update against Stable-Baselines3's on identical weights and data.

SB3's ``PPO.train`` is the reference the issue names ("exactly as SB3's"). With the minibatch
equal to the whole rollout the two shuffles cannot differ, so after a few epochs the
parameters of both must agree to float precision.
"""

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import configure

from mdpo import PPO
from mdpo.rl.buffers import RolloutBatch


def sb3_buffer_from(batch, agent, n_steps):
    obs_space, act_space = agent.observation_space, agent.action_space
    buf = RolloutBuffer(n_steps, obs_space, act_space, device="cpu", n_envs=1)
    buf.observations[:] = batch.obs.numpy().reshape(buf.observations.shape)
    buf.actions[:] = batch.actions.numpy().reshape(buf.actions.shape)
    buf.values[:] = batch.old_values.numpy().reshape(n_steps, 1)
    buf.log_probs[:] = batch.old_log_prob.numpy().reshape(n_steps, 1)
    buf.advantages[:] = batch.advantages.numpy().reshape(n_steps, 1)
    buf.returns[:] = batch.returns.numpy().reshape(n_steps, 1)
    buf.pos, buf.full = n_steps, True
    return buf


@pytest.mark.parametrize(
    "env_id,extra",
    [
        ("Pendulum-v1", {}),
        ("Pendulum-v1", {"clip_range_vf": 0.1, "ent_coef": 0.01, "clip_range": 0.05}),
        ("Pendulum-v1", {"batch_size": 48, "target_kl": 0.04, "n_epochs": 10}),
        ("CartPole-v1", {"ent_coef": 0.01, "batch_size": 32}),
    ],
)
def test_update_equals_sb3(env_id, extra, monkeypatch):
    """Minibatches, epochs, early stop and logged values as SB3's, with SB3's shuffles."""
    n_steps = 128
    hyper = dict(n_steps=n_steps, batch_size=n_steps, n_epochs=4, learning_rate=3e-3)
    hyper.update(extra)
    ours = PPO("MlpPolicy", env_id, seed=1, device="cpu", **hyper)
    theirs = SB3PPO("MlpPolicy", env_id, seed=1, device="cpu", **hyper)
    ours.runner.reset(seed=1)
    batch = ours._process_rollout(ours.runner.rollout(n_steps, ours._rollout_policy()))
    # make the update non-trivial: move the policy away from the one that collected the data
    with torch.no_grad():
        ours.policy.action_net.bias.add_(0.3)
    before = {k: v.clone() for k, v in ours.policy.state_dict().items()}
    theirs.policy.load_state_dict(before)  # same key names as SB3's policy
    theirs.rollout_buffer = sb3_buffer_from(batch, ours, n_steps)
    theirs._current_progress_remaining = ours._current_progress_remaining = 1.0
    theirs.set_logger(configure(None, []))

    # SB3 draws one np.random permutation per epoch; give ours the same ones
    np.random.seed(5)
    orders = iter(
        [torch.as_tensor(np.random.permutation(n_steps)) for _ in range(hyper["n_epochs"])]
    )

    def sb3_order_minibatches(self, batch_size, generator=None):
        shuffled = self[next(orders)]
        for start in range(0, len(self), batch_size):
            yield shuffled[start : start + batch_size]

    monkeypatch.setattr(RolloutBatch, "minibatches", sb3_order_minibatches)
    np.random.seed(5)
    theirs.train()
    ours.train(batch)

    mine = ours.policy.state_dict()
    for key, value in theirs.policy.state_dict().items():
        torch.testing.assert_close(mine[key], value, rtol=1e-4, atol=2e-6, msg=key)
    assert any(not torch.equal(mine[k], before[k]) for k in before), "the update moved nothing"
    assert ours._n_updates == theirs._n_updates
    logged = theirs.logger.name_to_value
    for key in (
        "policy_gradient_loss",
        "value_loss",
        "entropy_loss",
        "approx_kl",
        "clip_fraction",
        "loss",
        "explained_variance",
        "std",
        "n_updates",
    ):
        if key == "std" and env_id == "CartPole-v1":
            continue
        assert ours.logger.values[f"train/{key}"] == pytest.approx(
            logged[f"train/{key}"], rel=1e-4, abs=1e-6
        ), key
    if "target_kl" in extra:
        assert ours._n_updates < hyper["n_epochs"], "the case is meant to stop early"


def test_target_kl_stops_the_epochs_early():
    agent = PPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=256,
        batch_size=32,
        n_epochs=10,
        learning_rate=1e-2,
        target_kl=1e-4,
        seed=0,
        device="cpu",
    )
    agent.learn(256)
    assert 0 < agent._n_updates < 10  # epochs run, counted as SB3 does


@pytest.mark.parametrize("log_ratio,moves", [(0.5, False), (0.1, True), (-0.5, True)])
def test_clipped_branch_has_no_policy_gradient(log_ratio, moves):
    """One sample with advantage +1: past 1 + ε the clipped term (1 + ε)·Â is the minimum and
    carries no gradient, so the policy must not move; inside the clip, or below 1 − ε (where
    the unclipped term is the minimum), it must."""
    agent = PPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=8,
        batch_size=1,
        n_epochs=1,
        seed=0,
        device="cpu",
        normalize_advantage=False,
        vf_coef=0.0,
        clip_range=0.2,
    )
    obs, action = torch.zeros(1, 3), torch.full((1, 1), 0.3)
    with torch.no_grad():
        _, log_prob, _ = agent.policy.evaluate_actions(obs, action)
        value = agent.policy.predict_values(obs)
    batch = RolloutBatch(
        obs,
        action,
        value,
        log_prob - log_ratio,
        torch.ones(1),
        value,
        old_dist_params=torch.zeros(1, 1),
    )
    before = agent.policy.action_net.bias.detach().clone()
    agent.train(batch)
    changed = not torch.equal(agent.policy.action_net.bias, before)
    assert changed == moves


@pytest.mark.parametrize("env_id,max_steps", [("Hopper-v5", 40), ("Pendulum-v1", 50)])
def test_learn_equals_sb3_end_to_end(env_id, max_steps, monkeypatch):
    """Collection, truncation bootstrap, GAE and updates together: four iterations of
    ``learn`` from the same weights, env seeds, action noise and shuffles end with SB3's
    parameters. Short time limits make the rollouts cross truncations (and, on Hopper,
    terminations)."""
    import gymnasium as gym
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.vec_env import DummyVecEnv

    n_steps, iterations = 256, 4
    hyper = dict(n_steps=n_steps, batch_size=64, n_epochs=3)
    ours = PPO(
        "MlpPolicy",
        env_id,
        seed=3,
        device="cpu",
        env_kwargs={"max_episode_steps": max_steps},
        **hyper,
    )
    venv = DummyVecEnv([lambda: gym.make(env_id, max_episode_steps=max_steps)])
    theirs = SB3PPO("MlpPolicy", venv, seed=3, device="cpu", **hyper)
    theirs.policy.load_state_dict(ours.policy.state_dict())

    # ours draws each rollout's noise as one randn((n_steps, n_envs, dim)) from self.rng
    ours.rng = torch.Generator().manual_seed(123)
    generator = torch.Generator().manual_seed(123)
    dim = ours.policy.action_dim
    rows = iter(
        [
            row
            for _ in range(iterations)
            for row in torch.randn((n_steps, 1, dim), generator=generator)[:, 0]
        ]
    )
    monkeypatch.setattr(
        DiagGaussianDistribution,
        "sample",
        lambda self: self.distribution.mean + self.distribution.stddev * next(rows),
    )

    # SB3 draws one np.random.permutation per epoch; record them and replay them to ours
    permutations = []
    permutation = np.random.permutation

    def recording_permutation(n):
        permutations.append(permutation(n))
        return permutations[-1]

    def replayed_minibatches(self, batch_size, generator=None):
        shuffled = self[torch.as_tensor(permutations.pop(0))]
        for start in range(0, len(self), batch_size):
            yield shuffled[start : start + batch_size]

    monkeypatch.setattr(np.random, "permutation", recording_permutation)
    theirs.learn(n_steps * iterations)
    monkeypatch.setattr(np.random, "permutation", permutation)
    monkeypatch.setattr(RolloutBatch, "minibatches", replayed_minibatches)
    before = {k: v.clone() for k, v in ours.policy.state_dict().items()}
    ours.learn(n_steps * iterations)

    assert not permutations, "both ran the same number of epochs"
    mine = ours.policy.state_dict()
    for key, value in theirs.policy.state_dict().items():
        torch.testing.assert_close(mine[key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert all(not torch.equal(mine[k], before[k]) for k in before), "learning moved nothing"
