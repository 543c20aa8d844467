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
    hyperparameters:             # optional, for every algorithm: a grid ...
      grid: {gamma: [0.99, 0.995]}
      # ... or a list of variants:  list: [{gamma: 0.99}, {gamma: 0.995, n_steps: 1024}]
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

SPEC_KEYS = {"name", "budget", "seeds", "envs", "algorithms", "eval", "n_envs", "device",
             "hyperparameters"}  # fmt: skip
BASELINE_PREFIXES = {"sb3": "stable_baselines3", "sb3-contrib": "sb3_contrib"}
# arguments the sweep sets itself; a spec may not override them
RESERVED = {"policy", "env", "seed", "device", "verbose", "tensorboard_log", "n_envs",
            "_init_setup_model"}  # fmt: skip


class SweepSpecError(ValueError):
    """A sweep spec that cannot be run; the message names the culprit."""


def algorithm_class(name: str) -> type:
    """The class behind an algorithm name: ours (``PPO``) or a baseline (``sb3:PPO``).

    Raises:
        SweepSpecError: unknown name, or a baseline library that is not installed.
    """
    from mdpo.agents import RL_ALGORITHMS

    prefix, sep, cls_name = name.partition(":")
    if not sep:
        if name in RL_ALGORITHMS:
            return RL_ALGORITHMS[name]
        raise SweepSpecError(
            f"unknown algorithm {name!r}: ours are {sorted(RL_ALGORITHMS)}; baselines are written "
            "sb3:NAME or sb3-contrib:NAME"
        )
    module_name = BASELINE_PREFIXES.get(prefix)
    if module_name is None:
        raise SweepSpecError(
            f"unknown algorithm library {prefix!r} in {name!r}; use sb3 or sb3-contrib"
        )
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
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        return cls(**data)


