"""The HiGHS backend (highspy): build a linear program once, change bounds, solve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdpo.optim.lp import LinearProgram


class SolveError(RuntimeError):
    """A solve that did not end at an optimum (infeasible, unbounded, failed)."""


@dataclass
class Solution:
    """Objective value, primal values, row duals and the solver's status."""

    objective: float
    primal: np.ndarray
    row_duals: np.ndarray
    status: str


class HighsModel:
    """A :class:`LinearProgram` loaded into HiGHS; :meth:`solve` can be called repeatedly
    after :meth:`set_col_bounds` / :meth:`set_row_bounds` (HiGHS warm-starts from the last
    basis).

    Args:
        lp: the problem.
        threads: HiGHS threads (1: one process per core is how batches are spread).
    """

    def __init__(self, lp: LinearProgram, threads: int = 1):
        import highspy

        self.lp = lp
        self._highspy = highspy
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("threads", threads)
        model = highspy.HighsLp()
        model.num_col_ = lp.n_variables
        model.num_row_ = lp.n_rows
        model.col_cost_ = lp.objective
        model.offset_ = lp.objective_constant
        model.col_lower_ = lp.col_lower
        model.col_upper_ = lp.col_upper
        model.row_lower_ = lp.row_lower
        model.row_upper_ = lp.row_upper
        model.sense_ = highspy.ObjSense.kMaximize if lp.maximize else highspy.ObjSense.kMinimize
        model.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        model.a_matrix_.start_ = lp.row_start
        model.a_matrix_.index_ = lp.columns
        model.a_matrix_.value_ = lp.values
        model.a_matrix_.num_col_ = lp.n_variables
        model.a_matrix_.num_row_ = lp.n_rows
        status = self.highs.passModel(model)
        if status != highspy.HighsStatus.kOk:
            raise SolveError(f"HiGHS refused the model {lp.name!r} ({status})")

    def set_col_bounds(self, columns: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of some variables (indices into ``lp.variables``)."""
        columns = np.asarray(columns, dtype=np.int32)
        self.highs.changeColsBounds(len(columns), columns, np.asarray(lower, np.float64),
                                    np.asarray(upper, np.float64))  # fmt: skip

    def set_row_bounds(self, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of some rows (indices into ``lp.rows``)."""
        rows = np.asarray(rows, dtype=np.int32)
        self.highs.changeRowsBounds(len(rows), rows, np.asarray(lower, np.float64),
                                    np.asarray(upper, np.float64))  # fmt: skip

    def solve(self, context: str = "") -> Solution:
        """Solve; raises :class:`SolveError` naming the problem (and ``context``) unless optimal."""
        self.highs.run()
        status = self.highs.getModelStatus()
        name = self.highs.modelStatusToString(status)
        if status != self._highspy.HighsModelStatus.kOptimal:
            where = f" ({context})" if context else ""
            raise SolveError(f"{self.lp.name}{where}: HiGHS ended with status {name!r}")
        solution = self.highs.getSolution()
        return Solution(
            objective=float(self.highs.getInfo().objective_function_value),
            primal=np.asarray(solution.col_value, dtype=np.float64),
            row_duals=np.asarray(solution.row_dual, dtype=np.float64),
            status=name,
        )
