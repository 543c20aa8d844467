"""The algorithm registry: algorithm name → class, filled as the classes are defined.

Each algorithm class is decorated with :func:`register_algorithm`; loading a model file looks
its algorithm up here, and the command line lists what it can train from here. Nothing in the
core imports an algorithm family: the families register themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: the module that defines each algorithm, so that a lookup can import it on demand: the
#: names are constants of this package (never read from a file), and naming a module is not
#: importing it, so the core stays below the families until an algorithm is asked for
HOMES: dict[str, str] = {
    "PPO": "mdpo.rl.ppo",
    "TRPO": "mdpo.rl.trpo",
    "MDPO": "mdpo.rl.mdpo_on",
    "SAC": "mdpo.rl.sac",
    "OffPolicyMDPO": "mdpo.rl.mdpo_off",
    "BC": "mdpo.offline.bc",
    "OPPO": "mdpo.offline.oppo",
    "TSDDR": "mdpo.rules.tsddr",
}


class _Registry(Mapping):
    """A name → class mapping that imports every algorithm's module the first time it is
    read, so that ``import mdpo`` (and ``mdpo --help``) need not import torch."""

    def __init__(self) -> None:
        self._classes: dict[str, Any] = {}
        self._imported = False

    def _loaded(self) -> dict[str, Any]:
        if not self._imported:
            for module in HOMES.values():
                importlib.import_module(module)  # registers its class
            self._imported = True
        return {name: self._classes[name] for name in HOMES if name in self._classes}

    def __getitem__(self, name: str) -> Any:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"{{{', '.join(self._loaded())}}}"


#: every algorithm by name (``"PPO"``, ``"SAC"``, ``"OPPO"``, ``"TSDDR"`` ...)
ALGORITHMS: Mapping[str, Any] = _Registry()
#: the algorithms that learn from environment transitions (``mdpo train``, sweeps); TS-DDR
#: learns from optimization problems (``mdpo hydro tsddr``), OPPO and BC from datasets
RL_ALGORITHMS: Mapping[str, Any] = _Registry()


def register_algorithm(cls: T) -> T:
    """Class decorator: register ``cls`` under its ``algo_name`` (one of :data:`HOMES`)."""
    name = cls.algo_name
    if HOMES.get(name) != cls.__module__:
        raise ValueError(f"{name!r} ({cls.__module__}) is not declared in HOMES")
    known = ALGORITHMS._classes
    if name in known and known[name] is not cls:
        raise ValueError(f"two algorithms are named {name!r}: {known[name]} and {cls}")
    known[name] = cls
    if getattr(cls, "needs_env_runner", False):
        RL_ALGORITHMS._classes[name] = cls
    return cls


#: converters to and from other libraries' files, by name (``"sb3"``): the interop layer
#: plugs itself in here, so that an agent's ``save_sb3`` does not import a layer above it
CONVERTERS: dict[str, Any] = {}
#: the module of each converter, imported on first use
CONVERTER_HOMES: dict[str, str] = {"sb3": "mdpo.interop.sb3"}


def converter(name: str) -> Any:
    """The converter registered as ``name`` (``"sb3"``: :mod:`mdpo.interop.sb3`)."""
    if name not in CONVERTERS and name in CONVERTER_HOMES:
        importlib.import_module(CONVERTER_HOMES[name])
    if name not in CONVERTERS:
        raise ValueError(f"no {name} converter is installed: import mdpo.interop.{name}")
    return CONVERTERS[name]
