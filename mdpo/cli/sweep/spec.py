"""Sweep specifications: loading, validation, and expansion into runs.

A spec is a YAML file::

    name: ppo-mujoco
    budget: 300000               # env steps per run
    seeds: [0, 1, 2]             # or a count: 3 means seeds 0, 1, 2
    envs: [Hopper-v5, HalfCheetah-v5]
    algorithms:
      - PPO                      # ours, by name
      - sb3:PPO                  # Stable-Baselines3's
      - name: PPO                # with a label and hyperparameters of its own
        label: PPO-lr1e-3
        hyperparameters: {learning_rate: 0.001}
      - {name: sb3-contrib:TRPO, envs: [Hopper-v5]}   # only on some of the envs
    eval: {every: 10000, episodes: 10}   # deterministic episodes on a separate env
    n_envs: 1                    # optional
    device: cpu                  # optional (auto, cpu, cuda)
    backend: batched             # optional: local (default), ray, or batched (the runs that
                                 # differ only by seed as one batched process; --backend wins)
    hyperparameters:             # optional, for every algorithm: a grid ...
      grid: {gamma: [0.99, 0.995]}
      # ... or a list of variants:  list: [{gamma: 0.99}, {gamma: 0.995, n_steps: 1024}]

A spec is a file from anyone: it is bounded before anything is built from it (see
:mod:`mdpo.core.limits`). The file is at most :data:`~mdpo.core.limits.MAX_SWEEP_SPEC_BYTES` bytes;
YAML anchors and aliases are allowed, but the spec they expand to (each use of an alias counted
in full) must also fit in that many bytes of JSON and nest at most
:data:`~mdpo.core.limits.MAX_DEPTH` deep; it holds JSON values only (no dates, sets or binary), with
finite numbers. The runs are counted before they are built (seeds x envs x algorithms x
variants, at most :data:`~mdpo.core.limits.MAX_SWEEP_RUNS`), and so are the bytes of their configs
(at most :data:`~mdpo.core.limits.MAX_SWEEP_CONFIG_BYTES`). Env ids go through
:func:`mdpo.core.limits.check_env_id_from_file`: no module named in a spec is imported.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0, the suite's own env
from mdpo.core.limits import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_SWEEP_CONFIG_BYTES,
    MAX_SWEEP_RUNS,
    MAX_SWEEP_SPEC_BYTES,
    MAX_VEC_ENVS,
    BadFileError,
    check_env_id_from_file,
    field_int,
    json_object,
)
from mdpo.core.registry import RL_ALGORITHMS
from mdpo.rl.runners import check_env_id

SPEC_KEYS = {
    "name",
    "budget",
    "seeds",
    "envs",
    "algorithms",
    "eval",
    "n_envs",
    "device",
    "hyperparameters",
    "backend",
}
#: where a spec's runs may execute (``mdpo sweep run --backend`` overrides the spec's choice)
BACKENDS = ("local", "ray", "batched")
BASELINE_PREFIXES = {"sb3": "stable_baselines3", "sb3-contrib": "sb3_contrib"}
# arguments the sweep sets itself; a spec may not override them
RESERVED = {
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "n_envs",
    "_init_setup_model",
}
DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,4})?|mps")
TORCH_PREFIX = "torch:"
# a run config's JSON besides its hyperparameters and names (for the estimate of the bytes of
# all the runs' configs, made before they are built)
_CONFIG_OVERHEAD = 300


class SweepSpecError(BadFileError):
    """A sweep spec, or a file of a sweep folder, that cannot be used; the one-line message
    names the file and the culprit."""


def algorithm_class(name: str) -> type:
    """The class behind an algorithm name: ours (``PPO``) or a baseline (``sb3:PPO``).

    Only the baseline libraries of :data:`BASELINE_PREFIXES` are ever imported.

    Raises:
        SweepSpecError: unknown name, or a baseline library that is not installed.
    """

    if not isinstance(name, str):
        raise SweepSpecError(f"an algorithm name must be a string, not {_show(name)}")
    prefix, sep, cls_name = name.partition(":")
    if not sep:
        if name in RL_ALGORITHMS:
            return RL_ALGORITHMS[name]
        raise SweepSpecError(
            f"unknown algorithm {_show(name)}: ours are {sorted(RL_ALGORITHMS)}; baselines are "
            "written sb3:NAME or sb3-contrib:NAME"
        )
    module_name = BASELINE_PREFIXES.get(prefix)
    if module_name is None:
        raise SweepSpecError(
            f"unknown algorithm library {_show(prefix)} in {_show(name)}; use sb3 or sb3-contrib"
        )
    # a public class name only: no dunder attribute of the module is taken for a class
    if not cls_name.isidentifier() or cls_name.startswith("_"):
        raise SweepSpecError(f"unknown algorithm {_show(name)}: {_show(cls_name)} is no class")
    try:
        module = __import__(module_name)
    except ImportError:
        raise SweepSpecError(
            f"{name!r} needs {module_name} installed (pip install {prefix})"
        ) from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise SweepSpecError(f"unknown algorithm {name!r}: {module_name} has no {cls_name}")
    return cls


def hyperparameter_names(cls: type) -> set[str]:
    """Constructor arguments of ``cls`` that a spec may set."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self"} - RESERVED
    return {n for n in names if not n.startswith("_")}


