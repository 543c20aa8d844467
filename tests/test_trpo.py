"""TRPO: conjugate gradient, Fisher-vector products against autograd Hessians, trust region."""

import pytest
import torch

from mdpo import TRPO
from mdpo.agents.trpo import conjugate_gradient


def test_conjugate_gradient_solves_an_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, max_iter=40)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def rollout_batch(agent, steps):
    agent.runner.reset(seed=0)
    return agent._process_rollout(agent.runner.rollout(steps, agent._rollout_policy()))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_fisher_vector_product_is_the_kl_hessian(env_id):
    agent = TRPO("MlpPolicy", env_id, n_steps=32, batch_size=32, cg_damping=0.0, seed=0,
                 device="cpu", policy_kwargs={"net_arch": [6]})  # fmt: skip
    batch = rollout_batch(agent, 32)
    policy = agent.policy
    old_log_std = policy.log_std.detach().clone() if policy.continuous else None
    flat = agent.actor_params
    theta0 = flat.data.clone()

    names = {id(p): n for n, p in policy.named_parameters()}

    def mean_kl(theta):  # KL(π_old ‖ π_θ) as a function of the flat actor parameters
        params, offset = {}, 0
        for p in flat.params:
            params[names[id(p)]] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        new = torch.func.functional_call(policy, params, (batch.obs,), strict=False)
        log_std = params.get("log_std") if policy.continuous else None
        return policy.kl_divergence(batch.old_dist_params, new, old_log_std, log_std).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta0)
    fvp = agent.fisher_vector_product(batch.obs, batch.old_dist_params, old_log_std)
    for seed in range(3):
        v = torch.randn(theta0.shape, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-4, atol=1e-5)


def test_update_stays_in_the_trust_region():
    agent = TRPO("MlpPolicy", "Pendulum-v1", n_steps=512, target_kl=0.01, seed=0, device="cpu")
    batch = rollout_batch(agent, 512)
    policy = agent.policy
    old_log_std = policy.log_std.detach().clone()
    before = agent.actor_params.data.clone()
    agent.train(batch)
    assert not torch.equal(before, agent.actor_params.data), "the line search took no step"
    with torch.no_grad():
        new = policy.distribution_params(batch.obs)
        kl = policy.kl_divergence(batch.old_dist_params, new, old_log_std, None).mean()
    assert 0 < float(kl) <= 1.5 * 0.01
    assert agent.logger.values["train/line_search_success"] == 1.0
