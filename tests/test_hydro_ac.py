"""The hydro case study on the AC network: TS-DDR's gradient through Ipopt's target duals
against finite differences (case3 and a short Bolivia horizon), SDDP on the SOC relaxation
simulated on AC, and case3 on AC end to end through the command line (under a minute)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rule_gradients import check_rule_gradient

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0
from mdpo import TSDDR
from mdpo.envs.hydro import load_case
from mdpo.envs.hydro.model import build_deterministic_equivalent
from mdpo.envs.hydro.sddp import SDDP
from mdpo.rules.backend import open_model


@pytest.mark.parametrize(
    "case, horizon, policy",
    [("case3", 4, "LSTMPolicy"), ("case3", 4, "strict"), ("bolivia", 3, "LSTMPolicy")],
)
def test_ac_dual_gradient_equals_finite_differences(case, horizon, policy):
    """d mean cost / d θ from the AC deterministic equivalents' target duals (Ipopt's
    multipliers) equals central finite differences of the AC optimal values through the rule
    (float64; each solve warm-started, so the same local optimum is followed)."""
    env_kwargs = {
        "case": case,
        "load_scale": 1.0 if case == "case3" else 0.6,
        "horizon": horizon,
        "formulation": "ac",
    }
    kwargs = {"policy_kwargs": {"reachable_gain": 0.0036}} if policy == "strict" else {}
    agent = TSDDR(
        "StatePolicy" if policy == "strict" else policy,
        "HydroDispatch-v0",
        env_kwargs=env_kwargs,
        seed=0,
        device="cpu",
        eval_freq=0,
        **kwargs,
    )
    assert agent.problem.formulation == "ac"
    checked = check_rule_gradient(agent, 2, per_parameter=2, eps=1e-5, rel=1e-4, abs=1e-3)
    assert checked >= 4


def test_ac_target_duals_are_cost_derivatives_of_the_deterministic_equivalent():
    """Every target row's multiplier is the finite-difference derivative of the 4-stage AC
    optimal value (case3), the gradient TS-DDR trains on."""
    case = load_case("case3")
    rng = np.random.default_rng(3)
    inflows = case.path_inflows(case.sample_paths(1, 4, rng)[0])
    targets = rng.uniform(0.05, 0.6, inflows.shape) * case.plants[0].max_volume
    problem = build_deterministic_equivalent(
        case, inflows, targets=targets, load_scale=1.0, formulation="ac"
    )
    model = open_model(problem.program)
    base = model.solve()
    for t in range(4):
        row = problem.target_rows[t, 0]
        h = 1e-5 * case.plants[0].max_volume
        costs = []
        for step in (h, -h):
            model.set_row_bounds([row], [targets[t, 0] + step], [targets[t, 0] + step])
            costs.append(model.solve().objective)
        model.set_row_bounds([row], [targets[t, 0]], [targets[t, 0]])
        slope = (costs[0] - costs[1]) / (2 * h)
        assert base.row_duals[row] == pytest.approx(slope, rel=1e-4, abs=1e-2), t


def test_sddp_on_soc_simulated_on_ac_and_saved_cuts_reproduce_it(tmp_path):
    """Cuts from the SOC stage problems are valid for SOC (the lower bound stays below the
    simulated SOC cost of the same policy in expectation) and drive the AC stage problems;
    the saved cut file records its formulation and simulates the same on AC."""
    case = load_case("case3")
    sddp = SDDP(case, 8, load_scale=1.0, formulation="soc")
    sddp.train(8, stall_iterations=100)
    paths = case.sample_paths(6, 8, np.random.default_rng(1))
    on_ac = sddp.simulate(paths, formulation="ac")
    path = str(tmp_path / "cuts.json.gz")
    sddp.save_cuts(path)
    again = SDDP.from_cuts_file(path, case, 8, load_scale=1.0)
    assert again.formulation == "soc" and len(again.cuts) == len(sddp.cuts)
    np.testing.assert_allclose(
        again.simulate(paths, formulation="ac").total_cost, on_ac.total_cost, rtol=1e-6
    )
    with pytest.raises(ValueError, match="convex stage problems"):
        SDDP(case, 8, formulation="ac")


def test_case3_ac_end_to_end_through_the_command_line(tmp_path, capsys):
    """bound, SDDP (SOC cuts and DC cuts), myopic, TS-DDR (strict, started from a DC-trained
    rule) on AC, then the comparison table: each policy judged on the AC stage problems."""
    from mdpo.cli.main import main

    common = ["--case", "case3", "--load-scale", "1.0", "--scenarios", "5", "--no-progress"]
    ac = [*common, "--formulation", "ac"]
    out = tmp_path / "r"
    runs = {
        "bound": ["hydro", "bound", *ac, "--horizon", "8"],
        "sddp": ["hydro", "sddp", *ac, "--horizon", "10", "--report", "8", "--iterations", "6"],
        "sddp_dc": [
            "hydro", "sddp", *ac, "--horizon", "10", "--report", "8", "--iterations", "6",
            "--train-formulation", "dc",
        ],
        "myopic": ["hydro", "simulate", "myopic", *ac, "--stages", "8"],
    }  # fmt: skip
    for name, argv in runs.items():
        assert main([*argv, "--out", str(out / name)]) == 0, name
    dc_rule = tmp_path / "dc_rule"
    tsddr = ["hydro", "tsddr", "--stages", "8", "--policy", "strict", "--eval-freq", "0"]
    assert main([*tsddr, *common, "--steps", "10", "--out", str(dc_rule)]) == 0
    init = ["--init", str(dc_rule / "model.zip")]
    assert main([*tsddr, *ac, "--steps", "3", *init, "--out", str(out / "tsddr")]) == 0
    summaries = {name: json.load(open(out / name / "summary.json")) for name in [*runs, "tsddr"]}
    assert all(s["formulation"] == "ac" for s in summaries.values())
    assert summaries["sddp"]["label"] == "SDDP (SOC cuts)"
    assert summaries["sddp_dc"]["label"] == "SDDP (DC cuts)"
    assert summaries["tsddr"]["init"].endswith("model.zip")
    for summary in summaries.values():
        assert 0.0 <= summary["no_shedding_share"] <= 1.0 and summary["shed_mwh"] >= 0.0
    # the perfect-foresight AC optimum (a local one) is below every non-anticipative policy
    bound = summaries["bound"]["mean_cost"]
    assert all(s["mean_cost"] >= bound * (1 - 1e-6) for s in summaries.values())
    capsys.readouterr()
    assert main(["hydro", "compare", *[str(out / n) for n in summaries], "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    assert "AC power flow" in table and "vs SDDP (SOC cuts) (paired" in table
    # a DC result is not compared with AC ones
    dc = tmp_path / "myopic_dc"
    assert main(["hydro", "simulate", "myopic", *common, "--stages", "8", "--out", str(dc)]) == 0
    assert main(["hydro", "compare", str(out / "myopic"), str(dc), "--out", str(out)]) == 2
    assert "different power flows" in capsys.readouterr().err


def test_an_unsolvable_stage_is_one_line_from_the_command_line(tmp_path, capsys):
    """A case whose AC stage cannot be met (no reactive power anywhere, reactive load that
    shedding active power cannot serve): the solver's status in one line, no traceback."""
    import shutil

    from mdpo.cli.main import main

    folder = tmp_path / "tight"
    shutil.copytree("envs/hydro/data/case3", folder)
    network = json.loads((folder / "PowerModels.json").read_text())
    for gen in network["gen"].values():
        gen["qmin"] = gen["qmax"] = 0.0
    for load in network["load"].values():
        load["qd"] = 5.0
    (folder / "PowerModels.json").write_text(json.dumps(network))
    argv = ["hydro", "simulate", "myopic", "--case", str(folder), "--load-scale", "1.0"]
    argv += ["--scenarios", "1", "--stages", "2", "--formulation", "ac", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdpo hydro: error: ") and "Ipopt ended with status" in err
    assert "\n" not in err


def test_soc_refuses_angle_limits_its_rows_cannot_hold():
    import dataclasses

    from mdpo.envs.hydro.model import build_stage_problem

    case = load_case("case3")
    wide = dataclasses.replace(case.branches[0], angmin=-2.0, angmax=2.0)
    case = dataclasses.replace(case, branches=(wide, *case.branches[1:]))
    with pytest.raises(ValueError, match="outside .-π/2, π/2."):
        build_stage_problem(case, formulation="soc")
    build_stage_problem(case, formulation="dc")  # the DC flow has no such rows


def test_agents_train_on_the_ac_env_from_the_command_line(tmp_path):
    """`mdpo train ... HydroDispatch-v0` in a fresh interpreter: the command registers the
    suite's env itself (the command table imports only the train command's module), and
    `formulation` reaches the env."""
    import subprocess
    import sys

    kwargs = '{"case": "case3", "horizon": 4, "load_scale": 1.0, "formulation": "ac"}'
    argv = ["train", "PPO", "HydroDispatch-v0", "--set", f"env_kwargs={kwargs}", "-n", "32"]
    argv += ["--set", "n_steps=16", "--set", "batch_size=16", "--no-progress", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "mdpo", *argv, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["hyperparameters"]["env_kwargs"]["formulation"] == "ac"


def test_an_ac_stage_that_cycles_under_the_monotone_barrier_is_solved_by_the_fallback():
    """A Bolivia AC stage problem (empty reservoirs, the myopic policy's keep-water cut) on
    which Ipopt's default monotone barrier update runs to its iteration limit from the flat
    start; the model's last attempt, the adaptive update, solves it (found on evaluation path
    0, stage 88, of the AC study). The optimum is checked against the same problem without the
    cut, whose cost differs by the cut's value alone (the water kept is the same: none)."""
    from mdpo.envs.hydro.model import build_stage_problem
    from mdpo.envs.hydro.sddp import MYOPIC_KEEP_WATER

    case = load_case("bolivia")
    # the state, to the last bit: the failure depends on it (and on the cut's intercept)
    volume = np.array(
        [1.4204181543468748e-13, 8.193826555440937e-14, 0.0002406555019744597,
         1.9052380506854855e-13, 6.139840614017438e-14, 1.398143252841203e-13,
         2.77444058644293e-13, 9.476653098749155e-14, 1.9674125816732148e-13, 0.0,
         3.7783595399635866e-13]
    )  # fmt: skip
    inflow = np.array(
        [0.5619748893093448, 4.331251417431633, 0.5125626308018718, 2.072455483926166,
         3.458518411660018, 4.740012084426849, 0.2706206040720523, 2.612067397172225,
         2.1127722405877623, 0.7232435640799311, 2.323801004708008]
    )  # fmt: skip
    policy = SDDP.myopic(case, 1)
    _, intercept, slopes = policy.cuts[0]
    stage = build_stage_problem(case, volume, inflow, formulation="ac", future_cost=True)
    model = open_model(stage.program, warm_start=False)
    model.add_rows([intercept], [np.inf], [policy._cut_row(stage, slopes)])
    _, status = model._attempt(model._start)
    assert status == "Maximum_Iterations_Exceeded"  # the case this test is about
    solution = model.solve()
    plain = open_model(stage.program).solve()
    kept = solution.primal[stage.volume_out].sum()
    assert kept == pytest.approx(plain.primal[stage.volume_out].sum(), abs=1e-6)
    assert solution.objective == pytest.approx(
        plain.objective + intercept + slopes @ solution.primal[stage.volume_out], rel=1e-7
    )
    assert intercept == pytest.approx(MYOPIC_KEEP_WATER * sum(p.max_volume for p in case.plants))
