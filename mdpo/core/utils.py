"""Small shared helpers: devices, seeding, schedules, argument checks."""

from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mdpo.core.limits import MAX_LAYER_WIDTH, MAX_LAYERS, dumps_json
from mdpo.core.version import __version__

Schedule = Callable[[float], float]


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device spec.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or a ``torch.device``.

    Raises:
        ValueError: when the spec is not a device, or CUDA is asked for and absent.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a valid torch device") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for CUDA but CUDA is not available here")
    return dev


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def constant_schedule(value: float) -> Schedule:
    """A schedule that always returns ``value``."""

    def schedule(_progress_remaining: float) -> float:
        return value

    return schedule


class LinearSchedule:
    """Linear interpolation from ``initial`` (progress remaining 1) to ``final`` (0).

    A class rather than a closure so that model files can describe it in JSON.
    """

    def __init__(self, initial: float, final: float = 0.0):
        self.initial = float(initial)
        self.final = float(final)

    def __call__(self, progress_remaining: float) -> float:
        return self.final + progress_remaining * (self.initial - self.final)

    def to_json(self) -> dict[str, Any]:
        """JSON description, read back by :meth:`from_json`."""
        return {"schedule": "linear", "initial": self.initial, "final": self.final}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearSchedule:
        """Rebuild from :meth:`to_json`'s output."""
        return cls(data["initial"], data["final"])

    def __repr__(self) -> str:
        return f"LinearSchedule({self.initial}, {self.final})"


def linear_schedule(initial: float, final: float = 0.0) -> LinearSchedule:
    """Linear schedule from ``initial`` at the start of training to ``final`` at the end."""
    return LinearSchedule(initial, final)


def make_schedule(value: float | Schedule, name: str, positive: bool = True) -> Schedule:
    """Turn a float or a callable of progress remaining into a checked schedule.

    Args:
        value: a number, or a callable mapping progress remaining (1 → 0) to a number.
        name: the hyperparameter's name, used in error messages.
        positive: require the value (at the start of training) to be > 0.

    Raises:
        ValueError: when the value is not finite or not positive.
    """
    if callable(value):
        start = value(1.0)
        check_number(start, f"{name}(progress_remaining=1.0)", positive=positive)
        return value
    check_number(value, name, positive=positive)
    return constant_schedule(float(value))


def check_number(value: Any, name: str, positive: bool = False, non_negative: bool = False) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_fraction(value: Any, name: str) -> float:
    """``value`` as a float; raises a ``ValueError`` naming ``name`` unless it is in [0, 1]."""
    check_number(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool (NumPy's included), else a one-line error: a string such as
    ``"False"`` from a command line would otherwise read as true."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def code_version() -> str:
    """The git commit of the mdpo source (``-dirty`` when modified), or the package version."""

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mdpo

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=package, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")  # the package folder (git's cwd)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    if not commit:
        return f"mdpo {__version__}"
    return f"mdpo {__version__} @ {commit[:12]}{'-dirty' if dirty else ''}"


#: activation functions by the names model files store
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def activation_name(activation: str | type[nn.Module]) -> str:
    """Normalise an activation given as a name or an ``nn.Module`` class to its name."""
    if isinstance(activation, str):
        name = activation.lower()
    else:
        name = next((k for k, v in ACTIVATIONS.items() if v is activation), "")
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation_fn={activation!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
        )
    return name


def mlp(in_dim: int, sizes: list[int], activation: str) -> nn.Sequential:
    """``Linear → activation`` blocks, SB3's layout (``0`` Linear, ``1`` act, ``2`` Linear ...)."""
    layers: list[nn.Module] = []
    for size in sizes:
        # ReLU in place: the Linear before it does not keep its output for the backward pass
        act = nn.ReLU(inplace=True) if activation == "relu" else ACTIVATIONS[activation]()
        layers += [nn.Linear(in_dim, size), act]
        in_dim = size
    return nn.Sequential(*layers)


def check_sizes(sizes: list[int]) -> list[int]:
    """Raise ``ValueError`` unless there are at most ``MAX_LAYERS`` sizes, each an int in
    ``[1, MAX_LAYER_WIDTH]`` (:mod:`mdpo.core.limits`: what a foreign model file may ask for)."""
    if len(sizes) > MAX_LAYERS or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_LAYER_WIDTH for s in sizes
    ):
        shown = sizes if len(sizes) <= 8 else f"{len(sizes)} layers"
        raise ValueError(
            f"net_arch must be at most {MAX_LAYERS} layer sizes, each an integer in "
            f"[1, {MAX_LAYER_WIDTH}], got {shown!r}"
        )
    return sizes


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (``<path>.<pid>.tmp``, flushed to
    disk) renamed into place: a reader never sees half a file, a crash leaves the old one, and
    the temporary file is removed whatever fails (a full disk, an interrupt)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as strict JSON (non-finite floats as ``null``, which the strict readers
    of :mod:`mdpo.core.limits` read back) with :func:`write_text_atomic`; a value JSON cannot
    hold fails before any file exists."""
    write_text_atomic(path, dumps_json(data, indent=1))
