"""SDDP on case3 against the exact extensive form of a small scenario tree; bounds, simulation
and cut files."""

import os

import numpy as np
import pytest

from mdpo.envs.hydro import load_case
from mdpo.envs.hydro.model import build_scenario_tree, build_stage_problem
from mdpo.envs.hydro.sddp import SDDP
from mdpo.rules.highs import HighsModel


def test_lower_bound_converges_to_the_scenario_tree_optimum(tmp_path):
    case = load_case("case3")
    horizon = 4  # 3 + 9 + 27 + 81 stage copies in the tree
    exact = HighsModel(build_scenario_tree(case, horizon, load_scale=1.0)).solve().objective
    sddp = SDDP(case, horizon, load_scale=1.0, seed=0)
    log = sddp.train(iterations=60, stall_iterations=8, stall_tolerance=1e-7)
    bounds = np.array(log.lower_bounds)
    assert np.all(np.diff(bounds) >= -1e-6 * abs(exact)), "the lower bound never decreases"
    assert bounds[-1] <= exact * (1 + 1e-6)
    assert bounds[-1] == pytest.approx(exact, rel=1e-3)
    # the simulated policy costs at least the optimum, and its CI contains it when converged
    mean, low, high = sddp.upper_bound(300, seed=1)
    assert low <= exact * (1 + 1e-3) and mean >= exact * (1 - 0.05)
    # cuts survive a file round trip: a fresh SDDP with them has the same lower bound
    path = str(tmp_path / "cuts.json")
    sddp.save_cuts(path)
    fresh = SDDP(case, horizon, load_scale=1.0)
    fresh.load_cuts(path)
    assert fresh.lower_bound() == pytest.approx(sddp.lower_bound(), rel=1e-9)
    with pytest.raises(ValueError, match="horizon"):
        SDDP(case, horizon + 1, load_scale=1.0).load_cuts(path)
    gzipped = str(tmp_path / "cuts.json.gz")  # the CLI's format
    sddp.save_cuts(gzipped)
    again = SDDP(case, horizon, load_scale=1.0)
    again.load_cuts(gzipped)
    assert again.lower_bound() == pytest.approx(sddp.lower_bound(), rel=1e-9)
    bad = tmp_path / "bad.json"
    bad.write_text('{"cuts": [[0, 1.0')
    with pytest.raises(ValueError, match="not a cut file"):
        again.load_cuts(str(bad))


def test_cli_sddp_bound_simulate_and_plot(tmp_path, capsys):
    """``mdpo hydro sddp / bound / simulate / plot`` on the same fixed scenarios: on every
    scenario, each policy (SDDP, myopic, an RL agent; none knows the future) costs at least the
    perfect-foresight optimum, and the saved cuts reproduce SDDP's simulation."""
    import json

    from mdpo import PPO
    from mdpo.cli.main import main

    def costs(folder):
        return np.loadtxt(f"{folder}/costs.csv", delimiter=",", skiprows=1)[:, 1]

    common = ["--case", "case3", "--load-scale", "1.0", "--scenarios", "12", "--no-progress"]
    out = {name: str(tmp_path / name) for name in ("sddp", "bound", "cuts", "myopic", "ppo")}
    assert (
        main(
            [
                "hydro",
                "sddp",
                *common,
                "--out",
                out["sddp"],
                "--horizon",
                "6",
                "--report",
                "4",
                "--iterations",
                "20",
            ]
        )
        == 0
    )
    assert main(["hydro", "bound", *common, "--out", out["bound"], "--horizon", "4"]) == 0
    cuts = f"{out['sddp']}/cuts.json.gz"
    assert main(["hydro", "simulate", cuts, *common, "--out", out["cuts"], "--stages", "4"]) == 0
    assert (
        main(["hydro", "simulate", "myopic", *common, "--out", out["myopic"], "--stages", "4"]) == 0
    )
    agent = PPO(
        "MlpPolicy",
        "HydroDispatch-v0",
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        env_kwargs={"case": "case3", "horizon": 4, "load_scale": 1.0},
        device="cpu",
    )
    agent.learn(16)
    model = agent.save(str(tmp_path / "ppo"))
    assert main(["hydro", "simulate", model, *common, "--out", out["ppo"], "--stages", "4"]) == 0
    sddp = json.load(open(f"{out['sddp']}/summary.json"))
    assert sddp["scenarios"] == 12 and sddp["stages"] == 4 and sddp["label"] == "SDDP"
    bound = costs(out["bound"])
    np.testing.assert_allclose(costs(out["cuts"]), costs(out["sddp"]), rtol=1e-9)
    for name in ("sddp", "myopic", "ppo"):
        assert np.all(costs(out[name]) >= bound - 1e-6 * np.abs(bound)), name
    stages = np.genfromtxt(f"{out['ppo']}/stages.csv", delimiter=",", names=True)
    assert len(stages) == 4 and np.all(stages["total_volume"] >= 0)
    np.testing.assert_allclose(stages["cost"].sum(), costs(out["ppo"]).mean(), rtol=1e-9)
    png = str(tmp_path / "all.png")
    assert main(["hydro", "plot", out["sddp"], out["bound"], "--case", "case3", "--out", png]) == 0
    assert os.path.getsize(png) > 0
    assert (
        main(["hydro", "sddp", *common, "--out", out["sddp"], "--horizon", "3", "--report", "4"])
        == 2
    )
    assert "--report 4 exceeds --horizon 3" in capsys.readouterr().err
    assert main(["hydro", "simulate", "nothing.json", *common, "--out", out["cuts"]]) == 2
    assert "policy 'nothing.json': no such file" in capsys.readouterr().err
    assert main(["hydro", "simulate", cuts, *common, "--out", out["cuts"], "--stages", "7"]) == 2
    assert "cannot drive 7 stages" in capsys.readouterr().err


