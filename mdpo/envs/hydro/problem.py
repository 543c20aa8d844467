"""Hydrothermal dispatch as a :class:`~mdpo.rules.multistage.MultiStageProblem`: the state is
the reservoir volumes, the uncertainty the inflows, targets are end-of-stage volumes."""

from __future__ import annotations

import numpy as np

from mdpo.envs.hydro.case import Case, load_case
from mdpo.envs.hydro.model import (
    LOAD_SCALE,
    STAGE_K,
    DeterministicEquivalent,
    build_deterministic_equivalent,
    check_formulation,
    largest_cost,
)
from mdpo.rules.multistage import MultiStageProblem, TargetProblem


def as_target_problem(problem: DeterministicEquivalent) -> TargetProblem:
    """The generic view of a deterministic equivalent built with targets."""
    if problem.target_rows is None:
        raise ValueError("the deterministic equivalent was built without targets")
    return TargetProblem(
        program=problem.program,
        state_in=problem.volume_in,
        noise=problem.inflow,
        state_out=problem.volume_out,
        target_rows=problem.target_rows,
        target_slack=problem.target_slack,
        slack_penalty=float(problem.slack_penalty),
    )


class HydroProblem(MultiStageProblem):
    """``horizon`` stages of ``case`` (stage-wise independent inflows, rows cycling).

    Args:
        case: ``"bolivia"``, ``"case3"``, a case folder or a loaded :class:`Case`.
        horizon: stages (96 in the TS-DDR study).
        stage_k: hm³ per m³/s over one stage.
        load_scale: factor on every load.
        slack_penalty: cost per hm³ of target slack (default the largest cost coefficient).
        formulation: the power flow of the stage problems: ``"dc"`` (linear programs, HiGHS),
            ``"soc"`` (conic, Clarabel) or ``"ac"`` (non-linear, Ipopt).
    """

    def __init__(
        self,
        case: str | Case = "bolivia",
        horizon: int = 96,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
        slack_penalty: float | None = None,
        formulation: str = "dc",
    ):
        self.case = case if isinstance(case, Case) else load_case(case)
        self.formulation = check_formulation(formulation)
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.name = f"{self.case.name} ({horizon} stages, {formulation.upper()})"
        self.n_stages = int(horizon)
        self.stage_k, self.load_scale = stage_k, load_scale
        self.slack_penalty = largest_cost(self.case) if slack_penalty is None else slack_penalty
        plants = self.case.plants
        self.state_dim = self.noise_dim = len(plants)
        self.initial_state = np.array([p.initial_volume for p in plants])
        self.state_low = np.zeros(len(plants))
        self.state_high = np.array([p.max_volume for p in plants])
        self.noise_high = self.case.inflows.max(axis=(0, 2))
        # a reservoir can spill down to empty and fill by at most K·(its own inflow), water
        # from upstream aside: targets in [0, min(max, v + K·w)] are always reachable
        self.reachable_gain = stage_k
        self._stage: TargetProblem | None = None

    def _build(self, stages: int) -> TargetProblem:
        inflows = self.case.path_inflows(np.zeros(stages, dtype=np.int64))
        problem = build_deterministic_equivalent(
            self.case,
            inflows,
            targets=np.zeros_like(inflows),
            slack_penalty=self.slack_penalty,
            stage_k=self.stage_k,
            load_scale=self.load_scale,
            formulation=self.formulation,
        )
        return as_target_problem(problem)

    def target_equivalent(self) -> TargetProblem:
        return self._build(self.n_stages)

    def stage_problem(self, t: int) -> TargetProblem:
        if self._stage is None:  # every stage has the same problem; only its inflows change
            self._stage = self._build(1)
        return self._stage

    def sample_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.paths_noise(self.case.sample_paths(n, self.n_stages, rng))

    def paths_noise(self, paths: np.ndarray) -> np.ndarray:
        """``[n, T, plants]`` inflows of paths of column indices (``[n, T]``)."""
        return np.stack([self.case.path_inflows(path) for path in paths])
