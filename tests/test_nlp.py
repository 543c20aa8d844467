"""Non-linear programs: the MathOptFormat reader's quadratic, expression-graph and cone
constraints (against hand-computed values), and the Ipopt backend (optimum, duals against
finite differences, warm starts, cuts, and a named status when a solve fails)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mdpo.rules import LPFormatError, NonlinearProgram, read_mof
from mdpo.rules.backend import SolveError, open_model
from mdpo.rules.lp import LinearProgram
from mdpo.rules.nlp import evaluate, var


def _mof(tmp_path, constraints, objective=None, variables=("x", "y", "z")):
    model = {
        "name": "m",
        "version": {"major": 1, "minor": 7},
        "variables": [{"name": v} for v in variables],
        "objective": objective or {"sense": "feasibility"},
        "constraints": constraints,
    }
    path = tmp_path / "m.mof.json"
    path.write_text(json.dumps(model))
    return str(path)


def test_reader_quadratic_graph_and_cones_evaluate_as_written(tmp_path):
    point = np.array([0.3, -1.2, 2.0])
    x, y, z = point
    path = _mof(
        tmp_path,
        [
            {  # MOI's convention: ½·2·x² + 3·x·y + 1·z + 0.5
                "name": "quad",
                "function": {
                    "type": "ScalarQuadraticFunction",
                    "affine_terms": [{"coefficient": 1.0, "variable": "z"}],
                    "quadratic_terms": [
                        {"coefficient": 2.0, "variable_1": "x", "variable_2": "x"},
                        {"coefficient": 3.0, "variable_1": "x", "variable_2": "y"},
                    ],
                    "constant": 0.5,
                },
                "set": {"type": "LessThan", "upper": 4.0},
            },
            {  # sin(x)·y − cos(z)/2 + x^3 (node references, 1-based)
                "name": "graph",
                "function": {
                    "type": "ScalarNonlinearFunction",
                    "root": {"type": "node", "index": 4},
                    "node_list": [
                        {"type": "*", "args": [{"type": "node", "index": 2}, "y"]},
                        {"type": "sin", "args": ["x"]},
                        {"type": "/", "args": [{"type": "cos", "args": ["z"]}, 2]},
                        {
                            "type": "+",
                            "args": [
                                {
                                    "type": "-",
                                    "args": [
                                        {"type": "node", "index": 1},
                                        {"type": "node", "index": 3},
                                    ],
                                },
                                {"type": "^", "args": ["x", 3]},
                            ],
                        },
                    ],
                },
                "set": {"type": "EqualTo", "value": 1.0},
            },
            {  # (z + 1, x, 2y) in the second-order cone
                "name": "cone",
                "function": {
                    "type": "VectorAffineFunction",
                    "terms": [
                        {"output_index": 1, "scalar_term": {"coefficient": 1.0, "variable": "z"}},
                        {"output_index": 2, "scalar_term": {"coefficient": 1.0, "variable": "x"}},
                        {"output_index": 3, "scalar_term": {"coefficient": 2.0, "variable": "y"}},
                    ],
                    "constants": [1.0, 0.0, 0.0],
                },
                "set": {"type": "SecondOrderCone", "dimension": 3},
            },
            {  # (x, z, y) in the rotated cone: 2·x·z >= y²
                "name": "rotated",
                "function": {
                    "type": "VectorAffineFunction",
                    "terms": [
                        {"output_index": 1, "scalar_term": {"coefficient": 1.0, "variable": "x"}},
                        {"output_index": 2, "scalar_term": {"coefficient": 1.0, "variable": "z"}},
                        {"output_index": 3, "scalar_term": {"coefficient": 1.0, "variable": "y"}},
                    ],
                    "constants": [0.0, 0.0, 0.0],
                },
                "set": {"type": "RotatedSecondOrderCone", "dimension": 3},
            },
        ],
    )
    nlp = read_mof(path)
    assert isinstance(nlp, NonlinearProgram)
    assert nlp.names == ["quad", "graph"]
    values = [evaluate(expr, point) for expr in nlp.constraints]
    assert values[0] == pytest.approx(x**2 + 3 * x * y + z)  # the constant moves to the bound
    assert nlp.upper[0] == pytest.approx(3.5)
    assert values[1] == pytest.approx(math.sin(x) * y - math.cos(z) / 2 + x**3)
    cone, rotated = nlp.cones
    assert (cone.kind, cone.name, rotated.kind) == ("soc", "cone", "rsoc")
    assert cone.components == [({2: 1.0}, 1.0), ({0: 1.0}, 0.0), ({1: 2.0}, 0.0)]
    # as one smooth row each (what Ipopt solves): Σ c_k² − c₀² and Σ c_k² − 2·c₀·c₁
    assert evaluate(cone.expression(), point) == pytest.approx(x**2 + (2 * y) ** 2 - (z + 1) ** 2)
    assert evaluate(rotated.expression(), point) == pytest.approx(y**2 - 2 * x * z)
    assert nlp.rows == ["quad", "graph", "cone", "rotated"] and list(nlp.row_upper[2:]) == [0, 0]


@pytest.mark.parametrize(
    "node_list, message",
    [
        ([{"type": "node", "index": 1}], "deeper than 64"),  # a cycle
        ([{"type": "tan", "args": ["x"]}], "operator tan is not one of"),
        ([{"type": "sin", "args": ["x", "y"]}], "sin has the wrong arguments"),
        ([{"type": "+", "args": ["nope"]}], "unknown variable 'nope'"),
        ([{"type": "node", "index": 7}], "node index 7 is out of range"),
        (  # each node twice the one before: 2^25 leaves from 26 nodes
            [{"type": "+", "args": ["x", "x"]}]
            + [
                {"type": "+", "args": [{"type": "node", "index": k}, {"type": "node", "index": k}]}
                for k in range(1, 26)
            ],
            "expands to more than 10000 nodes",
        ),
    ],
)
def test_reader_refuses_bad_graphs_in_one_line(tmp_path, node_list, message):
    path = _mof(
        tmp_path,
        [
            {
                "name": "g",
                "function": {
                    "type": "ScalarNonlinearFunction",
                    "root": {"type": "node", "index": len(node_list)},
                    "node_list": node_list,
                },
                "set": {"type": "EqualTo", "value": 0.0},
            }
        ],
    )
    with pytest.raises(LPFormatError, match=message) as caught:
        read_mof(path)
    assert "\n" not in str(caught.value) and "constraint g" in str(caught.value)


def _circle_problem() -> NonlinearProgram:
    """min −x − 2y s.t. x² + y² <= r (the row), x <= a (a fixed-able column bound), y <= b
    (a linear row): optimum on the circle, analytic."""
    linear = LinearProgram(
        name="circle",
        variables=["x", "y"],
        col_lower=np.array([-10.0, -10.0]),
        col_upper=np.array([10.0, 10.0]),
        objective=np.array([-1.0, -2.0]),
        objective_constant=0.0,
        maximize=False,
        rows=["y_cap"],
        row_lower=np.array([-np.inf]),
        row_upper=np.array([10.0]),
        row_start=np.array([0, 1]),
        columns=np.array([1]),
        values=np.array([1.0]),
    )
    circle = ("+", ("^", var(0), 2.0), ("^", var(1), 2.0))
    return NonlinearProgram(linear, [circle], ["disc"], np.array([-np.inf]), np.array([5.0]))


def test_ipopt_optimum_and_duals_against_the_analytic_solution_and_finite_differences():
    model = open_model(_circle_problem())
    solution = model.solve()
    # min −x − 2y on x² + y² <= 5: (1, 2), cost −5; d cost / d r = −‖(1,2)‖/(2·√r) = −1/2
    assert solution.primal == pytest.approx([1.0, 2.0], abs=1e-6)
    assert solution.objective == pytest.approx(-5.0, abs=1e-7)
    assert solution.status == "Solve_Succeeded"
    step = 1e-4

    def cost_with(rows=None, cols=None) -> float:
        probe = open_model(_circle_problem())
        if rows is not None:
            probe.set_row_bounds(*rows)
        if cols is not None:
            probe.set_col_bounds(*cols)
        return probe.solve().objective

    disc = 1  # rows: the linear one first, then the non-linear one
    slope = (
        cost_with(rows=([disc], [-np.inf], [5.0 + step]))
        - cost_with(rows=([disc], [-np.inf], [5.0 - step]))
    ) / (2 * step)
    assert solution.row_duals[disc] == pytest.approx(slope, rel=1e-4)
    assert solution.row_duals[disc] == pytest.approx(-0.5, rel=1e-5)
    # a fixed column: its dual is the derivative of the cost with respect to its value
    fixed = open_model(_circle_problem())
    fixed.set_col_bounds([0], [1.5], [1.5])
    at = fixed.solve()
    slope = (
        cost_with(cols=([0], [1.5 + step], [1.5 + step]))
        - cost_with(cols=([0], [1.5 - step], [1.5 - step]))
    ) / (2 * step)
    assert at.col_duals[0] == pytest.approx(slope, rel=1e-4)


def test_ipopt_warm_start_cuts_and_named_failures():
    model = open_model(_circle_problem())
    cold = model.solve()
    cold_iterations = model.iterations
    model.solve()  # from the last solution
    assert model.iterations < cold_iterations
    # a cut y <= 1 (as SDDP adds): the optimum moves to (2, 1)
    model.add_rows(np.array([-np.inf]), np.array([1.0]), [(np.array([1]), np.array([1.0]))])
    cut = model.solve()
    assert cut.primal == pytest.approx([2.0, 1.0], abs=1e-6)
    assert cut.objective == pytest.approx(-4.0, abs=1e-7) and cold.objective < cut.objective
    assert len(cut.row_duals) == 3
    # infeasible: x fixed outside the disc
    model.set_col_bounds([0], [3.0], [3.0])
    with pytest.raises(SolveError, match=r"circle \(scenario 7\): Ipopt ended with status '"):
        model.solve("scenario 7")
    model.set_col_bounds([0], [2.0], [1.0])
    with pytest.raises(SolveError, match="lower bound is above its upper bound"):
        model.solve()


def test_the_reference_ac_and_soc_files_solve():
    """The authors' AC and SOC stage problems of case3 solve from a flat start."""
    for name in ("ACPPowerModel", "SOCWRConicPowerModel"):
        nlp = read_mof(f"envs/hydro/data/case3/{name}.mof.json")
        nlp.start = np.array([1.0 if "_vm[" in v or "_w" in v else 0.0 for v in nlp.variables])
        assert open_model(nlp).solve().objective > 0


