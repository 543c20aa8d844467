"""What mdpo accepts from files it is handed, in one place: the limits and the checks.

A file is data, never code. Everything read from a model zip, a Stable-Baselines3 zip, a
VecNormalize pickle, a replay buffer, a dataset folder, a label file, a hydro case, a cut file,
a sweep spec or a run folder goes through the checks here before anything is built from it:

- an environment id read from a file is a registered gymnasium id without ``:`` (or one of
  mdpo's torch-native ids, ``torch:<Name>-vN``), so no module named in a file is ever imported;
- JSON is bounded in size and nesting depth, and refuses ``NaN`` and integers of more than
  :data:`MAX_INT_DIGITS` digits; numbers that must be finite are checked where they are used;
- every size that decides an allocation (space dimensions, network widths, buffer sizes,
  counts of cuts, runs or steps, the elements of a stored tensor) is bounded against what the
  file itself holds and against the limits below, before anything is allocated;
- paths read from a run's files are relative to the run folder and stay inside it.

Every refusal is a :class:`BadFileError` (or a subclass: ``ModelFileError``,
``UnsupportedPickle``, ``CaseDataError``, ``SweepSpecError`` ...) with a one-line message that
names the file and the field.

This module imports nothing from mdpo: every layer may use it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from typing import Any

import gymnasium as gym

# ----------------------------------------------------------------------------------- limits
#: the most bytes of one JSON document read from any file
MAX_JSON_BYTES = 16 << 20
#: the deepest nesting of lists and objects accepted in JSON, YAML or a pickle
MAX_DEPTH = 64
#: the most decimal digits of an integer read from a file (JSON, CSV, pickle)
MAX_INT_DIGITS = 100
#: the most bytes of one member of a zip (model, checkpoint, replay buffer, SB3 zip)
MAX_MEMBER_BYTES = 1 << 30
#: the most elements of an observation or action space (its flattened size)
MAX_SPACE_ELEMENTS = 1 << 20
#: the dtypes a ``Box`` read from a file may have (model files, datasets)
BOX_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)
#: the most actions of a ``Discrete`` space
MAX_DISCRETE_ACTIONS = 1 << 16
#: the widest hidden layer, and the most hidden layers, of a network described in a file
MAX_LAYER_WIDTH = 1 << 14
MAX_LAYERS = 64
#: the most parameters of a network described in a file (before it is built)
MAX_NETWORK_PARAMETERS = 1 << 28
#: the most transitions of a replay buffer described in a file
MAX_BUFFER_SIZE = 1 << 27
#: the most characters of an environment id
MAX_ENV_ID_CHARS = 200
#: the most runs one sweep spec may expand to
MAX_SWEEP_RUNS = 10_000
#: the most bytes a sweep spec, once its YAML aliases are expanded, may take as JSON
MAX_SWEEP_SPEC_BYTES = 1 << 20
#: the most bytes the configs of all the runs of one sweep spec may take together as JSON
#: (a grid multiplies its values: a small spec can name large configs for many runs)
MAX_SWEEP_CONFIG_BYTES = 64 << 20
#: the most environments one run steps in parallel (``n_envs`` of a sweep spec or a run config)
MAX_VEC_ENVS = 1024
#: the most cuts (over all stages) of an SDDP cut file
MAX_CUTS = 1_000_000
#: the most steps (transitions) of an offline dataset read into memory, and its bytes of arrays
MAX_DATASET_STEPS = 20_000_000
MAX_DATASET_BYTES = 8 << 30
#: the most objects (counting each use of a shared one) built while reading a pickle
MAX_PICKLE_OBJECTS = 1_000_000


class BadFileError(ValueError):
    """A file, or a field in one, that is malformed, hostile or over a limit.

    The project's readers refuse such input with this error or a subclass of it, whose message
    is one line naming the file and the field; nothing is built from the file first.
    """


# ---------------------------------------------------------------------------- environment ids
_ENV_ID = re.compile(r"^(torch:)?[A-Za-z0-9_][A-Za-z0-9_./-]*(-v\d+)?$")


def check_env_id_from_file(env_id: Any, where: str) -> str:
    """Return ``env_id`` if it is safe to hand to ``gym.make``; else raise :class:`BadFileError`.

    Safe means: a string of at most :data:`MAX_ENV_ID_CHARS` characters without ``:`` (no
    ``module:Name`` form, which gymnasium resolves by importing the module) that is already
    registered with gymnasium, or ``torch:<id>`` (mdpo's torch-native envs). Nothing is
    imported to find out. ``where`` names the file and field, for the message.
    """
    if not isinstance(env_id, str):
        raise BadFileError(f"{where}: the environment id must be a string, not {_kind(env_id)}")
    if len(env_id) > MAX_ENV_ID_CHARS or not _ENV_ID.match(env_id) or ".." in env_id:
        raise BadFileError(
            f"{where}: {_short(env_id)} is not a plain environment id (ids read from files are "
            "registered gymnasium ids without ':'; modules named in files are never imported)"
        )
    if env_id.startswith("torch:"):
        return env_id  # checked against mdpo's own table by the runner, imports nothing

    if env_id not in gym.registry:
        raise BadFileError(
            f"{where}: environment {env_id!r} is not registered with gymnasium; import the "
            "package that registers it first (ids read from files are never imported)"
        )
    return env_id


# ---------------------------------------------------------------------------------------- JSON
def json_depth_ok(text: str | bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the brackets of JSON ``text`` nest at most ``max_depth`` deep (strings skipped).

    A linear scan, run before ``json.loads`` so that no parser or later walk recurses deeper.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.count("[") + text.count("{") <= max_depth:
        return True
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (the limit is {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> float:
    # Python's json writes a Box's unbounded limits as +-Infinity: keep reading those
    if name == "NaN":
        raise ValueError("NaN is not a number mdpo reads from a file")
    return float(name)


def loads_json(data: str | bytes, where: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON from a file within the limits; raise :class:`BadFileError` naming ``where``.

    Refused: more than ``max_bytes``, nesting deeper than :data:`MAX_DEPTH`, ``NaN``,
    integers of more than :data:`MAX_INT_DIGITS` digits, text that is not UTF-8. ``Infinity``
    is read (Python writes unbounded space limits so): fields that must be finite are checked
    with :func:`field_int` and :func:`field_float`.
    """
    if len(data) > max_bytes:
        raise BadFileError(f"{where} is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        if not json_depth_ok(data):
            raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
        return json.loads(
            data,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
        )
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise BadFileError(f"{where} is not valid JSON: {_one_line(err)}") from None


def load_json_file(path: str, where: str | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse the JSON file ``path`` within the limits of :func:`loads_json`."""
    where = where or path
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise BadFileError(f"{where} cannot be read: {err.strerror or err}") from None
    return loads_json(data, where, max_bytes)


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes strict JSON: non-finite floats become ``null``."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj


# ----------------------------------------------------------------------------- field checks
def json_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object (dict), else :class:`BadFileError`."""
    if not isinstance(value, dict):
        raise BadFileError(f"{where} must be a JSON object, not {_kind(value)}")
    return value


def field_int(value: Any, where: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]`` (a bool or a fractional float is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadFileError(f"{where} must be an integer, not {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise BadFileError(f"{where} must be an integer, not {value!r}")
        value = int(value)
    if low is not None and value < low:
        raise BadFileError(f"{where} is {value}, below the least allowed, {low}")
    if high is not None and value > high:
        raise BadFileError(f"{where} is {_short(value)}, over the limit of {high}")
    return value


def field_float(value: Any, where: str, allow_none: bool = False) -> float | None:
    """``value`` as a finite float (``None`` passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadFileError(f"{where} must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BadFileError(f"{where} must be a finite number, not {_short(value)}")
    return number


def check_sizes(sizes: Iterable[Any], where: str, high: int) -> list[int]:
    """Each of ``sizes`` as an int in ``[1, high]``."""
    return [field_int(size, f"{where}[{i}]", 1, high) for i, size in enumerate(sizes)]


def mlp_parameters(in_dim: int, hidden: Iterable[int], out_dim: int) -> int:
    """Parameters of an MLP ``in_dim → hidden... → out_dim`` (weights and biases)."""
    total, previous = 0, in_dim
    for width in [*hidden, out_dim]:
        total += previous * width + width
        previous = width
    return total


def inside(folder: str, relative: Any, where: str) -> str:
    """The path ``relative`` (read from a file) joined to ``folder``, refused unless it is a
    relative path that stays inside ``folder`` (no absolute path, no ``..`` out, no link out)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise BadFileError(f"{where} must be a path inside {folder!r}, not {_short(relative)}")
    if os.path.isabs(relative):
        raise BadFileError(
            f"{where} is the absolute path {relative!r}: paths in a run's files "
            "are relative to the run folder"
        )
    base = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, path]) != base:
        raise BadFileError(f"{where}: {relative!r} leads outside {folder!r}")
    return path


# --------------------------------------------------------------------------------- messages
def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from a file, cut short (never ``str()`` of an untrusted structure)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return _kind(value)


def _one_line(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
