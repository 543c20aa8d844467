"""Many seeds as one batched run: each member of a BatchedPPO against its own separate PPO run
(same seed, same hyperparameters, same torch env), the seed-batched env against separate envs,
the sweep's batched backend end to end, and the refusals."""

import csv
import json
import os

import pytest
import torch
import yaml

from mdpo import PPO, BatchedPPO
from mdpo.cli.main import main
from mdpo.cli.sweep.batch import group_runs
from mdpo.cli.sweep.spec import RunConfig, SweepSpecError, parse_spec
from mdpo.rl.batched import make_seed_batched_env
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import make_vec_env
from mdpo.rl.torch_classic import make_torch_env

# float32 networks: the batched products round differently from single ones in the last bits
# (about 1e-7 after a few hundred Adam steps); anything that breaks the equivalence (a shared
# gradient clip, a wrong random stream, a wrong minibatch) moves parameters by 1e-3 or more
TOL = dict(rtol=1e-5, atol=2e-5)

CARTPOLE = dict(
    n_envs=4,
    n_steps=32,
    batch_size=48,  # 128 samples per rollout: two full minibatches and a short one
    n_epochs=4,
    learning_rate=1e-3,
    policy_kwargs=dict(net_arch=[32, 32]),
    env_kwargs={"max_episode_steps": 60},  # truncations (bootstrapped) as well as terminations
)


def separate_run(env_id, seed, budget, hyper):
    agent = PPO("MlpPolicy", env_id, seed=seed, device="cpu", **hyper)
    return agent.learn(budget)


def assert_member_equals(batch, index, single):
    member = batch.member(index)
    mine, theirs = member.policy.state_dict(), single.policy.state_dict()
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, **TOL, msg=f"seed {batch.seeds[index]} {key}")
    torch.testing.assert_close(member.optimizer.exp_avg, single.optimizer.exp_avg, **TOL)
    assert member.optimizer.steps == single.optimizer.steps
    assert member.num_timesteps == single.num_timesteps
    assert member._n_updates == single._n_updates
    # the generator drew the same numbers in the same order (noise and minibatch orders)
    assert torch.equal(member.rng.get_state(), single.rng.get_state())


def test_four_seeds_equal_four_separate_runs(tmp_path):
    """K = 4 on CartPole: every member's weights, Adam moments, counters, generator and
    training episodes equal its separate run's; the saved files are ordinary PPO files."""
    seeds, budget = [0, 1, 2, 7], 1536
    batch = BatchedPPO("torch:CartPole-v1", seeds, device="cpu", **CARTPOLE)
    initial = batch.data.detach().clone()
    batch.learn(budget)
    singles = [separate_run("torch:CartPole-v1", seed, budget, CARTPOLE) for seed in seeds]
    for k, single in enumerate(singles):
        assert_member_equals(batch, k, single)
        # the same episodes, in the same order: the env streams are the separate runs'
        assert list(batch.ep_info_buffers[k]) == list(single.runner.ep_info_buffer)
    assert any(length == 60 for _, length in batch.ep_info_buffers[0]), "no truncation seen"
    moved = (batch.data.detach() - initial).abs().amax(dim=1)
    assert bool((moved > 1e-2).all()), "training moved nothing"
    # members are distinct runs, not one run copied
    assert (batch.data[0] - batch.data[1]).abs().max() > 1e-2

    paths = batch.save([str(tmp_path / f"seed{seed}") for seed in seeds])
    for path, single in zip(paths, singles):
        loaded = PPO.load(path, device="cpu")
        for key, value in single.policy.state_dict().items():
            torch.testing.assert_close(loaded.policy.state_dict()[key], value, **TOL)
        assert loaded.num_timesteps == single.num_timesteps == budget
        assert loaded.seed == single.seed

    # the batched evaluation is evaluate_policy on each seed's own eval env
    returns, lengths = batch.evaluate(3, seed_offset=10_000)
    for k, single in enumerate(singles):
        theirs = evaluate_policy(
            single,
            make_vec_env("torch:CartPole-v1", env_kwargs=CARTPOLE["env_kwargs"]),
            n_eval_episodes=3,
            return_episode_rewards=True,
            seed=10_000 + seeds[k],
        )
        assert (returns[k], lengths[k]) == (list(theirs[0]), list(theirs[1]))


def test_continuous_actions_value_clip_and_entropy():
    """Pendulum (Gaussian policy, log-std, truncations every 200 steps) with a clipped value
    loss, an entropy bonus and one env per seed."""
    hyper = dict(
        n_envs=1,
        n_steps=128,
        batch_size=32,
        n_epochs=3,
        learning_rate=3e-3,
        clip_range_vf=0.2,
        ent_coef=0.01,
        policy_kwargs=dict(net_arch=[16]),
    )
    seeds, budget = [3, 4], 512
    batch = BatchedPPO("torch:Pendulum-v1", seeds, device="cpu", **hyper).learn(budget)
    for k, seed in enumerate(seeds):
        single = separate_run("torch:Pendulum-v1", seed, budget, hyper)
        assert_member_equals(batch, k, single)
        # continuous actions carry the networks' rounding into the returns
        mine, theirs = zip(*batch.ep_info_buffers[k]), zip(*single.runner.ep_info_buffer)
        (my_returns, my_lengths), (their_returns, their_lengths) = mine, theirs
        assert my_lengths == their_lengths and len(my_lengths) == 2
        assert my_returns == pytest.approx(their_returns, rel=1e-5)


