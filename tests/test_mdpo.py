"""On-policy MDPO: the KL term, the step-size schedule, and m = 1 as a policy-gradient step."""

import copy
import math

import numpy as np
import pytest
import torch

from mdpo import MDPO, BaseCallback
from mdpo.rl.mdpo_on import step_size_t_k, tsallis_log
from mdpo.rl.networks import categorical_kl, gaussian_kl, gaussian_log_prob


def test_gaussian_kl_against_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean_p, mean_q = torch.tensor([0.3, -1.0]), torch.tensor([-0.2, -0.5])
    log_std_p, log_std_q = torch.tensor([-0.3, 0.2]), torch.tensor([0.1, -0.4])
    samples = mean_p + torch.exp(log_std_p) * torch.randn(400_000, 2, generator=g)
    estimate = (
        gaussian_log_prob(samples, mean_p, log_std_p)
        - gaussian_log_prob(samples, mean_q, log_std_q)
    ).mean()
    exact = gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    assert float(exact) == pytest.approx(float(estimate), abs=0.01)
    assert float(gaussian_kl(mean_p, log_std_p, mean_p, log_std_p)) == 0.0


def test_categorical_kl_against_monte_carlo():
    logits_p, logits_q = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, 0.3, 1.0])
    p, q = torch.softmax(logits_p, -1), torch.softmax(logits_q, -1)
    draws = torch.multinomial(
        p, 200_000, replacement=True, generator=torch.Generator().manual_seed(1)
    )
    estimate = torch.log(p[draws] / q[draws]).mean()
    assert float(categorical_kl(logits_p, logits_q)) == pytest.approx(float(estimate), abs=0.01)


def test_mdpo_divergence_is_new_to_old():
    """The objective's KL is KL(π_θ ‖ π_k): with only π_θ's std changed it is not symmetric."""
    agent = MDPO("MlpPolicy", "Pendulum-v1", n_steps=64, vf_batch_size=64, seed=0, device="cpu")
    agent.runner.reset(seed=0)
    batch = agent._process_rollout(agent.runner.rollout(64, agent._rollout_policy()))
    old_log_std = agent.policy.log_std.detach().clone()
    with torch.no_grad():
        agent.policy.log_std.add_(0.5)
        params = agent.policy.distribution_params(batch.obs)
        log_prob, _ = agent.policy.log_prob_entropy(params, batch.actions)
        div = agent.divergence(
            batch.old_dist_params, batch.old_log_prob, params, log_prob, old_log_std
        )
    # KL(N(μ, e^{2(s+.5)}) ‖ N(μ, e^{2s})) = (e − 1)/2 − 0.5 per dimension
    assert float(div) == pytest.approx((math.e - 1) / 2 - 0.5, rel=1e-5)


def test_step_size_schedule_values():
    assert [step_size_t_k(k, 4, "annealed") for k in (1, 2, 3, 4)] == [1.0, 0.75, 0.5, 0.25]
    assert step_size_t_k(9, 4, "annealed") == 0.25  # floored at 1/K past the budget
    assert step_size_t_k(3, 4, 0.3) == 0.3
    assert tsallis_log(torch.tensor(2.0), 1.0) == pytest.approx(math.log(2.0))
    assert float(tsallis_log(torch.tensor(2.0), 0.5)) == pytest.approx((2**0.5 - 1) / 0.5)


