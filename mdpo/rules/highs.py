"""The HiGHS backend (highspy): build a linear program once, change bounds, solve."""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mdpo.rules.lp import LinearProgram


class SolveError(RuntimeError):
    """A solve that did not end at an optimum (infeasible, unbounded, failed)."""


@dataclass
class Solution:
    """Objective value, primal values, row duals, reduced costs and the solver's status.

    Duals are derivatives of the optimal value: a row's with respect to its bound, a column's
    reduced cost with respect to its (fixed) value, e.g. an incoming reservoir volume."""

    objective: float
    primal: np.ndarray
    row_duals: np.ndarray
    col_duals: np.ndarray
    status: str


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

        self.lp = lp
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


@dataclass
class BoundUpdate:
    """New bounds for some columns and rows of a problem (one scenario of a batch)."""

    columns: np.ndarray | None = None
    col_lower: np.ndarray | None = None
    col_upper: np.ndarray | None = None
    rows: np.ndarray | None = None
    row_lower: np.ndarray | None = None
    row_upper: np.ndarray | None = None


def _apply(model: HighsModel, update: BoundUpdate) -> None:
    """Restore what the previous update changed to the problem's own bounds, then apply this
    one: every scenario of a batch starts from the same problem."""
    lp = model.lp
    previous_cols, previous_rows = getattr(model, "_changed", (None, None))
    if previous_cols is not None:
        model.set_col_bounds(
            previous_cols, lp.col_lower[previous_cols], lp.col_upper[previous_cols]
        )
    if previous_rows is not None:
        model.set_row_bounds(
            previous_rows, lp.row_lower[previous_rows], lp.row_upper[previous_rows]
        )
    cols = None if update.columns is None else np.asarray(update.columns, dtype=np.int64)
    rows = None if update.rows is None else np.asarray(update.rows, dtype=np.int64)
    if cols is not None:
        model.set_col_bounds(cols, update.col_lower, update.col_upper)
    if rows is not None:
        model.set_row_bounds(rows, update.row_lower, update.row_upper)
    model._changed = (cols, rows)


@dataclass
class Selection:
    """Which parts of each solution a pool sends back (``None``: all of it). Batches of large
    problems need a few values each (e.g. TS-DDR's target duals), not every column."""

    columns: np.ndarray | None = None  # primal values returned
    rows: np.ndarray | None = None  # row duals returned
    col_duals: bool = True  # reduced costs returned (of ``columns``)

    def apply(self, solution: Solution) -> Solution:
        """The solution restricted to the selection."""
        cols = slice(None) if self.columns is None else self.columns
        rows = slice(None) if self.rows is None else self.rows
        col_duals = solution.col_duals[cols] if self.col_duals else np.empty(0)
        return Solution(
            solution.objective,
            solution.primal[cols],
            solution.row_duals[rows],
            col_duals,
            solution.status,
        )


_WORKER: tuple[HighsModel, Selection] | None = None


def _worker_init(lp: LinearProgram, selection: Selection) -> None:
    global _WORKER
    _WORKER = (HighsModel(lp), selection)


def _worker_solve(job: tuple[int, BoundUpdate]) -> tuple[int, Solution | str]:
    index, update = job
    model, selection = _WORKER
    try:
        _apply(model, update)
        return index, selection.apply(model.solve(f"scenario {index}"))
    except SolveError as err:
        return index, str(err)


class SolverPool:
    """``workers`` processes, each holding ``lp`` in HiGHS for as long as the pool lives, so
    that every batch warm-starts from the bases of the previous one (one process: solved here).

    Args:
        lp: the problem.
        workers: processes (1: no process, the batch is solved in this one).
        selection: the parts of each solution to send back (default all).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, lp: LinearProgram, workers: int = 1, selection: Selection | None = None):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.lp, self.workers = lp, int(workers)
        self.selection = selection or Selection()
        self._model = HighsModel(lp) if self.workers == 1 else None
        self._pool = None
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker
            self._pool = context.Pool(self.workers, _worker_init, (lp, self.selection))

    def solve(self, updates: list[BoundUpdate], progress: bool = False) -> list[Solution]:
        """Solve the problem under each bound update (each applied to the problem's own
        bounds); progress: a progress bar over the scenarios.

        Raises:
            SolveError: naming the problem and the first scenario that did not solve.
        """

        bar = tqdm(total=len(updates), desc=self.lp.name, unit="solve", disable=not progress)
        answers: dict[int, Solution | str] = {}
        if self._pool is None:
            for index, update in enumerate(updates):
                try:
                    _apply(self._model, update)
                    answers[index] = self.selection.apply(self._model.solve(f"scenario {index}"))
                except SolveError as err:
                    answers[index] = str(err)
                bar.update(1)
        else:
            for index, answer in self._pool.imap_unordered(_worker_solve, enumerate(updates)):
                answers[index] = answer
                bar.update(1)
        bar.close()
        failures = [answers[i] for i in sorted(answers) if isinstance(answers[i], str)]
        if failures:
            raise SolveError(failures[0])
        return [answers[i] for i in range(len(updates))]

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> SolverPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def solve_batch(
    lp: LinearProgram, updates: list[BoundUpdate], workers: int = 1, progress: bool = False
) -> list[Solution]:
    """Solve ``lp`` under each bound update (scenario), spread over ``workers`` processes.

    Each worker builds the model once and warm-starts every solve from its previous basis.

    Args:
        lp: the problem.
        updates: one bound update per scenario, each applied to the problem's own bounds.
        workers: processes (1 solves here, in order).
        progress: show a progress bar over the scenarios.

    Raises:
        SolveError: naming the problem and the first scenario that did not solve.
    """
    with SolverPool(lp, min(workers, max(len(updates), 1))) as pool:
        return pool.solve(updates, progress)
