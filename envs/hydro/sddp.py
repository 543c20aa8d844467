"""Stochastic dual dynamic programming (Pereira & Pinto 1991) over the hydro stage LPs.

Stage ``t``'s problem is the stage LP plus ``θ_t`` (the expected cost of the later stages)
bounded below by Benders cuts on the outgoing volumes, ``θ_t >= α + β·v_out``. Each iteration:
a forward pass samples one inflow path (stage-wise independent: one joint column per stage,
rows cycling) and records the trial volumes; a backward pass solves, at each trial volume, every
inflow realization of the next stage and adds the expected cut (values and the reduced costs of
the fixed incoming volumes). The lower bound is the first stage's expected value; the upper
bound is estimated by simulating the policy (mean cost with a 95% confidence interval).
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from envs.hydro.case import Case
from envs.hydro.model import LOAD_SCALE, STAGE_K, build_stage_lp
from envs.hydro.simulate import StageRecords, stage_record

MAX_CUTS_BYTES = 2**31  # what a cut file may hold, uncompressed


def read_cuts_file(path: str) -> dict:
    """The JSON of a cut file (gzipped or not), refusing more than ``MAX_CUTS_BYTES``."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as handle:
        text = handle.read(MAX_CUTS_BYTES + 1)
    if len(text) > MAX_CUTS_BYTES:
        raise ValueError(f"{path}: more than {MAX_CUTS_BYTES} bytes of cuts")
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a cut file of mdpo hydro sddp ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cuts"), list):
        raise ValueError(f"{path}: not a cut file of mdpo hydro sddp (no list of cuts)")
    return data


def is_cuts_file(path: str) -> bool:
    """Whether ``path`` looks like a cut file (JSON text or gzip), not a model zip."""
    with open(path, "rb") as handle:
        start = handle.read(2)
    return start == b"\x1f\x8b" or start[:1] == b"{"