def test_t_k_follows_the_real_budget():
    seen = []

    class Watch(BaseCallback):
        def _on_rollout_start(self):  # after the previous iteration's update
            seen.append(self.model.logger.values.get("train/t_k"))

    agent = MDPO("MlpPolicy", "CartPole-v1", n_steps=64, vf_batch_size=64, seed=0, device="cpu")
    agent.learn(320, log_interval=0, callback=Watch())  # no dumps: values stay readable
    seen.append(agent.logger.values["train/t_k"])
    # K = 320 / 64 = 5 iterations: t_k = 1, 0.8, 0.6, 0.4, 0.2
    assert seen[1:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def test_t_k_continues_when_training_resumes(tmp_path):
    agent = MDPO("MlpPolicy", "CartPole-v1", n_steps=64, vf_batch_size=64, seed=0, device="cpu")
    agent.learn(128, log_interval=0)  # a run of K = 4 iterations killed after 2
    agent._total_timesteps = 256
    path = agent.save(str(tmp_path / "ckpt"))
    resumed = MDPO.load(path, env="CartPole-v1", device="cpu")
    resumed.learn(128, reset_num_timesteps=False, log_interval=0)  # the CLI's resume
    assert resumed.logger.values["train/t_k"] == pytest.approx(0.25)  # k = 4 of K = 4


def test_two_steps_equal_the_hand_written_objective():
    """m = 2, constant t_k = 0.5: Adam on −(mean(r·Â) − KL(π_θ ‖ π_k)/t_k), the KL from
    torch.distributions (an independent implementation)."""
    from torch.distributions import Normal, kl_divergence

    agent = MDPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=256,
        n_policy_steps=2,
        vf_epochs=0,
        learning_rate=3e-2,
        t_k=0.5,
        seed=0,
        device="cpu",
    )
    agent.runner.reset(seed=0)
    batch = agent._process_rollout(agent.runner.rollout(256, agent._rollout_policy()))
    reference = copy.deepcopy(agent.policy)
    actor = reference.actor_parameters()
    optimizer = torch.optim.Adam(actor, lr=3e-2, eps=1e-5)
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    old = Normal(batch.old_dist_params, agent.policy.log_std.detach().exp())
    for _ in range(2):
        new = Normal(reference.distribution_params(batch.obs), reference.log_std.exp())
        ratio = torch.exp(new.log_prob(batch.actions).sum(-1) - batch.old_log_prob)
        objective = (ratio * adv).mean() - kl_divergence(new, old).sum(-1).mean() / 0.5
        optimizer.zero_grad()
        (-objective).backward()
        torch.nn.utils.clip_grad_norm_(actor, 0.5)
        optimizer.step()
    agent.train(batch)
    for mine, theirs in zip(agent.policy.actor_parameters(), actor):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_tsallis_divergence_tends_to_the_kl():
    agent = MDPO("MlpPolicy", "Pendulum-v1", n_steps=2048, seed=0, device="cpu")
    agent.runner.reset(seed=0)
    batch = agent._process_rollout(agent.runner.rollout(2048, agent._rollout_policy()))
    old_log_std = agent.policy.log_std.detach().clone()
    with torch.no_grad():
        agent.policy.action_net.bias.add_(0.3)
        params = agent.policy.distribution_params(batch.obs)
        log_prob, _ = agent.policy.log_prob_entropy(params, batch.actions)
        values = {}
        for q in (1.0, 1.01, 1.5):
            agent.tsallis_q = q
            values[q] = float(
                agent.divergence(
                    batch.old_dist_params, batch.old_log_prob, params, log_prob, old_log_std
                )
            )
    # near q = 1 the estimate agrees with the closed-form KL (0.3² / 2 = 0.045) up to
    # Monte-Carlo error; the original's ratio-free estimate would be close to −0.045 here
    assert values[1.0] == pytest.approx(0.045, rel=1e-4)
    assert values[1.01] == pytest.approx(0.045, rel=0.2)
    assert np.isfinite(values[1.5])


def test_one_step_equals_a_policy_gradient_step():
    """m = 1 at θ = θ_k: ratio = 1 and ∇KL = 0, so the step is Adam on −mean(log π · Â)."""
    agent = MDPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=256,
        n_policy_steps=1,
        vf_epochs=0,
        learning_rate=1e-2,
        seed=0,
        device="cpu",
    )
    agent.runner.reset(seed=0)
    batch = agent._process_rollout(agent.runner.rollout(256, agent._rollout_policy()))
    agent._iteration, agent._total_timesteps = 1, 256 * 10
    reference = copy.deepcopy(agent.policy)
    actor = reference.actor_parameters()
    optimizer = torch.optim.Adam(actor, lr=1e-2, eps=1e-5)
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    log_prob, _ = reference.log_prob_entropy(
        reference.distribution_params(batch.obs), batch.actions
    )
    pg_loss = -(log_prob * adv).mean()  # vanilla policy gradient, no ratio, no KL
    optimizer.zero_grad()
    pg_loss.backward()
    torch.nn.utils.clip_grad_norm_(actor, 0.5)
    optimizer.step()

    agent.train(batch)
    for mine, theirs in zip(agent.policy.actor_parameters(), actor):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert float(np.abs(agent.actor_params.grad.numpy()).sum()) > 0