def test_compiled_seed_batched_env_equals_compiled_separate_runs():
    """With ``compile`` the batched run's rollout step (every member's policy and sampling,
    the seed-batched env's step) is one compiled function; each member still equals its
    separate run on a compiled env (whose own rollout step is compiled too)."""
    hyper = dict(CARTPOLE, env_kwargs={"max_episode_steps": 60, "compile": True})
    seeds, budget = [0, 4], 512
    batch = BatchedPPO("torch:CartPole-v1", seeds, device="cpu", **hyper).learn(budget)
    captured = batch.runner._captured_step
    assert captured is not None and captured.checked  # called, and compiled:
    assert captured.compiled is not captured.eager
    for k, seed in enumerate(seeds):
        single = separate_run("torch:CartPole-v1", seed, budget, hyper)
        assert_member_equals(batch, k, single)
        assert list(batch.ep_info_buffers[k]) == list(single.runner.ep_info_buffer)


def test_one_member_is_a_separate_run():
    batch = BatchedPPO("torch:CartPole-v1", [5], device="cpu", **CARTPOLE).learn(256)
    assert_member_equals(batch, 0, separate_run("torch:CartPole-v1", 5, 256, CARTPOLE))


def test_a_second_learn_goes_on_as_a_separate_runs_does():
    """A second ``learn`` restarts the counts and resets the envs without reseeding them."""
    hyper = dict(n_envs=2, n_steps=32, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]))
    batch = BatchedPPO("torch:CartPole-v1", [1, 2], device="cpu", **hyper)
    batch.learn(256)
    batch.learn(128)
    for k, seed in enumerate([1, 2]):
        single = separate_run("torch:CartPole-v1", seed, 256, hyper).learn(128)
        assert_member_equals(batch, k, single)
        assert list(batch.ep_info_buffers[k]) == list(single.runner.ep_info_buffer)


def test_shared_env_stream_trains():
    """``env_rng="shared"``: one generator for every reset (not the separate runs' streams)."""
    hyper = dict(n_envs=2, n_steps=32, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]))
    batch = BatchedPPO("torch:CartPole-v1", [1, 2], device="cpu", env_rng="shared", **hyper)
    before = batch.data.detach().clone()
    batch.learn(128)
    assert batch.num_timesteps == 128 and not torch.equal(batch.data.detach(), before)
    assert all(buf for buf in batch.ep_info_buffers)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"])
@pytest.mark.parametrize("redraw_all", [False, True], ids=["cpu-redraw", "accelerator-redraw"])
def test_seed_batched_env_blocks_are_separate_envs(env_id, redraw_all):
    """Block k of the batched env steps exactly as a separate env seeded with seeds[k], with
    the CPU's redraw (finished envs only) and an accelerator's (every env, every step)."""
    seeds, n = [3, 5, 9], 4
    batched = make_seed_batched_env("torch:" + env_id, seeds, n, max_episode_steps=50)
    separate = [make_torch_env(env_id, n, max_episode_steps=50) for _ in seeds]
    for env in [batched, *separate]:
        env.redraw_only_finished = not redraw_all
    obs, _ = batched.reset(seed=100)
    theirs = torch.cat([env.reset(seed=seed + 100)[0] for env, seed in zip(separate, seeds)])
    assert torch.equal(obs, theirs)
    gen = torch.Generator().manual_seed(0)
    episodes = 0
    for _ in range(120):
        if batched._discrete:
            action = torch.randint(
                0, batched.single_action_space.n, (len(seeds) * n,), generator=gen
            )
        else:
            action = torch.rand((len(seeds) * n, 1), generator=gen) * 4 - 2
        out = batched.step(action)
        steps = [env.step(action[k * n : (k + 1) * n]) for k, env in enumerate(separate)]
        for i in range(4):
            assert torch.equal(out[i], torch.cat([step[i] for step in steps]))
        episodes += int((out[2] | out[3]).sum())
    assert episodes > 0


