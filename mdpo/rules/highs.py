"""The HiGHS backend (highspy): build a linear program once, change bounds, solve."""

from __future__ import annotations

import os
import sys

import numpy as np

from mdpo.rules.backend import Solution, SolveError
from mdpo.rules.lp import LinearProgram


def _quiet_highs(highspy):
    """A ``Highs`` instance, without the banner HiGHS prints on the process's standard output
    when it creates its first one (before any option can turn output off)."""

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class HighsModel:
    """A :class:`LinearProgram` loaded into HiGHS; :meth:`solve` can be called repeatedly
    after :meth:`set_col_bounds` / :meth:`set_row_bounds` (HiGHS warm-starts from the last
    basis).

    Args:
        lp: the problem.
        threads: HiGHS threads (1: one process per core is how batches are spread).
        time_limit: seconds one attempt of a solve may take before it is retried.
    """

    def __init__(self, lp: LinearProgram, threads: int = 1, time_limit: float = 60.0):
        import highspy  # imported where a model is built: worker processes import it there

        self.lp = self.problem = lp
        self._highspy = highspy
        self.highs = _quiet_highs(highspy)
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("threads", threads)
        self.threads = int(threads)
        self.time_limit = float(time_limit)
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
        self.highs.changeColsBounds(
            len(columns), columns, np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        )

    def set_row_bounds(self, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of some rows (indices into ``lp.rows``)."""
        rows = np.asarray(rows, dtype=np.int32)
        self.highs.changeRowsBounds(
            len(rows), rows, np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        )

    def add_rows(
        self, lower: np.ndarray, upper: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Append rows ``lower <= Σ values·x[columns] <= upper`` (e.g. SDDP cuts)."""
        starts, cols, vals = [], [], []
        for columns, values in rows:
            starts.append(len(cols))
            cols.extend(int(c) for c in columns)
            vals.extend(float(v) for v in values)
        self.highs.addRows(
            len(rows),
            np.asarray(lower, np.float64),
            np.asarray(upper, np.float64),
            len(cols),
            np.asarray(starts, np.int32),
            np.asarray(cols, np.int32),
            np.asarray(vals, np.float64),
        )

    def _run(self):
        """One attempt, limited to ``time_limit`` seconds (HiGHS's own limit counts the run
        time of every solve of this instance, so it is moved forward each time)."""
        self.highs.setOptionValue("time_limit", self.highs.getRunTime() + self.time_limit)
        status = self.highs.run()
        if status == self._highspy.HighsStatus.kError and self._not_run() and self.threads:
            # HiGHS has one thread scheduler per process, started by the first instance that
            # runs: an instance asking for another number of threads is refused before it
            # solves (status 'Not Set'). Another HiGHS in this process (a user's own) started
            # it with its count: this model runs on that scheduler from now on (threads=0:
            # "whatever the process has"); the simplex that solves these problems is serial.
            self.highs.setOptionValue("threads", 0)
            self.threads = 0
            self.highs.run()
        return self.highs.getModelStatus()

    def _not_run(self) -> bool:
        """Whether the last ``run`` ended before solving (no model status set)."""
        return self.highs.getModelStatus() == self._highspy.HighsModelStatus.kNotset

    def solve(self, context: str = "") -> Solution:
        """Solve; raises :class:`SolveError` naming the problem (and ``context``) unless optimal.

        A warm-started simplex can stall on a degenerate problem (SDDP's stage problems with
        hundreds of cuts did, for minutes): a solve that ends without a verdict (time limit,
        numerical trouble) is retried from scratch, then with the interior-point method."""
        hs = self._highspy.HighsModelStatus
        decided = (hs.kOptimal, hs.kInfeasible, hs.kUnbounded)
        status = self._run()
        if status not in decided:
            self.highs.clearSolver()
            status = self._run()
        if status not in decided:
            self.highs.setOptionValue("solver", "ipm")
            self.highs.clearSolver()
            status = self._run()
            self.highs.setOptionValue("solver", "choose")
        name = self.highs.modelStatusToString(status)
        if status != hs.kOptimal:
            where = f" ({context})" if context else ""
            if status == hs.kNotset:
                raise SolveError(
                    f"{self.lp.name}{where}: HiGHS refused to start the solve (status "
                    f"{name!r}): its options or this process's HiGHS thread scheduler (threads="
                    f"{self.threads}) do not allow it; rerun with HiGHS's output on to see why"
                )
            raise SolveError(f"{self.lp.name}{where}: HiGHS ended with status {name!r}")
        solution = self.highs.getSolution()
        return Solution(
            objective=float(self.highs.getInfo().objective_function_value),
            primal=np.asarray(solution.col_value, dtype=np.float64),
            row_duals=np.asarray(solution.row_dual, dtype=np.float64),
            col_duals=np.asarray(solution.col_dual, dtype=np.float64),
            status=name,
        )
