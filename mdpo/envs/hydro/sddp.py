"""Stochastic dual dynamic programming (Pereira & Pinto 1991) over the hydro stage problems.

Stage ``t``'s problem is the stage problem (DC: a linear program; SOC: the convex relaxation of
AC, so that its cuts are valid) plus ``θ_t`` (the expected cost of the later stages)
bounded below by Benders cuts on the outgoing volumes, ``θ_t >= α + β·v_out``. Each iteration:
a forward pass samples one inflow path (stage-wise independent: one joint column per stage,
rows cycling) and records the trial volumes; a backward pass solves, at each trial volume, every
inflow realization of the next stage and adds the expected cut (values and the reduced costs of
the fixed incoming volumes). The lower bound is the first stage's expected value; the upper
bound is estimated by simulating the policy (mean cost with a 95% confidence interval).

The policy can be simulated on another formulation than the one its cuts were built on: the AC
stage problems with the SOC (or DC) cuts as the future cost, as the TS-DDR study's baselines do.
The non-convex AC problem cannot give valid cuts itself.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from mdpo.core.limits import (
    MAX_CUTS,
    BadFileError,
    field_float,
    field_int,
    json_object,
    loads_json,
)
from mdpo.envs.hydro.case import Case
from mdpo.envs.hydro.model import (
    FORMULATIONS,
    LOAD_SCALE,
    STAGE_K,
    build_stage_problem,
    check_formulation,
)
from mdpo.envs.hydro.simulate import StageRecords, stage_record
from mdpo.rules.backend import open_model

#: bytes of cut-file text per number: ``json.dump`` writes a float in at most 24 characters
#: (``-1.2345678901234567e-300``), then ``", "``
BYTES_PER_NUMBER = 26
#: what a cut file may hold besides its cuts (case name, horizon, ... and brackets)
HEADER_BYTES = 1 << 20
#: the myopic policy's value of stored water (cost per hm³), only there to break ties
MYOPIC_KEEP_WATER = 1e-3


class CutFileError(BadFileError):
    """A cut file that is malformed, hostile, over a limit or computed for another problem."""


@dataclass(frozen=True)
class CutFile:
    """The validated content of a cut file: ``len(stages)`` cuts
    ``θ_{stages[i]} >= intercepts[i] + slopes[i]·v_out``."""

    case: str
    horizon: int
    stage_k: float
    load_scale: float
    formulation: str  # the stage problems the cuts were built on
    stages: np.ndarray  # [cuts] int64, each in [0, horizon)
    intercepts: np.ndarray  # [cuts] float64, finite
    slopes: np.ndarray  # [cuts, reservoirs] float64, finite


def cut_file_max_bytes(n_reservoirs: int) -> int:
    """The most bytes of (uncompressed) text a cut file for ``n_reservoirs`` may hold: what
    :data:`~mdpo.core.limits.MAX_CUTS` cuts of as many slopes take as ``json.dump`` writes them
    (the Bolivia study's 60 000 cuts of 11 reservoirs take 15 MB; the bound is 346 MB there,
    88 MB for one reservoir). A gzip bomb is refused once it has expanded to this."""
    return HEADER_BYTES + MAX_CUTS * (BYTES_PER_NUMBER * (n_reservoirs + 2) + 8)


def _check_structure(text: str, n_reservoirs: int, where: str) -> None:
    """Refuse text that would parse into more than :data:`~mdpo.core.limits.MAX_CUTS` cuts' worth
    of lists and numbers, before it is parsed: the parsed form takes about ten times the text
    of short numbers (``[0,0,[0]],``), so the byte bound alone does not bound the memory."""
    lists, items = text.count("["), text.count(",")
    if lists > 2 * MAX_CUTS + 1:
        raise CutFileError(f"{where}: {lists} lists, more than {MAX_CUTS} cuts (the limit)")
    if items > MAX_CUTS * (n_reservoirs + 3) + 16:
        raise CutFileError(
            f"{where}: {items} list items, more than {MAX_CUTS} cuts of {n_reservoirs} slopes hold"
        )
    if text.count("{") > 16 or text.count('"') > 256:
        raise CutFileError(
            f"{where}: not a cut file of mdpo hydro sddp (objects or strings where cuts belong)"
        )


def read_cuts_file(path: str, n_reservoirs: int) -> CutFile:
    """The cuts of a cut file (JSON, gzipped or not) for a case of ``n_reservoirs``, checked
    before any is built: at most :func:`cut_file_max_bytes` of text and
    :data:`~mdpo.core.limits.MAX_CUTS` cuts, each ``[stage in [0, horizon), intercept, slopes]``
    with ``n_reservoirs`` slopes, every number finite.

    Raises:
        CutFileError: naming the file and the field.
    """
    limit = cut_file_max_bytes(n_reservoirs)
    try:
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as handle:
            # by chunks: one read(limit) would reserve the whole bound up front
            chunks, size = [], 0
            while size <= limit and (chunk := handle.read(1 << 22)):
                chunks.append(chunk)
                size += len(chunk)
        raw = b"".join(chunks)
        del chunks
    except (OSError, EOFError, zlib.error) as err:  # a truncated or corrupt gzip too
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise CutFileError(f"{path}: not a readable cut file ({reason})") from None
    if len(raw) > limit:
        raise CutFileError(
            f"{path}: more than {limit} bytes of cuts (the most {MAX_CUTS} cuts "
            f"of {n_reservoirs} reservoirs take)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CutFileError(f"{path}: not a cut file of mdpo hydro sddp (not UTF-8)") from None
    del raw  # the parsed cuts and the text are what the memory holds at once
    _check_structure(text, n_reservoirs, path)
    try:
        data = json_object(loads_json(text, path, max_bytes=limit), path)
    except CutFileError:
        raise
    except BadFileError as err:
        raise CutFileError(f"{err} (not a cut file of mdpo hydro sddp)") from None
    del text
    if not isinstance(data.get("cuts"), list):
        raise CutFileError(f"{path}: not a cut file of mdpo hydro sddp (no list of cuts)")
    case = data.get("case")
    if not isinstance(case, str):
        raise CutFileError(f"{path}: field 'case' must be a case name (a string)")
    try:
        horizon = field_int(data.get("horizon"), f"{path}: field 'horizon'", 1)
        stage_k = field_float(data.get("stage_k"), f"{path}: field 'stage_k'")
        load_scale = field_float(data.get("load_scale"), f"{path}: field 'load_scale'")
        # files written before the SOC and AC formulations hold DC cuts
        formulation = data.get("formulation", "dc")
        if formulation not in FORMULATIONS:
            raise CutFileError(
                f"{path}: field 'formulation' must be one of {', '.join(FORMULATIONS)}"
            )
        cuts = data["cuts"]
        n_cuts = field_int(len(cuts), f"{path}: the number of cuts", 0, MAX_CUTS)
        stages = np.empty(n_cuts, dtype=np.int64)
        intercepts = np.empty(n_cuts, dtype=np.float64)
        slopes = np.empty((n_cuts, n_reservoirs), dtype=np.float64)
        for i, cut in enumerate(cuts):
            where = f"{path}: cut {i}"
            if not isinstance(cut, list) or len(cut) != 3 or not isinstance(cut[2], list):
                raise CutFileError(f"{where} must be [stage, intercept, [slopes]]")
            if len(cut[2]) != n_reservoirs:
                raise CutFileError(
                    f"{where} has {len(cut[2])} slopes, not one per reservoir ({n_reservoirs})"
                )
            stages[i] = field_int(cut[0], f"{where} stage", 0, horizon - 1)
            intercepts[i] = field_float(cut[1], f"{where} intercept")
            for j, value in enumerate(cut[2]):
                slopes[i, j] = field_float(value, f"{where} slope {j}")
    except CutFileError:
        raise
    except BadFileError as err:
        raise CutFileError(str(err)) from None
    return CutFile(case, horizon, stage_k, load_scale, formulation, stages, intercepts, slopes)


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
        stage_k, load_scale: see :func:`mdpo.envs.hydro.model.build_stage_problem`.
        seed: seed of the forward-pass sampling.
        formulation: the stage problems the cuts are built on, ``"dc"`` or ``"soc"`` (convex;
            ``"ac"`` is refused: its duals do not give valid cuts).
    """

    def __init__(
        self,
        case: Case,
        horizon: int,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
        seed: int = 0,
        formulation: str = "dc",
    ):

        if check_formulation(formulation) == "ac":
            raise ValueError(
                "SDDP needs convex stage problems for valid cuts: train on 'soc' (the AC "
                "relaxation) or 'dc', and simulate on 'ac'"
            )
        self.case, self.horizon = case, int(horizon)
        self.stage_k, self.load_scale = stage_k, load_scale
        self.formulation = formulation
        self.stage = self._stage_problem(formulation)
        self.models = [open_model(self.stage.program) for _ in range(self.horizon)]
        # stage models of other formulations the policy is simulated on, with the same cuts
        self._simulation: dict[str, tuple[Any, list[Any]]] = {}
        self.cuts: list[tuple[int, float, np.ndarray]] = []
        self.seed = int(seed)
        self.volume0 = np.array([p.initial_volume for p in case.plants])
        self.log = SDDPLog()
        # the myopic policy's cuts break ties; they bound no future cost (see myopic)
        self.tie_break_only = False

    @classmethod
    def myopic(
        cls,
        case: Case,
        horizon: int,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
        keep_water: float = MYOPIC_KEEP_WATER,
    ) -> SDDP:
        """The myopic policy: each stage at its least immediate cost, stored water worth
        nothing, except that among equally cheap decisions it keeps water rather than
        spilling it (a value of ``keep_water`` per hm³, far below any fuel cost). Without
        that tie-break the policy is not defined: HiGHS's simplex happens to store the water
        a stage cannot use and Ipopt's interior point spreads it between storage and spill,
        which on Bolivia made the myopic rule 9% above perfect foresight on DC and 20% on AC
        for that reason alone. The value enters as one cut per stage, ``θ >= keep_water ·
        (capacity - v_out) >= 0``; reported costs leave θ out."""
        policy = cls(case, horizon, stage_k=stage_k, load_scale=load_scale)
        policy.tie_break_only = True
        capacity = np.array([p.max_volume for p in case.plants], dtype=np.float64)
        for t in range(policy.horizon):
            policy.add_cut(
                t, keep_water * float(capacity.sum()), -keep_water * np.ones_like(capacity)
            )
        return policy

    def _stage_problem(self, formulation: str):
        return build_stage_problem(
            self.case,
            stage_k=self.stage_k,
            load_scale=self.load_scale,
            future_cost=True,
            formulation=formulation,
        )

    def _models(self, formulation: str | None) -> tuple[Any, list[Any]]:
        """The stage problem and the stage models (with every cut) of ``formulation``."""
        if formulation is None or formulation == self.formulation:
            return self.stage, self.models
        if formulation not in self._simulation:
            stage = self._stage_problem(check_formulation(formulation))
            models = [open_model(stage.program) for _ in range(self.horizon)]
            for t, intercept, slopes in self.cuts:
                models[t].add_rows([intercept], [np.inf], [self._cut_row(stage, slopes)])
            self._simulation[formulation] = (stage, models)
        return self._simulation[formulation]

    @staticmethod
    def _cut_row(stage, slopes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``θ − slopes·v_out`` as (columns, values) of ``stage``."""
        columns = np.concatenate([[stage.future_cost], stage.volume_out])
        return columns, np.concatenate([[1.0], -np.asarray(slopes, dtype=np.float64)])

    # ----------------------------------------------------------------------------- scenarios
    def realizations(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inflows [scenarios, plants], probabilities)`` of stage ``t``."""
        return self.case.stage_inflows(t)

    def sample_paths(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, horizon]`` scenario indices, stage-wise independent."""
        return self.case.sample_paths(n, self.horizon, rng)

    # ----------------------------------------------------------------------------- solves
    def _solve(
        self, t: int, volume: np.ndarray, inflow: np.ndarray, formulation: str | None = None
    ):
        stage, models = self._models(formulation)
        model = models[t]
        model.set_col_bounds(stage.volume_in, volume, volume)
        model.set_col_bounds(stage.inflow, inflow, inflow)
        return model.solve(f"SDDP stage {t}")

    def add_cut(self, t: int, intercept: float, slopes: np.ndarray) -> None:
        """``θ_t >= intercept + slopes·v_out`` in stage ``t``."""
        slopes = np.asarray(slopes, dtype=np.float64)
        if not (np.isfinite(intercept) and np.all(np.isfinite(slopes))):
            # a NaN row would make every later solve of the stage fail, far from the cause
            raise ValueError(
                f"stage {t}: a cut with non-finite coefficients ({intercept}, {slopes})"
            )
        self.models[t].add_rows([intercept], [np.inf], [self._cut_row(self.stage, slopes)])
        for stage, models in self._simulation.values():
            models[t].add_rows([intercept], [np.inf], [self._cut_row(stage, slopes)])
        self.cuts.append((t, float(intercept), slopes))

    def _refuse_if_tie_break(self, what: str) -> None:
        if self.tie_break_only:
            raise ValueError(
                f"{what}: this is the myopic policy, whose cuts break ties and bound no future "
                "cost; build SDDP(...) to train cuts"
            )

    def lower_bound(self) -> float:
        """Expected first-stage value (stage cost plus θ) at the initial volumes."""
        self._refuse_if_tie_break("lower_bound")
        inflows, probabilities = self.realizations(0)
        return float(
            sum(
                p * self._solve(0, self.volume0, w).objective
                for w, p in zip(inflows, probabilities)
            )
        )

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
        self._refuse_if_tie_break("train")
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
        self,
        paths: np.ndarray,
        stages: int | None = None,
        progress: bool = False,
        formulation: str | None = None,
    ) -> StageRecords:
        """The policy on each scenario path (``[n, horizon]`` indices) over the first
        ``stages`` stages (default all): its stage costs (θ excluded), volumes and generation.
        ``formulation``: the stage problems it is simulated on (default the cuts' own), each
        with the cuts as its future cost."""
        stages = self.horizon if stages is None else stages
        if not 1 <= stages <= self.horizon:
            raise ValueError(f"stages must be in [1, {self.horizon}], got {stages}")
        stage = self._models(formulation)[0]
        records = StageRecords.empty(len(paths), stages, len(self.case.plants))
        for i, path in enumerate(
            tqdm(paths, desc="simulate", unit="scenario", disable=not progress)
        ):
            volume = self.volume0
            for t in range(stages):
                inflows, _ = self.realizations(t)
                solution = self._solve(t, volume, inflows[path[t]], formulation)
                records.store(
                    i,
                    t,
                    stage_record(
                        self.case,
                        stage.program,
                        solution.primal,
                        stage.generation,
                        stage.deficit,
                        stage.volume_out,
                    ),
                )
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
        self._refuse_if_tie_break("save_cuts")
        data = {
            "case": self.case.name,
            "horizon": self.horizon,
            "stage_k": self.stage_k,
            "load_scale": self.load_scale,
            "formulation": self.formulation,
            "cuts": [[t, a, b.tolist()] for t, a, b in self.cuts],
        }
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wt") as handle:
            json.dump(data, handle, allow_nan=False)  # strict JSON: read_cuts_file's

    @classmethod
    def from_cuts_file(
        cls,
        path: str,
        case: Case,
        horizon: int,
        stage_k: float = STAGE_K,
        load_scale: float = LOAD_SCALE,
    ) -> SDDP:
        """The policy of a cut file over its first ``horizon`` stages, on the stage problems its
        cuts were built on (read from the file); see :meth:`load_cuts`."""
        cuts = read_cuts_file(path, len(case.plants))
        policy = cls(case, horizon, stage_k, load_scale, formulation=cuts.formulation)
        policy._add_cuts(cuts, path, prefix=True)
        return policy

    def load_cuts(self, path: str, prefix: bool = False) -> None:
        """Add the cuts of a file written by :meth:`save_cuts` for the same problem (JSON,
        gzipped or not; checked by :func:`read_cuts_file`).

        Args:
            path: the cut file.
            prefix: the file's horizon may be longer than this one's: only the cuts of this
                one's stages are added (all that a simulation of as many stages uses); else
                the horizons must be equal.

        Raises:
            CutFileError: a malformed file, or one computed for another problem.
        """
        self._add_cuts(read_cuts_file(path, len(self.case.plants)), path, prefix)

    def _add_cuts(self, cuts: CutFile, path: str, prefix: bool) -> None:
        if not prefix and cuts.horizon != self.horizon:
            raise CutFileError(
                f"{path}: cuts were computed for horizon={cuts.horizon}, not {self.horizon}"
            )
        if prefix and cuts.horizon < self.horizon:
            raise CutFileError(
                f"{path}: cuts for horizon {cuts.horizon} cannot drive {self.horizon} stages"
            )
        mine = {
            "case": self.case.name,
            "stage_k": self.stage_k,
            "load_scale": self.load_scale,
            "formulation": self.formulation,
        }
        for key, value in mine.items():
            if getattr(cuts, key) != value:
                theirs = getattr(cuts, key)
                shown = repr(theirs if len(str(theirs)) <= 60 else f"{str(theirs)[:57]}...")
                raise CutFileError(f"{path}: cuts were computed for {key}={shown}, not {value!r}")
        for t, intercept, slopes in zip(cuts.stages, cuts.intercepts, cuts.slopes):
            if t < self.horizon:
                self.add_cut(int(t), float(intercept), slopes)
