"""Learning tests: fixed seeds, real thresholds, budgets stated here.

Budgets (measured on the 2-core CI machine, one torch thread): CartPole-v1 100k steps
(about 15 s), Pendulum-v1 150k steps (about 25 s). Hyperparameters are the RL Zoo's tuned
PPO settings for these tasks (without gSDE for Pendulum).
"""

import os

import pytest

from mdpo import MDPO, PPO, SAC, TRPO, OffPolicyMDPO, evaluate_policy
from mdpo.core.utils import linear_schedule

SEED = int(os.environ.get("MDPO_LEARNING_SEED", "0"))


@pytest.mark.learning
def test_ppo_solves_cartpole():
    agent = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_envs=8,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        learning_rate=linear_schedule(1e-3),
        clip_range=linear_schedule(0.2),
        seed=SEED,
        device="cpu",
    )
    agent.learn(100_000)
    mean, std = evaluate_policy(agent, "CartPole-v1", n_eval_episodes=20, seed=1000)
    print(f"CartPole-v1 PPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= 475


@pytest.mark.learning
def test_ppo_swings_up_pendulum():
    agent = PPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_envs=4,
        n_steps=1024,
        batch_size=64,
        gae_lambda=0.95,
        gamma=0.9,
        n_epochs=10,
        learning_rate=1e-3,
        seed=SEED,
        device="cpu",
    )
    agent.learn(150_000)
    mean, std = evaluate_policy(agent, "Pendulum-v1", n_eval_episodes=20, seed=1000)
    print(f"Pendulum-v1 PPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= -300


# TRPO: sb3-contrib defaults on CartPole (40k steps, ~6 s); Pendulum with 2 envs of 1024 steps
# and γ 0.9 (150k steps, ~15 s). MDPO: the paper's defaults on CartPole (40k steps, ~8 s);
# Pendulum (150k steps, ~30 s) with PPO-like minibatches, γ 0.9, an unclipped value loss and a
# constant step size t_k = 1 (the annealed schedule reached -228/-173/-247 over seeds 0-2 with
# 512-step rollouts but failed one seed of three with 1024: the constant one is the steadier).
@pytest.mark.learning
def test_trpo_solves_cartpole():
    agent = TRPO("MlpPolicy", "CartPole-v1", seed=SEED, device="cpu")
    agent.learn(40_960)
    mean, std = evaluate_policy(agent, "CartPole-v1", n_eval_episodes=20, seed=1000)
    print(f"CartPole-v1 TRPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= 475


@pytest.mark.learning
def test_trpo_swings_up_pendulum():
    agent = TRPO(
        "MlpPolicy", "Pendulum-v1", n_envs=2, n_steps=1024, gamma=0.9, seed=SEED, device="cpu"
    )
    agent.learn(150_000)
    mean, std = evaluate_policy(agent, "Pendulum-v1", n_eval_episodes=20, seed=1000)
    print(f"Pendulum-v1 TRPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= -400


@pytest.mark.learning
def test_mdpo_solves_cartpole():
    agent = MDPO("MlpPolicy", "CartPole-v1", seed=SEED, device="cpu")
    agent.learn(40_960)
    mean, std = evaluate_policy(agent, "CartPole-v1", n_eval_episodes=20, seed=1000)
    print(f"CartPole-v1 MDPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= 475


@pytest.mark.learning
def test_mdpo_swings_up_pendulum():
    agent = MDPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_envs=4,
        n_steps=1024,
        gamma=0.9,
        learning_rate=1e-3,
        policy_batch_size=64,
        vf_batch_size=64,
        vf_epochs=10,
        vf_learning_rate=1e-3,
        clip_range_vf=None,
        t_k=1.0,
        seed=SEED,
        device="cpu",
    )
    agent.learn(150_000)
    mean, std = evaluate_policy(agent, "Pendulum-v1", n_eval_episodes=20, seed=1000)
    print(f"Pendulum-v1 MDPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= -400


# Off-policy, Pendulum-v1 (threshold -250, deterministic evaluation): SAC with SB3's defaults
# and the RL Zoo's learning rate 1e-3, 8k steps (~60 s); off-policy MDPO-KL with its defaults
# (λ 0.2, c 1, m 1000) but 1000 warm-up steps instead of 10 000 and learning rate 1e-3, 10k
# steps (~80 s).
@pytest.mark.learning
def test_sac_swings_up_pendulum():
    agent = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=SEED, device="cpu")
    agent.learn(8_000)
    mean, std = evaluate_policy(agent, "Pendulum-v1", n_eval_episodes=20, seed=1000)
    print(f"Pendulum-v1 SAC seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= -250


@pytest.mark.learning
def test_mdpo_off_policy_swings_up_pendulum():
    agent = OffPolicyMDPO(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=1000,
        learning_rate=1e-3,
        seed=SEED,
        device="cpu",
    )
    agent.learn(10_000)
    mean, std = evaluate_policy(agent, "Pendulum-v1", n_eval_episodes=20, seed=1000)
    print(f"Pendulum-v1 OffPolicyMDPO seed {SEED}: {mean:.1f} +/- {std:.1f}")
    assert mean >= -250
