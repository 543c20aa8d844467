"""Hydrothermal case data: loading and validation.

A case is a folder with ``PowerModels.json`` (the network, per unit, with ``cost_deficit``),
``hydro.json`` (reservoirs and turbines) and ``inflows.csv`` (stage rows, no header; columns
are plant blocks × scenarios, i.e. ``[row, plant, scenario]`` after a reshape), optionally
``scenarioprobability.csv``. :func:`load_case` reads one and refuses data the models cannot
use, naming the file, the element and the field.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdpo.core.limits import MAX_JSON_BYTES, BadFileError, load_json_file

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CASES = ("bolivia", "case3")
#: the most bytes of a case's CSV file (JSON files: :data:`mdpo.core.limits.MAX_JSON_BYTES`); read
#: line by line into one array of floats, so the memory is at most four times this
MAX_FILE_BYTES = 64 << 20


class CaseDataError(BadFileError):
    """The case data is missing, malformed, or inconsistent."""


def _show(value: Any) -> str:
    """A value read from a case file, for a message: short, one line (a structure by kind)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        if isinstance(value, int) and value.bit_length() > 200:
            return "a huge integer"
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Bus:
    index: int
    reference: bool  # MATPOWER bus type 3: the angle reference
    vmin: float = 0.9  # voltage magnitude limits, p.u. (AC and SOC power flows)
    vmax: float = 1.1


@dataclass(frozen=True)
class Load:
    index: int
    bus: int
    pd: float  # active demand, p.u.
    qd: float = 0.0  # reactive demand, p.u. (AC and SOC)


@dataclass(frozen=True)
class Branch:
    index: int
    f_bus: int
    t_bus: int
    br_r: float  # resistance, p.u. (enters the DC susceptance x / (r² + x²))
    br_x: float  # reactance, p.u.
    rate_a: float  # flow limit, p.u.
    angmin: float
    angmax: float
    # line charging and conductance at each end, tap ratio and phase shift (AC and SOC)
    g_fr: float = 0.0
    b_fr: float = 0.0
    g_to: float = 0.0
    b_to: float = 0.0
    tap: float = 1.0
    shift: float = 0.0


@dataclass(frozen=True)
class Generator:
    index: int
    bus: int
    pmin: float
    pmax: float
    cost: float  # linear cost per p.u.-hour
    hydro: bool  # a turbine of a reservoir in hydro.json (its cost comes from the water)
    qmin: float = -np.inf  # reactive limits, p.u. (AC and SOC)
    qmax: float = np.inf


@dataclass(frozen=True)
class Shunt:
    bus: int
    gs: float  # conductance, p.u. at 1 p.u. voltage (AC and SOC power flows)
    bs: float  # susceptance


@dataclass(frozen=True)
class HydroPlant:
    index: int
    generator: int  # ``index_grid``: the generator this plant's turbines feed
    name: str
    min_volume: float  # hm³
    max_volume: float
    min_turn: float  # m³/s
    max_turn: float
    production_factor: float  # MW / (m³/s)
    initial_volume: float
    downstream_turn: tuple[int, ...]  # plants receiving this plant's turbined water
    downstream_spill: tuple[int, ...]  # plants receiving its spilled water


