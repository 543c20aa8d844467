"""Multi-stage problems with target states: the interface TS-DDR trains on.

A problem has a state ``x_t`` (e.g. reservoir volumes) carried from stage to stage, an
uncertainty ``w_t`` per stage (e.g. inflows), and linear stage problems. A decision rule gives a
target ``x̂_t`` per stage; the stage (or the whole horizon at once) is then solved with
``x_t + δ⁺_t − δ⁻_t = x̂_t`` and the penalty ``C·(δ⁺ + δ⁻)`` in the cost. The dual of each target
row is the derivative of the optimal cost with respect to that target, which is all TS-DDR needs
to train the rule by gradient descent.

Nothing here imports a solver: problems are :class:`~mdpo.rules.lp.LinearProgram` or
:class:`~mdpo.rules.nlp.NonlinearProgram` data, and the functions take a backend's pool or
open a model through :func:`mdpo.rules.backend.open_model`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from mdpo.rules.backend import BoundUpdate, Selection, open_model
from mdpo.rules.lp import LinearProgram
from mdpo.rules.nlp import NonlinearProgram


@dataclass
class TargetProblem:
    """A ``T``-stage problem (linear or not) with target rows, and where its parameters live.

    Index arrays: ``state_in`` ``[S]`` (columns fixed to the initial state), ``noise``
    ``[T, U]`` (columns fixed to the uncertainty), ``state_out`` ``[T, S]``, ``target_rows``
    ``[T, S]`` (``x_t + δ⁺ − δ⁻ = x̂_t``), ``target_slack`` ``[T, S, 2]`` (the δ columns),
    ``slack_penalty`` the cost per unit of slack.
    """

    program: LinearProgram | NonlinearProgram
    state_in: np.ndarray
    noise: np.ndarray
    state_out: np.ndarray
    target_rows: np.ndarray
    target_slack: np.ndarray
    slack_penalty: float

    @property
    def n_stages(self) -> int:
        return int(self.noise.shape[0])


class MultiStageProblem(ABC):
    """A multi-stage problem TS-DDR can train a decision rule on.

    Subclasses set ``name``, ``n_stages``, ``state_dim``, ``noise_dim``, ``initial_state``,
    ``state_low`` / ``state_high`` (the bounds of a sensible target, e.g. empty and full
    reservoirs) and ``noise_high`` (a scale of the uncertainty, for the rule's inputs), and
    implement the three methods below.
    """

    name: str
    n_stages: int
    state_dim: int
    noise_dim: int
    initial_state: np.ndarray
    state_low: np.ndarray
    state_high: np.ndarray
    noise_high: np.ndarray

    @abstractmethod
    def target_equivalent(self) -> TargetProblem:
        """The ``n_stages``-stage deterministic equivalent with target rows."""

    @abstractmethod
    def stage_problem(self, t: int) -> TargetProblem:
        """Stage ``t`` alone (one stage, its incoming state fixed by ``state_in``), for
        stage-by-stage simulation; may return the same object for every stage."""

    @abstractmethod
    def sample_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, n_stages, noise_dim]`` uncertainty paths."""


def check_targets(problem: MultiStageProblem, targets: np.ndarray, noise: np.ndarray) -> None:
    """Raise a ``ValueError`` naming the problem when shapes or values do not fit it."""
    expected = (problem.n_stages, problem.state_dim)
    if targets.ndim != 3 or targets.shape[1:] != expected:
        raise ValueError(
            f"{problem.name}: targets must have shape (batch, {expected[0]}, "
            f"{expected[1]}), got {targets.shape}"
        )
    if noise.shape != (*targets.shape[:2], problem.noise_dim):
        expected = (*targets.shape[:2], problem.noise_dim)
        raise ValueError(f"{problem.name}: noise must have shape {expected}, got {noise.shape}")
    if not (np.isfinite(targets).all() and np.isfinite(noise).all()):
        raise ValueError(f"{problem.name}: targets and noise must be finite")


@dataclass
class TargetSolve:
    """Results of solving a batch of scenarios with targets."""

    cost: np.ndarray  # [B] optimal value, slack penalty included
    slack: np.ndarray  # [B] total slack Σ (δ⁺ + δ⁻)
    target_duals: np.ndarray  # [B, T, S] d cost / d target
    penalty: float

    @property
    def operating_cost(self) -> np.ndarray:
        """``[B]``: the cost without the slack penalty."""
        return self.cost - self.penalty * self.slack


def solve_with_targets(
    pool,
    target_problem: TargetProblem,
    initial_state: np.ndarray,
    noise: np.ndarray,
    targets: np.ndarray,
) -> TargetSolve:
    """Solve the deterministic equivalent of each scenario with its targets.

    Args:
        pool: a backend pool built on ``target_problem.program`` with :func:`target_selection` (e.g.
            :class:`mdpo.rules.backend.SolverPool`).
        target_problem: the problem.
        initial_state: ``[S]``.
        noise: ``[B, T, U]``.
        targets: ``[B, T, S]``.
    """

    cols = np.concatenate([target_problem.state_in, target_problem.noise.ravel()])
    rows = target_problem.target_rows.ravel()
    updates = []
    for w, x_hat in zip(noise, targets):
        values = np.concatenate([initial_state, w.ravel()])
        updates.append(BoundUpdate(cols, values, values, rows, x_hat.ravel(), x_hat.ravel()))
    solutions = pool.solve(updates)
    shape = target_problem.target_rows.shape
    return TargetSolve(
        cost=np.array([s.objective for s in solutions]),
        slack=np.array([s.primal.sum() for s in solutions]),
        target_duals=np.stack([s.row_duals.reshape(shape) for s in solutions]),
        penalty=target_problem.slack_penalty,
    )


def target_selection(target_problem: TargetProblem):
    """What a pool must return for :func:`solve_with_targets`: the slack columns' values and
    the target rows' duals."""

    return Selection(
        columns=target_problem.target_slack.ravel(),
        rows=target_problem.target_rows.ravel(),
        col_duals=False,
    )


@dataclass
class StagewiseResult:
    """A stage-by-stage simulation: per scenario and stage."""

    operating_cost: np.ndarray  # [N, T]: cost without the slack penalty
    slack: np.ndarray  # [N, T]
    states: np.ndarray  # [N, T, S]: end-of-stage states


def simulate_stagewise(problem: MultiStageProblem, decide, noise: np.ndarray) -> StagewiseResult:
    """Non-anticipative simulation: at stage ``t`` the stage problem sees the actual incoming
    state, the stage's uncertainty and the rule's target for the stage only.

    Args:
        problem: the problem.
        decide: ``(t, states [N, S], noise_t [N, U]) -> targets [N, S]`` (the rule keeps
            whatever memory it needs between calls; ``t`` runs 0, 1, ... once per stage).
        noise: ``[N, T, U]`` uncertainty paths.
    """

    n, horizon = noise.shape[:2]
    result = StagewiseResult(
        np.zeros((n, horizon)), np.zeros((n, horizon)), np.zeros((n, horizon, problem.state_dim))
    )
    models: dict[int, tuple[TargetProblem, object]] = {}
    states = np.tile(np.asarray(problem.initial_state, dtype=np.float64), (n, 1))
    for t in range(horizon):
        stage = problem.stage_problem(t)
        if id(stage) not in models:
            models[id(stage)] = (stage, open_model(stage.program))
        model = models[id(stage)][1]
        targets = np.asarray(decide(t, states.copy(), noise[:, t]), dtype=np.float64)
        for i in range(n):
            model.set_col_bounds(stage.state_in, states[i], states[i])
            model.set_col_bounds(stage.noise[0], noise[i, t], noise[i, t])
            model.set_row_bounds(stage.target_rows[0], targets[i], targets[i])
            solution = model.solve(f"{problem.name} stage {t}, scenario {i}")
            slack = solution.primal[stage.target_slack[0]].sum()
            result.slack[i, t] = slack
            result.operating_cost[i, t] = solution.objective - stage.slack_penalty * slack
            states[i] = solution.primal[stage.state_out[0]]
        result.states[:, t] = states
    return result
