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
import zlib
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from mdpo.core.limits import (
    BOX_DTYPES,
    MAX_DISCRETE_ACTIONS,
    MAX_JSON_BYTES,
    MAX_MEMBER_BYTES,
    MAX_SPACE_ELEMENTS,
    BadFileError,
    field_int,
    json_object,
    loads_json,
)
from mdpo.core.version import __version__

FORMAT_NAME = "mdpo-agent"
FORMAT_VERSION = 1


class ModelFileError(BadFileError):
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


def space_from_json(data: Any, where: str = "the model file's space") -> spaces.Space:
    """Rebuild a space written by :func:`space_to_json`, refusing sizes over the limits
    (:data:`~mdpo.core.limits.MAX_SPACE_ELEMENTS` elements,
    :data:`~mdpo.core.limits.MAX_DISCRETE_ACTIONS` actions) before anything is allocated.

    Raises:
        ModelFileError: naming ``where`` and the field.
    """
    try:
        data = json_object(data, where)
        kind = data.get("type")
        if kind == "Box":
            shape = data.get("shape")
            if not isinstance(shape, list) or len(shape) > 8:
                raise ModelFileError(f"{where}: shape must be a list of at most 8 sizes")
            size = 1
            for i, dim in enumerate(shape):
                size *= field_int(dim, f"{where}: shape[{i}]", 0, MAX_SPACE_ELEMENTS)
                if size > MAX_SPACE_ELEMENTS:
                    raise ModelFileError(
                        f"{where}: a Box of more than {MAX_SPACE_ELEMENTS} elements, the limit"
                    )
            if data.get("dtype") not in BOX_DTYPES:
                raise ModelFileError(f"{where}: unsupported dtype {str(data.get('dtype'))[:40]!r}")
            dtype = np.dtype(data["dtype"])
            bounds = []
            for name in ("low", "high"):
                value = data.get(name)
                if not isinstance(value, (list, int, float)) or isinstance(value, bool):
                    raise ModelFileError(f"{where}: {name} must be numbers")
                array = np.asarray(value, dtype=np.float64)  # nested lists: bounded by the JSON
                if array.size != size:
                    raise ModelFileError(f"{where}: {name} has {array.size} numbers, not {size}")
                if np.isnan(array).any():
                    raise ModelFileError(f"{where}: {name} holds NaN")
                bounds.append(array.reshape(shape))
            if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                info = np.iinfo(dtype) if dtype != np.bool_ else np.iinfo(np.uint8)
                if not all(
                    np.isfinite(b).all()
                    and info.min <= b.min(initial=0)
                    and b.max(initial=0) <= info.max
                    for b in bounds
                ):
                    raise ModelFileError(f"{where}: bounds outside the range of {dtype}")
            low, high = (b.astype(dtype) for b in bounds)
            return spaces.Box(low=low, high=high, dtype=dtype)
        if kind == "Discrete":
            n = field_int(data.get("n"), f"{where}: n", 1, MAX_DISCRETE_ACTIONS)
            start = field_int(data.get("start", 0), f"{where}: start", -(2**62), 2**62)
            return spaces.Discrete(n, start=start)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, ModelFileError):
            raise
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ModelFileError(f"{where} is invalid: {reason}") from None
    raise ModelFileError(f"{where} names an unknown space type {str(kind)[:40]!r}")


def versions() -> dict[str, str]:
    """Versions recorded in saved files."""

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


def check_tensors(obj: Any, stored_bytes: int, where: str, depth: int = 0) -> None:
    """Refuse tensors that claim more than the file holds, or hold non-finite numbers.

    A tensor saved as a view (``torch.zeros(1).expand(65536, 65536)``) costs a few bytes in the
    file and its full size once copied: each tensor's elements must fit in its own storage, and
    all tensors together in the bytes the member holds. Non-finite floats are refused (they
    would load and act as ``nan``); only dense tensors are read. Messages name the tensor
    (``policy_net.0.weight``).
    """
    total = 0
    stack = [(obj, depth, "")]
    while stack:
        item, level, name = stack.pop()
        if level > 64:
            raise ModelFileError(f"{where} nests deeper than 64 levels")
        if isinstance(item, torch.Tensor):
            label = f"tensor {name!r}" if name else "a tensor"
            label += f" of shape {tuple(item.shape)}"
            if item.layout != torch.strided:  # sparse and others have no plain storage
                raise ModelFileError(
                    f"{where}: {label} is a {item.layout} tensor; only dense tensors are read"
                )
            nbytes = item.numel() * item.element_size()
            storage = item.untyped_storage().nbytes()
            if item.numel() and storage < item.storage_offset() * item.element_size() + nbytes:
                raise ModelFileError(
                    f"{where}: {label} claims more elements than it stores (an expanded "
                    "view): refused"
                )
            total += nbytes
            if total > stored_bytes:
                raise ModelFileError(
                    f"{where}: its tensors claim more bytes than the {stored_bytes} it holds"
                )
            if item.is_floating_point() and not bool(torch.isfinite(item).all()):
                raise ModelFileError(f"{where}: {label} holds non-finite numbers (nan or inf)")
        elif isinstance(item, dict):
            for key, value in item.items():
                key_text = str(key)[:80] if isinstance(key, (str, int)) else type(key).__name__
                stack.append((value, level + 1, f"{name}.{key_text}" if name else key_text))
        elif isinstance(item, (list, tuple)):
            stack.extend((value, level + 1, f"{name}[{i}]") for i, value in enumerate(item))


def _to_device(obj: Any, device: torch.device | str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((key, _to_device(value, device)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(value, device) for value in obj)
    return obj


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
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
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
        version = field_int(
            meta.get("format_version", 0), f"mdpo.json in {self.path!r}: format_version", 0
        )
        if version > FORMAT_VERSION:
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
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            ValueError,
            RuntimeError,
            zlib.error,
            NotImplementedError,
        ) as err:
            raise ModelFileError(f"member {name!r} of {self.path!r} is corrupt: {err}") from None
        if len(data) > limit:
            raise ModelFileError(f"member {name!r} of {self.path!r} is over {limit} bytes")
        return data

    def json(self, name: str) -> Any:
        """Parse member ``name.json``."""
        try:
            return loads_json(self.read(f"{name}.json", MAX_JSON_BYTES), f"{name}.json")
        except ModelFileError:
            raise
        except BadFileError as err:
            raise ModelFileError(f"{err} (in {self.path!r})") from None

    def tensors(self, name: str, device: torch.device | str = "cpu", suffix: str = ".pt") -> Any:
        """Load member ``name + suffix`` with ``torch.load(weights_only=True)``."""
        data = self.read(f"{name}{suffix}")
        try:
            # the tensors are loaded on the CPU first: checked there before any device copy
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for bad or unsafe payloads
            # torch's own message may advise weights_only=False: never pass that on
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            if "weights_only" in str(err) or "pickle" in str(err).lower() or not reason:
                reason = "corrupt, or it carries objects other than tensors"
            raise ModelFileError(
                f"{name}{suffix} in {self.path!r} could not be loaded as plain tensors ({reason})"
            ) from None
        check_tensors(loaded, len(data), f"{name}{suffix} in {self.path!r}")
        if torch.device(device) != torch.device("cpu"):
            loaded = _to_device(loaded, device)
        return loaded

    def close(self) -> None:
        """Close the zip."""
        self._zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
