"""The LP arrays, the MathOptFormat reader and the HiGHS backend."""

import json

import numpy as np
import pytest

from mdpo.rules import LPFormatError, read_mof
from mdpo.rules.backend import SolveError
from mdpo.rules.highs import HighsModel
from mdpo.rules.lp import LinearProgram


@pytest.mark.parametrize("case,optimum", [("case3", 501.3903), ("bolivia", 1557.8166)])
def test_reference_subproblems_solve_to_their_stored_optimum(case, optimum):
    """The authors' stage subproblems, read from MathOptFormat and solved by our backend, reach
    the optimum stated in the reference (HiGHS at the stored inputs)."""
    lp = read_mof(f"envs/hydro/data/{case}/DCPPowerModel.mof.json")
    solution = HighsModel(lp).solve()
    assert solution.objective == pytest.approx(optimum, abs=1e-4)
    assert solution.status == "Optimal"
    assert solution.primal.shape == (lp.n_variables,)
    assert solution.row_duals.shape == (lp.n_rows,)


def tiny_lp(rhs=4.0):
    """min x + 2y  s.t.  x + y >= rhs,  0 <= x <= 3,  y >= 0  (optimum x = 3, y = rhs - 3)."""
    return LinearProgram(
        name="tiny",
        variables=["x", "y"],
        col_lower=np.zeros(2),
        col_upper=np.array([3.0, np.inf]),
        objective=np.array([1.0, 2.0]),
        objective_constant=0.5,
        maximize=False,
        rows=["demand"],
        row_lower=np.array([rhs]),
        row_upper=np.array([np.inf]),
        row_start=np.array([0, 2]),
        columns=np.array([0, 1]),
        values=np.array([1.0, 1.0]),
    )


def test_solve_change_bounds_and_duals():
    model = HighsModel(tiny_lp())
    solution = model.solve()
    assert solution.objective == pytest.approx(3 + 2 * 1 + 0.5)
    np.testing.assert_allclose(solution.primal, [3.0, 1.0])
    # the row dual is the derivative of the optimum with respect to the right-hand side; the
    # reduced cost of x (at its upper bound) that of its bound: 1 − 2 = −1
    assert solution.row_duals[0] == pytest.approx(2.0)
    assert solution.col_duals[0] == pytest.approx(-1.0)
    model.set_row_bounds([0], [5.0], [np.inf])
    assert model.solve().objective == pytest.approx(3 + 2 * 2 + 0.5)
    model.set_col_bounds([0], [0.0], [5.0])
    assert model.solve().objective == pytest.approx(5 + 0.5)


def test_infeasible_and_unbounded_solves_name_the_problem():
    model = HighsModel(tiny_lp())
    model.set_col_bounds([1], [0.0], [0.5])  # x + y <= 3.5 < 4
    with pytest.raises(
        SolveError, match=r"tiny \(scenario 7\): HiGHS ended with status 'Infeasible'"
    ):
        model.solve("scenario 7")
    lp = tiny_lp()
    lp.objective = np.array([-1.0, 0.0])
    lp.col_upper = np.array([np.inf, np.inf])
    with pytest.raises(SolveError, match="tiny: HiGHS ended with status '.*[Uu]nbounded"):
        HighsModel(lp).solve()


def test_mof_reader_refuses_what_it_does_not_read(tmp_path):
    model = {
        "name": "m",
        "version": {"major": 1, "minor": 7},
        "variables": [{"name": "x"}],
        "objective": {"sense": "min", "function": {"type": "ScalarQuadraticFunction"}},
        "constraints": [],
    }
    path = tmp_path / "q.mof.json"
    path.write_text(json.dumps(model))
    with pytest.raises(LPFormatError, match="ScalarQuadraticFunction function"):
        read_mof(str(path))
    model["objective"] = {"sense": "feasibility"}
    model["constraints"] = [
        {"function": {"type": "Variable", "name": "x"}, "set": {"type": "Integer"}}
    ]
    path.write_text(json.dumps(model))
    with pytest.raises(LPFormatError, match="Integer set"):
        read_mof(str(path))
    path.write_text("{not json")
    with pytest.raises(LPFormatError, match="not a MathOptFormat model"):
        read_mof(str(path))


