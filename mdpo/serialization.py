"""The model file: a zip of JSON documents and torch state dicts. Nothing is pickled.

Tensors are written with ``torch.save`` and read back with ``torch.load(weights_only=True)``,
which accepts only tensors and plain containers; JSON is parsed with ``json``. Member sizes are
checked against the zip directory and bounded while reading, so a zip bomb fails cleanly.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
import zipfile
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

FORMAT_NAME = "mdpo-agent"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 1 << 30  # no single member of a model file is larger than 1 GiB
MAX_JSON_BYTES = 16 << 20


class ModelFileError(ValueError):
    """A model file that is corrupt, foreign, or does not match what is asked of it."""


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Describe a ``Box`` or ``Discrete`` space as JSON."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise ValueError(f"cannot save a space of type {type(space).__name__}: {space}")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """Rebuild a space written by :func:`space_to_json`."""
    try:
        if data["type"] == "Box":
            dtype = np.dtype(data["dtype"])
            low = np.asarray(data["low"], dtype=dtype).reshape(data["shape"])
            high = np.asarray(data["high"], dtype=dtype).reshape(data["shape"])
            return spaces.Box(low=low, high=high, dtype=dtype)
        if data["type"] == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data["start"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"the model file describes an invalid space {data!r}: {err}") from err
    raise ModelFileError(f"the model file names an unknown space type {data.get('type')!r}")


def versions() -> dict[str, str]:
    """Versions recorded in saved files."""
    from mdpo import __version__

    return {
        "mdpo": __version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _tensor_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_archive(path: str, json_parts: dict[str, Any], tensor_parts: dict[str, Any]) -> str:
    """Write a model zip atomically (a temporary file renamed into place).

    Args:
        path: destination; ``.zip`` is appended when missing.
        json_parts: member name (without ``.json``) → JSON-able object.
        tensor_parts: member name (without ``.pt``) → tensors / state dicts.

    Returns:
        The path written.
    """
    path = str(path)
    if not path.endswith(".zip"):
        path += ".zip"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, obj in json_parts.items():
                zf.writestr(f"{name}.json", json.dumps(obj, indent=1))
            for name, obj in tensor_parts.items():
                zf.writestr(f"{name}.pt", _tensor_bytes(obj))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


class Archive:
    """Read side of a model zip, with every failure turned into a :class:`ModelFileError`.

    Args:
        path: the zip file.
        expected_format: the ``format`` its ``mdpo.json`` must name (agents by default);
            ``None`` for a zip of another kind (no ``mdpo.json`` needed).
        member_limit: the most bytes read from one member.
    """

    def __init__(
        self,
        path: str,
        expected_format: str | None = FORMAT_NAME,
        member_limit: int | None = None,
    ):
        self.path = str(path)
        self.expected_format = expected_format
        self.member_limit = MAX_MEMBER_BYTES if member_limit is None else member_limit
        if not os.path.exists(self.path) and os.path.exists(self.path + ".zip"):
            self.path += ".zip"
        if not os.path.isfile(self.path):
            raise ModelFileError(f"model file {self.path!r} does not exist")
        try:
            self._zip = zipfile.ZipFile(self.path)
            self._members = {info.filename: info for info in self._zip.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise ModelFileError(f"{self.path!r} is not a valid zip file: {err}") from None
        try:
            self.meta = self._check_format()
        except ModelFileError:
            self._zip.close()
            raise

    def _check_format(self) -> dict[str, Any]:
        if self.expected_format is None:  # a foreign zip (e.g. Stable-Baselines3's)
            return {}
        if "mdpo.json" not in self._members:
            hint = ""
            if "data" in self._members and "policy.pth" in self._members:
                hint = " It looks like a Stable-Baselines3 model."
            raise ModelFileError(f"{self.path!r} is not an mdpo model file (no mdpo.json).{hint}")
        meta = self.json("mdpo")
        if not isinstance(meta, dict) or meta.get("format") != self.expected_format:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ModelFileError(
                f"{self.path!r} is not an {self.expected_format} file (mdpo.json says {found!r})"
            )
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(
                f"{self.path!r} has format version {meta.get('format_version')}; this mdpo "
                f"reads up to {FORMAT_VERSION}: upgrade mdpo"
            )
        return meta

    def has(self, name: str) -> bool:
        """Whether member ``name`` exists."""
        return name in self._members

    def read(self, name: str, limit: int | None = None) -> bytes:
        """Bytes of member ``name``, refusing more than ``limit`` whatever the directory says."""
        limit = self.member_limit if limit is None else limit
        info = self._members.get(name)
        if info is None:
            raise ModelFileError(f"{self.path!r} has no member {name!r}")
        if info.file_size > limit:
            raise ModelFileError(
                f"member {name!r} of {self.path!r} is {info.file_size} bytes, over the "
                f"limit of {limit}"
            )
        try:
            with self._zip.open(info) as stream:
                data = stream.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
            raise ModelFileError(f"member {name!r} of {self.path!r} is corrupt: {err}") from None
        if len(data) > limit:
            raise ModelFileError(f"member {name!r} of {self.path!r} is over {limit} bytes")
        return data

    def json(self, name: str) -> Any:
        """Parse member ``name.json``."""
        try:
            return json.loads(self.read(f"{name}.json", MAX_JSON_BYTES))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{name}.json in {self.path!r} is not valid JSON: {err}") from None

    def tensors(self, name: str, device: torch.device | str = "cpu", suffix: str = ".pt") -> Any:
        """Load member ``name + suffix`` with ``torch.load(weights_only=True)``."""
        data = self.read(f"{name}{suffix}")
        try:
            return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        except Exception as err:  # torch raises several types for bad or unsafe payloads
            raise ModelFileError(
                f"{name}{suffix} in {self.path!r} could not be loaded as plain tensors "
                f"(corrupt, or it carries objects other than tensors): {err}"
            ) from None

    def close(self) -> None:
        """Close the zip."""
        self._zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
