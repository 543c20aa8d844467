"""The Ipopt backend, through CasADi (the ``casadi`` wheel bundles Ipopt with MUMPS): a
:class:`~mdpo.rules.nlp.NonlinearProgram` built once as a CasADi graph with exact sparse
derivatives, solved again and again under new bounds, each solve warm-started from the last
solution.

Duals follow the HiGHS backend's convention, derivatives of the optimal value: a row's with
respect to its bound, a fixed column's with respect to its value (CasADi's ``lam_g`` and
``lam_x`` with the sign turned). For a non-convex problem (the AC power flow) they are the
derivatives at the local optimum Ipopt found.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from mdpo.rules.backend import BoundsInArrays, Solution, SolveError
from mdpo.rules.nlp import Expr, NonlinearProgram

#: Ipopt's return statuses accepted as a solution
SOLVED = ("Solve_Succeeded", "Solved_To_Acceptable_Level")
#: statuses another barrier strategy may get past (not infeasibility, nor a time limit)
NUMERICAL = (
    "Maximum_Iterations_Exceeded",
    "Restoration_Failed",
    "Error_In_Step_Computation",
    "Search_Direction_Becomes_Too_Small",
)


def to_casadi(expr: Expr, x: Any, ca: Any) -> Any:
    """``expr`` as a CasADi expression in the symbols ``x``."""
    if isinstance(expr, (int, float)):
        return float(expr)
    op, *args = expr
    if op == "x":
        return x[args[0]]
    values = [to_casadi(a, x, ca) for a in args]
    if op == "+":
        return functools.reduce(operator.add, values)
    if op == "*":
        return functools.reduce(operator.mul, values)
    if op == "-":
        return -values[0] if len(values) == 1 else values[0] - values[1]
    if op == "/":
        return values[0] / values[1]
    if op == "^":
        return values[0] ** values[1]
    return getattr(ca, op)(values[0])  # sin, cos, exp, log, sqrt


class IpoptModel(BoundsInArrays):
    """A :class:`NonlinearProgram` in Ipopt, with the interface of
    :class:`~mdpo.rules.highs.HighsModel` (``set_col_bounds``, ``set_row_bounds``,
    ``add_rows``, ``solve``).

    Args:
        problem: the problem (``problem.start`` is the first starting point).
        tolerance: Ipopt's ``tol`` (relative KKT error).
        max_iterations: Ipopt's ``max_iter`` for one attempt.
        time_limit: seconds of one attempt (Ipopt's ``max_wall_time``).
        warm_start: start each solve at the previous solution (else at ``problem.start``).
        threads: accepted for the interface of the HiGHS model; MUMPS runs on one.
    """

    def __init__(
        self,
        problem: NonlinearProgram,
        tolerance: float = 1e-9,
        max_iterations: int = 3000,
        time_limit: float = 600.0,
        warm_start: bool = True,
        threads: int = 1,
    ):
        import casadi  # imported where a model is built: worker processes import it there

        self._ca = casadi
        self.problem = problem
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.time_limit = float(time_limit)
        self.warm_start = bool(warm_start)
        self._bounds_from(problem)
        self._cuts: list[tuple[np.ndarray, np.ndarray]] = []
        self._start = problem.starting_point()
        self._x = self._start.copy()
        self._solver = self._adaptive_solver = None
        self._hidden_lower = np.zeros(0)
        self.iterations = 0  # Ipopt iterations of the last solve

    # -- rows -----------------------------------------------------------------------------------
    def add_rows(
        self, lower: np.ndarray, upper: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Append linear rows ``lower <= Σ values·x[columns] <= upper`` (e.g. SDDP cuts); the
        solver is rebuilt at the next solve."""
        for columns, values in rows:
            self._cuts.append((np.asarray(columns, np.int64), np.asarray(values, np.float64)))
        self.row_lower = np.concatenate([self.row_lower, np.asarray(lower, np.float64)])
        self.row_upper = np.concatenate([self.row_upper, np.asarray(upper, np.float64)])
        self._solver = self._adaptive_solver = None

    # -- solving ---------------------------------------------------------------------------
    def _build(self, **extra_options: Any) -> Any:
        ca = self._ca
        p, lp = self.problem, self.problem.linear
        n = p.n_variables
        x = ca.SX.sym("x", n)

        def product(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, m: int) -> Any:
            matrix = ca.DM.triplet(rows.tolist(), cols.tolist(), vals.tolist(), m, n)
            return ca.mtimes(matrix, x)

        def stacked(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Any:
            """``Σ values·x[columns]`` of each ``(columns, values)`` row."""
            rows = np.concatenate([np.full(len(c), k) for k, (c, _) in enumerate(pairs)])
            cols = np.concatenate([c for c, _ in pairs])
            return product(rows, cols, np.concatenate([v for _, v in pairs]), len(pairs))

        # rows: the linear ones (one sparse product), the non-linear ones, then the cuts
        parts = []
        if lp.n_rows:
            rows = np.repeat(np.arange(lp.n_rows), np.diff(lp.row_start))
            parts.append(product(rows, lp.columns, lp.values, lp.n_rows))
        parts += [to_casadi(expr, x, ca) for expr in p.constraints]
        parts += [to_casadi(cone.expression(), x, ca) for cone in p.cones]
        if self._cuts:
            parts.append(stacked(self._cuts))
        # the cones' leading components are non-negative: rows after every public one
        hidden = [
            (terms, constant)
            for cone in p.cones
            for terms, constant in cone.components[: cone.leading()]
            if terms
        ]
        self._hidden_lower = np.array([-constant for _, constant in hidden])
        if hidden:
            parts.append(
                stacked(
                    [
                        (np.fromiter(t, np.int64), np.fromiter(t.values(), np.float64))
                        for t, _ in hidden
                    ]
                )
            )
        sign = -1.0 if lp.maximize else 1.0
        objective = sign * (ca.dot(ca.DM(lp.objective), x) + lp.objective_constant)
        options = {
            "print_time": False,
            "ipopt.print_level": 0,
            "ipopt.sb": "yes",
            "ipopt.tol": self.tolerance,
            "ipopt.max_iter": self.max_iterations,
            "ipopt.max_wall_time": self.time_limit,
            # Ipopt relaxes every bound by 1e-8 (relative) by default: on the SOC stage problem
            # that lowered the optimum by 1.2e-6 (relative) below the exact one
            "ipopt.bound_relax_factor": 0.0,
            **extra_options,
        }
        problem = {"x": x, "f": objective, "g": ca.vertcat(*parts)}
        return ca.nlpsol(f"ipopt_{id(self)}", "ipopt", problem, options)

    def _attempt(self, x0: np.ndarray, adaptive: bool = False) -> tuple[dict, str]:
        if self._solver is None:
            self._solver = self._build()
        solver = self._solver
        if adaptive:
            if self._adaptive_solver is None:
                self._adaptive_solver = self._build(**{"ipopt.mu_strategy": "adaptive"})
            solver = self._adaptive_solver
        hidden = len(self._hidden_lower)
        result = solver(
            x0=np.clip(x0, self.col_lower, self.col_upper),
            lbx=self.col_lower,
            ubx=self.col_upper,
            lbg=np.concatenate([self.row_lower, self._hidden_lower]),
            ubg=np.concatenate([self.row_upper, np.full(hidden, np.inf)]),
        )
        stats = solver.stats()
        self.iterations = int(stats.get("iter_count", 0))
        return result, str(stats.get("return_status", "unknown"))

    def solve(self, context: str = "") -> Solution:
        """Solve from the last solution (or the problem's starting point); a solve that fails
        from there is retried from the starting point, then, after a numerical failure (not
        infeasibility), from there with Ipopt's adaptive barrier update: its default,
        monotone one cycled to the iteration limit on a Bolivia AC stage problem that the
        adaptive one solves in 22 iterations.

        Raises:
            SolveError: naming the problem, ``context`` and Ipopt's status (infeasible,
                iteration or time limit, restoration failure...).
        """
        if np.any(self.col_lower > self.col_upper) or np.any(self.row_lower > self.row_upper):
            where = f" ({context})" if context else ""
            raise SolveError(f"{self.problem.name}{where}: a lower bound is above its upper bound")
        result, status = self._attempt(self._x if self.warm_start else self._start)
        if status not in SOLVED and self.warm_start:
            result, status = self._attempt(self._start)
        if status in NUMERICAL:
            result, status = self._attempt(self._start, adaptive=True)
        if status not in SOLVED:
            where = f" ({context})" if context else ""
            raise SolveError(f"{self.problem.name}{where}: Ipopt ended with status {status!r}")
        primal = np.asarray(result["x"]).ravel()
        self._x = primal
        sign = -1.0 if self.problem.linear.maximize else 1.0
        return Solution(
            objective=sign * float(result["f"]),
            primal=primal,
            row_duals=-sign * np.asarray(result["lam_g"]).ravel()[: len(self.row_lower)],
            col_duals=-sign * np.asarray(result["lam_x"]).ravel(),
            status=status,
        )
