"""The conic backend (Clarabel, an interior-point solver for second-order-cone programs): a
:class:`~mdpo.rules.nlp.NonlinearProgram` whose only non-linear parts are cones (the SOC
relaxation of the hydro case), with the interface of the HiGHS and Ipopt models.

The program becomes ``min q·x`` s.t. ``A x + s = b``, ``s`` in the product of a zero cone
(equality rows and fixed columns), a non-negative cone (the finite sides of the other rows and
bounds) and the second-order cones (a rotated cone ``2·u·v >= ‖x‖²`` as
``‖(u − v, √2·x)‖ <= u + v``). Duals are derivatives of the optimal value as in the other
backends: a row's with respect to its bound, a fixed column's with respect to its value. A cone
row's dual is not computed (NaN): nothing here asks for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mdpo.rules.backend import BoundsInArrays, Solution, SolveError
from mdpo.rules.nlp import Cone, NonlinearProgram

SOLVED = ("Solved", "AlmostSolved")


class ClarabelModel(BoundsInArrays):
    """A conic :class:`NonlinearProgram` (linear rows, bounds and :class:`Cone`, no expression
    rows) in Clarabel.

    Args:
        problem: the program.
        tolerance: Clarabel's gap and feasibility tolerances.
        time_limit: seconds of one solve.
        threads: accepted for the interface of the other models (Clarabel runs on one).
        warm_start: accepted for the interface of the Ipopt model (an interior-point method
            starts from scratch).
    """

    def __init__(
        self,
        problem: NonlinearProgram,
        tolerance: float = 1e-9,
        time_limit: float = 600.0,
        threads: int = 1,
        warm_start: bool = False,
    ):
        if problem.constraints:
            raise TypeError(
                f"{problem.name}: Clarabel solves linear rows and cones only; this program "
                "has non-linear expression rows (solve it with Ipopt)"
            )
        import clarabel  # imported where a model is built: worker processes import it there

        self._clarabel = clarabel
        self.problem = problem
        self.tolerance = float(tolerance)
        self.time_limit = float(time_limit)
        lp = problem.linear
        self._bounds_from(problem)
        rows = np.repeat(np.arange(lp.n_rows), np.diff(lp.row_start))
        self._rows = [(rows, lp.columns, lp.values)]
        self._n_linear = lp.n_rows
        self._cones = self._cone_block(problem.cones)
        self._sign = -1.0 if lp.maximize else 1.0
        self._matrix = None  # (rows as M x, the problem rows kept, -, rows counted)
        self.iterations = 0

    def _cone_block(self, cones: list[Cone]) -> tuple[Any, np.ndarray, list[int]]:
        """``(-C, d, dimensions)`` of the cones: ``s = d − (−C)x = Cx + d`` in each."""
        from scipy import sparse

        rows, cols, vals, offsets, dims = [], [], [], [], []
        k = 0
        for cone in cones:
            parts = cone.components
            if cone.kind == "rsoc":  # (u + v, u − v, √2·x...)
                u, v = parts[0], parts[1]
                parts = [
                    _combine(u, v, 1.0, 1.0),
                    _combine(u, v, 1.0, -1.0),
                    *[_scale(part, np.sqrt(2.0)) for part in parts[2:]],
                ]
            for terms, constant in parts:
                for col, coef in terms.items():
                    rows.append(k)
                    cols.append(col)
                    vals.append(-coef)
                offsets.append(constant)
                k += 1
            dims.append(len(parts))
        n = self.problem.n_variables
        block = sparse.csc_matrix((vals, (rows, cols)), shape=(k, n))
        return block, np.asarray(offsets, dtype=np.float64), dims

    # -- rows -----------------------------------------------------------------------------------
    def add_rows(
        self, lower: np.ndarray, upper: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Append linear rows ``lower <= Σ values·x[columns] <= upper`` (e.g. SDDP cuts)."""
        first = len(self.row_lower)
        for k, (columns, values) in enumerate(rows):
            columns = np.asarray(columns, np.int64)
            self._rows.append(
                (np.full(len(columns), first + k), columns, np.asarray(values, np.float64))
            )
        self.row_lower = np.concatenate([self.row_lower, np.asarray(lower, np.float64)])
        self.row_upper = np.concatenate([self.row_upper, np.asarray(upper, np.float64)])
        self._matrix = self._key = None  # assembled again at the next solve

    # -- solving ---------------------------------------------------------------------------
    def _linear_part(self) -> tuple[Any, np.ndarray]:
        """The rows (linear and added) and columns as one sparse ``M x``: its first rows are
        the problem's rows ``keep`` (cone rows have none), then one unit row per column."""
        from scipy import sparse

        n = self.problem.n_variables
        rows = np.concatenate([r for r, _, _ in self._rows])
        cols = np.concatenate([c for _, c, _ in self._rows])
        vals = np.concatenate([v for _, _, v in self._rows])
        # row numbers: linear rows keep theirs, cone rows are skipped, added rows follow
        skip = len(self.problem.cones) + len(self.problem.constraints)
        rows = np.where(rows >= self._n_linear, rows - skip, rows)
        keep = np.r_[0 : self._n_linear, self._n_linear + skip : len(self.row_lower)]
        matrix = sparse.vstack(
            [
                sparse.csr_matrix((vals, (rows, cols)), shape=(len(keep), n)),
                sparse.identity(n, format="csr"),
            ]
        ).tocsr()
        return matrix, keep

    def _assemble(self, lower: np.ndarray, upper: np.ndarray, matrix: Any) -> tuple:
        """The solver for the rows' structure (which sides are equalities, which finite), and
        the index sets; kept while the structure stays: a new solve then only updates ``b``."""
        from scipy import sparse

        clarabel = self._clarabel
        equal = lower == upper
        eq = np.flatnonzero(equal)
        lo = np.flatnonzero(~equal & np.isfinite(lower))
        hi = np.flatnonzero(~equal & np.isfinite(upper))
        key = (len(self.row_lower), eq.tobytes(), lo.tobytes(), hi.tobytes())
        if getattr(self, "_key", None) == key:
            return self._solver, eq, lo, hi
        cone_matrix, cone_offsets, cone_dims = self._cones
        a = sparse.vstack([matrix[eq], -matrix[lo], matrix[hi], cone_matrix]).tocsc()
        cones = [clarabel.ZeroConeT(len(eq)), clarabel.NonnegativeConeT(len(lo) + len(hi))]
        cones += [clarabel.SecondOrderConeT(d) for d in cone_dims]
        n = self.problem.n_variables
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.presolve_enable = False  # keeps the rows as given: b can be updated in place
        settings.tol_gap_abs = settings.tol_gap_rel = self.tolerance
        settings.tol_feas = self.tolerance
        settings.time_limit = self.time_limit
        b = self._right_hand_side(lower, upper, eq, lo, hi)
        self._solver = clarabel.DefaultSolver(
            sparse.csc_matrix((n, n)), self._sign * np.asarray(self.problem.objective, float),
            a, b, cones, settings,
        )  # fmt: skip
        self._key = key
        return self._solver, eq, lo, hi

    def _right_hand_side(self, lower, upper, eq, lo, hi) -> np.ndarray:
        return np.concatenate([upper[eq], -lower[lo], upper[hi], self._cones[1]])

    def solve(self, context: str = "") -> Solution:
        """Solve from scratch (an interior-point method takes no warm start; the solver's
        set-up is kept while only right-hand sides change).

        Raises:
            SolveError: naming the problem, ``context`` and Clarabel's status.
        """
        where = f" ({context})" if context else ""
        if getattr(self, "_matrix", None) is None or self._matrix[3] != len(self.row_lower):
            matrix, keep = self._linear_part()
            self._matrix = (matrix, keep, None, len(self.row_lower))
        matrix, keep = self._matrix[0], self._matrix[1]
        lower = np.concatenate([self.row_lower[keep], self.col_lower])
        upper = np.concatenate([self.row_upper[keep], self.col_upper])
        if np.any(lower > upper):
            raise SolveError(f"{self.problem.name}{where}: a lower bound is above its upper bound")
        solver, eq, lo, hi = self._assemble(lower, upper, matrix)
        solver.update(b=self._right_hand_side(lower, upper, eq, lo, hi))
        result = solver.solve()
        status = str(result.status).split(".")[-1]
        self.iterations = int(result.iterations)
        if status not in SOLVED:
            raise SolveError(f"{self.problem.name}{where}: Clarabel ended with status {status!r}")
        z = np.asarray(result.z)
        sign = self._sign
        # d value / d bound: −z on an equality's or an upper side's right-hand side, +z on a
        # lower side's (its row is negated)
        derivative = np.zeros(len(lower))
        derivative[eq] -= z[: len(eq)]
        derivative[lo] += z[len(eq) : len(eq) + len(lo)]
        derivative[hi] -= z[len(eq) + len(lo) : len(eq) + len(lo) + len(hi)]
        derivative *= sign
        row_duals = np.full(len(self.row_lower), np.nan)
        row_duals[keep] = derivative[: len(keep)]
        return Solution(
            objective=sign * float(result.obj_val) + self.problem.linear.objective_constant,
            primal=np.asarray(result.x),
            row_duals=row_duals,
            col_duals=derivative[len(keep) :],
            status=status,
        )


def _combine(u: tuple, v: tuple, a: float, b: float) -> tuple[dict[int, float], float]:
    """``a·u + b·v`` of two affine parts."""
    terms = {col: a * coef for col, coef in u[0].items()}
    for col, coef in v[0].items():
        terms[col] = terms.get(col, 0.0) + b * coef
    return terms, a * u[1] + b * v[1]


def _scale(part: tuple, factor: float) -> tuple[dict[int, float], float]:
    return {col: factor * coef for col, coef in part[0].items()}, factor * part[1]