def test_cli_sddp_resumes_from_its_cuts(tmp_path, capsys):
    """An interrupted training continued from the saved cuts gives the lower bounds of an
    uninterrupted one (iteration k samples its path from (seed, k))."""
    from mdpo.cli.main import main

    common = [
        "--case",
        "case3",
        "--load-scale",
        "1.0",
        "--scenarios",
        "4",
        "--no-progress",
        "--horizon",
        "5",
        "--report",
        "5",
        "--stall-iterations",
        "100",
        "--save-every",
        "2",
    ]
    split, straight = str(tmp_path / "split"), str(tmp_path / "straight")
    assert main(["hydro", "sddp", *common, "--out", split, "--iterations", "4"]) == 0
    assert main(["hydro", "sddp", *common, "--out", split, "--iterations", "8"]) == 0
    assert "resuming SDDP" in capsys.readouterr().out
    assert main(["hydro", "sddp", *common, "--out", straight, "--iterations", "8"]) == 0

    def bounds(folder):
        return np.loadtxt(f"{folder}/training.csv", delimiter=",", skiprows=1)[:, 1]

    assert len(bounds(split)) == 8
    np.testing.assert_allclose(bounds(split), bounds(straight), rtol=1e-9)


def test_evaluation_paths_are_prefixes_in_scenarios_and_stages():
    from mdpo.cli.hydro import evaluation_paths

    case = load_case("bolivia")
    full = evaluation_paths(case, 20, 30)
    np.testing.assert_array_equal(evaluation_paths(case, 5, 30), full[:5])
    np.testing.assert_array_equal(evaluation_paths(case, 20, 7), full[:, :7])
    assert not np.array_equal(evaluation_paths(case, 5, 30, seed=1), full[:5])
    assert len(np.unique(full)) > 10  # the 15 columns are all used


def test_myopic_policy_spends_least_now_and_keeps_the_water_it_cannot_use():
    """The myopic stage decision is the lexicographic optimum, computed here with two
    separate solves of Bolivia's DC stage problem in a wet stage: least immediate cost
    first, then, at that cost, the most water kept. Without the tie-break the stored volume
    is whatever vertex the solver lands on (and Ipopt spills what HiGHS stores)."""
    import dataclasses

    case = load_case("bolivia")
    policy = SDDP.myopic(case, 1)
    inflows, _ = policy.realizations(0)
    records = policy.simulate(np.array([[3]]))
    stage = build_stage_problem(case, volume_in=policy.volume0, inflow=inflows[3])
    lp = stage.program
    least = HighsModel(lp).solve().objective
    # second solve: maximize the stored water among the decisions that cost `least`
    cost_row = np.flatnonzero(lp.objective)
    keep = dataclasses.replace(
        lp,
        objective=np.zeros(lp.n_variables),
        objective_constant=0.0,
        maximize=True,
        rows=[*lp.rows, "cost_at_most_least"],
        row_lower=np.append(lp.row_lower, -np.inf),
        row_upper=np.append(lp.row_upper, least - lp.objective_constant + 1e-7 * abs(least)),
        row_start=np.append(lp.row_start, lp.row_start[-1] + len(cost_row)),
        columns=np.concatenate([lp.columns, cost_row]),
        values=np.concatenate([lp.values, lp.objective[cost_row]]),
    )
    keep.objective[stage.volume_out] = 1.0
    most_kept = HighsModel(keep).solve().objective
    assert records.cost[0, 0] == pytest.approx(least, rel=1e-7)
    assert records.volume[0, 0].sum() == pytest.approx(most_kept, rel=1e-6)
    # the tie matters here: the least-cost decisions differ in what they keep
    keep.maximize = False
    assert HighsModel(keep).solve().objective < 0.9 * most_kept


def test_the_myopic_policy_refuses_to_act_as_trained_sddp(tmp_path):
    """Its tie-break cuts bound no future cost: training on them, a lower bound from them or
    saving them as a cut file is refused in one line."""
    policy = SDDP.myopic(load_case("case3"), 2, load_scale=1.0)
    for call in (policy.train, policy.lower_bound, lambda: policy.save_cuts(str(tmp_path / "c"))):
        with pytest.raises(ValueError, match="this is the myopic policy, whose cuts break ties"):
            call()
