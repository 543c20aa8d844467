"""SDDP on case3 against the exact extensive form of a small scenario tree; bounds, simulation
and cut files."""

import numpy as np
import pytest

from envs.hydro import load_case
from envs.hydro.model import build_scenario_tree
from envs.hydro.sddp import SDDP
from mdpo.optim.highs import HighsModel


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


def test_cli_sddp_and_bound(tmp_path, capsys):
    """``mdpo hydro sddp`` and ``mdpo hydro bound`` on the same fixed scenarios: the policy
    (not knowing the future) costs at least the perfect-foresight bound on average."""
    import json

    from mdpo.cli import main

    out = str(tmp_path / "run")
    common = ["--case", "case3", "--load-scale", "1.0", "--scenarios", "12", "--out", out]
    assert main(["hydro", "sddp", *common, "--horizon", "6", "--report", "4",
                 "--iterations", "20", "--no-progress"]) == 0  # fmt: skip
    assert main(["hydro", "bound", *common, "--horizon", "4"]) == 0
    sddp = json.load(open(f"{out}/summary.json"))
    bound = json.load(open(f"{out}/bound_summary.json"))
    assert sddp["simulated_scenarios"] == bound["scenarios"] == 12
    assert sddp["mean_cost"] >= bound["mean_cost"] - 1e-6
    assert main(["hydro", "sddp", *common, "--horizon", "3", "--report", "4"]) == 2
    assert "--report 4 exceeds --horizon 3" in capsys.readouterr().err