def test_clarabel_and_ipopt_agree_on_the_soc_stage_with_duals_as_derivatives():
    """The SOC stage problem of Bolivia (linear rows, second-order and rotated cones) solved
    by Clarabel and by Ipopt: the same optimum (relative 1e-6), and the reduced costs of the
    fixed incoming volumes (SDDP's cut slopes) equal to finite differences of the optimum."""
    from mdpo.envs.hydro import load_case
    from mdpo.envs.hydro.model import build_stage_problem

    case = load_case("bolivia")
    stage = build_stage_problem(case, formulation="soc", future_cost=True)
    assert not stage.program.constraints and stage.program.cones  # purely conic
    conic = open_model(stage.program)
    assert type(conic).__name__ == "ClarabelModel"
    smooth = open_model(stage.program, backend="ipopt")
    volume = 1e-3 * np.array([p.max_volume for p in case.plants])  # scarce: water has value
    for model in (conic, smooth):
        model.set_col_bounds(stage.volume_in, volume, volume)
    a, b = conic.solve(), smooth.solve()
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    reservoir = int(np.argmin(b.col_duals[stage.volume_in]))  # the most valuable water
    h = 0.25 * volume[reservoir]
    costs = []
    for step in (h, -h):  # Ipopt's optimum: accurate to 1e-12 here, Clarabel's to about 1e-8
        moved = volume.copy()
        moved[reservoir] += step
        smooth.set_col_bounds(stage.volume_in, moved, moved)
        costs.append(smooth.solve().objective)
    slope = (costs[0] - costs[1]) / (2 * h)
    assert slope < 0  # stored water saves cost
    for solution in (a, b):
        assert solution.col_duals[stage.volume_in[reservoir]] == pytest.approx(slope, rel=1e-3)


