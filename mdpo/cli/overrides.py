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
    """Turn ``key=value`` strings into constructor keyword arguments of ``algo``, checked
    before anything is built: a known key, given once; ``policy_kwargs`` a mapping of keywords
    the algorithm's policy takes; ``env_kwargs`` a mapping.

    Raises:
        ValueError: one line naming the pair and what to do.
    """
    cls = ALGORITHMS[algo]
    allowed = [
        name
        for name in inspect.signature(cls.__init__).parameters
        if name not in NOT_SETTABLE and not name.startswith("_")
    ]
    policy_keys = policy_keywords(cls)
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key in overrides:
            raise ValueError(f"--set {key}=... is given twice: keep one")
        if key not in allowed:
            if key in policy_keys:
                raise ValueError(
                    f"{key!r} is a keyword of {algo}'s policy, not a hyperparameter: "
                    f"--set policy_kwargs='{{\"{key}\": {value}}}'"
                )
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown hyperparameter {key!r} for {algo}{hint}; known: {', '.join(allowed)}"
            )
        overrides[key] = parse_value(value)
    for key in ("policy_kwargs", "env_kwargs"):
        if key in overrides and overrides[key] is not None:
            if not isinstance(overrides[key], dict):
                raise ValueError(
                    f"--set {key} must be a JSON mapping, e.g. {key}='{{\"name\": value}}', "
                    f"got {overrides[key]!r}"
                )
    unknown = sorted(set(overrides.get("policy_kwargs") or {}) - policy_keys)
    if unknown and policy_keys:
        raise ValueError(
            f"policy_kwargs: {unknown[0]!r} is not a keyword of {algo}'s policy; it takes "
            f"{', '.join(sorted(policy_keys))}"
        )
    return overrides


def policy_keywords(cls: type) -> set[str]:
    """The keywords the policy classes of ``cls`` take (``policy_kwargs``' keys), or an
    empty set when a policy takes ``**kwargs``."""
    keys: set[str] = set()
    for policy in getattr(cls, "policy_aliases", {}).values():
        parameters = inspect.signature(policy.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return set()
        keys |= set(parameters)
    # what the agent itself passes (spaces, sizes of the data) is not the user's to set
    return keys - {
        "self",
        "observation_space",
        "action_space",
        "n_stages",
        "lr_schedule",
        "obs_dim",
        "act_dim",
    }
