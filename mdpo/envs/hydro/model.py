"""The stage problems of hydrothermal dispatch, built from the case data, with a DC, SOC or AC
power flow (``formulation``).

One stage, with the incoming reservoir volumes and the inflows as *parameters*: variables
fixed by their bounds (as the reference subproblems do), so that a backend changes them with
bound updates and reads their reduced costs. Variables and constraints follow the reference
subproblems (``DCPPowerModel``, ``SOCWRConicPowerModel`` and ``ACPPowerModel.mof.json``:
PowerModels' formulations plus the hydro model of the TS-DDR case study).

The network (``"dc"``: a linear program; ``"soc"`` and ``"ac"``: non-linear programs):

- ``dc``: bus balance with load shedding ``Σ_from p − Σ_to p − Σ pg − deficit = −s·pd``;
  ``p = x/(r² + x²)·(va_f − va_t)``, ``|p| <= rate_a``, angle differences within
  ``[angmin, angmax]``, the reference bus angle 0.
- ``ac`` (polar, PowerModels' ACP): voltage magnitudes ``vm ∈ [vmin, vmax]`` and angles; the
  flows of both ends of every branch ``p, q`` are the π-model's functions of
  ``vm_f, vm_t, va_f − va_t`` (with the line charging, tap and shift); ``p² + q² <= rate_a²``;
  active balance with load shedding as DC, reactive balance ``Σ q − Σ qg = −s·qd`` (shunts add
  ``gs·vm²``, ``bs·vm²``); ``qg ∈ [qmin, qmax]``.
- ``soc`` (PowerModels' SOCWR, the second-order-cone relaxation of AC): ``w_i = vm_i²`` and,
  per bus pair, ``wr, wi`` (``vm_f vm_t cos``, ``sin`` of the angle difference) with
  ``w_f·w_t >= wr² + wi²`` in place of the equality; flows linear in ``w, wr, wi``; the angle
  limits as ``tan(angmin)·wr <= wi <= tan(angmax)·wr`` plus the two linear cuts of PowerModels'
  ``cut_complex_product_and_angle_difference``; the thermal limits as cones.

The hydro part is the same in every formulation: ``pmin <= pg <= pmax``; a hydro unit's
``baseMVA·pg = ρ·q`` (production factor ρ); water balance
``v_out = v_in + K·(w − q) − s + K·Σ q_up + Σ s_up`` (turbined and spilled water of the plants
upstream), ``0 <= v_out <= max_volume``, ``0 <= q <= max_turn``, ``s >= 0``, minimum volume and
outflow with (cost-free in the data) violation slacks; cost ``Σ c·pg`` (every unit's linear
cost) ``+ cost_deficit·baseMVA·Σ deficit``.

``K`` (hm³ per m³/s over the stage; 0.0036 is one hour, the reference runs' value) and the load
scale ``s`` (0.6 in the Bolivia reference experiments) are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdpo.envs.hydro.case import Branch, Case
from mdpo.rules.builder import ProgramBuilder
from mdpo.rules.lp import LinearProgram
from mdpo.rules.nlp import NonlinearProgram, var

STAGE_K = 0.0036
LOAD_SCALE = 0.6
#: the power-flow formulations of the network
FORMULATIONS = ("dc", "soc", "ac")


@dataclass
class StageProblem:
    """A stage problem (a linear program for DC, a non-linear one for SOC and AC) and where
    its parameters and state live (column indices)."""

    program: LinearProgram | NonlinearProgram
    volume_in: np.ndarray  # fixed columns: incoming volumes, one per plant
    inflow: np.ndarray  # fixed columns: inflows, one per plant
    volume_out: np.ndarray  # the state passed to the next stage
    generation: np.ndarray  # pg, one per generator (case order)
    deficit: np.ndarray  # one per bus
    future_cost: int = -1  # the θ column, or -1


def build_stage_problem(
    case: Case,
    volume_in: np.ndarray | None = None,
    inflow: np.ndarray | None = None,
    stage_k: float = STAGE_K,
    load_scale: float = LOAD_SCALE,
    future_cost: bool = False,
    formulation: str = "dc",
) -> StageProblem:
    """The stage problem of ``case`` at the given incoming volumes and inflows (defaults: the
    plants' initial volumes, the first row and scenario of the inflows); ``future_cost`` adds
    a column θ >= 0 with cost 1 for cuts on the outgoing volumes (SDDP); ``formulation`` is
    the power flow: ``"dc"`` (a linear program), ``"soc"`` or ``"ac"`` (non-linear)."""
    check_formulation(formulation)
    n = len(case.plants)
    v0 = _initial_volume(case, volume_in)
    w = case.inflows[0, :, 0] if inflow is None else np.asarray(inflow, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"inflow must have shape ({n},), got {w.shape}")
    b = ProgramBuilder()
    v_in = [b.var(f"volume_in[{p.name}]", v0[k], v0[k]) for k, p in enumerate(case.plants)]
    cols = _add_stage(b, case, "", v_in, w, stage_k, load_scale, formulation=formulation)
    # θ, the cost of the stages after this one, bounded below by SDDP's cuts (costs are >= 0)
    theta = b.var("future_cost", 0.0, np.inf, 1.0) if future_cost else -1
    return StageProblem(
        program=b.build(f"{case.name} stage"),
        volume_in=np.asarray(v_in),
        inflow=cols["inflow"],
        volume_out=cols["volume_out"],
        generation=cols["generation"],
        deficit=cols["deficit"],
        future_cost=theta,
    )


@dataclass
class DeterministicEquivalent:
    """The T-stage problem of one inflow scenario (perfect foresight), optionally with targets.

    Column / row index arrays are ``[T, plants]`` (``deficit`` ``[T, buses]``). Change the
    scenario with the backend's column bounds on ``inflow``, the targets with the row bounds
    of ``target_rows``; the target rows' duals are the derivatives of the optimal cost with
    respect to the targets.
    """

    program: LinearProgram | NonlinearProgram
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
    formulation: str = "dc",
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
        formulation: the power flow of every stage, ``"dc"``, ``"soc"`` or ``"ac"``.
    """
    check_formulation(formulation)
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
    b = ProgramBuilder()
    first = [b.var(f"volume_in[{p.name}]", v0[k], v0[k]) for k, p in enumerate(case.plants)]
    incoming = first
    inflow_cols, out_cols, generation_cols, deficit_cols = [], [], [], []
    target_rows, slacks = [], []
    for t in range(horizon):
        cols = _add_stage(
            b, case, f"{t}_", incoming, inflows[t], stage_k, load_scale, formulation=formulation
        )
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
        program=b.build(
            f"{case.name} {horizon}-stage deterministic equivalent, {formulation.upper()}"
        ),
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


def check_formulation(formulation: str) -> str:
    """``formulation`` if it is one of :data:`FORMULATIONS`."""
    if formulation not in FORMULATIONS:
        raise ValueError(
            f"unknown power-flow formulation {formulation!r}: choose one of "
            f"{', '.join(FORMULATIONS)}"
        )
    return formulation


def _add_stage(
    b: ProgramBuilder,
    case: Case,
    prefix: str,
    v_in: list[int],
    w: np.ndarray,
    stage_k: float,
    load_scale: float,
    weight: float = 1.0,
    formulation: str = "dc",
) -> dict[str, np.ndarray]:
    """Add one stage's variables and constraints; ``v_in`` are the columns of its incoming
    volumes, ``weight`` multiplies its costs (a node's probability in a scenario tree).
    Returns the columns of its inflows, outgoing volumes, generation and deficits."""
    w_col = [b.var(f"{prefix}inflow[{p.name}]", w[k], w[k]) for k, p in enumerate(case.plants)]
    network = _Network(b, case, prefix, load_scale, weight)
    {"dc": network.dc, "soc": network.soc, "ac": network.ac}[formulation]()
    hydro = _add_hydro(b, case, prefix, v_in, w_col, network.pg, stage_k)
    return {
        "inflow": np.asarray(w_col),
        "volume_out": hydro,
        "generation": np.asarray(network.pg),
        "deficit": np.asarray(network.deficit),
    }


class _Network:
    """One stage's network: generation, deficits and the power flow of a formulation."""

    def __init__(
        self, b: ProgramBuilder, case: Case, prefix: str, load_scale: float, weight: float
    ):
        self.b, self.case, self.prefix = b, case, prefix
        # every unit's own cost, hydro included (the Bolivia data gives turbines a small one)
        self.pg = [
            b.var(f"{prefix}pg[{g.index}]", g.pmin, g.pmax, weight * g.cost)
            for g in case.generators
        ]
        self.deficit = [
            b.var(f"{prefix}deficit[{bus.index}]", cost=weight * case.cost_deficit * case.base_mva)
            for bus in case.buses
        ]
        self.bus_pos = {bus.index: i for i, bus in enumerate(case.buses)}
        n_bus = len(case.buses)
        self.pd, self.qd = np.zeros(n_bus), np.zeros(n_bus)
        for load in case.loads:
            self.pd[self.bus_pos[load.bus]] += load.pd * load_scale
            self.qd[self.bus_pos[load.bus]] += load.qd * load_scale
        self.gs, self.bs = np.zeros(n_bus), np.zeros(n_bus)
        for shunt in case.shunts:
            self.gs[self.bus_pos[shunt.bus]] += shunt.gs
            self.bs[self.bus_pos[shunt.bus]] += shunt.bs
        # the reference bus (MATPOWER type 3) anchors the angles; the first bus if none is
        self.reference = next((i for i, bus in enumerate(case.buses) if bus.reference), 0)

    def _ends(self, j: int, br: Branch) -> tuple[int, int]:
        return self.bus_pos[br.f_bus], self.bus_pos[br.t_bus]

    def _generation_at(self, i: int, columns: list[int]) -> dict[int, float]:
        bus = self.case.buses[i].index
        return {columns[j]: -1.0 for j, g in enumerate(self.case.generators) if g.bus == bus}

    def dc(self) -> None:
        """The DC power flow (a linear program)."""
        b, case, prefix = self.b, self.case, self.prefix
        flow = [b.var(f"{prefix}p[{br.index}]", -br.rate_a, br.rate_a) for br in case.branches]
        angle = [b.var(f"{prefix}va[{bus.index}]", -np.inf, np.inf) for bus in case.buses]
        b.row(f"{prefix}reference_angle", {angle[self.reference]: 1.0}, 0.0, 0.0)
        for i, bus in enumerate(case.buses):
            terms = {self.deficit[i]: -1.0, **self._generation_at(i, self.pg)}
            for j, br in enumerate(case.branches):
                f, t = self._ends(j, br)
                if f == i:
                    terms[flow[j]] = terms.get(flow[j], 0.0) + 1.0
                if t == i:
                    terms[flow[j]] = terms.get(flow[j], 0.0) - 1.0
            b.row(f"{prefix}balance[{bus.index}]", terms, -self.pd[i], -self.pd[i])
        for j, br in enumerate(case.branches):
            coef = br.br_x / (br.br_r**2 + br.br_x**2)  # −b of y = 1/(r + jx)
            f, t = (angle[k] for k in self._ends(j, br))
            b.row(f"{prefix}ohm[{br.index}]", {flow[j]: 1.0, f: -coef, t: coef}, 0.0, 0.0)
        for j, br in enumerate(case.branches):
            f, t = (angle[k] for k in self._ends(j, br))
            b.row(f"{prefix}angle_difference[{br.index}]", {f: 1.0, t: -1.0}, br.angmin, br.angmax)

    def _arcs(self, cones: bool) -> tuple[list[int], list[int], list[int], list[int]]:
        """Active and reactive flow columns of both ends of every branch (bounded by rate_a),
        with the thermal limits ``p² + q² <= rate_a²`` (as second-order cones ``‖(p, q)‖ <=
        rate_a`` when ``cones``: SOC's conic form)."""
        b, case, prefix = self.b, self.case, self.prefix
        ends = [
            (br, f"({br.index}, {br.f_bus}, {br.t_bus})", f"({br.index}, {br.t_bus}, {br.f_bus})")
            for br in case.branches
        ]
        p_fr = [b.var(f"{prefix}p[{fr}]", -br.rate_a, br.rate_a) for br, fr, _ in ends]
        p_to = [b.var(f"{prefix}p[{to}]", -br.rate_a, br.rate_a) for br, _, to in ends]
        q_fr = [b.var(f"{prefix}q[{fr}]", -br.rate_a, br.rate_a) for br, fr, _ in ends]
        q_to = [b.var(f"{prefix}q[{to}]", -br.rate_a, br.rate_a) for br, _, to in ends]
        for j, (br, fr, to) in enumerate(ends):
            for p, q, arc in ((p_fr[j], q_fr[j], fr), (p_to[j], q_to[j], to)):
                name = f"{prefix}thermal_limit[{arc}]"
                if cones:
                    b.cone("soc", [({}, br.rate_a), ({p: 1.0}, 0.0), ({q: 1.0}, 0.0)], name)
                else:
                    square = ("+", ("^", var(p), 2.0), ("^", var(q), 2.0))
                    b.nonlinear(name, square, -np.inf, br.rate_a**2)
        return p_fr, p_to, q_fr, q_to

    def _balances(
        self,
        p_fr: list[int],
        p_to: list[int],
        q_fr: list[int],
        q_to: list[int],
        squared_voltage: list,
    ) -> None:
        """Active (with load shedding) and reactive balance at every bus; a shunt adds
        ``gs·|V|²`` and ``bs·|V|²`` (``squared_voltage[i]``: a column of w, or ``vm²``)."""
        b, case, prefix = self.b, self.case, self.prefix
        qg = [b.var(f"{prefix}qg[{g.index}]", g.qmin, g.qmax) for g in case.generators]
        for i, bus in enumerate(case.buses):
            active = {self.deficit[i]: -1.0, **self._generation_at(i, self.pg)}
            reactive = self._generation_at(i, qg)
            for j, br in enumerate(case.branches):
                f, t = self._ends(j, br)
                for side, p_col, q_col in ((f, p_fr[j], q_fr[j]), (t, p_to[j], q_to[j])):
                    if side == i:
                        active[p_col] = active.get(p_col, 0.0) + 1.0
                        reactive[q_col] = reactive.get(q_col, 0.0) + 1.0
            for name, terms, shunt, rhs in (
                ("balance", active, self.gs[i], -self.pd[i]),
                ("reactive_balance", reactive, -self.bs[i], -self.qd[i]),
            ):
                row = f"{prefix}{name}[{bus.index}]"
                if shunt == 0:
                    b.row(row, terms, rhs, rhs)
                elif isinstance(squared_voltage[i], int):  # SOC: linear in w
                    col = squared_voltage[i]
                    b.row(row, {**terms, col: terms.get(col, 0.0) + shunt}, rhs, rhs)
                else:  # AC: shunt·vm²
                    linear = [("*", c, var(k)) for k, c in terms.items()]
                    expr = ("+", *linear, ("*", shunt, squared_voltage[i]))
                    b.nonlinear(row, expr, rhs, rhs)

    def ac(self) -> None:
        """The polar AC power flow (PowerModels' ACP), non-convex."""
        b, case, prefix = self.b, self.case, self.prefix
        vm = [
            b.var(f"{prefix}vm[{bus.index}]", bus.vmin, bus.vmax, start=1.0) for bus in case.buses
        ]
        va = [b.var(f"{prefix}va[{bus.index}]", -np.inf, np.inf) for bus in case.buses]
        b.row(f"{prefix}reference_angle", {va[self.reference]: 1.0}, 0.0, 0.0)
        p_fr, p_to, q_fr, q_to = self._arcs(cones=False)
        for j, br in enumerate(case.branches):
            f, t = self._ends(j, br)
            g, bb, tr, ti, tm2 = _series(br)
            vf, vt = var(vm[f]), var(vm[t])
            cos_ft = ("cos", ("-", var(va[f]), var(va[t])))
            sin_ft = ("sin", ("-", var(va[f]), var(va[t])))
            cos_tf = ("cos", ("-", var(va[t]), var(va[f])))
            sin_tf = ("sin", ("-", var(va[t]), var(va[f])))
            flows = {
                (p_fr[j], "p_from"): (
                    ("*", (g + br.g_fr) / tm2, vf, vf),
                    ("*", (-g * tr + bb * ti) / tm2, vf, vt, cos_ft),
                    ("*", (-bb * tr - g * ti) / tm2, vf, vt, sin_ft),
                ),
                (q_fr[j], "q_from"): (
                    ("*", -(bb + br.b_fr) / tm2, vf, vf),
                    ("*", -(-bb * tr - g * ti) / tm2, vf, vt, cos_ft),
                    ("*", (-g * tr + bb * ti) / tm2, vf, vt, sin_ft),
                ),
                (p_to[j], "p_to"): (
                    ("*", g + br.g_to, vt, vt),
                    ("*", (-g * tr - bb * ti) / tm2, vt, vf, cos_tf),
                    ("*", (-bb * tr + g * ti) / tm2, vt, vf, sin_tf),
                ),
                (q_to[j], "q_to"): (
                    ("*", -(bb + br.b_to), vt, vt),
                    ("*", -(-bb * tr + g * ti) / tm2, vt, vf, cos_tf),
                    ("*", (-g * tr - bb * ti) / tm2, vt, vf, sin_tf),
                ),
            }
            for (col, name), terms in flows.items():
                expr = ("-", var(col), ("+", *terms))
                b.nonlinear(f"{prefix}{name}[{br.index}]", expr, 0.0, 0.0)
            b.row(
                f"{prefix}angle_difference[{br.index}]",
                {va[f]: 1.0, va[t]: -1.0},
                br.angmin,
                br.angmax,
            )
        self._balances(p_fr, p_to, q_fr, q_to, [("*", var(v), var(v)) for v in vm])

    def soc(self) -> None:
        """The second-order-cone relaxation of AC (PowerModels' SOCWR), convex."""
        b, case, prefix = self.b, self.case, self.prefix
        w = [
            b.var(f"{prefix}w[{bus.index}]", bus.vmin**2, bus.vmax**2, start=1.0)
            for bus in case.buses
        ]
        pairs = _bus_pairs(case)
        wr, wi = {}, {}
        for (f_bus, t_bus), pair in pairs.items():
            wr_min, wr_max, wi_min, wi_max = _voltage_product_bounds(pair)
            wr[f_bus, t_bus] = b.var(f"{prefix}wr[({f_bus}, {t_bus})]", wr_min, wr_max, start=1.0)
            wi[f_bus, t_bus] = b.var(f"{prefix}wi[({f_bus}, {t_bus})]", wi_min, wi_max)
        p_fr, p_to, q_fr, q_to = self._arcs(cones=True)
        for j, br in enumerate(case.branches):
            f, t = self._ends(j, br)
            g, bb, tr, ti, tm2 = _series(br)
            r, i = wr[br.f_bus, br.t_bus], wi[br.f_bus, br.t_bus]
            flows = {
                (p_fr[j], "p_from"): {
                    w[f]: (g + br.g_fr) / tm2,
                    r: (-g * tr + bb * ti) / tm2,
                    i: (-bb * tr - g * ti) / tm2,
                },
                (q_fr[j], "q_from"): {
                    w[f]: -(bb + br.b_fr) / tm2,
                    r: -(-bb * tr - g * ti) / tm2,
                    i: (-g * tr + bb * ti) / tm2,
                },
                (p_to[j], "p_to"): {
                    w[t]: g + br.g_to,
                    r: (-g * tr - bb * ti) / tm2,
                    i: -(-bb * tr + g * ti) / tm2,
                },
                (q_to[j], "q_to"): {
                    w[t]: -(bb + br.b_to),
                    r: -(-bb * tr + g * ti) / tm2,
                    i: -(-g * tr - bb * ti) / tm2,
                },
            }
            for (col, name), terms in flows.items():
                b.row(
                    f"{prefix}{name}[{br.index}]",
                    {col: 1.0, **{k: -c for k, c in terms.items()}},
                    0.0,
                    0.0,
                )
        for (f_bus, t_bus), pair in pairs.items():
            f, t = self.bus_pos[f_bus], self.bus_pos[t_bus]
            r, i = wr[f_bus, t_bus], wi[f_bus, t_bus]
            name = f"({f_bus}, {t_bus})"
            # w_f·w_t >= wr² + wi²: (w_f/√2, w_t/√2, wr, wi) in the rotated cone
            half = 1 / np.sqrt(2.0)
            parts = [({w[f]: half}, 0.0), ({w[t]: half}, 0.0), ({r: 1.0}, 0.0), ({i: 1.0}, 0.0)]
            b.cone("rsoc", parts, f"{prefix}voltage_product[{name}]")
            b.row(f"{prefix}angle_max[{name}]", {i: 1.0, r: -np.tan(pair["angmax"])}, -np.inf, 0.0)
            b.row(f"{prefix}angle_min[{name}]", {i: 1.0, r: -np.tan(pair["angmin"])}, 0.0, np.inf)
            for k, (terms, lower) in enumerate(_angle_difference_cuts(pair, w[f], w[t], r, i)):
                b.row(f"{prefix}angle_cut{k + 1}[{name}]", terms, lower, np.inf)
        self._balances(p_fr, p_to, q_fr, q_to, w)


def _series(br: Branch) -> tuple[float, float, float, float, float]:
    """The series admittance ``g + jb = 1/(r + jx)``, the tap's real and imaginary parts and
    the squared tap ratio."""
    z2 = br.br_r**2 + br.br_x**2
    g, b = br.br_r / z2, -br.br_x / z2
    return g, b, br.tap * np.cos(br.shift), br.tap * np.sin(br.shift), br.tap**2


def _bus_pairs(case: Case) -> dict[tuple[int, int], dict[str, float]]:
    """PowerModels' bus pairs: one per (from bus, to bus) of the branches, the parallel
    branches' angle limits intersected, with the two buses' voltage limits."""
    buses = {bus.index: bus for bus in case.buses}
    pairs: dict[tuple[int, int], dict[str, float]] = {}
    for br in case.branches:
        if not -np.pi / 2 < br.angmin <= br.angmax < np.pi / 2:
            raise ValueError(
                f"branch {br.index}: angle limits [{br.angmin}, {br.angmax}] outside "
                "(-π/2, π/2): the SOC relaxation's angle rows need them inside (as PowerModels)"
            )
        key = (br.f_bus, br.t_bus)
        if key in pairs:
            pairs[key]["angmin"] = max(pairs[key]["angmin"], br.angmin)
            pairs[key]["angmax"] = min(pairs[key]["angmax"], br.angmax)
            continue
        f, t = buses[br.f_bus], buses[br.t_bus]
        pairs[key] = {
            "angmin": br.angmin,
            "angmax": br.angmax,
            "vf_min": f.vmin,
            "vf_max": f.vmax,
            "vt_min": t.vmin,
            "vt_max": t.vmax,
        }
    return pairs


def _voltage_product_bounds(pair: dict[str, float]) -> tuple[float, float, float, float]:
    """Bounds of ``wr`` and ``wi`` of a bus pair (PowerModels' ``calc_voltage_product_bounds``)."""
    lo, hi = pair["angmin"], pair["angmax"]
    low, high = pair["vf_min"] * pair["vt_min"], pair["vf_max"] * pair["vt_max"]
    if lo >= 0:
        return low * np.cos(hi), high * np.cos(lo), low * np.sin(lo), high * np.sin(hi)
    if hi <= 0:
        return low * np.cos(lo), high * np.cos(hi), high * np.sin(lo), low * np.sin(hi)
    return low * min(np.cos(lo), np.cos(hi)), high, high * np.sin(lo), high * np.sin(hi)


def _angle_difference_cuts(
    pair: dict[str, float], w_f: int, w_t: int, wr: int, wi: int
) -> list[tuple[dict[int, float], float]]:
    """The two linear cuts of PowerModels' ``cut_complex_product_and_angle_difference``
    (``terms·x >= lower``), which tighten the relaxation with the angle limits."""
    vf_lb, vf_ub = pair["vf_min"], pair["vf_max"]
    vt_lb, vt_ub = pair["vt_min"], pair["vt_max"]
    phi = (pair["angmax"] + pair["angmin"]) / 2
    d = (pair["angmax"] - pair["angmin"]) / 2
    sf, st = vf_lb + vf_ub, vt_lb + vt_ub
    cuts = []
    for vf, vt, sign in ((vf_ub, vt_ub, 1.0), (vf_lb, vt_lb, -1.0)):
        terms = {
            wr: sf * st * np.cos(phi),
            wi: sf * st * np.sin(phi),
            w_f: -vt * np.cos(d) * st,
            w_t: -vf * np.cos(d) * sf,
        }
        cuts.append((terms, sign * vf * vt * np.cos(d) * (vf_lb * vt_lb - vf_ub * vt_ub)))
    return cuts


def _add_hydro(
    b: ProgramBuilder,
    case: Case,
    prefix: str,
    v_in: list[int],
    w_col: list[int],
    pg: list[int],
    stage_k: float,
) -> np.ndarray:
    """The reservoirs and turbines of one stage; returns the outgoing volume columns."""
    plants = case.plants
    v_out = [b.var(f"{prefix}volume_out[{p.name}]", 0.0, p.max_volume) for p in plants]
    volume_slack = [b.var(f"{prefix}min_volume_violation[{p.name}]") for p in plants]
    turbined = [b.var(f"{prefix}turbined[{p.name}]", 0.0, p.max_turn) for p in plants]
    spill = [b.var(f"{prefix}spill[{p.name}]") for p in plants]
    outflow_slack = [b.var(f"{prefix}min_outflow_violation[{p.name}]") for p in plants]
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
            {pg[gen_pos[plant.generator]]: case.base_mva, turbined[k]: -plant.production_factor},
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
    return np.asarray(v_out)


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
    b = ProgramBuilder()
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
