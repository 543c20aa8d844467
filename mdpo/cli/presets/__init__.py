"""Hyperparameter presets for ``mdpo train --preset NAME`` (YAML files of this package) or
``--preset-file FILE``: per algorithm and env, ``n_envs``, ``steps`` and ``hyperparameters``.

``zoo``: RL Baselines3 Zoo's tuned values (PPO, SAC; classic control and MuJoCo); ``paper``:
the MDPO paper's budgets. A preset file is read as data, within the sweep specs' YAML bounds;
``lin_X`` values are linear schedules from X to 0, as the zoo writes them.
"""

from __future__ import annotations

import os
from typing import Any

from mdpo.cli.sweep.spec import load_spec_yaml
from mdpo.core.limits import BadFileError, field_int, json_object
from mdpo.core.utils import linear_schedule

FOLDER = os.path.dirname(os.path.abspath(__file__))
NAMES = ("zoo", "paper")
#: hyperparameters that take a schedule
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


def load_preset(name: str | None = None, path: str | None = None) -> dict[str, Any]:
    """The preset ``name`` (one of :data:`NAMES`) or the file ``path``, checked."""
    if path is None:
        if name not in NAMES:
            raise ValueError(f"--preset takes one of {', '.join(NAMES)}, not {name!r}")
        path = os.path.join(FOLDER, f"{name}.yaml")
    try:
        with open(path, "rb") as handle:
            data = handle.read((1 << 20) + 1)
    except OSError as err:
        raise BadFileError(f"preset file {path!r} cannot be read: {err.strerror}") from None
    return json_object(load_spec_yaml(data, path), path)


def preset_entry(preset: dict[str, Any], algo: str, env: str, where: str) -> dict[str, Any]:
    """``{n_envs, steps, hyperparameters}`` of ``algo`` on ``env`` in ``preset``."""
    table = preset.get(algo)
    if not isinstance(table, dict) or env not in table:
        envs = sorted(table) if isinstance(table, dict) else []
        have = f"it has {', '.join(envs)}" if envs else f"it has no {algo} entries"
        raise ValueError(f"{where} has no {algo} preset for {env}; {have}")
    entry = json_object(table[env], f"{where}: {algo}.{env}")
    out = {
        "n_envs": field_int(entry.get("n_envs", 1), f"{where}: {algo}.{env}.n_envs", 1, 1024),
        "steps": field_int(entry.get("steps", 100_000), f"{where}: {algo}.{env}.steps", 1),
        "hyperparameters": dict(
            json_object(entry.get("hyperparameters", {}), f"{where}: {algo}.{env}.hyperparameters")
        ),
    }
    return out


def resolve_schedules(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """``hyperparameters`` with ``lin_X`` strings as linear schedules from X to 0."""
    out = dict(hyperparameters)
    for key in SCHEDULED:
        value = out.get(key)
        if isinstance(value, str) and value.startswith("lin_"):
            try:
                out[key] = linear_schedule(float(value[len("lin_") :]))
            except ValueError:
                raise ValueError(f"{key}={value!r}: lin_ takes a number, as lin_3e-4") from None
    return out
