"""The stage LP of hydrothermal dispatch with a DC power flow, built from the case data.

One stage, with the incoming reservoir volumes and the inflows as *parameters*: variables
fixed by their bounds (as the reference subproblems do), so that a backend changes them with
bound updates and reads their reduced costs. Variables and constraints follow the reference
(`DCPPowerModel.mof.json`, PowerModels' DC formulation plus the hydro model of the TS-DDR case
study):

- bus balance at every bus with load shedding: ``Σ_from p − Σ_to p − Σ pg − deficit = −s·pd``;
- DC flow ``p = x/(r² + x²)·(va_f − va_t)``, ``|p| <= rate_a``, angle differences within
  ``[angmin, angmax]``, the reference bus angle 0;
- ``pmin <= pg <= pmax``; a hydro unit's ``baseMVA·pg = ρ·q`` (production factor ρ);
- water balance ``v_out = v_in + K·(w − q) − s + K·Σ q_up + Σ s_up`` (turbined and spilled water
  of the plants upstream), ``0 <= v_out <= max_volume``, ``0 <= q <= max_turn``, ``s >= 0``,
  minimum volume and outflow with (cost-free in the data) violation slacks;
- cost ``Σ c·pg`` (every unit's linear cost) ``+ cost_deficit·baseMVA·Σ deficit``.

``K`` (hm³ per m³/s over the stage; 0.0036 is one hour, the reference runs' value) and the load
scale ``s`` (0.6 in the Bolivia reference experiments) are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdpo.envs.hydro.case import Case
from mdpo.rules.lp import LinearProgram

STAGE_K = 0.0036
LOAD_SCALE = 0.6


@dataclass
class StageLP:
    """A stage LP and where its parameters and state live (column indices)."""

    lp: LinearProgram
    volume_in: np.ndarray  # fixed columns: incoming volumes, one per plant
    inflow: np.ndarray  # fixed columns: inflows, one per plant
    volume_out: np.ndarray  # the state passed to the next stage
    generation: np.ndarray  # pg, one per generator (case order)
    deficit: np.ndarray  # one per bus
    future_cost: int = -1  # the θ column, or -1


class _Builder:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.rows: list[str] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.starts = [0]
        self.cols: list[int] = []
        self.vals: list[float] = []

    def var(self, name: str, lower: float = 0.0, upper: float = np.inf, cost: float = 0.0) -> int:
        self.names.append(name)
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        return len(self.names) - 1

    def row(self, name: str, terms: dict[int, float], lower: float, upper: float) -> int:
        merged: dict[int, float] = {}
        for col, coef in terms.items():
            merged[col] = merged.get(col, 0.0) + coef
        for col in sorted(merged):
            self.cols.append(col)
            self.vals.append(merged[col])
        self.starts.append(len(self.cols))
        self.rows.append(name)
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        return len(self.rows) - 1

    def build(self, name: str) -> LinearProgram:
        return LinearProgram(
            name=name,
            variables=self.names,
            col_lower=np.asarray(self.lower, dtype=np.float64),
            col_upper=np.asarray(self.upper, dtype=np.float64),
            objective=np.asarray(self.cost, dtype=np.float64),
            objective_constant=0.0,
            maximize=False,
            rows=self.rows,
            row_lower=np.asarray(self.row_lower, dtype=np.float64),
            row_upper=np.asarray(self.row_upper, dtype=np.float64),
            row_start=np.asarray(self.starts, dtype=np.int64),
            columns=np.asarray(self.cols, dtype=np.int64),
            values=np.asarray(self.vals, dtype=np.float64),
        )


def build_stage_lp(
    case: Case,
    volume_in: np.ndarray | None = None,
    inflow: np.ndarray | None = None,
    stage_k: float = STAGE_K,
    load_scale: float = LOAD_SCALE,
    future_cost: bool = False,
) -> StageLP:
    """The stage LP of ``case`` at the given incoming volumes and inflows (defaults: the
    plants' initial volumes, the first row and scenario of the inflows); ``future_cost`` adds
    a column θ >= 0 with cost 1 for cuts on the outgoing volumes (SDDP)."""
    n = len(case.plants)
    v0 = _initial_volume(case, volume_in)
    w = case.inflows[0, :, 0] if inflow is None else np.asarray(inflow, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"inflow must have shape ({n},), got {w.shape}")
    b = _Builder()
    v_in = [b.var(f"volume_in[{p.name}]", v0[k], v0[k]) for k, p in enumerate(case.plants)]
    cols = _add_stage(b, case, "", v_in, w, stage_k, load_scale)
    # θ, the cost of the stages after this one, bounded below by SDDP's cuts (costs are >= 0)
    theta = b.var("future_cost", 0.0, np.inf, 1.0) if future_cost else -1
    return StageLP(
        lp=b.build(f"{case.name} stage"),
        volume_in=np.asarray(v_in),
        inflow=cols["inflow"],
        volume_out=cols["volume_out"],
        generation=cols["generation"],
        deficit=cols["deficit"],
        future_cost=theta,
    )


@dataclass
class DeterministicEquivalent:
    """The T-stage LP of one inflow scenario (perfect foresight), optionally with targets.

    Column / row index arrays are ``[T, plants]`` (``deficit`` ``[T, buses]``). Change the
    scenario with the backend's column bounds on ``inflow``, the targets with the row bounds
    of ``target_rows``; the target rows' duals are the derivatives of the optimal cost with
    respect to the targets.
    """

    lp: LinearProgram
    volume_in: np.ndarray  # [plants], fixed columns: the initial volumes
    inflow: np.ndarray  # [T, plants], fixed columns
    volume_out: np.ndarray  # [T, plants]
    generation: np.ndarray  # [T, generators]
    deficit: np.ndarray  # [T, buses]
    target_rows: np.ndarray | None  # [T, plants]: v_out + δ⁺ − δ⁻ = target
    target_slack: np.ndarray | None  # [T, plants, 2]: δ⁺, δ⁻ columns
    slack_penalty: float | None


def largest_cost(case: Case) -> float:
    """The largest objective coefficient of a stage: the default L1 penalty on target slack."""
    return max([case.cost_deficit * case.base_mva, *[abs(g.cost) for g in case.generators]])


def build_deterministic_equivalent(
    case: Case,
    inflows: np.ndarray,
    volume_in: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    slack_penalty: float | None = None,
    stage_k: float = STAGE_K,
    load_scale: float = LOAD_SCALE,
) -> DeterministicEquivalent:
    """T stages linked by the reservoir volumes (stage t's outgoing volumes are stage t+1's
    incoming ones), with the inflows of one scenario.

    Args:
        case: the case.
        inflows: ``[T, plants]`` inflows of the scenario.
        volume_in: initial volumes (default the plants' initial volumes).
        targets: ``[T, plants]`` target end-of-stage volumes: adds ``v_out + δ⁺ − δ⁻ = target``
            with ``penalty·(δ⁺ + δ⁻)`` in the cost (TS-DDR's formulation), or ``None``.
        slack_penalty: the L1 penalty (default :func:`largest_cost`).
        stage_k: hm³ per m³/s over one stage.
        load_scale: factor on every load.
    """
    inflows = np.asarray(inflows, dtype=np.float64)
    n = len(case.plants)
    if inflows.ndim != 2 or inflows.shape[1] != n:
        raise ValueError(f"inflows must have shape (T, {n}), got {inflows.shape}")
    horizon = inflows.shape[0]
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != inflows.shape:
            raise ValueError(f"targets must have shape {inflows.shape}, got {targets.shape}")
    penalty = largest_cost(case) if slack_penalty is None else float(slack_penalty)
    if penalty < 0:
        raise ValueError(f"slack_penalty must not be negative, got {penalty}")
    v0 = _initial_volume(case, volume_in)
    b = _Builder()
    first = [b.var(f"volume_in[{p.name}]", v0[k], v0[k]) for k, p in enumerate(case.plants)]
    incoming = first
    inflow_cols, out_cols, generation_cols, deficit_cols = [], [], [], []
    target_rows, slacks = [], []
    for t in range(horizon):
        cols = _add_stage(b, case, f"{t}_", incoming, inflows[t], stage_k, load_scale)
        inflow_cols.append(cols["inflow"])
        out_cols.append(cols["volume_out"])
        generation_cols.append(cols["generation"])
        deficit_cols.append(cols["deficit"])
        if targets is not None:
            rows, pairs = [], []
            for k, plant in enumerate(case.plants):
                up = b.var(f"{t}_target_slack_up[{plant.name}]", cost=penalty)
                down = b.var(f"{t}_target_slack_down[{plant.name}]", cost=penalty)
                rows.append(
                    b.row(
                        f"{t}_target[{plant.name}]",
                        {int(cols["volume_out"][k]): 1.0, up: 1.0, down: -1.0},
                        targets[t, k],
                        targets[t, k],
                    )
                )
                pairs.append((up, down))
            target_rows.append(rows)
            slacks.append(pairs)
        incoming = [int(c) for c in cols["volume_out"]]
    return DeterministicEquivalent(
        lp=b.build(f"{case.name} {horizon}-stage deterministic equivalent"),
        volume_in=np.asarray(first),
        inflow=np.asarray(inflow_cols),
        volume_out=np.asarray(out_cols),
        generation=np.asarray(generation_cols),
        deficit=np.asarray(deficit_cols),
        target_rows=np.asarray(target_rows) if targets is not None else None,
        target_slack=np.asarray(slacks) if targets is not None else None,
        slack_penalty=penalty if targets is not None else None,
    )


def _initial_volume(case: Case, volume_in: np.ndarray | None) -> np.ndarray:
    n = len(case.plants)
    if volume_in is None:
        return np.array([p.initial_volume for p in case.plants])
    v0 = np.asarray(volume_in, dtype=np.float64)
    if v0.shape != (n,):
        raise ValueError(f"volume_in must have shape ({n},), got {v0.shape}")
    return v0


def _add_stage(
    b: _Builder,
    case: Case,
    prefix: str,
    v_in: list[int],
    w: np.ndarray,
    stage_k: float,
    load_scale: float,
    weight: float = 1.0,
) -> dict[str, np.ndarray]:
    """Add one stage's variables and constraints; ``v_in`` are the columns of its incoming
    volumes, ``weight`` multiplies its costs (a node's probability in a scenario tree).
    Returns the columns of its inflows, outgoing volumes, generation and deficits."""
    plants = case.plants
    base = case.base_mva
    w_col = [b.var(f"{prefix}inflow[{p.name}]", w[k], w[k]) for k, p in enumerate(plants)]
    # every unit's own cost, hydro included (the Bolivia data gives turbines a small one)
    pg = [b.var(f"{prefix}pg[{g.index}]", g.pmin, g.pmax, weight * g.cost) for g in case.generators]
    flow = [b.var(f"{prefix}p[{br.index}]", -br.rate_a, br.rate_a) for br in case.branches]
    v_out = [b.var(f"{prefix}volume_out[{p.name}]", 0.0, p.max_volume) for p in plants]
    volume_slack = [b.var(f"{prefix}min_volume_violation[{p.name}]") for p in plants]
    turbined = [b.var(f"{prefix}turbined[{p.name}]", 0.0, p.max_turn) for p in plants]
    spill = [b.var(f"{prefix}spill[{p.name}]") for p in plants]
    outflow_slack = [b.var(f"{prefix}min_outflow_violation[{p.name}]") for p in plants]
    deficit = [
        b.var(f"{prefix}deficit[{bus.index}]", cost=weight * case.cost_deficit * base)
        for bus in case.buses
    ]
    angle = [b.var(f"{prefix}va[{bus.index}]", -np.inf, np.inf) for bus in case.buses]
    bus_pos = {bus.index: i for i, bus in enumerate(case.buses)}
    # the reference bus (MATPOWER type 3) anchors the angles; the first bus if none is marked
    reference = next((i for i, bus in enumerate(case.buses) if bus.reference), 0)
    b.row(f"{prefix}reference_angle", {angle[reference]: 1.0}, 0.0, 0.0)
    demand = np.zeros(len(case.buses))
    for load in case.loads:
        demand[bus_pos[load.bus]] += load.pd * load_scale
    for i, bus in enumerate(case.buses):
        terms = {deficit[i]: -1.0}
        for j, g in enumerate(case.generators):
            if g.bus == bus.index:
                terms[pg[j]] = terms.get(pg[j], 0.0) - 1.0
        for j, br in enumerate(case.branches):
            if br.f_bus == bus.index:
                terms[flow[j]] = terms.get(flow[j], 0.0) + 1.0
            if br.t_bus == bus.index:
                terms[flow[j]] = terms.get(flow[j], 0.0) - 1.0
        b.row(f"{prefix}balance[{bus.index}]", terms, -demand[i], -demand[i])
    for j, br in enumerate(case.branches):
        coef = br.br_x / (br.br_r**2 + br.br_x**2)  # −b of y = 1/(r + jx)
        f, t = angle[bus_pos[br.f_bus]], angle[bus_pos[br.t_bus]]
        b.row(f"{prefix}ohm[{br.index}]", {flow[j]: 1.0, f: -coef, t: coef}, 0.0, 0.0)
    for br in case.branches:
        f, t = angle[bus_pos[br.f_bus]], angle[bus_pos[br.t_bus]]
        b.row(f"{prefix}angle_difference[{br.index}]", {f: 1.0, t: -1.0}, br.angmin, br.angmax)

    position = {p.index: k for k, p in enumerate(plants)}
    gen_pos = {g.index: j for j, g in enumerate(case.generators)}
    for k, plant in enumerate(plants):
        terms = {
            v_out[k]: 1.0,
            v_in[k]: -1.0,
            w_col[k]: -stage_k,
            turbined[k]: stage_k,
            spill[k]: 1.0,
        }
        for upstream in plants:
            u = position[upstream.index]
            if plant.index in upstream.downstream_turn:
                terms[turbined[u]] = terms.get(turbined[u], 0.0) - stage_k
            if plant.index in upstream.downstream_spill:
                terms[spill[u]] = terms.get(spill[u], 0.0) - 1.0
        b.row(f"{prefix}water_balance[{plant.name}]", terms, 0.0, 0.0)
    for k, plant in enumerate(plants):
        b.row(
            f"{prefix}turbine_energy[{plant.name}]",
            {pg[gen_pos[plant.generator]]: base, turbined[k]: -plant.production_factor},
            0.0,
            0.0,
        )
    for k, plant in enumerate(plants):
        b.row(
            f"{prefix}min_volume[{plant.name}]",
            {v_out[k]: 1.0, volume_slack[k]: 1.0},
            plant.min_volume,
            np.inf,
        )
        b.row(
            f"{prefix}min_outflow[{plant.name}]",
            {turbined[k]: 1.0, outflow_slack[k]: 1.0},
            plant.min_turn,
            np.inf,
        )
    return {
        "inflow": np.asarray(w_col),
        "volume_out": np.asarray(v_out),
        "generation": np.asarray(pg),
        "deficit": np.asarray(deficit),
    }


def build_scenario_tree(
    case: Case,
    horizon: int,
    volume_in: np.ndarray | None = None,
    stage_k: float = STAGE_K,
    load_scale: float = LOAD_SCALE,
) -> LinearProgram:
    """The extensive form of the stage-wise independent problem over ``horizon`` stages: one
    stage copy per inflow history (``S + S² + ... + S^T`` nodes for S scenarios), each costed
    by its probability and fed by its parent's outgoing volumes. Its optimum is the exact
    expected cost SDDP's lower bound converges to; exponential, so for small trees only."""
    v0 = _initial_volume(case, volume_in)
    b = _Builder()
    root = [b.var(f"volume_in[{p.name}]", v0[k], v0[k]) for k, p in enumerate(case.plants)]
    frontier = [(root, 1.0, "")]
    for t in range(horizon):
        inflows, probabilities = case.stage_inflows(t)
        children = []
        for incoming, weight, name in frontier:
            for j in range(case.n_scenarios):
                node = f"{name}{j}"
                cols = _add_stage(
                    b,
                    case,
                    f"{node}_",
                    incoming,
                    inflows[j],
                    stage_k,
                    load_scale,
                    weight * probabilities[j],
                )
                children.append(
                    ([int(c) for c in cols["volume_out"]], weight * probabilities[j], node)
                )
        frontier = children
    return b.build(f"{case.name} {horizon}-stage scenario tree")
