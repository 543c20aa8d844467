"""The backend interface: a problem (:class:`~mdpo.rules.lp.LinearProgram` or
:class:`~mdpo.rules.nlp.NonlinearProgram`) opened as a solver model, solved under bound updates
one scenario after another (warm-started), in this process or spread over worker processes.

A model has ``set_col_bounds``, ``set_row_bounds``, ``add_rows`` and ``solve(context) ->``
:class:`Solution`; :func:`open_model` picks HiGHS for linear programs, Clarabel for conic
ones and Ipopt (through CasADi) for the other non-linear ones. The problem builders never
import a solver, and the backends never know what the problem is about.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from typing import Any

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


class BoundsInArrays:
    """Bounds kept as arrays and handed to the solver at each solve (the Ipopt and Clarabel
    models; HiGHS keeps its own): ``col_lower``, ``col_upper``, ``row_lower``, ``row_upper``."""

    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray

    def _bounds_from(self, problem: Any) -> None:
        self.col_lower = np.array(problem.col_lower, dtype=np.float64)
        self.col_upper = np.array(problem.col_upper, dtype=np.float64)
        self.row_lower = np.array(problem.row_lower, dtype=np.float64)
        self.row_upper = np.array(problem.row_upper, dtype=np.float64)

    def set_col_bounds(self, columns: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of some variables (indices into ``problem.variables``)."""
        columns = np.asarray(columns, dtype=np.int64)
        self.col_lower[columns] = lower
        self.col_upper[columns] = upper

    def set_row_bounds(self, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of some rows (linear rows, then the non-linear ones, the cones,
        and rows added by ``add_rows``)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.row_lower[rows] = lower
        self.row_upper[rows] = upper


def open_model(problem: Any, backend: str | None = None, **options: Any) -> Any:
    """``problem`` loaded into its solver: HiGHS for a linear program, Clarabel for a conic
    one (linear rows and second-order cones only: the SOC relaxation), Ipopt for any other
    non-linear one. ``backend`` (``"highs"``, ``"clarabel"``, ``"ipopt"``) forces one; options
    go to the model (``threads``, ``time_limit``; Ipopt: ``tolerance``, ``warm_start``...)."""
    from mdpo.rules.nlp import NonlinearProgram

    if backend is None:
        if isinstance(problem, LinearProgram):
            backend = "highs"
        elif isinstance(problem, NonlinearProgram):
            backend = "ipopt" if problem.constraints else "clarabel"
        else:
            raise TypeError(f"no backend solves a {type(problem).__name__}")
    if backend == "highs":
        from mdpo.rules.highs import HighsModel

        return HighsModel(problem, **options)
    if backend == "clarabel":
        from mdpo.rules.clarabel import ClarabelModel

        return ClarabelModel(problem, **options)
    if backend == "ipopt":
        from mdpo.rules.ipopt import IpoptModel

        return IpoptModel(problem, **options)
    raise ValueError(f"unknown backend {backend!r}: choose highs, clarabel or ipopt")


@dataclass
class BoundUpdate:
    """New bounds for some columns and rows of a problem (one scenario of a batch)."""

    columns: np.ndarray | None = None
    col_lower: np.ndarray | None = None
    col_upper: np.ndarray | None = None
    rows: np.ndarray | None = None
    row_lower: np.ndarray | None = None
    row_upper: np.ndarray | None = None


def _apply(model: Any, update: BoundUpdate) -> None:
    """Restore what the previous update changed to the problem's own bounds, then apply this
    one: every scenario of a batch starts from the same problem."""
    lp = model.problem
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


class _Solver:
    """One worker's model: the problem opened once, each update applied to its own bounds
    (what a worker process and a Ray actor hold)."""

    def __init__(self, problem: Any, selection: Selection):
        self.model, self.selection = open_model(problem), selection

    def solve(self, index: int, update: BoundUpdate) -> tuple[int, Solution | str]:
        try:
            _apply(self.model, update)
            return index, self.selection.apply(self.model.solve(f"scenario {index}"))
        except SolveError as err:
            return index, str(err)


_WORKER: _Solver | None = None


def _worker_init(problem: Any, selection: Selection) -> None:
    global _WORKER
    _WORKER = _Solver(problem, selection)


def _worker_solve(job: tuple[int, BoundUpdate]) -> tuple[int, Solution | str]:
    return _WORKER.solve(*job)


class SolverPool:
    """``workers`` solvers, each holding ``problem`` in its solver for as long as the pool
    lives, so that every batch warm-starts from the previous one.

    Args:
        problem: a linear or non-linear program.
        workers: solvers (1 with the local backend: no process, the batch is solved here).
        selection: the parts of each solution to send back (default all).
        backend: ``"local"`` (worker processes of this machine) or ``"ray"`` (Ray actors, one
            CPU each, on the cluster at ``address`` or on a Ray instance started here).
        address: a Ray cluster's address (its nodes need mdpo installed).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        problem: Any,
        workers: int = 1,
        selection: Selection | None = None,
        backend: str = "local",
        address: str | None = None,
    ):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if backend not in ("local", "ray"):
            raise ValueError(f"unknown solver backend {backend!r}: choose local or ray")
        self.problem, self.workers, self.backend = problem, int(workers), backend
        self.selection = selection or Selection()
        self._solver = None
        self._pool = None
        self._actors: list[Any] = []
        self._ray_started = False
        if backend == "ray":
            self._start_ray(address)
        elif self.workers == 1:
            self._solver = _Solver(problem, self.selection)
        else:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker
            self._pool = context.Pool(self.workers, _worker_init, (problem, self.selection))

    def _start_ray(self, address: str | None) -> None:
        try:
            import ray  # optional dependency (the ray extra)
        except ImportError:
            raise ValueError('the ray backend needs Ray: pip install -e ".[ray]"') from None
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            except Exception as err:  # Ray's own errors: connection, version, resources
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise ValueError(
                    f"could not start {where}: {type(err).__name__} {reason}"
                ) from None
            self._ray_started = True
        actor = ray.remote(num_cpus=1)(_Solver)
        problem = ray.put(self.problem)  # sent once, shared by the actors of a node
        self._actors = [actor.remote(problem, self.selection) for _ in range(self.workers)]

    def _answers(self, updates: list[BoundUpdate], bar: Any) -> dict[int, Solution | str]:
        answers: dict[int, Solution | str] = {}
        if self._solver is not None:
            for index, update in enumerate(updates):
                answers[index] = self._solver.solve(index, update)[1]
                bar.update(1)
        elif self._pool is not None:
            for index, answer in self._pool.imap_unordered(_worker_solve, enumerate(updates)):
                answers[index] = answer
                bar.update(1)
        else:
            import ray

            # scenario i to actor i mod workers: each actor warm-starts from its last solve
            pending = [
                self._actors[i % len(self._actors)].solve.remote(i, update)
                for i, update in enumerate(updates)
            ]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                index, answer = ray.get(ready[0])
                answers[index] = answer
                bar.update(1)
        return answers

    def solve(self, updates: list[BoundUpdate], progress: bool = False) -> list[Solution]:
        """Solve the problem under each bound update (each applied to the problem's own
        bounds); progress: a progress bar over the scenarios.

        Raises:
            SolveError: naming the problem and the first scenario that did not solve.
        """

        bar = tqdm(total=len(updates), desc=self.problem.name, unit="solve", disable=not progress)
        answers = self._answers(updates, bar)
        bar.close()
        failures = [answers[i] for i in sorted(answers) if isinstance(answers[i], str)]
        if failures:
            raise SolveError(failures[0])
        return [answers[i] for i in range(len(updates))]

    def close(self) -> None:
        """Stop the worker processes (or Ray actors, and the Ray instance started here)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
            if self._ray_started:
                ray.shutdown()
                self._ray_started = False

    def __enter__(self) -> SolverPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def solve_batch(
    problem: Any, updates: list[BoundUpdate], workers: int = 1, progress: bool = False
) -> list[Solution]:
    """Solve ``problem`` under each bound update (scenario), spread over ``workers`` processes.

    Each worker builds the model once and warm-starts every solve from its previous basis.

    Args:
        problem: a linear or non-linear program.
        updates: one bound update per scenario, each applied to the problem's own bounds.
        workers: processes (1 solves here, in order).
        progress: show a progress bar over the scenarios.

    Raises:
        SolveError: naming the problem and the first scenario that did not solve.
    """
    with SolverPool(problem, min(workers, max(len(updates), 1))) as pool:
        return pool.solve(updates, progress)