def safe_name(text: str) -> str:
    """Letters, digits, ``.``, ``-``, ``_`` and ``=`` only."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-") or "x"


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
                )  # fmt: skip
            )
        return runs


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepSpecError(f"{where} must be a positive integer, got {value!r}")
    return value


def _check_names(overrides: dict[str, Any], entries: list[AlgorithmEntry], where: str) -> None:
    if not isinstance(overrides, dict):
        raise SweepSpecError(
            f"{where} must be a mapping of hyperparameter: value, got {overrides!r}"
        )
    clash = sorted(set(overrides) & RESERVED)
    if clash:
        raise SweepSpecError(f"{where} may not set {clash[0]!r}: the sweep sets it")
    for key, value in list(overrides.items()):
        overrides[key] = _number_or_value(value)
    for entry in entries:
        allowed = hyperparameter_names(algorithm_class(entry.name))
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepSpecError(
                f"{where}: unknown hyperparameter {unknown[0]!r} for {entry.name}{hint}"
            )


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: take number-like strings as numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_spec(data: Any) -> SweepSpec:
    """Validate a spec given as a mapping (the parsed YAML)."""
    from mdpo.runners import check_env_id

    if not isinstance(data, dict):
        raise SweepSpecError("a sweep spec must be a YAML mapping")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SweepSpecError(f"unknown key {unknown[0]!r} in the spec; known: {sorted(SPEC_KEYS)}")
    for key in ("algorithms", "envs", "seeds", "budget"):
        if key not in data:
            raise SweepSpecError(f"the spec needs {key!r}")
    budget = _positive_int(data["budget"], "budget")
    seeds = data["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_positive_int(seeds, "seeds")))
    if not isinstance(seeds, list) or not seeds:
        raise SweepSpecError(
            f"seeds must be a non-empty list of integers or a count, got {seeds!r}"
        )
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepSpecError(f"seeds must be non-negative integers, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepSpecError(f"seeds repeat: {seeds}")
    envs = data["envs"]
    if isinstance(envs, str):
        envs = [envs]
    if not isinstance(envs, list) or not envs:
        raise SweepSpecError(f"envs must be a non-empty list of env ids, got {envs!r}")
    for env in envs:
        if not isinstance(env, str):
            raise SweepSpecError(f"env ids must be strings, got {env!r}")
        try:
            check_env_id(env)
        except ValueError as err:
            raise SweepSpecError(str(err)) from None

    entries = []
    raw_algos = data["algorithms"]
    if not isinstance(raw_algos, list) or not raw_algos:
        raise SweepSpecError("algorithms must be a non-empty list")
    for item in raw_algos:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise SweepSpecError(f"an algorithm is a name or a mapping with 'name', got {item!r}")
        extra = sorted(set(item) - {"name", "label", "hyperparameters", "envs"})
        if extra:
            raise SweepSpecError(f"unknown key {extra[0]!r} for algorithm {item['name']!r}")
        algorithm_class(item["name"])
        own = item.get("hyperparameters") or {}
        if not isinstance(own, dict):
            raise SweepSpecError(f"hyperparameters of {item['name']!r} must be a mapping")
        only = item.get("envs")
        if only is not None:
            if isinstance(only, str):
                only = [only]
            if not isinstance(only, list) or not only or set(only) - set(envs):
                raise SweepSpecError(
                    f"envs of {item['name']!r} must be a non-empty subset of the spec's envs "
                    f"{envs}, got {only!r}"
                )
            only = tuple(only)
        if ":" in item["name"]:  # a baseline: gymnasium envs only
            torch_envs = [env for env in (only or envs) if env.startswith("torch:")]
            if torch_envs:
                raise SweepSpecError(
                    f"{item['name']} cannot run the torch-native env {torch_envs[0]!r}: "
                    "baselines take gymnasium env ids; restrict it with 'envs:' or use the "
                    "gymnasium id"
                )
        entry = AlgorithmEntry(item["name"], str(item.get("label", item["name"])), dict(own), only)
        _check_names(entry.hyperparameters, [entry], f"algorithm {entry.label!r}")
        entries.append(entry)
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise SweepSpecError(f"algorithm labels repeat: {labels}; give each a distinct 'label'")

    evaluation = data.get("eval", {}) or {}
    if not isinstance(evaluation, dict) or set(evaluation) - {"every", "episodes"}:
        raise SweepSpecError(
            f"eval must be a mapping with 'every' and 'episodes', got {evaluation!r}"
        )
    eval_every = _positive_int(evaluation.get("every", max(1, budget // 20)), "eval.every")
    eval_episodes = _positive_int(evaluation.get("episodes", 10), "eval.episodes")
    if eval_every > budget:
        raise SweepSpecError(f"eval.every ({eval_every}) is larger than the budget ({budget})")

    variants: list[dict[str, Any]] = [{}]
    hyper = data.get("hyperparameters")
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
                    raise SweepSpecError(f"hyperparameters.grid.{key} must be a non-empty list")
            keys = list(grid)
            variants = [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
        else:
            variants = hyper["list"]
            if not isinstance(variants, list) or not variants:
                raise SweepSpecError("hyperparameters.list is empty: give a list of mappings")
            variants = [dict(v) if isinstance(v, dict) else v for v in variants]
        for variant in variants:
            _check_names(variant, entries, "hyperparameters")
    n_envs = _positive_int(data.get("n_envs", 1), "n_envs")
    device = str(data.get("device", "cpu"))
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise SweepSpecError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    name = data.get("name") or "sweep"
    if not isinstance(name, str):
        raise SweepSpecError(f"name must be a string, got {name!r}")
    spec = SweepSpec(name, budget, seeds, envs, entries, eval_every, eval_episodes, variants,
                     n_envs, device, source=data)  # fmt: skip
    ids = [run.run_id for run in spec.runs()]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SweepSpecError(
            f"two runs would share the folder {dup!r}: make the labels or variants differ by "
            "more than punctuation"
        )
    return spec


def load_spec(path: str) -> SweepSpec:
    """Read and validate a YAML spec file.

    Raises:
        SweepSpecError: unreadable file, invalid YAML, or an invalid spec.
    """
    import yaml

    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise SweepSpecError(f"cannot read the spec {path!r}: {err}") from None
    except yaml.YAMLError as err:
        raise SweepSpecError(f"{path!r} is not valid YAML: {err}") from None
    return parse_spec(data)