@pytest.mark.parametrize(
    "env,kwargs,message",
    [
        ("CartPole-v1", {}, "only torch-native envs"),
        ("torch:Hopper-v5", {}, "unknown environment id 'torch:Hopper-v5'"),
        ("torch:CartPole-v1", {"target_kl": 0.01}, "target_kl is not supported"),
        ("torch:CartPole-v1", {"normalize_obs": True}, "normalize_obs=True is not supported"),
        ("torch:CartPole-v1", {"seed": 3}, "BatchedPPO sets 'seed' itself"),
        ("torch:CartPole-v1", {"batch_size": 4096}, "batch_size=4096 is larger than the rollout"),
        ("torch:CartPole-v1", {"gamma": 2.0}, "gamma must be in [0, 1]"),
        ("torch:CartPole-v1", {"env_rng": "mine"}, "env_rng must be one of"),
    ],
)
def test_refusals(env, kwargs, message):
    with pytest.raises(ValueError) as err:
        BatchedPPO(env, [0, 1], device="cpu", n_steps=32, **kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_repeated_or_missing_seeds_are_refused():
    with pytest.raises(ValueError, match="seeds repeat"):
        BatchedPPO("torch:CartPole-v1", [1, 1], device="cpu")
    with pytest.raises(ValueError, match="seeds is empty"):
        BatchedPPO("torch:CartPole-v1", [], device="cpu")


def run_config(**changes):
    base = dict(
        algorithm="PPO",
        label="PPO",
        env="torch:CartPole-v1",
        seed=0,
        variant="default",
        hyperparameters={},
        budget=100,
        eval_every=50,
        eval_episodes=1,
        n_envs=1,
        device="cpu",
    )
    return RunConfig(**{**base, **changes})


def test_grouping_by_everything_but_the_seed():
    runs = [
        run_config(seed=0),
        run_config(seed=1),
        run_config(seed=0, variant="lr", hyperparameters={"learning_rate": 1e-3}),
        run_config(seed=1, variant="lr", hyperparameters={"learning_rate": 1e-3}),
        run_config(seed=0, algorithm="TRPO", label="TRPO"),
        run_config(seed=0, env="CartPole-v1"),
        run_config(seed=0, label="kl", hyperparameters={"target_kl": 0.02}),
    ]
    batches, alone = group_runs(runs)
    assert [[r.seed for r in b] for b in batches] == [[0, 1], [0, 1]]
    assert batches[1][0].variant == "lr"
    reasons = [reason for _, reason in alone]
    assert reasons[0] == "only PPO is batched, not TRPO"
    assert reasons[1].startswith("only torch-native envs")
    assert reasons[2].startswith("target_kl is not supported")


def test_spec_backend_field():
    spec = {
        "budget": 100,
        "seeds": 2,
        "envs": ["torch:CartPole-v1"],
        "algorithms": ["PPO"],
    }
    assert parse_spec(spec).backend is None
    assert parse_spec({**spec, "backend": "batched"}).backend == "batched"
    with pytest.raises(SweepSpecError, match="backend must be one of local, ray, batched"):
        parse_spec({**spec, "backend": "gpu"})


def test_batched_sweep_end_to_end(in_tmp, capsys):
    """A spec with ``backend: batched``: the PPO seeds train as one batch whose final models are
    the separate runs'; the target_kl runs cannot be batched and run on their own; the
    report reads them all; a rerun finds everything done."""
    hyper = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}
    spec = {
        "name": "batched",
        "budget": 384,
        "seeds": [0, 2],
        "envs": ["torch:CartPole-v1"],
        "algorithms": [
            "PPO",
            {"name": "PPO", "label": "PPO-kl", "hyperparameters": {"target_kl": 0.02}},
        ],
        "eval": {"every": 128, "episodes": 2},
        "n_envs": 2,
        "backend": "batched",
        "hyperparameters": {"list": [hyper]},
    }
    spec["algorithms"][1]["hyperparameters"].update(hyper)
    (in_tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", "run", "spec.yaml", "--workers", "2", "--out", "sw"]) == 0
    out = capsys.readouterr()
    assert "(batched, 2 workers)" in out.out
    assert out.err.count("not batched (target_kl is not supported") == 2

    runs = sorted(os.listdir("sw/runs"))
    assert len(runs) == 4
    batched_ids = [r for r in runs if r.startswith("PPO__")]
    for run_id in runs:
        result = json.loads((in_tmp / "sw/runs" / run_id / "result.json").read_text())
        assert result["num_timesteps"] == 384
        assert [p["nominal_timesteps"] for p in result["curve"]] == [0, 128, 256, 384]
        if run_id in batched_ids:
            assert result["batch"]["size"] == 2
            assert sorted(result["batch"]["run_ids"]) == batched_ids
        else:
            assert "batch" not in result

    # the batch's final model of seed 2 is the separate run of seed 2
    assert batched_ids[1].endswith("__s2")
    single = separate_run("torch:CartPole-v1", 2, 384, {"n_envs": 2, **hyper})
    loaded = PPO.load(str(in_tmp / "sw/runs" / batched_ids[1] / "final_model.zip"), device="cpu")
    for key, value in single.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[key], value, **TOL)
    # and its last evaluation is that of the separate run's final model
    result = json.loads((in_tmp / "sw/runs" / batched_ids[1] / "result.json").read_text())
    returns, _ = evaluate_policy(
        single, make_vec_env("torch:CartPole-v1"), 2, return_episode_rewards=True, seed=10_002
    )
    assert result["final_returns"] == returns

    assert main(["sweep", "report", "sw", "--out", "rep"]) == 0
    with open(in_tmp / "rep" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["algorithm"].split(" [")[0] for row in rows) == ["PPO", "PPO-kl"]
    assert all(row["n"] == "2" for row in rows)
    assert main(["sweep", "run", "spec.yaml", "--out", "sw"]) == 0
    assert "4 already completed, 0 to run" in capsys.readouterr().out