def test_clarabel_row_duals_cuts_and_named_failures():
    """min −x − 2y on the disc x² + y² <= 5 as a cone ‖(x, y)‖ <= √5: the optimum, the
    linear row's dual against a finite difference, a cut, infeasibility named."""
    from mdpo.rules.nlp import Cone

    linear = _circle_problem().linear
    disc = Cone("soc", [({}, np.sqrt(5.0)), ({0: 1.0}, 0.0), ({1: 1.0}, 0.0)], "disc")
    program = NonlinearProgram(linear, [], [], np.zeros(0), np.zeros(0), cones=[disc])
    model = open_model(program)
    solution = model.solve()
    # a linear objective on a curved boundary: the point is known to about the square root
    # of the objective's accuracy
    assert solution.objective == pytest.approx(-5.0, abs=1e-7)
    assert solution.primal == pytest.approx([1.0, 2.0], abs=1e-4)
    assert np.isnan(solution.row_duals[1])  # a cone's row: no dual
    model.set_row_bounds([0], [-np.inf], [1.5])  # y <= 1.5 binds: (√2.75, 1.5)
    capped = model.solve()
    step = 1e-4
    model.set_row_bounds([0], [-np.inf], [1.5 + step])
    up = model.solve().objective
    model.set_row_bounds([0], [-np.inf], [1.5 - step])
    down = model.solve().objective
    assert capped.row_duals[0] == pytest.approx((up - down) / (2 * step), rel=1e-5)
    model.set_row_bounds([0], [-np.inf], [10.0])
    model.add_rows(np.array([-np.inf]), np.array([1.0]), [(np.array([1]), np.array([1.0]))])
    assert model.solve().primal == pytest.approx([2.0, 1.0], abs=1e-6)
    model.set_col_bounds([0], [3.0], [3.0])
    with pytest.raises(SolveError, match="disc-free|Clarabel ended with status 'PrimalInfeasible'"):
        model.solve()
    with pytest.raises(TypeError, match="Clarabel solves linear rows and cones only"):
        open_model(_circle_problem(), backend="clarabel")


