"""The stage LP built from PowerModels.json + hydro.json reproduces the authors' reference
subproblem (read from its MathOptFormat file) at any incoming volumes and inflows."""

import numpy as np
import pytest

from mdpo.envs.hydro import load_case
from mdpo.envs.hydro.model import build_stage_lp
from mdpo.rules import read_mof
from mdpo.rules.highs import HighsModel


@pytest.mark.parametrize("name,load_scale", [("case3", 1.0), ("bolivia", 0.6)])
def test_stage_lp_equals_reference_subproblem(name, load_scale):
    """Same optimal value (relative 1e-6) as DCPPowerModel.mof.json for 20 random states and
    inflows; the reference file was written with these load scales (case3 unscaled)."""
    case = load_case(name)
    stage = build_stage_lp(case, load_scale=load_scale)
    reference = read_mof(f"envs/hydro/data/{name}/DCPPowerModel.mof.json")
    n = len(case.plants)
    ref_in = [reference.column(f"reservoir[{k + 1}]_in") for k in range(n)]
    ref_w = [reference.column(f"inflow[{k + 1}]") for k in range(n)]
    ours, theirs = HighsModel(stage.lp), HighsModel(reference)
    rng = np.random.default_rng(0)
    max_volume = np.array([p.max_volume for p in case.plants])
    values = []
    for trial in range(20):
        volume = rng.uniform(0, 1, n) ** 4 * max_volume  # often scarce water: binding limits
        row, scenario = rng.integers(case.inflows.shape[0]), rng.integers(case.n_scenarios)
        inflow = case.inflows[row, :, scenario] * rng.uniform(0.0, 2.0)
        ours.set_col_bounds(stage.volume_in, volume, volume)
        ours.set_col_bounds(stage.inflow, inflow, inflow)
        theirs.set_col_bounds(ref_in, volume, volume)
        theirs.set_col_bounds(ref_w, inflow, inflow)
        a, b = ours.solve(f"trial {trial}").objective, theirs.solve(f"trial {trial}").objective
        assert a == pytest.approx(b, rel=1e-6), f"trial {trial}"
        values.append(a)
    assert len(set(np.round(values, 3))) >= 5, "the trials should reach different optima"


def test_stage_lp_at_the_stored_inputs():
    """The reference optimum stated with the data: 1557.8166 (bolivia), 501.3903 (case3)."""
    assert HighsModel(build_stage_lp(load_case("bolivia")).lp).solve().objective == (
        pytest.approx(1557.8166, abs=1e-4)
    )
    case3 = build_stage_lp(load_case("case3"), load_scale=1.0)
    assert HighsModel(case3.lp).solve().objective == pytest.approx(501.3903, abs=1e-4)


def test_bad_state_shape():
    with pytest.raises(ValueError, match=r"shape \(11,\)"):
        build_stage_lp(load_case("bolivia"), volume_in=np.zeros(3))


def scenario(case, horizon, seed):
    """Stage-wise independent draws of one joint inflow column per stage, rows cycling."""
    rng = np.random.default_rng(seed)
    rows = case.inflows.shape[0]
    return np.stack(
        [case.inflows[t % rows, :, rng.integers(case.n_scenarios)] for t in range(horizon)]
    )


def test_one_stage_equivalent_is_the_stage_lp():
    from mdpo.envs.hydro.model import build_deterministic_equivalent

    case = load_case("bolivia")
    volume = np.array([p.max_volume for p in case.plants]) * 0.3
    inflow = case.inflows[3, :, 4]
    one = build_deterministic_equivalent(case, inflow[None], volume_in=volume)
    stage = build_stage_lp(case, volume_in=volume, inflow=inflow)
    assert HighsModel(one.lp).solve().objective == pytest.approx(
        HighsModel(stage.lp).solve().objective, rel=1e-9
    )


def test_targets_at_the_optimum_cost_nothing_and_slack_is_penalized():
    from mdpo.envs.hydro.model import build_deterministic_equivalent, largest_cost

    case = load_case("case3")
    inflows = scenario(case, 6, seed=1)
    free = build_deterministic_equivalent(case, inflows, load_scale=1.0)
    solution = HighsModel(free.lp).solve()
    volumes = solution.primal[free.volume_out]
    fixed = build_deterministic_equivalent(case, inflows, targets=volumes, load_scale=1.0)
    assert fixed.slack_penalty == largest_cost(case) == 10010.0
    assert HighsModel(fixed.lp).solve().objective == pytest.approx(solution.objective, rel=1e-7)
    # an unreachable target (above the reservoir) is met by slack at the penalty's price
    too_high = volumes.copy()
    too_high[2, 0] = case.plants[0].max_volume + 0.1
    model = HighsModel(
        build_deterministic_equivalent(case, inflows, targets=too_high, load_scale=1.0).lp
    )
    assert model.solve().objective >= solution.objective + 0.1 * 10010.0 - 1e-6


@pytest.mark.parametrize("name,horizon,load_scale", [("case3", 4, 1.0), ("bolivia", 3, 0.6)])
def test_target_duals_are_cost_derivatives(name, horizon, load_scale):
    """The dual of each target constraint equals the central finite difference of the optimal
    cost with respect to that target, wherever the basis does not change within ±h."""
    from mdpo.envs.hydro.model import build_deterministic_equivalent

    case = load_case(name)
    inflows = scenario(case, horizon, seed=2)
    rng = np.random.default_rng(3)
    max_volume = np.array([p.max_volume for p in case.plants])
    targets = rng.uniform(0.05, 0.6, inflows.shape) * max_volume
    problem = build_deterministic_equivalent(case, inflows, targets=targets, load_scale=load_scale)
    model = HighsModel(problem.lp)
    base = model.solve()
    duals = base.row_duals[problem.target_rows]
    checked = 0
    for t in range(horizon):
        for k in range(len(case.plants)):
            if max_volume[k] == 0:
                continue
            h = 1e-5 * max_volume[k]
            costs = []
            for step in (h, -h):
                moved = targets[t, k] + step
                model.set_row_bounds([problem.target_rows[t, k]], [moved], [moved])
                costs.append(model.solve().objective)
            model.set_row_bounds([problem.target_rows[t, k]], [targets[t, k]], [targets[t, k]])
            right = (costs[0] - base.objective) / h
            left = (base.objective - costs[1]) / h
            if abs(right - left) > 1e-6 * max(1.0, abs(right)):
                continue  # a basis change inside ±h: no derivative to compare
            assert duals[t, k] == pytest.approx((right + left) / 2, rel=1e-4, abs=1e-3), (t, k)
            checked += 1
    assert checked >= horizon * len(case.plants) // 2
