"""The stage LP built from PowerModels.json + hydro.json reproduces the authors' reference
subproblem (read from its MathOptFormat file) at any incoming volumes and inflows."""

import numpy as np
import pytest

from envs.hydro import load_case
from envs.hydro.model import build_stage_lp
from mdpo.optim import read_mof
from mdpo.optim.highs import HighsModel


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