def test_batch_solve_in_processes_equals_serial():
    from mdpo.envs.hydro import load_case
    from mdpo.envs.hydro.model import build_deterministic_equivalent
    from mdpo.rules.backend import BoundUpdate, solve_batch

    case = load_case("case3")
    rng = np.random.default_rng(0)
    horizon = 5
    scenarios = [
        np.stack([case.inflows[t, :, rng.integers(3)] for t in range(horizon)]) for _ in range(6)
    ]
    problem = build_deterministic_equivalent(case, scenarios[0], load_scale=1.0)
    cols = problem.inflow.ravel()
    updates = [BoundUpdate(cols, s.ravel(), s.ravel()) for s in scenarios]
    serial = solve_batch(problem.program, updates, workers=1)
    parallel = solve_batch(problem.program, updates, workers=2)
    for a, b in zip(serial, parallel):
        assert a.objective == pytest.approx(b.objective, rel=1e-9)
    assert len({round(s.objective, 3) for s in serial}) > 1
    # a scenario that cannot be solved is named
    bad = list(updates)
    bad[3] = BoundUpdate(problem.volume_in[:1], np.array([1.0]), np.array([0.0]))
    with pytest.raises(SolveError, match="scenario 3"):
        solve_batch(problem.program, bad, workers=2)
    # the bad bounds of scenario 3 do not leak into the next scenario a worker solves
    bad[3] = BoundUpdate(problem.volume_in[:1], np.array([0.1]), np.array([0.1]))
    again = solve_batch(problem.program, bad, workers=1)
    assert again[4].objective == pytest.approx(serial[4].objective, rel=1e-9)


def test_a_solve_out_of_time_is_retried_then_named():
    """A solve that ends without a verdict is retried (cold, then interior point); when every
    attempt runs out of time the error names the problem and the status."""
    from mdpo.envs.hydro.problem import HydroProblem

    lp = HydroProblem("bolivia", 48).target_equivalent().program
    model = HighsModel(lp, time_limit=1e-4)
    with pytest.raises(
        SolveError, match="48-stage deterministic equivalent.*\\(here\\).*Time limit"
    ):
        model.solve("here")
    model.time_limit = 60.0
    assert model.solve().status == "Optimal"


def test_the_time_limit_is_per_solve_not_per_model():
    """HiGHS counts its time limit over every solve of an instance; ours is per solve: many
    solves whose total exceeds the limit all succeed."""
    from mdpo.envs.hydro.problem import HydroProblem

    model = HighsModel(HydroProblem("bolivia", 24).target_equivalent().program, time_limit=1.0)
    # solve until the instance's total time is past the limit (how many solves that takes
    # depends on the machine), then a few more: each must still succeed
    for extra in range(400):
        model.highs.clearSolver()  # cold: each solve takes a while
        assert model.solve().status == "Optimal"
        if model.highs.getRunTime() > 1.5 and extra >= 3:
            break
    assert model.highs.getRunTime() > 1.5


def test_batch_solve_on_ray_actors_equals_serial():
    """TS-DDR's batch spread over Ray actors (a local Ray instance here; an address would
    join a cluster) gives the serial solutions, for linear and non-linear problems."""
    ray = pytest.importorskip("ray")  # the ray extra, which .ci/run installs
    from mdpo.envs.hydro import load_case
    from mdpo.envs.hydro.model import build_deterministic_equivalent
    from mdpo.rules.backend import BoundUpdate, SolverPool

    case = load_case("case3")
    rng = np.random.default_rng(0)
    scenarios = [case.path_inflows(p) for p in case.sample_paths(5, 4, rng)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one for both pools
    try:
        for formulation in ("dc", "ac"):
            problem = build_deterministic_equivalent(
                case, scenarios[0], load_scale=1.0, formulation=formulation
            )
            cols = problem.inflow.ravel()
            updates = [BoundUpdate(cols, s.ravel(), s.ravel()) for s in scenarios]
            with SolverPool(problem.program, 1) as local:
                serial = local.solve(updates)
            with SolverPool(problem.program, 2, backend="ray") as actors:
                spread = actors.solve(updates)
            for a, b in zip(serial, spread):
                assert a.objective == pytest.approx(b.objective, rel=1e-7)
        assert ray.is_initialized()  # a pool leaves a Ray it did not start running
    finally:
        ray.shutdown()
    with pytest.raises(ValueError, match="unknown solver backend 'dask'"):
        SolverPool(problem.program, 2, backend="dask")


def test_where_tsddr_solves_is_not_saved_with_it(tmp_path):
    """A model file does not carry a Ray address: loading one never sends work to a cluster."""
    from mdpo import TSDDR

    agent = TSDDR(
        "LinearPolicy",
        "HydroDispatch-v0",
        env_kwargs={"case": "case3", "load_scale": 1.0, "horizon": 3},
        solver_backend="ray",
        ray_address="ray://somewhere:10001",
        eval_freq=0,
    )
    path = agent.save(str(tmp_path / "rule.zip"))
    loaded = TSDDR.load(path)
    assert (loaded.solver_backend, loaded.ray_address) == ("local", None)
    with pytest.raises(ValueError, match="solver_backend must be 'local' or 'ray'"):
        TSDDR("LinearPolicy", None, n_stages=3, solver_backend="slurm")