@dataclass(frozen=True)
class Case:
    """A validated case. ``inflows`` is ``[rows, plants, scenarios]`` in the plants' order."""

    name: str
    base_mva: float
    cost_deficit: float
    buses: tuple[Bus, ...]
    loads: tuple[Load, ...]
    branches: tuple[Branch, ...]
    generators: tuple[Generator, ...]
    plants: tuple[HydroPlant, ...]
    inflows: np.ndarray
    scenario_probabilities: np.ndarray | None  # [rows, scenarios], or None (uniform)
    shunts: tuple[Shunt, ...] = ()

    @property
    def n_scenarios(self) -> int:
        return int(self.inflows.shape[2])

    def stage_inflows(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inflows [scenarios, plants], probabilities)`` of stage ``t`` (rows cycle; the
        probabilities are the case's, or uniform when it has none)."""
        row = t % self.inflows.shape[0]
        if self.scenario_probabilities is None:
            probabilities = np.full(self.n_scenarios, 1.0 / self.n_scenarios)
        else:
            probabilities = self.scenario_probabilities[row % len(self.scenario_probabilities)]
        return self.inflows[row].T, probabilities

    def sample_paths(self, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, horizon]`` inflow column indices, stage-wise independent; drawn stage by
        stage, so the paths of a shorter horizon from the same seed are a prefix of these."""
        paths = np.empty((n, horizon), dtype=np.int64)
        for t in range(horizon):
            _, probabilities = self.stage_inflows(t)
            paths[:, t] = rng.choice(len(probabilities), size=n, p=probabilities)
        return paths

    def path_inflows(self, path: np.ndarray) -> np.ndarray:
        """``[len(path), plants]`` inflows of one path of column indices."""
        return np.stack([self.stage_inflows(t)[0][j] for t, j in enumerate(path)])


def case_path(name_or_path: str) -> str:
    """The folder of a bundled case (``"bolivia"``, ``"case3"``) or a given folder."""
    if name_or_path in CASES:
        return os.path.join(DATA_DIR, name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    raise CaseDataError(
        f"unknown case {name_or_path!r}: give one of {list(CASES)} or a folder with "
        "PowerModels.json, hydro.json and inflows.csv"
    )


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise CaseDataError(f"missing case file {path}")
    try:
        data = load_json_file(path, max_bytes=MAX_JSON_BYTES)
    except BadFileError as err:
        raise CaseDataError(str(err)) from None
    if not isinstance(data, dict):
        raise CaseDataError(f"{path} must hold a JSON object, not {_show(data)}")
    return data


def _read_csv(path: str) -> np.ndarray:
    """A table of finite numbers, read a line at a time into one flat array (a file of short
    numbers would take ten times its size as Python lists)."""
    if not os.path.isfile(path):
        raise CaseDataError(f"missing case file {path}")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise CaseDataError(f"{path} is over {MAX_FILE_BYTES} bytes")
    values, width, rows = array("d"), None, 0
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = [float(v) for v in line.split(",")]
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise CaseDataError(
                        f"{path}: rows must be non-empty and of equal length (line {number} "
                        f"has {len(row)} values, not {width})"
                    )
                values.extend(row)
                rows += 1
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, CaseDataError):
            raise
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CaseDataError(f"{path}: not a table of numbers: {reason}") from None
    if not rows:
        raise CaseDataError(f"{path}: rows must be non-empty and of equal length")
    table = np.frombuffer(values, dtype=np.float64).reshape(rows, width).copy()
    if not np.all(np.isfinite(table)):
        raise CaseDataError(f"{path}: values must be finite")
    return table


def _field(record: dict, key: str, where: str, kind: type = float):
    if key not in record:
        raise CaseDataError(f"{where}: missing field {key!r}")
    value = raw = record[key]
    try:
        if kind is int:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
            if not np.isfinite(value):
                raise ValueError
            # subnormal numbers (the Bolivia data has 9e-316 for zero volumes) are zeros; left
            # as bounds they would only trouble the solver
            return 0.0 if abs(value) < np.finfo(np.float64).tiny else value
        return kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(1e999)
        raise CaseDataError(
            f"{where}: field {key!r} = {_show(raw)} is not a valid {kind.__name__}"
        ) from None


def _optional(record: dict, key: str, where: str, default: float) -> float:
    """``record[key]`` as a float, or ``default`` when the field is missing (the fields only
    the AC and SOC power flows use)."""
    return _field(record, key, where) if key in record else default


def _int_list(record: dict, key: str, where: str) -> tuple[int, ...]:
    """The list of integers ``record[key]`` (an empty tuple when missing)."""
    value = record.get(key, [])
    if not isinstance(value, list):
        raise CaseDataError(
            f"{where}: field {key!r} must be a list of plant indices, not {_show(value)}"
        )
    return tuple(_field({key: v}, key, where, int) for v in value)


def _cost(record: dict, where: str) -> float:
    """The linear coefficient of a generator's cost polynomial ``[c2,] [c1,] [c0]``."""
    cost = record.get("cost", [])
    if not isinstance(cost, list) or len(cost) not in (0, 1, 2, 3):
        raise CaseDataError(f"{where}: cost must be a polynomial of degree 2 at most")
    terms = [_field({"cost": c}, "cost", where) for c in cost]
    if len(terms) == 3 and terms[0] != 0:
        raise CaseDataError(f"{where}: quadratic costs are not supported (cost {terms})")
    return terms[-2] if len(terms) >= 2 else 0.0


def _non_negative(value: float, where: str, key: str) -> float:
    if value < 0:
        raise CaseDataError(f"{where}: {key} = {value} must not be negative")
    return value


def _records(data: dict, key: str, file: str) -> list[dict]:
    if key not in data:
        raise CaseDataError(f"{file}: missing {key!r}")
    value = data[key]
    records = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CaseDataError(f"{file}: {key!r} must be a list or map of records")
    return records


def load_case(name_or_path: str) -> Case:
    """Read and validate a case.

    Args:
        name_or_path: ``"bolivia"``, ``"case3"`` or a folder with the case files.

    Raises:
        CaseDataError: a missing file or field, a wrong shape, a negative limit, an empty range,
            or a reference to an unknown bus, generator or plant.
    """
    folder = case_path(name_or_path)
    name = os.path.basename(os.path.normpath(folder))
    pm_file = os.path.join(folder, "PowerModels.json")
    hy_file = os.path.join(folder, "hydro.json")
    network, hydro = _read_json(pm_file), _read_json(hy_file)
    buses = _read_buses(network, pm_file)
    bus_ids = {b.index for b in buses}
    loads = _read_loads(network, pm_file, bus_ids)
    branches = _read_branches(network, pm_file, bus_ids)
    shunts = _read_shunts(network, pm_file, bus_ids)
    plant_records = _records(hydro, "Hydrogenerators", hy_file)
    hydro_gens = {_field(r, "index_grid", f"{hy_file} plant", int) for r in plant_records}
    generators = _read_generators(network, pm_file, bus_ids, hydro_gens)
    plants = _read_plants(plant_records, hy_file, {g.index for g in generators})
    inflows = _read_inflows(os.path.join(folder, "inflows.csv"), len(plants))
    prob_file = os.path.join(folder, "scenarioprobability.csv")
    probabilities = None
    if os.path.exists(prob_file):
        probabilities = _read_probabilities(prob_file, inflows.shape[2])
    if "cost_deficit" not in network:
        raise CaseDataError(f"{pm_file}: missing 'cost_deficit'")
    return Case(
        name=name,
        base_mva=_field(network, "baseMVA", pm_file),
        cost_deficit=_non_negative(
            _field(network, "cost_deficit", pm_file), pm_file, "cost_deficit"
        ),
        buses=tuple(buses),
        loads=tuple(loads),
        branches=tuple(branches),
        generators=tuple(generators),
        plants=tuple(plants),
        inflows=inflows,
        scenario_probabilities=probabilities,
        shunts=tuple(shunts),
    )


def _bus(bus_ids: set[int], bus: int, where: str) -> int:
    """``bus`` if it is one of the case's buses."""
    if bus not in bus_ids:
        raise CaseDataError(f"{where}: refers to unknown bus {bus}")
    return bus


def _read_buses(network: dict, pm_file: str) -> list[Bus]:
    """The in-service buses (MATPOWER type 4 is an isolated, out-of-service bus)."""
    buses = []
    for record in _records(network, "bus", pm_file):
        if record.get("bus_type") == 4:
            continue
        index = _field(record, "bus_i", f"{pm_file} bus", int)
        where = f"{pm_file} bus {index}"
        bus = Bus(
            index,
            record.get("bus_type") == 3,
            _non_negative(_optional(record, "vmin", where, 0.9), where, "vmin"),
            _optional(record, "vmax", where, 1.1),
        )
        if bus.vmin > bus.vmax:
            raise CaseDataError(f"{where}: vmin {bus.vmin} > vmax {bus.vmax}")
        buses.append(bus)
    if len({b.index for b in buses}) != len(buses):
        raise CaseDataError(f"{pm_file}: duplicate bus numbers")
    return buses


def _read_loads(network: dict, pm_file: str, bus_ids: set[int]) -> list[Load]:
    """The in-service loads."""
    loads = []
    for record in _records(network, "load", pm_file):
        where = f"{pm_file} load {_show(record.get('index', '?'))}"
        if record.get("status", 1) == 0:
            continue
        loads.append(
            Load(
                _field(record, "index", where, int),
                _bus(bus_ids, _field(record, "load_bus", where, int), where),
                _field(record, "pd", where),
                _optional(record, "qd", where, 0.0),
            )
        )
    return loads


def _read_shunts(network: dict, pm_file: str, bus_ids: set[int]) -> list[Shunt]:
    """The in-service shunts (none is the same as a missing ``shunt`` table)."""
    if not network.get("shunt"):
        return []
    shunts = []
    for record in _records(network, "shunt", pm_file):
        where = f"{pm_file} shunt {_show(record.get('index', '?'))}"
        if record.get("status", 1) == 0:
            continue
        shunts.append(
            Shunt(
                _bus(bus_ids, _field(record, "shunt_bus", where, int), where),
                _field(record, "gs", where),
                _field(record, "bs", where),
            )
        )
    return shunts


def _read_branches(network: dict, pm_file: str, bus_ids: set[int]) -> list[Branch]:
    """The in-service branches, each with a reactance and an angle range."""
    branches = []
    for record in _records(network, "branch", pm_file):
        where = f"{pm_file} branch {_show(record.get('index', '?'))}"
        if record.get("br_status", 1) == 0:
            continue
        branch = Branch(
            _field(record, "index", where, int),
            _bus(bus_ids, _field(record, "f_bus", where, int), where),
            _bus(bus_ids, _field(record, "t_bus", where, int), where),
            _field(record, "br_r", where),
            _field(record, "br_x", where),
            _non_negative(_field(record, "rate_a", where), where, "rate_a"),
            _field(record, "angmin", where),
            _field(record, "angmax", where),
            _optional(record, "g_fr", where, 0.0),
            _optional(record, "b_fr", where, 0.0),
            _optional(record, "g_to", where, 0.0),
            _optional(record, "b_to", where, 0.0),
            # MATPOWER writes a tap ratio of 0 for a line (ratio 1)
            _optional(record, "tap", where, 1.0) or 1.0,
            _optional(record, "shift", where, 0.0),
        )
        if branch.br_x == 0:
            raise CaseDataError(f"{where}: br_x = 0 (a DC power flow needs a reactance)")
        if branch.angmin > branch.angmax:
            raise CaseDataError(f"{where}: angmin {branch.angmin} > angmax {branch.angmax}")
        branches.append(branch)
    return branches


def _read_generators(
    network: dict, pm_file: str, bus_ids: set[int], hydro_gens: set[int]
) -> list[Generator]:
    """The in-service generators (``hydro_gens``: those a plant drives)."""
    generators = []
    for record in _records(network, "gen", pm_file):
        where = f"{pm_file} gen {_show(record.get('index', '?'))}"
        if record.get("gen_status", 1) == 0:
            continue
        index = _field(record, "index", where, int)
        gen = Generator(
            index,
            _bus(bus_ids, _field(record, "gen_bus", where, int), where),
            _field(record, "pmin", where),
            _non_negative(_field(record, "pmax", where), where, "pmax"),
            _cost(record, where),
            index in hydro_gens,
            _optional(record, "qmin", where, -np.inf),
            _optional(record, "qmax", where, np.inf),
        )
        if gen.pmin > gen.pmax:
            raise CaseDataError(f"{where}: pmin {gen.pmin} > pmax {gen.pmax}")
        if gen.qmin > gen.qmax:
            raise CaseDataError(f"{where}: qmin {gen.qmin} > qmax {gen.qmax}")
        generators.append(gen)
    return generators


def _read_plants(plant_records: list, hy_file: str, gen_ids: set[int]) -> list[HydroPlant]:
    """The hydro plants: limits, their generator, and an acyclic cascade."""
    plants = []
    for record in plant_records:
        where = f"{hy_file} plant {_show(record.get('index', '?'))}"

        def limit(key: str, record: dict = record, where: str = where) -> float:
            return _non_negative(_field(record, key, where), where, key)

        plant = HydroPlant(
            index=_field(record, "index", where, int),
            generator=_field(record, "index_grid", where, int),
            name=_name(record, where),
            min_volume=limit("min_volume"),
            max_volume=limit("max_volume"),
            min_turn=limit("min_turn"),
            max_turn=limit("max_turn"),
            production_factor=limit("production_factor"),
            initial_volume=limit("initial_volume"),
            downstream_turn=_int_list(record, "downstream_turn", where),
            downstream_spill=_int_list(record, "downstream_spill", where),
        )
        if plant.min_volume > plant.max_volume:
            raise CaseDataError(
                f"{where}: min_volume {plant.min_volume} > max_volume {plant.max_volume}"
            )
        if plant.min_turn > plant.max_turn:
            raise CaseDataError(f"{where}: min_turn {plant.min_turn} > max_turn {plant.max_turn}")
        if plant.generator not in gen_ids:
            raise CaseDataError(
                f"{where}: index_grid refers to unknown generator {plant.generator}"
            )
        plants.append(plant)
    plant_ids = {p.index for p in plants}
    if len(plant_ids) != len(plants):
        raise CaseDataError(f"{hy_file}: duplicate plant indices")
    for plant in plants:
        for kind in ("downstream_turn", "downstream_spill"):
            for target in getattr(plant, kind):
                if target not in plant_ids or target == plant.index:
                    raise CaseDataError(
                        f"{hy_file} plant {plant.index}: {kind} refers to unknown plant {target}"
                    )
    _check_acyclic(plants, hy_file)
    return plants


def _read_inflows(inflow_file: str, n_plants: int) -> np.ndarray:
    """``inflows.csv`` as ``[stage, plant, scenario]`` (columns are plant blocks × scenarios)."""
    table = _read_csv(inflow_file)
    if n_plants == 0 or table.shape[1] % n_plants:
        raise CaseDataError(
            f"{inflow_file}: {table.shape[1]} columns are not a whole number of scenarios for "
            f"{n_plants} plants (columns are plant blocks × scenarios)"
        )
    if np.any(table < 0):
        raise CaseDataError(f"{inflow_file}: inflows must not be negative")
    n_scenarios = table.shape[1] // n_plants
    return table.reshape(table.shape[0], n_plants, n_scenarios)


def _read_probabilities(prob_file: str, n_scenarios: int) -> np.ndarray:
    """``scenarioprobability.csv``: per stage, probabilities of the scenarios summing to 1."""
    probabilities = _read_csv(prob_file)
    if probabilities.shape[1] != n_scenarios:
        raise CaseDataError(
            f"{prob_file}: {probabilities.shape[1]} columns, expected {n_scenarios} scenarios"
        )
    if np.any(probabilities < 0) or not np.allclose(probabilities.sum(axis=1), 1.0):
        raise CaseDataError(f"{prob_file}: each row must be probabilities summing to 1")
    return probabilities


def _name(record: dict, where: str) -> str:
    """A plant's name (its index when it has none)."""
    name = record.get("name", record.get("index"))
    if isinstance(name, bool) or not isinstance(name, (str, int)) or len(str(name)) > 200:
        raise CaseDataError(f"{where}: field 'name' = {_show(name)} is not a plant name")
    return str(name).strip()


def _check_acyclic(plants: list[HydroPlant], file: str) -> None:
    """Water flows downstream: a cascade must not loop back to a plant. Depth first, with an
    explicit stack: a file can chain more plants than Python recurses."""
    edges = {p.index: sorted(set(p.downstream_turn) | set(p.downstream_spill)) for p in plants}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if state.get(root):
            continue
        path, stack = [root], [iter(edges[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                shown = " -> ".join(str(n) for n in cycle[:20]) + (
                    " ..." if len(cycle) > 20 else ""
                )
                raise CaseDataError(f"{file}: the cascade loops: {shown}")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges[nxt]))