@dataclass
class SDDPLog:
    """Lower bound and sampled forward cost per iteration."""

    lower_bounds: list[float] = field(default_factory=list)
    forward_costs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class SDDP:
    """SDDP for ``case`` over ``horizon`` stages.

    Args:
        case: the case.
        horizon: stages (126 for the Bolivia study: 96 reported + 30 against end effects).
        stage_k, load_scale: see :func:`envs.hydro.model.build_stage_lp`.
        seed: seed of the forward-pass sampling.
    """

    def __init__(
        self,
        case: Case,
        horizon: int,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
        seed: int = 0,
    ):
        from mdpo.optim.highs import HighsModel

        self.case, self.horizon = case, int(horizon)
        self.stage_k, self.load_scale = stage_k, load_scale
        self.stage = build_stage_lp(case, stage_k=stage_k, load_scale=load_scale, future_cost=True)
        self.models = [HighsModel(self.stage.lp) for _ in range(self.horizon)]
        self.cuts: list[tuple[int, float, np.ndarray]] = []
        self.seed = int(seed)
        self.volume0 = np.array([p.initial_volume for p in case.plants])
        self.log = SDDPLog()

    # ----------------------------------------------------------------------------- scenarios
    def realizations(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inflows [scenarios, plants], probabilities)`` of stage ``t``."""
        return self.case.stage_inflows(t)

    def sample_paths(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, horizon]`` scenario indices, stage-wise independent."""
        return self.case.sample_paths(n, self.horizon, rng)

    # ----------------------------------------------------------------------------- solves
    def _solve(self, t: int, volume: np.ndarray, inflow: np.ndarray):
        model, stage = self.models[t], self.stage
        model.set_col_bounds(stage.volume_in, volume, volume)
        model.set_col_bounds(stage.inflow, inflow, inflow)
        return model.solve(f"SDDP stage {t}")

    def add_cut(self, t: int, intercept: float, slopes: np.ndarray) -> None:
        """``θ_t >= intercept + slopes·v_out`` in stage ``t``."""
        columns = np.concatenate([[self.stage.future_cost], self.stage.volume_out])
        values = np.concatenate([[1.0], -np.asarray(slopes, dtype=np.float64)])
        self.models[t].add_rows([intercept], [np.inf], [(columns, values)])
        self.cuts.append((t, float(intercept), np.asarray(slopes, dtype=np.float64)))

    def lower_bound(self) -> float:
        """Expected first-stage value (stage cost plus θ) at the initial volumes."""
        inflows, probabilities = self.realizations(0)
        return float(sum(p * self._solve(0, self.volume0, w).objective
                         for w, p in zip(inflows, probabilities)))  # fmt: skip

    def iterate(self) -> tuple[float, float]:
        """One forward and one backward pass; returns ``(lower bound, forward cost)``."""
        # iteration k's path comes from (seed, k): a resumed training samples what an
        # uninterrupted one would have
        rng = np.random.default_rng([self.seed, len(self.log.lower_bounds)])
        path = self.sample_paths(1, rng)[0]
        volume, trial, cost = self.volume0, [], 0.0
        for t in range(self.horizon):
            inflows, _ = self.realizations(t)
            solution = self._solve(t, volume, inflows[path[t]])
            cost += solution.objective - solution.primal[self.stage.future_cost]
            volume = solution.primal[self.stage.volume_out]
            trial.append(volume)
        for t in range(self.horizon - 1, 0, -1):
            x_hat = trial[t - 1]
            inflows, probabilities = self.realizations(t)
            value, slope = 0.0, np.zeros(len(x_hat))
            for w, p in zip(inflows, probabilities):
                solution = self._solve(t, x_hat, w)
                value += p * solution.objective
                slope += p * solution.col_duals[self.stage.volume_in]
            self.add_cut(t - 1, value - slope @ x_hat, slope)
        return self.lower_bound(), cost

    def train(
        self,
        iterations: int = 100,
        time_limit: float | None = None,
        stall_iterations: int = 10,
        stall_tolerance: float = 1e-4,
        progress: bool = False,
        callback=None,
    ) -> SDDPLog:
        """Iterate until ``iterations`` in all (those of a resumed log included),
        ``time_limit`` seconds of this call, or the lower bound improved by less than
        ``stall_tolerance`` (relative) over the last ``stall_iterations``; ``callback(self)``
        runs after each iteration (e.g. to save the cuts)."""
        start = time.perf_counter()
        done = len(self.log.lower_bounds)
        offset = self.log.seconds[-1] if self.log.seconds else 0.0
        bar = tqdm(total=iterations, initial=done, desc="SDDP", unit="it", disable=not progress)
        for _ in range(max(iterations - done, 0)):
            lower, cost = self.iterate()
            self.log.lower_bounds.append(lower)
            self.log.forward_costs.append(cost)
            self.log.seconds.append(offset + time.perf_counter() - start)
            if callback is not None:
                callback(self)
            bar.update(1)
            bar.set_postfix(lower_bound=f"{lower:.6g}")
            bounds = self.log.lower_bounds
            if len(bounds) > stall_iterations:
                old = bounds[-1 - stall_iterations]
                if abs(bounds[-1] - old) <= stall_tolerance * max(abs(bounds[-1]), 1.0):
                    break
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        bar.close()
        return self.log

    def simulate(
        self, paths: np.ndarray, stages: int | None = None, progress: bool = False
    ) -> StageRecords:
        """The policy on each scenario path (``[n, horizon]`` indices) over the first
        ``stages`` stages (default all): its stage costs (θ excluded), volumes and generation."""
        stages = self.horizon if stages is None else stages
        if not 1 <= stages <= self.horizon:
            raise ValueError(f"stages must be in [1, {self.horizon}], got {stages}")
        stage = self.stage
        records = StageRecords.empty(len(paths), stages, len(self.case.plants))
        for i, path in enumerate(tqdm(paths, desc="simulate", unit="scenario",
                                      disable=not progress)):  # fmt: skip
            volume = self.volume0
            for t in range(stages):
                inflows, _ = self.realizations(t)
                solution = self._solve(t, volume, inflows[path[t]])
                records.store(i, t, stage_record(self.case, stage.lp, solution.primal,
                                                 stage.generation, stage.deficit,
                                                 stage.volume_out))  # fmt: skip
                volume = solution.primal[stage.volume_out]
        return records

    def upper_bound(self, n: int, seed: int) -> tuple[float, float, float]:
        """Monte Carlo estimate of the policy's expected cost: ``(mean, low, high)`` (95%)."""
        costs = self.simulate(self.sample_paths(n, np.random.default_rng(seed))).total_cost
        half = 1.96 * costs.std(ddof=1) / np.sqrt(n) if n > 1 else np.inf
        return float(costs.mean()), float(costs.mean() - half), float(costs.mean() + half)

    # ----------------------------------------------------------------------------- files
    def save_cuts(self, path: str) -> None:
        """Write the cuts (and what they were computed for) as JSON, gzipped when ``path``
        ends with ``.gz``."""
        data = {
            "case": self.case.name, "horizon": self.horizon, "stage_k": self.stage_k,
            "load_scale": self.load_scale,
            "cuts": [[t, a, b.tolist()] for t, a, b in self.cuts],
        }  # fmt: skip
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wt") as handle:
            json.dump(data, handle)

    def load_cuts(self, path: str) -> None:
        """Add the cuts of a file written by :meth:`save_cuts` for the same problem (JSON,
        gzipped or not; at most ``MAX_CUTS_BYTES`` of text)."""
        data = read_cuts_file(path)
        for key in ("case", "horizon", "stage_k", "load_scale"):
            mine = getattr(self, key) if key != "case" else self.case.name
            if data.get(key) != mine:
                raise ValueError(f"{path}: cuts were computed for {key}={data.get(key)!r}, "
                                 f"not {mine!r}")  # fmt: skip
        n = len(self.case.plants)
        for t, intercept, slopes in data["cuts"]:
            if not 0 <= int(t) < self.horizon or len(slopes) != n:
                raise ValueError(f"{path}: a cut for stage {t} with {len(slopes)} slopes does "
                                 f"not fit {self.horizon} stages of {n} reservoirs")  # fmt: skip
            self.add_cut(int(t), float(intercept), np.asarray(slopes, dtype=np.float64))
