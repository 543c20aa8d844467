"""Compiled and bfloat16 off-policy updates (SAC, off-policy MDPO): the compiled update
computes what the eager one does, a failed compilation falls back to it, and the bfloat16
networks keep float32 parameters, outputs and optimizer state."""

from __future__ import annotations

import warnings

import pytest
import torch

from mdpo import SAC, OffPolicyMDPO
from mdpo.rl.networks import MixedPrecision

ENV = "Pendulum-v1"


def make(algo, **kwargs):
    return algo(
        "MlpPolicy",
        ENV,
        seed=3,
        learning_starts=200,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64]},
        **kwargs,
    )


def state(agent) -> dict[str, torch.Tensor]:
    """Every parameter and optimizer moment of the agent."""
    out = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    for name in ("actor_optimizer", "critic_optimizer"):
        optimizer = getattr(agent, name)
        out[f"{name}.m"], out[f"{name}.v"] = optimizer.exp_avg, optimizer.exp_avg_sq
    return out


@pytest.mark.parametrize("algo", [SAC, OffPolicyMDPO])
def test_compiled_update_equals_the_eager_one(algo):
    """Ten gradient steps (after 200 warm-up transitions) eagerly and with torch.compile,
    from the same seed: the same parameters, targets and Adam moments to float tolerance
    (inductor may sum in another order, nothing more)."""
    eager, compiled = make(algo), make(algo, compile_update=True)
    assert not compiled._compiled_losses  # nothing compiled before the first update
    for agent in (eager, compiled):
        agent.learn(210)
    assert eager._n_updates == compiled._n_updates == 10
    wrappers = compiled._compiled_losses.values()
    assert wrappers and all(w.compiled is not w.eager for w in wrappers)  # no fallback
    expected, got = state(eager), state(compiled)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6, msg=key)
    initial = make(algo).policy.state_dict()
    assert not torch.equal(expected["actor.mu.weight"], initial["actor.mu.weight"])  # it learned


def test_a_compilation_that_fails_runs_eagerly_with_a_warning(monkeypatch):
    """Where torch.compile cannot compile (here: every compiled call raises, as on a
    platform without a C++ compiler), the update runs eagerly, after one warning."""

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore lines")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager, fallback = make(SAC), make(SAC, compile_update=True)
    eager.learn(210)
    with pytest.warns(RuntimeWarning, match=r"SAC: torch.compile failed \(RuntimeError: "):
        fallback.learn(210)
    for key, value in state(eager).items():
        torch.testing.assert_close(state(fallback)[key], value, rtol=0, atol=0, msg=key)


