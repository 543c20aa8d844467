"""``--set key=value`` overrides of the command line, checked against an algorithm's
constructor arguments (used by ``mdpo train`` and ``mdpo oppo train``)."""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Any

from mdpo.core.registry import ALGORITHMS

NOT_SETTABLE = {"self", "policy", "env", "seed", "device", "verbose", "tensorboard_log", "n_envs"}


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, booleans, null, lists, dicts), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(algo: str, pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into constructor keyword arguments of ``algo``.

    Raises:
        ValueError: malformed pair, or a key that is not a hyperparameter of ``algo``.
    """
    allowed = [
        name
        for name in inspect.signature(ALGORITHMS[algo].__init__).parameters
        if name not in NOT_SETTABLE and not name.startswith("_")
    ]
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown hyperparameter {key!r} for {algo}{hint}; known: {', '.join(allowed)}"
            )
        overrides[key] = parse_value(value)
    return overrides
