"""``HydroDispatch-v0``: hydrothermal dispatch as a gymnasium environment.

An action is the vector of target end-of-stage reservoir volumes, scaled to ``[-1, 1]`` (−1
empty, +1 full); a step solves the stage problem (DC, SOC or AC power flow: ``formulation``)
with ``v_out + δ⁺ − δ⁻ = target`` (L1 slack at the largest cost coefficient, as TS-DDR), and
the reward is minus the stage cost, slack penalty included (``info["stage_cost"]`` is the
operating cost without it).

Observations ``[volumes, inflows, t / horizon]``: the incoming volumes and the inflows of the
stage about to be decided. The stage's inflow is known when its decision is taken
("hazard-decision"), as in SDDP's stage problems and TS-DDR's decision rules, so that every
method of the case study decides on the same information. Inflows are stage-wise independent:
each stage draws one of the case's joint inflow columns (rows cycling), uniformly or with the
case's scenario probabilities, or follows a fixed path given to :meth:`reset`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mdpo.envs.hydro.case import Case, load_case
from mdpo.envs.hydro.model import LOAD_SCALE, STAGE_K, build_deterministic_equivalent
from mdpo.envs.hydro.problem import HydroProblem
from mdpo.envs.hydro.simulate import stage_record
from mdpo.rules.backend import open_model


class HydroDispatchEnv(gym.Env):
    """Hydrothermal dispatch over ``horizon`` stages (see the module docstring).

    Args:
        case: ``"bolivia"``, ``"case3"``, a case folder or a loaded :class:`Case`.
        horizon: stages per episode (96 as the TS-DDR study).
        stage_k: hm³ per m³/s over one stage.
        load_scale: factor on every load (0.6 in the Bolivia reference experiments).
        reward_scale: the reward is ``−cost · reward_scale``.
        slack_penalty: cost per hm³ between the target and the outgoing volume (default the
            largest cost coefficient, as TS-DDR).
        formulation: the stage problem's power flow, ``"dc"``, ``"soc"`` or ``"ac"``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        case: str | Case = "bolivia",
        horizon: int = 96,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
        reward_scale: float = 1.0,
        slack_penalty: float | None = None,
        formulation: str = "dc",
    ):

        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.case = case if isinstance(case, Case) else load_case(case)
        self.horizon = int(horizon)
        self.stage_k, self.load_scale = stage_k, load_scale
        self.reward_scale = float(reward_scale)
        n = len(self.case.plants)
        self.max_volume = np.array([p.max_volume for p in self.case.plants])
        self.problem = build_deterministic_equivalent(
            self.case,
            self.case.inflows[0, :, 0][None],
            targets=self.max_volume[None] * 0.5,
            slack_penalty=slack_penalty,
            stage_k=stage_k,
            load_scale=load_scale,
            formulation=formulation,
        )
        self.formulation = formulation
        self.model = open_model(self.problem.program)
        inflow_high = self.case.inflows.max(axis=(0, 2)).astype(np.float32)
        low = np.zeros(2 * n + 1, dtype=np.float32)
        high = np.concatenate([self.max_volume, inflow_high, [1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self.volumes = np.zeros(n)
        self.inflow = np.zeros(n)  # the inflow of the current stage, observed
        self.stage = 0
        self.scenario: np.ndarray | None = None

    def _observation(self) -> np.ndarray:
        obs = np.concatenate([self.volumes, self.inflow, [self.stage / self.horizon]])
        return np.clip(obs, self.observation_space.low, self.observation_space.high).astype(
            np.float32
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start at the initial volumes; ``options={"scenario": indices}`` fixes the inflow
        column of every stage (``horizon`` indices, as ``mdpo.cli.hydro.evaluation_paths``)
        instead of drawing them."""
        super().reset(seed=seed)
        self.scenario = None
        if options and options.get("scenario") is not None:
            scenario = np.asarray(options["scenario"])
            columns = self.case.n_scenarios
            if (
                scenario.shape != (self.horizon,)
                or not np.issubdtype(scenario.dtype, np.integer)
                or scenario.min() < 0
                or scenario.max() >= columns
            ):
                raise ValueError(
                    f"options['scenario'] must be {self.horizon} integer column "
                    f"indices in [0, {columns}), got {scenario!r}"
                )
            self.scenario = scenario
        self.volumes = np.array([p.initial_volume for p in self.case.plants])
        self.stage = 0
        self.inflow = self._draw_inflow()
        return self._observation(), {}

    def _draw_inflow(self) -> np.ndarray:
        inflows, probabilities = self.case.stage_inflows(self.stage)
        if self.scenario is not None:
            return inflows[self.scenario[self.stage]]
        return inflows[self.np_random.choice(len(probabilities), p=probabilities)]

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {np.shape(action)}"
            )
        target = (action + 1.0) / 2.0 * self.max_volume
        inflow = self.inflow
        problem = self.problem
        self.model.set_col_bounds(problem.volume_in, self.volumes, self.volumes)
        self.model.set_col_bounds(problem.inflow[0], inflow, inflow)
        self.model.set_row_bounds(problem.target_rows[0], target, target)
        solution = self.model.solve(f"{self.case.name} stage {self.stage}")
        slack = solution.primal[problem.target_slack[0]].sum()
        record = stage_record(
            self.case,
            problem.program,
            solution.primal,
            problem.generation[0],
            problem.deficit[0],
            problem.volume_out[0],
        )
        self.volumes = np.clip(solution.primal[problem.volume_out[0]], 0.0, self.max_volume)
        self.stage += 1
        terminated = self.stage >= self.horizon  # the horizon ends the problem
        if not terminated:
            self.inflow = self._draw_inflow()
        # the operating cost without the slack penalty, and what the stage did
        info = {"stage_cost": record["cost"], "slack": slack, "target": target, "record": record}
        return self._observation(), -solution.objective * self.reward_scale, terminated, False, info

    def target_problem(self):
        """This env's problem for TS-DDR (:class:`mdpo.envs.hydro.problem.HydroProblem`)."""

        return HydroProblem(
            self.case,
            self.horizon,
            self.stage_k,
            self.load_scale,
            self.problem.slack_penalty,
            self.formulation,
        )


def register() -> None:
    """Register ``HydroDispatch-v0`` with gymnasium (idempotent)."""
    if "HydroDispatch-v0" not in gym.registry:
        gym.register("HydroDispatch-v0", entry_point=HydroDispatchEnv)