def test_reader_bounds_the_nodes_of_a_whole_file(tmp_path):
    """Many constraints each just under the per-expression bound are refused together: a
    small file cannot expand into gigabytes of expression trees."""
    doubling = [{"type": "+", "args": ["x", "x"]}] + [
        {"type": "+", "args": [{"type": "node", "index": k}, {"type": "node", "index": k}]}
        for k in range(1, 11)
    ]  # about 6 000 nodes once expanded, under the per-expression 10 000
    constraint = {
        "function": {
            "type": "ScalarNonlinearFunction",
            "root": {"type": "node", "index": len(doubling)},
            "node_list": doubling,
        },
        "set": {"type": "LessThan", "upper": 1.0},
    }
    path = _mof(tmp_path, [{**constraint, "name": f"g{k}"} for k in range(200)])
    with pytest.raises(LPFormatError, match="more than 1000000 nodes in all"):
        read_mof(path)


def test_a_cone_no_point_can_meet_is_refused(tmp_path):
    from mdpo.rules.nlp import Cone

    with pytest.raises(ValueError, match="bound side is a negative constant"):
        Cone("soc", [({}, -1.0), ({0: 1.0}, 0.0)], "c")
    path = _mof(
        tmp_path,
        [
            {
                "name": "c",
                "function": {
                    "type": "VectorAffineFunction",
                    "terms": [
                        {"output_index": 2, "scalar_term": {"coefficient": 1.0, "variable": "x"}}
                    ],
                    "constants": [-1.0, 0.0],
                },
                "set": {"type": "SecondOrderCone", "dimension": 2},
            }
        ],
    )
    with pytest.raises(LPFormatError, match="a cone's bound side is a negative constant"):
        read_mof(path)