def test_an_error_of_the_function_itself_is_not_taken_for_a_compiler_failure():
    """A function that fails eagerly as well (a bad input) raises its own error, without the
    fallback's warning, and stays compiled for later calls."""
    from mdpo.rl.compiled import CompiledOnce

    def checked_sqrt(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 3:
            raise ValueError(f"checked_sqrt takes 3 values, got {x.shape[0]}")
        return x.sqrt()

    wrapper = CompiledOnce(checked_sqrt, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may be issued
        with pytest.raises(ValueError, match="takes 3 values, got 2"):
            wrapper(torch.ones(2))
        assert wrapper.compiled is not wrapper.eager and not wrapper.checked
        torch.testing.assert_close(wrapper(torch.full((3,), 4.0)), torch.full((3,), 2.0))
    assert wrapper.checked and wrapper.compiled is not wrapper.eager


@pytest.mark.parametrize("algo", [SAC, OffPolicyMDPO])
def test_bfloat16_networks_keep_float32_parameters_and_outputs(algo, tmp_path):
    """``precision="bfloat16"``: the layers' products in bfloat16, all else float32. The
    networks' outputs are float32 and within bfloat16's rounding of the float32 ones; after
    ten updates the parameters moved like the float32 run's (close, not equal: the
    products did run in bfloat16); saved and loaded, the model keeps its precision."""
    full, half = make(algo), make(algo, precision="bfloat16")
    nets = [m for m in half.policy.modules() if isinstance(m, MixedPrecision)]
    assert nets and all(m.compute_dtype is torch.bfloat16 for m in nets)
    obs = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    action = torch.rand(256, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    q_full, q_half = full.policy.critic(obs, action), half.policy.critic(obs, action)
    assert q_half.dtype == torch.float32
    torch.testing.assert_close(q_half, q_full, rtol=0.02, atol=0.02)
    assert not torch.equal(q_half, q_full)
    mean_full, _ = full.policy.actor(obs)
    mean_half, log_std_half = half.policy.actor(obs)
    assert mean_half.dtype == log_std_half.dtype == torch.float32
    torch.testing.assert_close(mean_half, mean_full, rtol=0.02, atol=0.02)
    # the output layers run in float32: a Q-value of 300.7 is not rounded to bfloat16's
    # spacing of 2 there, nor a mean of 0.123456 to its 3 digits
    probe = make(algo, precision="bfloat16")
    with torch.no_grad():
        probe.policy.critic.weights[-1].zero_()
        probe.policy.critic.biases[-1].fill_(300.7)
        probe.policy.actor.mu.weight.zero_()
        probe.policy.actor.mu.bias.fill_(0.123456)
    torch.testing.assert_close(probe.policy.critic(obs, action), torch.full((2, 256), 300.7))
    torch.testing.assert_close(probe.policy.actor(obs)[0], torch.full((256, 1), 0.123456))
    for agent in (full, half):
        agent.learn(210)
    after_full, after_half = state(full), state(half)
    for key, value in after_half.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, after_full[key], rtol=0.05, atol=2e-3, msg=key)
    assert any(not torch.equal(after_half[k], after_full[k]) for k in after_half)
    loaded = algo.load(half.save(str(tmp_path / "half")), device="cpu")
    assert loaded.precision == "bfloat16"
    assert all(
        m.compute_dtype is torch.bfloat16
        for m in loaded.policy.modules()
        if isinstance(m, MixedPrecision)
    )


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'fp16'"):
        make(SAC, precision="fp16")


def test_compiled_ppo_update_equals_the_eager_one():
    """PPO's minibatch losses through torch.compile (a smaller last minibatch and a value
    clip included): the same parameters and Adam moments as the eager update."""
    from mdpo import PPO

    def make_ppo(compile_update: bool) -> PPO:
        return PPO(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=64,
            batch_size=48,
            n_epochs=2,
            clip_range_vf=0.3,
            seed=1,
            device="cpu",
            compile_update=compile_update,
        )

    eager, compiled = make_ppo(False), make_ppo(True)
    for agent in (eager, compiled):
        agent.learn(128)
    wrapper = compiled._compiled_losses["_minibatch_loss"]
    assert wrapper.checked and wrapper.compiled is not wrapper.eager
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(compiled.policy.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.optimizer.exp_avg, eager.optimizer.exp_avg)
    assert not torch.equal(
        eager.policy.state_dict()["action_net.weight"],
        make_ppo(False).policy.state_dict()["action_net.weight"],
    )


@pytest.mark.parametrize("tsallis_q", [1.0, 1.5])
def test_compiled_mdpo_update_equals_the_eager_one(tsallis_q):
    """On-policy MDPO's policy steps and value minibatches through torch.compile: the same
    parameters as the eager update (KL and Tsallis divergences, annealed t_k)."""
    from mdpo import MDPO

    def make_mdpo(compile_update: bool) -> MDPO:
        return MDPO(
            "MlpPolicy",
            ENV,
            n_steps=128,
            n_policy_steps=3,
            vf_epochs=2,
            vf_batch_size=32,
            tsallis_q=tsallis_q,
            seed=2,
            device="cpu",
            compile_update=compile_update,
        )

    eager, compiled = make_mdpo(False), make_mdpo(True)
    for agent in (eager, compiled):
        agent.learn(256)
    wrappers = compiled._compiled_losses
    assert {"_policy_loss", "_value_loss"} <= set(wrappers)
    assert all(w.compiled is not w.eager for w in wrappers.values())  # no fallback
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(compiled.policy.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def test_compile_update_must_be_a_bool():
    """``--set compile_update=False`` (not JSON: the string "False") would read as true."""
    with pytest.raises(ValueError, match="compile_update must be true or false, got 'False'"):
        make(SAC, compile_update="False")