@dataclass(frozen=True)
class AlgorithmEntry:
    """One algorithm of a spec: name, display label, own hyperparameters, and the envs it runs
    on (``None``: all of the spec's)."""

    name: str
    label: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    envs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; its ``run_id`` names its folder."""

    algorithm: str
    label: str
    env: str
    seed: int
    variant: str
    hyperparameters: dict[str, Any]
    budget: int
    eval_every: int
    eval_episodes: int
    n_envs: int
    device: str

    @property
    def group(self) -> str:
        """The name a report gives the algorithm (label and variant)."""
        return self.label if self.variant == "default" else f"{self.label} [{self.variant}]"

    @property
    def run_id(self) -> str:
        """A folder-safe unique name."""
        variant = safe_name(self.variant)
        if len(variant) > 60:
            variant = hashlib.sha1(self.variant.encode()).hexdigest()[:10]
        return f"{safe_name(self.label)}__{safe_name(self.env)}__{variant}__s{self.seed}"

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON object (what ``config.json`` holds)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "the run config") -> RunConfig:
        """A run config read from a file (a run's ``config.json``, or ``result.json``'s
        ``config``), checked field by field before anything uses it.

        The env id goes through :func:`mdpo.core.limits.check_env_id_from_file`, so a config never
        makes gymnasium import a module; ``where`` names the file for the messages.

        Raises:
            BadFileError: not an object, a field missing, unknown or of the wrong kind.
        """
        data = json_object(data, where)
        names = [f.name for f in fields(cls)]
        extra = sorted(set(data) - set(names), key=str)
        if extra:
            raise SweepSpecError(f"{where}: unknown field {_show(extra[0])}")
        missing = [name for name in names if name not in data]
        if missing:
            raise SweepSpecError(f"{where}: the field {missing[0]!r} is missing")
        for name in ("algorithm", "label", "variant", "device"):
            if not isinstance(data[name], str):
                raise SweepSpecError(f"{where}: {name} must be a string, not {_show(data[name])}")
        if not DEVICE.fullmatch(data["device"]):
            raise SweepSpecError(
                f"{where}: device must be auto, cpu, cuda, cuda:N or mps, "
                f"not {_show(data['device'])}"
            )
        hyper = json_object(data["hyperparameters"], f"{where}: hyperparameters")
        clash = sorted(set(hyper) & RESERVED)
        if clash:
            raise SweepSpecError(f"{where}: hyperparameters may not set {clash[0]!r}")
        return cls(
            algorithm=data["algorithm"],
            label=data["label"],
            env=check_env_id_from_file(data["env"], f"{where}: env"),
            seed=field_int(data["seed"], f"{where}: seed", 0),
            variant=data["variant"],
            hyperparameters=hyper,
            budget=field_int(data["budget"], f"{where}: budget", 1),
            eval_every=field_int(data["eval_every"], f"{where}: eval_every", 1),
            eval_episodes=field_int(data["eval_episodes"], f"{where}: eval_episodes", 1),
            n_envs=field_int(data["n_envs"], f"{where}: n_envs", 1, MAX_VEC_ENVS),
            device=data["device"],
        )


def safe_name(text: str) -> str:
    """Letters, digits, ``.``, ``-``, ``_`` and ``=`` only; never ``.`` or ``..`` (a spec's
    name becomes a folder: it must not be the parent folder)."""
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")
    return name if name.strip(".") else "x"


def variant_name(overrides: dict[str, Any]) -> str:
    """``key=value,...`` sorted by key; ``default`` for no overrides."""
    if not overrides:
        return "default"
    return ",".join(
        f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(overrides.items())
    )


@dataclass
class SweepSpec:
    """A validated sweep spec; :meth:`runs` expands it."""

    name: str
    budget: int
    seeds: list[int]
    envs: list[str]
    algorithms: list[AlgorithmEntry]
    eval_every: int
    eval_episodes: int
    variants: list[dict[str, Any]]
    n_envs: int = 1
    device: str = "cpu"
    source: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None

    def runs(self) -> list[RunConfig]:
        """All runs, seed-major: a partial sweep has every algorithm and env on the first seeds."""
        runs = []
        for seed, env, algo, variant in itertools.product(
            self.seeds, self.envs, self.algorithms, self.variants
        ):
            if algo.envs is not None and env not in algo.envs:
                continue
            hyper = {**algo.hyperparameters, **variant}
            runs.append(
                RunConfig(
                    algorithm=algo.name,
                    label=algo.label,
                    env=env,
                    seed=seed,
                    variant=variant_name(variant),
                    hyperparameters=hyper,
                    budget=self.budget,
                    eval_every=self.eval_every,
                    eval_episodes=self.eval_episodes,
                    n_envs=self.n_envs,
                    device=self.device,
                )
            )
        return runs


# ------------------------------------------------------------------------------ the bounds
def spec_size(value: Any, where: str, limit: int = MAX_SWEEP_SPEC_BYTES) -> int:
    """About the bytes ``value`` takes as JSON, each use of a shared object counted in full
    (as YAML aliases expand when the spec is written out), refused past ``limit``.

    The walk is iterative and stops as soon as the count passes ``limit`` or the nesting
    passes :data:`~mdpo.core.limits.MAX_DEPTH`, so an alias bomb (or a cycle) costs at most about
    ``limit`` steps; nothing is ``str()``-ed or dumped first. Only JSON values are accepted:
    objects with string keys, lists, strings, booleans, null, integers of at most
    :data:`~mdpo.core.limits.MAX_INT_DIGITS` digits and finite floats.

    Raises:
        SweepSpecError: over ``limit``, too deep, or a value JSON cannot hold.
    """
    total = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise SweepSpecError(
                    f"{where}: {path or 'the spec'} nests deeper than {MAX_DEPTH} levels "
                    "(YAML aliases included)"
                )
            total += 2
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise SweepSpecError(
                            f"{where}: {path or 'the spec'} has the key {_show(key)}: keys are "
                            "strings"
                        )
                    total += len(key) + 4  # quotes, colon, comma
                    stack.append((sub, depth + 1, f"{path}.{key[:40]}" if path else key[:40]))
            else:
                total += len(item)  # commas
                for i, sub in enumerate(item):
                    stack.append((sub, depth + 1, f"{path}[{i}]"))
        elif isinstance(item, str):
            total += len(item) + 2
        elif item is None or isinstance(item, bool):
            total += 5
        elif isinstance(item, int):
            # bit_length, not str(): converting a huge int to decimal is itself quadratic
            if item.bit_length() > MAX_INT_DIGITS * 3.33:
                raise SweepSpecError(
                    f"{where}: {path or 'the spec'} is an integer of more than "
                    f"{MAX_INT_DIGITS} digits"
                )
            total += 20
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise SweepSpecError(
                    f"{where}: {path or 'the spec'} is {item!r}, not a finite number"
                )
            total += 24
        else:
            raise SweepSpecError(
                f"{where}: {path or 'the spec'} is a {type(item).__name__}; a spec holds JSON "
                "values only (mappings, lists, strings, numbers, booleans, null)"
            )
        if total > limit:
            raise SweepSpecError(
                f"{where}: the spec expands to more than {limit} bytes as JSON (each use of a "
                "YAML alias counts in full)"
            )
    return total


def count_runs(
    n_seeds: int, env_counts: list[int], variant_counts: list[int], limit: int = MAX_SWEEP_RUNS
) -> int:
    """The runs a spec expands to: seeds x (the envs of each algorithm, summed) x variants,
    where ``variant_counts`` are the sizes of the grid's lists (their product) or the list's
    length; computed without expanding anything.

    Raises:
        SweepSpecError: more than ``limit`` runs.
    """
    total = n_seeds * sum(env_counts)
    for count in variant_counts:
        total *= count
        if total > limit:  # stop multiplying: the rest can only make it larger
            break
    if total > limit:
        raise SweepSpecError(
            f"the spec expands to {'at least ' if total else ''}{total} runs (seeds x envs x "
            f"algorithms x hyperparameter variants), over the limit of {limit}"
        )
    return total


def check_spec_env(env: Any, where: str) -> str:
    """``env`` if it is a registered gymnasium id (``torch:<id>`` for mdpo's own envs).

    The id is checked by :func:`mdpo.core.limits.check_env_id_from_file` (no ``module:Name``, so
    gymnasium imports nothing); an id without ``:`` goes to gymnasium's own look-up first, which
    imports nothing either and names the ids close to a misspelt one.

    Raises:
        SweepSpecError: an id that is not registered or not plain.
    """

    if isinstance(env, str) and len(env) <= 200 and ":" not in env.removeprefix(TORCH_PREFIX):
        try:
            check_env_id(env)
        except ValueError as err:
            raise SweepSpecError(f"{where}: {_one_line(err)}") from None
    try:
        return check_env_id_from_file(env, where)
    except BadFileError as err:
        raise SweepSpecError(str(err)) from None


@functools.lru_cache(maxsize=1)
def _spec_loader() -> type:

    class SpecLoader(yaml.SafeLoader):
        """``yaml.safe_load`` that bounds the nesting as it composes the document (the
        composer recurses once per level) and the length of integers (a long YAML 1.1
        base-60 integer takes quadratic time to convert)."""

        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.depth >= MAX_DEPTH:
                raise SweepSpecError(f"the YAML nests deeper than {MAX_DEPTH} levels")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    def construct_int(loader: Any, node: Any) -> int:
        if len(node.value) > MAX_INT_DIGITS + 20:
            raise SweepSpecError(
                f"an integer of {len(node.value)} characters (the limit is {MAX_INT_DIGITS} "
                f"digits) at line {node.start_mark.line + 1}"
            )
        return yaml.SafeLoader.construct_yaml_int(loader, node)

    SpecLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return SpecLoader


def load_spec_yaml(data: bytes | str, where: str) -> Any:
    """Parse a spec's YAML within the bounds: nesting, integer lengths, and (after parsing, by
    :func:`spec_size`) the size the aliases expand to.

    Raises:
        SweepSpecError: not YAML, or over a bound; the message is one line naming ``where``.
    """

    if len(data) > MAX_SWEEP_SPEC_BYTES:
        raise SweepSpecError(
            f"{where} is {len(data)} bytes, over the limit of {MAX_SWEEP_SPEC_BYTES}"
        )
    loader = None
    try:
        loader = _spec_loader()(data)  # reads the start of the stream: may raise already
        value = loader.get_single_data()
    except SweepSpecError as err:
        raise SweepSpecError(f"{where}: {err}") from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as err:
        # a YAML error spans lines (the context, then where): one line is enough here
        raise SweepSpecError(f"{where!r} is not valid YAML: {_one_line(err, join=True)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    spec_size(value, where)
    return value


# ---------------------------------------------------------------------------------- parsing
def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepSpecError(f"{where} must be a positive integer, got {_show(value)}")
    return value


def _check_names(
    overrides: dict[str, Any], allowed: list[tuple[str, set[str]]], where: str
) -> None:
    """Check the hyperparameter names of ``overrides`` against each ``(algorithm, names)`` of
    ``allowed``, and read number-like strings as numbers (in place)."""
    if not isinstance(overrides, dict):
        raise SweepSpecError(
            f"{where} must be a mapping of hyperparameter: value, got {_show(overrides)}"
        )
    clash = sorted(set(overrides) & RESERVED)
    if clash:
        raise SweepSpecError(f"{where} may not set {clash[0]!r}: the sweep sets it")
    for key, value in list(overrides.items()):
        overrides[key] = _number_or_value(value)
    for name, names in allowed:
        unknown = sorted(set(overrides) - names)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepSpecError(
                f"{where}: unknown hyperparameter {_show(unknown[0])} for {name}{hint}"
            )


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: take number-like strings as numbers
    (finite ones: ``"nan"`` and ``"inf"`` stay strings)."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def parse_spec(data: Any, where: str | None = None) -> SweepSpec:
    """Validate a spec given as a mapping (the parsed YAML, or ``sweep.json``'s ``spec``).

    The spec is bounded first (:func:`spec_size`) and its runs are counted
    (:func:`count_runs`) and sized before any is built; ``where`` (the file) prefixes the
    messages.

    Raises:
        SweepSpecError: an invalid spec, or one over a limit.
    """
    try:
        return _parse_spec(data)
    except SweepSpecError as err:
        if where is None:
            raise
        raise SweepSpecError(f"{where}: {err}") from None


def _parse_spec(data: Any) -> SweepSpec:
    """Check a spec's fields, count its runs before building any, then build it."""
    if not isinstance(data, dict):
        raise SweepSpecError(f"a sweep spec must be a YAML mapping, not {_show(data)}")
    spec_size(data, "the spec")  # JSON values only, bounded, before anything reads them
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SweepSpecError(
            f"unknown key {_show(unknown[0])} in the spec; known: {sorted(SPEC_KEYS)}"
        )
    for key in ("algorithms", "envs", "seeds", "budget"):
        if key not in data:
            raise SweepSpecError(f"the spec needs {key!r}")
    budget = _positive_int(data["budget"], "budget")
    seeds, envs = _parse_seeds(data["seeds"]), _parse_envs(data["envs"])
    shapes = _parse_algorithm_shapes(data["algorithms"], envs)
    grid, listed = _parse_hyperparameters(data.get("hyperparameters"))
    # count the runs, and the bytes of their configs, before building any
    env_counts = [len(only or envs) for _, _, _, only in shapes]
    if grid is not None:
        variant_counts = [len(values) for values in grid.values()]
    else:
        variant_counts = [len(listed) if listed is not None else 1]
    n_runs = count_runs(len(seeds), env_counts, variant_counts)
    _check_config_bytes(n_runs, len(seeds), shapes, env_counts, grid, listed)

    entries, allowed_names = _algorithm_entries(shapes, envs)
    eval_every, eval_episodes = _parse_eval(data.get("eval", {}) or {}, budget)
    variants = _variants(grid, listed, [(e.name, allowed_names[e.name]) for e in entries])
    n_envs = _positive_int(data.get("n_envs", 1), "n_envs")
    if n_envs > MAX_VEC_ENVS:
        raise SweepSpecError(f"n_envs is {n_envs}, over the limit of {MAX_VEC_ENVS}")
    device = data.get("device", "cpu")
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise SweepSpecError(f"device must be auto, cpu, cuda or cuda:N, got {_show(device)}")
    name = data.get("name") or "sweep"
    if not isinstance(name, str):
        raise SweepSpecError(f"name must be a string, got {_show(name)}")
    backend = data.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise SweepSpecError(f"backend must be one of {', '.join(BACKENDS)}, got {_show(backend)}")
    spec = SweepSpec(
        name,
        budget,
        seeds,
        envs,
        entries,
        eval_every,
        eval_episodes,
        variants,
        n_envs,
        device,
        source=data,
        backend=backend,
    )
    counts = Counter(run.run_id for run in spec.runs())
    dup = next((run_id for run_id, n in counts.items() if n > 1), None)
    if dup is not None:
        raise SweepSpecError(
            f"two runs would share the folder {dup!r}: make the labels or variants differ by "
            "more than punctuation"
        )
    return spec


def _parse_seeds(seeds: Any) -> list[int]:
    """``seeds``: a count or a list of distinct non-negative integers."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        count = _positive_int(seeds, "seeds")
        if count > MAX_SWEEP_RUNS:  # before range() builds them
            raise SweepSpecError(f"seeds is {count}, over the limit of {MAX_SWEEP_RUNS} runs")
        seeds = list(range(count))
    if not isinstance(seeds, list) or not seeds:
        raise SweepSpecError(
            f"seeds must be a non-empty list of integers or a count, got {_show(seeds)}"
        )
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepSpecError(f"seeds must be non-negative integers, got {_show(seed)}")
    if len(set(seeds)) != len(seeds):
        dup = next(seed for seed, n in Counter(seeds).items() if n > 1)
        raise SweepSpecError(f"seeds repeat: {dup} is there twice")
    return seeds


def _parse_envs(envs: Any) -> list[str]:
    """``envs``: an env id or a non-empty list of them (checked later, once counted)."""
    if isinstance(envs, str):
        envs = [envs]
    if not isinstance(envs, list) or not envs:
        raise SweepSpecError(f"envs must be a non-empty list of env ids, got {_show(envs)}")
    for env in envs:
        if not isinstance(env, str):
            raise SweepSpecError(f"env ids must be strings, got {_show(env)}")
    return envs


def _parse_algorithm_shapes(
    raw_algos: Any, envs: list[str]
) -> list[tuple[str, str, dict[str, Any], tuple[str, ...] | None]]:
    """``algorithms``: (name, label, own hyperparameters, env subset) each, without importing
    or checking anything yet."""
    if not isinstance(raw_algos, list) or not raw_algos:
        raise SweepSpecError("algorithms must be a non-empty list")
    shapes = []
    for item in raw_algos:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SweepSpecError(
                f"an algorithm is a name or a mapping with a 'name' string, got {_show(item)}"
            )
        name = item["name"]
        extra = sorted(set(item) - {"name", "label", "hyperparameters", "envs"})
        if extra:
            raise SweepSpecError(f"unknown key {_show(extra[0])} for algorithm {_show(name)}")
        label = item.get("label", name)
        if not isinstance(label, str):
            raise SweepSpecError(f"the label of {_show(name)} must be a string, got {_show(label)}")
        own = item.get("hyperparameters") or {}
        if not isinstance(own, dict):
            raise SweepSpecError(f"hyperparameters of {_show(name)} must be a mapping")
        only = item.get("envs")
        if only is not None:
            if isinstance(only, str):
                only = [only]
            if (
                not isinstance(only, list)
                or not only
                or not all(isinstance(env, str) for env in only)
                or set(only) - set(envs)
            ):
                raise SweepSpecError(
                    f"envs of {_show(name)} must be a non-empty subset of the spec's envs, got "
                    f"{_show(only)}"
                )
            only = tuple(only)
        shapes.append((name, label, own, only))
    return shapes


def _parse_hyperparameters(hyper: Any) -> tuple[dict[str, list[Any]] | None, list[Any] | None]:
    """``hyperparameters``: ``{grid: {name: [values]}}`` or ``{list: [...]}`` (or neither)."""
    grid: dict[str, list[Any]] | None = None
    listed: list[Any] | None = None
    if hyper is not None:
        if not isinstance(hyper, dict) or len(hyper) != 1 or set(hyper) - {"grid", "list"}:
            raise SweepSpecError(
                "hyperparameters must be {grid: {name: [values]}} or {list: [...]}"
            )
        if "grid" in hyper:
            grid = hyper["grid"]
            if not isinstance(grid, dict) or not grid:
                raise SweepSpecError("hyperparameters.grid is empty: give {name: [values, ...]}")
            for key, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise SweepSpecError(
                        f"hyperparameters.grid.{key[:40]} must be a non-empty list"
                    )
        else:
            listed = hyper["list"]
            if not isinstance(listed, list) or not listed:
                raise SweepSpecError("hyperparameters.list is empty: give a list of mappings")
    return grid, listed


def _algorithm_entries(
    shapes: list[tuple[str, str, dict[str, Any], tuple[str, ...] | None]], envs: list[str]
) -> tuple[list[AlgorithmEntry], dict[str, set[str]]]:
    """The envs checked, each algorithm resolved and its hyperparameter names checked."""
    for i, env in enumerate(envs):
        check_spec_env(env, f"envs[{i}]")
    entries = []
    allowed_names = {}
    for name, label, own, only in shapes:
        cls = algorithm_class(name)
        if ":" in name:  # a baseline: gymnasium envs only
            torch_envs = [env for env in (only or envs) if env.startswith(TORCH_PREFIX)]
            if torch_envs:
                raise SweepSpecError(
                    f"{name} cannot run the torch-native env {torch_envs[0]!r}: "
                    "baselines take gymnasium env ids; restrict it with 'envs:' or use the "
                    "gymnasium id"
                )
        if name not in allowed_names:
            allowed_names[name] = hyperparameter_names(cls)
        entry = AlgorithmEntry(name, label, dict(own), only)
        _check_names(
            entry.hyperparameters, [(name, allowed_names[name])], f"algorithm {entry.label!r}"
        )
        entries.append(entry)
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise SweepSpecError(f"algorithm labels repeat: {labels}; give each a distinct 'label'")
    return entries, allowed_names


def _parse_eval(evaluation: Any, budget: int) -> tuple[int, int]:
    """``eval``: ``every`` (default a twentieth of the budget) and ``episodes`` (10)."""
    if not isinstance(evaluation, dict) or set(evaluation) - {"every", "episodes"}:
        raise SweepSpecError(
            f"eval must be a mapping with 'every' and 'episodes', got {_show(evaluation)}"
        )
    eval_every = _positive_int(evaluation.get("every", max(1, budget // 20)), "eval.every")
    eval_episodes = _positive_int(evaluation.get("episodes", 10), "eval.episodes")
    if eval_every > budget:
        raise SweepSpecError(f"eval.every ({eval_every}) is larger than the budget ({budget})")
    return eval_every, eval_episodes


def _variants(
    grid: dict[str, list[Any]] | None,
    listed: list[Any] | None,
    allowed: list[tuple[str, set[str]]],
) -> list[dict[str, Any]]:
    """The hyperparameter variants of the grid (its product) or the list, names checked."""
    variants: list[dict[str, Any]] = [{}]
    if grid is not None:
        _check_names(dict.fromkeys(grid), allowed, "hyperparameters")  # the keys, once
        keys = list(grid)
        variants = [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
        for variant in variants:
            _check_names(variant, [], "hyperparameters")
    elif listed is not None:
        variants = [dict(v) if isinstance(v, dict) else v for v in listed]
        for variant in variants:
            _check_names(variant, allowed, "hyperparameters")
    return variants


def _check_config_bytes(
    n_runs: int,
    n_seeds: int,
    shapes: list[tuple[str, str, dict[str, Any], tuple[str, ...] | None]],
    env_counts: list[int],
    grid: dict[str, list[Any]] | None,
    listed: list[Any] | None,
) -> None:
    """Refuse a spec whose runs' configs would take more than
    :data:`~mdpo.core.limits.MAX_SWEEP_CONFIG_BYTES` together, from the sizes of its parts.

    A variant's values are in its config twice (the hyperparameters and the variant's name).
    """
    # the bytes of all the variants together, each counted once per variant it is in
    if grid is not None:
        n_variants = math.prod(len(values) for values in grid.values())
        variant_bytes = 0
        for key, values in grid.items():
            size = sum(spec_size(v, "the spec") + len(key) + 4 for v in values)
            variant_bytes += size * (n_variants // len(values))
    elif listed is not None:
        n_variants = len(listed)
        variant_bytes = sum(spec_size(v, "the spec") for v in listed)
    else:
        n_variants, variant_bytes = 1, 0
    total = 0
    for (name, label, own, _), n_envs in zip(shapes, env_counts):
        per_run = _CONFIG_OVERHEAD + len(name) + len(label) + spec_size(own, "the spec")
        total += n_seeds * n_envs * (n_variants * per_run + 2 * variant_bytes)
    if total > MAX_SWEEP_CONFIG_BYTES:
        raise SweepSpecError(
            f"the configs of the spec's {n_runs} runs would take about {total} bytes, over the "
            f"limit of {MAX_SWEEP_CONFIG_BYTES}: give fewer runs or smaller hyperparameters"
        )


def load_spec(path: str) -> SweepSpec:
    """Read and validate a YAML spec file, within the bounds of :func:`load_spec_yaml` and
    :func:`parse_spec`.

    Raises:
        SweepSpecError: unreadable file, invalid YAML, or an invalid spec, in one line naming
            ``path``.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SWEEP_SPEC_BYTES + 1)  # no more than the limit is read
    except OSError as err:
        raise SweepSpecError(f"cannot read the spec {path!r}: {err.strerror or err}") from None
    return parse_spec(load_spec_yaml(data, path), path)


# --------------------------------------------------------------------------------- messages
def _show(value: Any, limit: int = 60) -> str:
    """A short one-line picture of a value from a file: never the whole of a structure."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a huge integer"
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    return type(value).__name__


def _one_line(err: BaseException, join: bool = False) -> str:
    text = str(err)
    text = " ".join(text.split()) if join else (text.splitlines() or [""])[0]
    return text[:300] or type(err).__name__
