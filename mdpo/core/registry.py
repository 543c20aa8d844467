"""The algorithm registry: algorithm name → class, filled as the classes are defined.

Each algorithm class is decorated with :func:`register_algorithm`; loading a model file looks
its algorithm up here, and the command line lists what it can train from here. Nothing in the
core imports an algorithm family: the families register themselves.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

#: every algorithm by name (``"PPO"``, ``"SAC"``, ``"OPPO"``, ``"TSDDR"`` ...)
ALGORITHMS: dict[str, Any] = {}
#: the algorithms that learn from environment transitions (``mdpo train``, sweeps); TS-DDR
#: learns from optimization problems (``mdpo hydro tsddr``), OPPO and BC from datasets
RL_ALGORITHMS: dict[str, Any] = {}


def register_algorithm(cls: T) -> T:
    """Class decorator: register ``cls`` under its ``algo_name``."""
    name = cls.algo_name
    if name in ALGORITHMS and ALGORITHMS[name] is not cls:
        raise ValueError(f"two algorithms are named {name!r}: {ALGORITHMS[name]} and {cls}")
    ALGORITHMS[name] = cls
    if getattr(cls, "needs_env_runner", False):
        RL_ALGORITHMS[name] = cls
    return cls


#: converters to and from other libraries' files, by name (``"sb3"``): the interop layer
#: plugs itself in here, so that an agent's ``save_sb3`` does not import a layer above it
CONVERTERS: dict[str, Any] = {}


def converter(name: str) -> Any:
    """The converter registered as ``name`` (``"sb3"``: :mod:`mdpo.interop.sb3`)."""
    if name not in CONVERTERS:
        raise ValueError(f"no {name} converter is installed: import mdpo.interop.{name}")
    return CONVERTERS[name]
