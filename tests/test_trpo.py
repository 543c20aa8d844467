"""TRPO: conjugate gradient, Fisher-vector products against autograd Hessians, trust region."""

import pytest
import torch

from mdpo import TRPO
from mdpo.rl.trpo import conjugate_gradient


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


@pytest.mark.parametrize("compile_update", [False, True])
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_fisher_vector_product_is_the_kl_hessian(env_id, compile_update):
    """The damped Fisher-vector product against the Hessian of the mean KL by autograd, both
    forms: the double backward (eager) and the compiled Gauss-Newton product (Gaussian mean
    and log-std; categorical logits)."""
    agent = TRPO(
        "MlpPolicy",
        env_id,
        n_steps=32,
        batch_size=32,
        cg_damping=0.1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [6]},
        compile_update=compile_update,
    )
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
        torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v, rtol=1e-4, atol=1e-5)
    if compile_update:
        wrapper = agent._compiled_losses["_gauss_newton_product"]
        assert wrapper.checked and wrapper.compiled is not wrapper.eager  # it ran compiled


@pytest.mark.parametrize("env_id, sub_sampling", [("Pendulum-v1", 1), ("CartPole-v1", 3)])
def test_compiled_update_trains_as_the_eager_one(env_id, sub_sampling):
    """``compile_update=True``: three iterations of TRPO with the compiled products end at the
    eager run's parameters (float tolerance: the products round differently); Gaussian and
    categorical policies, all samples and every third."""

    def make(compile_update: bool) -> TRPO:
        return TRPO(
            "MlpPolicy",
            env_id,
            n_steps=128,
            batch_size=64,
            n_critic_updates=2,
            sub_sampling_factor=sub_sampling,
            seed=4,
            device="cpu",
            policy_kwargs={"net_arch": [16]},
            compile_update=compile_update,
        )

    eager, compiled = make(False), make(True)
    for agent in (eager, compiled):
        agent.learn(384)
    wrapper = compiled._compiled_losses["_gauss_newton_product"]
    assert wrapper.checked and wrapper.compiled is not wrapper.eager
    start = make(False).policy.state_dict()
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(compiled.policy.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert not torch.equal(
        eager.policy.state_dict()["action_net.weight"], start["action_net.weight"]
    )


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
    assert 0.3 * 0.01 <= float(kl) <= 1.5 * 0.01  # a real step, inside the region
    assert agent.logger.values["train/line_search_success"] == 1.0


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_policy_step_equals_sb3_contrib(env_id, monkeypatch):
    """Same weights and data: the natural-gradient step of sb3-contrib's TRPO.

    sb3-contrib starts conjugate gradient from a random point; it is given ours (which starts
    at 0) so that both solve the same system the same way. Its line search tests the KL in the
    other direction; at the full step both directions are inside the region here.
    """
    import sb3_contrib.trpo.trpo as contrib_trpo
    from sb3_contrib import TRPO as ContribTRPO
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.logger import configure

    monkeypatch.setattr(contrib_trpo, "conjugate_gradient_solver", conjugate_gradient)
    hyper = dict(n_steps=256, batch_size=64, n_critic_updates=0)
    ours = TRPO("MlpPolicy", env_id, seed=0, device="cpu", **hyper)
    theirs = ContribTRPO("MlpPolicy", env_id, seed=0, device="cpu", **hyper)
    batch = rollout_batch(ours, 256)
    theirs.policy.load_state_dict(ours.policy.state_dict())
    buf = RolloutBuffer(256, ours.observation_space, ours.action_space, "cpu", n_envs=1)
    buf.observations[:] = batch.obs.numpy().reshape(buf.observations.shape)
    buf.actions[:] = batch.actions.numpy().reshape(buf.actions.shape)
    buf.log_probs[:] = batch.old_log_prob.numpy().reshape(256, 1)
    buf.advantages[:] = batch.advantages.numpy().reshape(256, 1)
    buf.returns[:] = batch.returns.numpy().reshape(256, 1)
    buf.values[:] = batch.old_values.numpy().reshape(256, 1)
    buf.pos, buf.full = 256, True
    theirs.rollout_buffer = buf
    theirs.set_logger(configure(None, []))
    theirs._current_progress_remaining = ours._current_progress_remaining = 1.0
    theirs.train()
    ours.train(batch)
    assert theirs.logger.name_to_value["train/is_line_search_success"] == 1.0
    mine = ours.policy.state_dict()
    for key, value in theirs.policy.state_dict().items():
        torch.testing.assert_close(mine[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_sub_sampling_and_discrete_actions():
    agent = TRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=256,
        batch_size=64,
        sub_sampling_factor=4,
        seed=0,
        device="cpu",
    )
    batch = rollout_batch(agent, 256)
    before = agent.actor_params.data.clone()
    agent.train(batch)
    assert not torch.equal(before, agent.actor_params.data)
    assert agent.logger.values["train/kl"] < 0.01
