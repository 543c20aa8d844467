"""Stable-Baselines3 model files: a safe import into mdpo agents, and an export back.

Import never unpickles: SB3 stores ``data`` as JSON in which every non-JSON value is a
``{":type:", ":serialized:" (cloudpickle), readable fields...}`` record; only the readable
fields are used, and tensors are read with ``torch.load(weights_only=True)``. Nothing from
``stable_baselines3`` is imported. The network architecture is read from the weights' shapes,
the activation from the readable ``policy_kwargs``.

A file is data from a stranger: ``data`` is parsed within :mod:`mdpo.core.limits` (size, depth,
finite numbers), every field read is checked for its type and every size against the limits
there, the weights' shapes must chain from the observation space to the action space before
any network is built (so what is built is no larger than what the file holds), and weights
must be finite. Each refusal is a one-line :class:`~mdpo.core.serialization.ModelFileError` naming
the file and the field.

Supported: SB3 ``PPO``, ``A2C`` (loaded as our ``PPO``: same policy network; continued training
uses PPO's update), ``SAC``, ``TD3`` (loaded as our ``SAC`` for inference: the deterministic
actor becomes the squashed Gaussian's mean; continued training is SAC's), and sb3-contrib's
``TRPO``. An SB3 PPO can warm-start our on-policy ``MDPO`` and an SB3 SAC our
``OffPolicyMDPO`` (``algo=`` below).
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import math
import os
import pickle
import platform
import re
import sys
import zipfile
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from mdpo.core.learner import SIZE_HYPERPARAMETERS
from mdpo.core.limits import BOX_DTYPES as LIMIT_BOX_DTYPES
from mdpo.core.limits import (
    MAX_DISCRETE_ACTIONS,
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    MAX_NETWORK_PARAMETERS,
    MAX_SPACE_ELEMENTS,
    BadFileError,
    check_sizes,
    field_float,
    field_int,
    loads_json,
    mlp_parameters,
)
from mdpo.core.registry import ALGORITHMS, CONVERTERS
from mdpo.core.serialization import Archive, ModelFileError
from mdpo.interop.safe_pickle import Call, Global, UnsupportedPickle, as_array, read_symbolic
from mdpo.rl import MDPO, PPO, SAC, TRPO, Agent, OffPolicyMDPO
from mdpo.rl.runners import EnvSpec

SB3_MEMBER_LIMIT = 1 << 30  # no member of an SB3 zip is read past 1 GiB
SB3_DATA_LIMIT = 64 << 20  # the JSON ``data`` member
MAX_SPACE_SIZE = MAX_SPACE_ELEMENTS  # elements of an observation or action space
MAX_SPACE_DIMS = 32  # dimensions of a Box's shape
MAX_TENSORS = 10_000  # tensors in one .pth member (an MLP policy has a few dozen)
BOX_DTYPES = tuple(d for d in LIMIT_BOX_DTYPES if d != "bool")  # SB3 Boxes are numeric

# SB3 algorithm -> the classes of ours that can take its weights (the first is the default)
TARGETS: dict[str, tuple[type[Agent], ...]] = {
    "PPO": (PPO, MDPO, TRPO),
    "A2C": (PPO, MDPO, TRPO),
    "TRPO": (TRPO, PPO, MDPO),
    "SAC": (SAC, OffPolicyMDPO),
    "TD3": (SAC, OffPolicyMDPO),
}
ON_POLICY = ("PPO", "A2C", "TRPO")

TORCH_ACTIVATIONS = {
    "Tanh": "tanh",
    "ReLU": "relu",
    "ELU": "elu",
    "LeakyReLU": "leaky_relu",
    "SiLU": "silu",
    "GELU": "gelu",
    "Identity": "identity",
}


def _shown(value: Any, limit: int = 60) -> str:
    """A value read from a file, for a message: ``repr`` cut short, or its kind (one line)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut short (torch's and numpy's may span lines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_field(value: Any, where: str, low: int, high: int) -> int:
    """An integer field SB3 may store as a number or as decimal text (``"n": "2"``)."""
    if isinstance(value, str):
        if not re.fullmatch(r"-?[0-9]{1,20}", value):
            raise BadFileError(f"{where} must be an integer, not {_shown(value)}")
        value = int(value)
    return field_int(value, where, low, high)


# ------------------------------------------------------------------------------------ reading
class SB3Model:
    """The readable contents of an SB3 zip: ``data`` fields, tensors, the algorithm's name.

    Args:
        path: the ``.zip`` file.

    Raises:
        ModelFileError: not a zip, a member missing, corrupt or oversized, ``data`` not JSON
            (or nested too deep, or holding non-finite numbers), a tensor file carrying
            anything but a dict of floating-point tensors, or an algorithm we cannot tell.
    """

    def __init__(self, path: str):
        with Archive(path, expected_format=None, member_limit=SB3_MEMBER_LIMIT) as archive:
            self.path = archive.path
            if archive.has("mdpo.json"):
                raise ModelFileError(
                    f"{self.path!r} is already an mdpo model file: use it as it is "
                    "(mdpo eval, Agent.load); import-sb3 reads Stable-Baselines3 zips"
                )
            for member in ("data", "policy.pth"):
                if not archive.has(member):
                    raise ModelFileError(
                        f"{self.path!r} is not a Stable-Baselines3 model (no {member!r} member)"
                    )
            raw = archive.read("data", SB3_DATA_LIMIT)
            where = f"'data' in {self.path!r}"
            try:
                data = loads_json(raw, where, SB3_DATA_LIMIT)
            except BadFileError as err:  # the same one-line message, as this reader's error
                detail = str(err).removeprefix(f"{where} is not valid JSON: ")
                raise ModelFileError(f"{where} is not JSON mdpo accepts: {detail}") from None
            if not isinstance(data, dict):
                raise ModelFileError(f"{where} is not a JSON object")
            self.data: dict[str, Any] = data
            params = archive.tensors("policy", suffix=".pth")
            variables = (
                archive.tensors("pytorch_variables", suffix=".pth")
                if archive.has("pytorch_variables.pth")
                else {}
            )
        self.params = _tensor_dict(params, f"policy.pth in {self.path!r}")
        self.variables = _tensor_dict(variables, f"pytorch_variables.pth in {self.path!r}")
        self.algo = self._algorithm()

    def where(self, field: str) -> str:
        """``'path': field``, to name the field in a message."""
        return f"{self.path!r}: {field}"

    def _algorithm(self) -> str:
        """SB3 does not name the algorithm in the file: tell it from its hyperparameters."""
        keys = set(self.data)
        for key, algo in (
            ("cg_damping", "TRPO"),
            ("clip_range", "PPO"),
            ("target_entropy", "SAC"),
            ("policy_delay", "TD3"),
        ):
            if key in keys:
                return algo
        if {"n_steps", "gae_lambda", "vf_coef"} <= keys:
            return "A2C"
        raise ModelFileError(
            f"{self.path!r}: cannot tell which SB3 algorithm saved it (supported: PPO, A2C, "
            "SAC, TD3, sb3-contrib TRPO)"
        )

    def readable(self, key: str) -> Any:
        """``data[key]``, or the readable fields of a serialized record (never unpickled)."""
        value = self.data.get(key)
        if isinstance(value, dict) and ":type:" in value:
            return {k: v for k, v in value.items() if k not in (":type:", ":serialized:")}
        return value

    def number(self, key: str) -> float | None:
        """A hyperparameter stored as a number, or as a constant schedule's readable text.

        ``None`` when absent, ``null``, or a serialized record without a readable constant (a
        schedule function: the default is used).

        Raises:
            ModelFileError: a non-finite number, or a value of another type.
        """
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, dict) and ":type:" in value:
            for text in value.values():  # e.g. FloatSchedule: 'ConstantSchedule(val=0.2)'
                match = (
                    isinstance(text, str)
                    and len(text) <= 200
                    and re.search(r"ConstantSchedule\(val=([-+0-9.eE]{1,40})\)", text)
                )
                if match:
                    return self._finite(_float_text(match.group(1)), key)
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelFileError(f"{self.where(key)} must be a number, not {_shown(value)}")
        return self._finite(value, key)

    def _finite(self, value: float, key: str) -> float:
        """``value`` (an int stays an int) if it is a finite number."""
        _checked(field_float, value, self.where(key))
        return value

    def space(self, key: str) -> spaces.Space:
        """The observation or action space from its readable fields, every size bounded
        (:data:`~mdpo.core.limits.MAX_SPACE_ELEMENTS`,
        :data:`~mdpo.core.limits.MAX_DISCRETE_ACTIONS`) before anything is allocated."""
        entry = self.data.get(key)
        kind = entry.get(":type:", "") if isinstance(entry, dict) else ""
        if not isinstance(kind, str):
            kind = ""
        try:
            if kind.endswith("spaces.box.Box'>"):
                return self._box(key, entry)
            if kind.endswith("spaces.discrete.Discrete'>"):
                n = _int_field(entry.get("n"), self.where(f"{key}.n"), 1, MAX_DISCRETE_ACTIONS)
                start = _int_field(
                    entry.get("start", 0), self.where(f"{key}.start"), -(2**31), 2**31
                )
                return spaces.Discrete(n, start=start)
        except BadFileError as err:
            raise ModelFileError(str(err)) from None
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise ModelFileError(f"{self.where(key)} is unreadable: {_one_line(err)}") from None
        shown = _shown(kind, 100) if kind else _shown(entry)
        raise ModelFileError(
            f"{self.where(key)} of type {shown} is not supported (Box and Discrete are)"
        )

    def _box(self, key: str, entry: dict[str, Any]) -> spaces.Box:
        shape_field = entry.get("_shape")
        if not isinstance(shape_field, list) or len(shape_field) > MAX_SPACE_DIMS:
            raise BadFileError(
                f"{self.where(key)}._shape must be a list of at most {MAX_SPACE_DIMS} sizes, "
                f"not {_shown(shape_field)}"
            )
        shape = tuple(check_sizes(shape_field, self.where(f"{key}._shape"), MAX_SPACE_ELEMENTS))
        if math.prod(shape) > MAX_SPACE_ELEMENTS:
            raise BadFileError(
                f"{self.where(key)}._shape {shape} has {math.prod(shape)} elements, over the "
                f"limit of {MAX_SPACE_ELEMENTS}"
            )
        dtype_name = entry.get("dtype")
        if not isinstance(dtype_name, str) or dtype_name not in BOX_DTYPES:
            raise BadFileError(
                f"{self.where(key)}.dtype is {_shown(dtype_name)}, not one of {BOX_DTYPES}"
            )
        dtype = np.dtype(dtype_name)
        bounds = []
        for name in ("low", "high"):
            array = parse_array(entry.get(name), shape, self.where(f"{key}.{name}"))
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                if not (np.all(array >= info.min) and np.all(array <= info.max)):
                    raise BadFileError(f"{self.where(key)}.{name} does not fit {dtype_name}")
            bounds.append(array.astype(dtype))
        return spaces.Box(bounds[0], bounds[1], shape, dtype)

    def activation(self, default: str) -> str:
        """The activation named in ``policy_kwargs`` (or ``default``)."""
        kwargs = self.policy_kwargs()
        name = kwargs.get("activation_fn")
        if name is None:
            return default
        match = re.search(r"\.(\w+)'>$", name) if isinstance(name, str) else None
        if not match or match.group(1) not in TORCH_ACTIVATIONS:
            raise ModelFileError(
                f"{self.where('policy_kwargs.activation_fn')}: activation {_shown(name)} is not "
                f"supported; supported: {sorted(TORCH_ACTIVATIONS)}"
            )
        return TORCH_ACTIVATIONS[match.group(1)]

    def policy_kwargs(self) -> dict[str, Any]:
        """The readable ``policy_kwargs`` (an object; ``{}`` when absent)."""
        kwargs = self.readable("policy_kwargs")
        if kwargs is None:
            return {}
        if not isinstance(kwargs, dict):
            raise ModelFileError(
                f"{self.where('policy_kwargs')} must be an object, not {_shown(kwargs)}"
            )
        return kwargs

    def check_policy_kwargs(self) -> None:
        """Refuse policies whose networks we do not build (custom extractors, gSDE ...), and
        a ``net_arch`` over the limits."""
        kwargs = self.policy_kwargs()
        if kwargs.get("use_sde") or self.data.get("use_sde"):
            raise ModelFileError(f"{self.path!r}: gSDE policies (use_sde=True) are not supported")
        if kwargs.get("squash_output"):
            raise ModelFileError(f"{self.path!r}: squash_output=True is not supported")
        extractor = kwargs.get("features_extractor_class", "FlattenExtractor")
        if not isinstance(extractor, str) or "FlattenExtractor" not in extractor:
            raise ModelFileError(
                f"{self.where('policy_kwargs.features_extractor_class')}: features extractor "
                f"{_shown(extractor)} is not supported (MLP policies on flat observations only)"
            )
        # (a string is SB3's printout of a value it could not write as JSON: nothing to size)
        if kwargs.get("net_arch") is not None and not isinstance(kwargs["net_arch"], str):
            _check_net_arch(kwargs["net_arch"], self.where("policy_kwargs.net_arch"))


def _check_net_arch(value: Any, where: str, depth: int = 0) -> None:
    """SB3's ``net_arch``: a list of widths, a dict of lists (``pi``, ``vf``, ``qf``), or the
    old ``[shared..., {pi, vf}]``; widths within :data:`~mdpo.core.limits.MAX_LAYER_WIDTH`, at most
    :data:`~mdpo.core.limits.MAX_LAYERS` layers."""
    if isinstance(value, dict) and depth < 2:
        if len(value) > 4:
            raise ModelFileError(f"{where} has {len(value)} members (pi, vf, qf are known)")
        for key, arch in value.items():
            _check_net_arch(arch, f"{where}.{_shown(key, 20)}", depth + 1)
        return
    if not isinstance(value, list) or len(value) > MAX_LAYERS:
        raise ModelFileError(
            f"{where} must be a list of at most {MAX_LAYERS} layer widths, not {_shown(value)}"
        )
    for i, width in enumerate(value):
        if isinstance(width, dict) and depth == 0:
            _check_net_arch(width, f"{where}[{i}]", depth + 1)
        else:
            try:
                field_int(width, f"{where}[{i}]", 1, MAX_LAYER_WIDTH)
            except BadFileError as err:
                raise ModelFileError(str(err)) from None


def _tensor_dict(value: Any, where: str) -> dict[str, torch.Tensor]:
    """A loaded ``.pth`` member as a dict of named floating-point dense tensors."""
    if not isinstance(value, dict) or len(value) > MAX_TENSORS:
        raise ModelFileError(f"{where} is not a dict of tensors")
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{where} is not a dict of tensors")
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise ModelFileError(
                f"{where}: {_shown(key)} is a {tensor.dtype} {tensor.layout} tensor, not dense "
                "floating-point weights"
            )
    return value


def _float_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # refused as non-finite, naming the field


def parse_array(text: Any, shape: tuple[int, ...], where: str = "bounds") -> np.ndarray:
    """A NumPy array from its printed form (``'[-1. -1. -8.]'``, with ``inf``).

    Raises:
        BadFileError: not a string printed in full, a value that is not a number or is NaN,
            or a count of values that is neither 1 nor the shape's.
    """
    if not isinstance(text, str) or "..." in text:
        raise BadFileError(f"{where} is {_shown(text)}, not bounds printed in full")
    try:
        values = [float(v) for v in text.replace("[", " ").replace("]", " ").split()]
    except ValueError:
        raise BadFileError(f"{where}: {_shown(text)} holds a value that is not a number") from None
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).any():
        raise BadFileError(f"{where} holds NaN")
    size = math.prod(shape)
    if array.size == 1 and size != 1:
        array = np.full(shape, array[0])
    if array.size != size:
        raise BadFileError(f"{where} holds {array.size} values; the shape {shape} has {size}")
    return array.reshape(shape)


def layer_sizes(params: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Hidden sizes of an ``nn.Sequential`` of Linear layers stored under ``prefix``."""
    sizes, index = [], 0
    while f"{prefix}.{index}.weight" in params:
        sizes.append(int(params[f"{prefix}.{index}.weight"].shape[0]))
        index += 2
    return sizes


# ------------------------------------------------------------------------------ network shapes
class _Shapes:
    """The shapes the networks we build will have, collected from the file's weights and
    the spaces, and checked against the file's tensors before anything is built."""

    def __init__(self, model: SB3Model):
        self.model = model
        self.params = model.params
        self.expected: dict[str, tuple[int, ...]] = {}

    def fail(self, detail: str) -> ModelFileError:
        return ModelFileError(
            f"policy.pth in {self.model.path!r}: the weights do not fit the networks they "
            f"describe: {detail}"
        )

    def tensor(self, key: str, shape: tuple[int, ...]) -> None:
        """The file must hold ``key`` with exactly ``shape``."""
        if key not in self.params:
            raise self.fail(f"policy.pth has no {key!r}")
        found = tuple(self.params[key].shape)
        if found != shape:
            raise self.fail(f"{key} has shape {found}, the networks need {shape}")
        self.expected[key] = shape

    def stack(self, prefix: str, in_dim: int) -> list[int]:
        """Output sizes of the Linear layers ``prefix.0``, ``prefix.2`` ... , each taking the
        previous one's output (the first ``in_dim``)."""
        sizes: list[int] = []
        previous = in_dim
        while f"{prefix}.{2 * len(sizes)}.weight" in self.params:
            key = f"{prefix}.{2 * len(sizes)}"
            if len(sizes) > MAX_LAYERS:
                raise self.fail(f"{prefix} has more than {MAX_LAYERS} hidden layers")
            weight = self.params[f"{key}.weight"]
            if weight.dim() != 2:
                raise self.fail(f"{key}.weight has shape {tuple(weight.shape)}, not [out, in]")
            out = int(weight.shape[0])
            self.tensor(f"{key}.weight", (out, previous))
            self.tensor(f"{key}.bias", (out,))
            sizes.append(out)
            previous = out
        return sizes

    def hidden(self, prefix: str, sizes: list[int]) -> list[int]:
        """``sizes`` if they are hidden layers within the limits."""
        if len(sizes) > MAX_LAYERS:
            raise self.fail(f"{prefix} has {len(sizes)} hidden layers, over {MAX_LAYERS}")
        for size in sizes:
            if size > MAX_LAYER_WIDTH:
                raise self.fail(f"{prefix} has a layer of width {size}, over {MAX_LAYER_WIDTH}")
        return sizes

    def linear(self, key: str, out_dim: int, in_dim: int) -> None:
        self.tensor(f"{key}.weight", (out_dim, in_dim))
        self.tensor(f"{key}.bias", (out_dim,))

    def critics(self, prefix: str, in_dim: int) -> list[int]:
        """The hidden sizes of SB3's ``{prefix}.qf{j}`` Q-networks (all alike, output 1)."""
        arch: list[int] | None = None
        j = 0
        while f"{prefix}.qf{j}.0.weight" in self.params:
            sizes = self.stack(f"{prefix}.qf{j}", in_dim)
            if not sizes or sizes[-1] != 1 or (arch is not None and sizes[:-1] != arch):
                raise self.fail(f"{prefix}.qf{j} has layers {sizes}, not those of qf0 ending in 1")
            arch = self.hidden(f"{prefix}.qf{j}", sizes[:-1])
            j += 1
        if arch is None:
            raise self.fail(f"policy.pth has no {prefix}.qf0")
        return arch

    def done(self, parameters: int) -> None:
        """No tensor in the file beyond those the networks take, and at most
        :data:`~mdpo.core.limits.MAX_NETWORK_PARAMETERS` parameters built."""
        unexpected = [key for key in self.params if key not in self.expected]
        if unexpected:
            raise self.fail(f"policy.pth holds {_shown(unexpected[0])}, which no network has")
        if parameters > MAX_NETWORK_PARAMETERS:
            raise self.fail(
                f"the networks would have {parameters} parameters, over the limit of "
                f"{MAX_NETWORK_PARAMETERS}"
            )


def _network_arch(
    model: SB3Model, observation_space: spaces.Space, action_space: spaces.Space
) -> dict[str, list[int]]:
    """``net_arch`` of the networks to build, read from the weights' shapes, after checking
    that every weight chains from the observation to the action (so the networks built are
    exactly as large as the weights the file holds), that widths and depths are within the
    limits, and that every weight is finite.

    Raises:
        ModelFileError: naming the file and the tensor.
    """
    shapes = _Shapes(model)
    obs_dim = int(spaces.flatdim(observation_space))
    if isinstance(action_space, spaces.Discrete):
        act_dim = int(action_space.n)
    else:
        act_dim = int(spaces.flatdim(action_space))
    if model.algo in ON_POLICY:
        pi = shapes.hidden(
            "mlp_extractor.policy_net", shapes.stack("mlp_extractor.policy_net", obs_dim)
        )
        vf = shapes.hidden(
            "mlp_extractor.value_net", shapes.stack("mlp_extractor.value_net", obs_dim)
        )
        shapes.linear("action_net", act_dim, pi[-1] if pi else obs_dim)
        shapes.linear("value_net", 1, vf[-1] if vf else obs_dim)
        if isinstance(action_space, spaces.Box):
            shapes.tensor("log_std", (act_dim,))
        parameters = mlp_parameters(obs_dim, pi, act_dim) + mlp_parameters(obs_dim, vf, 1)
        arch = {"pi": pi, "vf": vf}
    else:
        if model.algo == "SAC":
            pi = shapes.hidden("actor.latent_pi", shapes.stack("actor.latent_pi", obs_dim))
            shapes.linear("actor.mu", act_dim, pi[-1] if pi else obs_dim)
            shapes.linear("actor.log_std", act_dim, pi[-1] if pi else obs_dim)
        else:  # TD3: actor.mu is the whole MLP, its last Linear the action head
            mu = shapes.stack("actor.mu", obs_dim)
            if not mu or mu[-1] != act_dim:
                raise shapes.fail(f"actor.mu has layers {mu}, not ending in {act_dim} actions")
            pi = shapes.hidden("actor.mu", mu[:-1])
            if shapes.stack("actor_target.mu", obs_dim) != mu:
                raise shapes.fail("actor_target.mu differs from actor.mu")
        qf = shapes.critics("critic", obs_dim + act_dim)
        if shapes.critics("critic_target", obs_dim + act_dim) != qf:
            raise shapes.fail("critic_target differs from critic")
        n_critics = max(
            2,
            sum(
                1
                for key in model.params
                if key.endswith(".0.weight") and key.startswith("critic.qf")
            ),
        )
        # the actor (mean and log-σ heads) and, twice (with targets), every Q-network
        parameters = mlp_parameters(obs_dim, pi, 2 * act_dim) + 2 * n_critics * mlp_parameters(
            obs_dim + act_dim, qf, 1
        )
        arch = {"pi": pi, "qf": qf}
    shapes.done(parameters)
    for key, tensor in model.params.items():  # shapes are checked: the sizes are bounded
        if not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(
                f"policy.pth in {model.path!r}: tensor {_shown(key)} holds non-finite numbers "
                "(nan or inf)"
            )
    return arch


# ------------------------------------------------------------------------------------ VecNormalize
VECNORMALIZE_LIMIT = 64 << 20


def read_vecnormalize(path: str) -> dict[str, Any]:
    """The statistics of an SB3 ``VecNormalize.save`` file, read without unpickling it.

    The file is a pickle; :func:`mdpo.interop.safe_pickle.read_symbolic` walks its opcodes without
    importing or calling anything (within its limits on size, depth and integers), and only
    numbers, flags and NumPy arrays (rebuilt from their raw bytes) are taken from it, each
    checked: finite statistics, non-negative variances and counts, ``gamma`` in ``[0, 1]``.

    Returns:
        A :meth:`mdpo.rl.runners.Normalizer.state_dict`-style dict.

    Raises:
        ModelFileError: missing, oversized, not a VecNormalize pickle, or unreadable values.
    """

    if not os.path.isfile(path):
        raise ModelFileError(f"VecNormalize file {path!r} does not exist")
    if os.path.getsize(path) > VECNORMALIZE_LIMIT:
        raise ModelFileError(f"{path!r} is over {VECNORMALIZE_LIMIT} bytes")
    with open(path, "rb") as handle:
        data = handle.read(VECNORMALIZE_LIMIT + 1)

    def field(state: dict[Any, Any], key: str, where: str) -> Any:
        if key not in state:
            raise UnsupportedPickle(f"{where}{key} is missing")
        return state[key]

    def flag(state: dict[Any, Any], key: str) -> bool:
        value = field(state, key, "")
        if not isinstance(value, bool) and value not in (0, 1):
            raise UnsupportedPickle(f"{key} is not a boolean")
        return bool(value)

    def array(value: Any, name: str) -> np.ndarray:
        try:
            return as_array(value)
        except UnsupportedPickle as err:  # the field's name, then what is wrong with it
            raise UnsupportedPickle(f"{name}: {err}") from None

    def number(value: Any, name: str, low: float, high: float = math.inf) -> float:
        array_ = array(value, name)
        if array_.size != 1:
            raise UnsupportedPickle(f"{name} is not a single number")
        result = float(array_.reshape(()))
        if not low <= result <= high:  # NaN too
            raise UnsupportedPickle(f"{name} is {result}, outside [{low}, {high}]")
        return result

    def rms(state: dict[Any, Any], key: str) -> tuple[np.ndarray, np.ndarray, float]:
        node = field(state, key, "")
        if not (isinstance(node, Call) and isinstance(node.state, dict)):
            raise UnsupportedPickle(f"{key} is not a RunningMeanStd (dict observations?)")
        stats = node.state
        mean = array(field(stats, "mean", f"{key}."), f"{key}.mean").astype(np.float64)
        var = array(field(stats, "var", f"{key}."), f"{key}.var").astype(np.float64)
        if mean.size > MAX_SPACE_ELEMENTS or var.shape != mean.shape:
            raise UnsupportedPickle(f"{key}.var has shape {var.shape}, {key}.mean {mean.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()):
            raise UnsupportedPickle(f"{key} holds a NaN, an infinity or a negative variance")
        count = number(field(stats, "count", f"{key}."), f"{key}.count", 0.0, 1e300)
        return mean, var, count

    try:
        root = read_symbolic(data)
        if not (
            isinstance(root, Call)
            and isinstance(root.func, Global)
            and root.func.name == "VecNormalize"
            and isinstance(root.state, dict)
        ):
            raise UnsupportedPickle("not a VecNormalize object")
        state = root.state
        obs_mean, obs_var, obs_count = rms(state, "obs_rms")
        ret_mean, ret_var, ret_count = rms(state, "ret_rms")
        if ret_mean.size != 1:
            raise UnsupportedPickle(f"ret_rms.mean has shape {ret_mean.shape}, not one number")
        return {
            "normalize_obs": flag(state, "norm_obs"),
            "normalize_reward": flag(state, "norm_reward"),
            "gamma": number(field(state, "gamma", ""), "gamma", 0.0, 1.0),
            # an infinite clip is how VecNormalize is told not to clip
            "clip_obs": number(field(state, "clip_obs", ""), "clip_obs", 0.0),
            "clip_reward": number(field(state, "clip_reward", ""), "clip_reward", 0.0),
            "epsilon": number(field(state, "epsilon", ""), "epsilon", 0.0, 1e300),
            "obs_mean": torch.as_tensor(obs_mean),
            "obs_var": torch.as_tensor(obs_var),
            "obs_count": obs_count,
            "ret_mean": float(ret_mean.reshape(())),
            "ret_var": float(ret_var.reshape(())),
            "ret_count": ret_count,
        }
    except (BadFileError, KeyError, TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(
            f"{path!r} is not a readable VecNormalize file: {_one_line(err)}"
        ) from None


# ------------------------------------------------------------------------------------ import
HYPERPARAMETERS = {  # SB3 data keys we carry over when our class has the same name
    "PPO": (
        "learning_rate",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gamma",
        "gae_lambda",
        "clip_range",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "target_kl",
        "normalize_advantage",
    ),
    "TRPO": (
        "learning_rate",
        "n_steps",
        "batch_size",
        "gamma",
        "gae_lambda",
        "cg_max_steps",
        "cg_damping",
        "line_search_shrinking_factor",
        "line_search_max_iter",
        "n_critic_updates",
        "target_kl",
        "normalize_advantage",
    ),
    "A2C": ("gamma", "gae_lambda"),
    "SAC": (
        "learning_rate",
        "buffer_size",
        "learning_starts",
        "batch_size",
        "tau",
        "gamma",
        "gradient_steps",
        "ent_coef",
        "target_update_interval",
        "target_entropy",
    ),
    "TD3": ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma"),
}
BOOLEAN_HYPERPARAMETERS = ("normalize_advantage",)
#: sizes SB3 keeps in ``data`` that we do not carry over, bounded all the same
OTHER_SIZES = {
    "n_envs": SIZE_HYPERPARAMETERS["n_envs"],
    "num_timesteps": 1 << 62,
    "_total_timesteps": 1 << 62,
}
_ENT_COEF = re.compile(r"auto(_[-+0-9.eE]{1,40})?")


def _hyperparameters(model: SB3Model, target: type[Agent]) -> dict[str, Any]:
    """The hyperparameters ``target`` takes from ``model.data``, each checked: its type, sizes
    within :data:`mdpo.core.learner.SIZE_HYPERPARAMETERS`, numbers finite."""
    for key, high in OTHER_SIZES.items():
        if model.data.get(key) is not None:
            _checked(field_int, model.data[key], model.where(key), 0, high)
    accepted = set(inspect.signature(target.__init__).parameters)
    if target.algo_name != model.algo:  # another algorithm's step sizes and schedule do not carry
        accepted &= {"gamma", "gae_lambda", "tau", "buffer_size", "batch_size"}
    found: dict[str, Any] = {}
    for key in HYPERPARAMETERS[model.algo]:
        if key not in model.data:
            continue
        value = model.data[key]
        if key in BOOLEAN_HYPERPARAMETERS:
            if not isinstance(value, bool):
                raise ModelFileError(f"{model.where(key)} must be a boolean, not {_shown(value)}")
        elif key in ("ent_coef", "target_entropy") and isinstance(value, str):
            # "auto" or "auto_0.1": our agents parse the rest
            if not (_ENT_COEF.fullmatch(value) if key == "ent_coef" else value == "auto"):
                raise ModelFileError(f"{model.where(key)} is {_shown(value)}, not 'auto...'")
            if key == "ent_coef" and value != "auto":
                model._finite(_float_text(value[5:]), key)
        elif key == "target_kl" and value is None:
            pass
        elif key in SIZE_HYPERPARAMETERS:
            low = -1 if key == "gradient_steps" else 0  # -1: as many as transitions collected
            value = _checked(field_int, value, model.where(key), low, SIZE_HYPERPARAMETERS[key])
        else:
            value = model.number(key)
            if value is None:  # a schedule we cannot read: our default
                continue
        if key in accepted:
            found[key] = value
    return found


def _checked(check: Any, *args: Any) -> Any:
    """``check(*args)`` (a :mod:`mdpo.core.limits` field check), its refusal as a ModelFileError."""
    try:
        return check(*args)
    except BadFileError as err:
        raise ModelFileError(str(err)) from None


def load(
    path: str,
    algo: str | type[Agent] | None = None,
    env: EnvSpec | None = None,
    device: str | torch.device = "auto",
    vecnormalize: str | None = None,
    **kwargs: Any,
) -> Agent:
    """Load a Stable-Baselines3 model file as an mdpo agent, without unpickling anything.

    Args:
        path: the SB3 ``.zip``.
        algo: our class (or its name) to load into; default the counterpart of the file's
            algorithm (PPO/A2C → ``PPO``, TRPO → ``TRPO``, SAC/TD3 → ``SAC``). An SB3 PPO can
            go into ``MDPO``, an SB3 SAC into ``OffPolicyMDPO`` (warm starts).
        env: an env to continue training on (its spaces must match the file's).
        device: where to put the networks.
        vecnormalize: an SB3 ``VecNormalize.save`` file whose statistics the agent then
            applies itself (read without unpickling; see :func:`read_vecnormalize`).
        **kwargs: hyperparameters that override the file's.

    Returns:
        The agent with the file's weights (and, for SAC, its entropy coefficient).

    Raises:
        ModelFileError: an unreadable, unsafe, corrupt or unsupported file, or one over the
            limits of :mod:`mdpo.core.limits` (one line naming the file and the field).
        ValueError: ``algo`` cannot take this file's weights.
    """
    model = SB3Model(path)
    model.check_policy_kwargs()
    target = _target_class(model, algo)
    hyper = _hyperparameters(model, target)
    hyper.update(kwargs)
    observation_space = model.space("observation_space")
    action_space = model.space("action_space")
    on_policy = model.algo in ON_POLICY
    # the sizes come from the weights, checked against the spaces before anything is built
    net_arch = _network_arch(model, observation_space, action_space)
    default_activation = "tanh" if on_policy else "relu"
    policy_kwargs = {"net_arch": net_arch, "activation_fn": model.activation(default_activation)}
    try:
        agent = target(
            "MlpPolicy",
            None,
            device=device,
            policy_kwargs=policy_kwargs,
            _init_setup_model=False,
            **hyper,
        )
        agent.build_for_spaces(observation_space, action_space)
    except (ValueError, OverflowError) as err:
        raise ModelFileError(
            f"{model.path!r} does not fit {target.__name__}: {_one_line(err)}"
        ) from None
    try:
        if on_policy:
            _load_on_policy(agent, model.params)
        else:
            _load_off_policy(agent, model)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelFileError(
            f"{model.path!r}: the weights do not fit the networks they describe: {_one_line(err)}"
        ) from None
    agent.num_timesteps = int(model.data.get("num_timesteps") or 0)  # checked in _hyperparameters
    if vecnormalize is not None:
        stats = read_vecnormalize(vecnormalize)
        try:
            agent.normalizer.load_state_dict(stats)
        except ValueError as err:
            raise ModelFileError(
                f"{vecnormalize!r} does not fit the model: {_one_line(err)}"
            ) from None
        for key in ("normalize_obs", "normalize_reward"):
            if hasattr(agent, key):  # on-policy agents keep the flags in their configuration
                setattr(agent, key, stats[key])
    if env is not None:
        agent.set_env(env)
    return agent


def _target_class(model: SB3Model, algo: str | type[Agent] | None) -> type[Agent]:
    allowed = TARGETS[model.algo]
    if algo is None:
        return allowed[0]
    target = ALGORITHMS.get(algo) if isinstance(algo, str) else algo
    if target not in allowed:
        names = ", ".join(cls.__name__ for cls in allowed)
        raise ValueError(f"an SB3 {model.algo} model can be loaded as {names}, not {algo!r}")
    return target


def _load_on_policy(agent: Agent, params: dict[str, torch.Tensor]) -> None:
    # MLP policies' extractors (Flatten) have no parameters; anything else would not fit
    agent.policy.load_state_dict(params, strict=True)


def _critic_into(ensemble: torch.nn.Module, params: dict[str, torch.Tensor], prefix: str) -> None:
    """SB3's ``{prefix}.qf{j}.{2i}`` Linear layers into our stacked ensemble."""
    with torch.no_grad():
        for i, (weight, bias) in enumerate(zip(ensemble.weights, ensemble.biases)):
            for j in range(ensemble.n_critics):
                w = params[f"{prefix}.qf{j}.{2 * i}.weight"]
                b = params[f"{prefix}.qf{j}.{2 * i}.bias"]
                if w.T.shape != weight[j].shape or b.shape != bias[j, 0].shape:
                    raise ValueError(f"{prefix}.qf{j}.{2 * i} has shape {tuple(w.shape)}")
                weight[j].copy_(w.T)
                bias[j, 0].copy_(b)


def _load_off_policy(agent: Agent, model: SB3Model) -> None:
    params = model.params
    actor = agent.policy.actor
    if model.algo == "SAC":
        actor_state = {
            k[len("actor.") :]: v
            for k, v in params.items()
            if k.startswith("actor.") and not k.startswith("actor.features_extractor")
        }
        actor.load_state_dict(actor_state, strict=True)
    else:  # TD3's deterministic actor: its MLP, and its head as the mean; a narrow σ
        n = len(layer_sizes(params, "actor.mu")) - 1
        state = {}
        for i in range(n):
            state[f"latent_pi.{2 * i}.weight"] = params[f"actor.mu.{2 * i}.weight"]
            state[f"latent_pi.{2 * i}.bias"] = params[f"actor.mu.{2 * i}.bias"]
        state["mu.weight"] = params[f"actor.mu.{2 * n}.weight"]
        state["mu.bias"] = params[f"actor.mu.{2 * n}.bias"]
        state["log_std.weight"] = torch.zeros_like(actor.log_std.weight)
        state["log_std.bias"] = torch.full_like(actor.log_std.bias, -1.0)
        actor.load_state_dict(state, strict=True)
    _critic_into(agent.policy.critic, params, "critic")
    if isinstance(agent, OffPolicyMDPO):
        agent.refresh_old_policy()  # π_k starts as the imported actor; V is trained anew
    else:
        _critic_into(agent.policy.critic_target, params, "critic_target")
        log_ent_coef = model.variables.get("log_ent_coef")
        if agent.learns_ent_coef and isinstance(log_ent_coef, torch.Tensor):
            if log_ent_coef.numel() != 1 or not bool(torch.isfinite(log_ent_coef).all()):
                raise ValueError(
                    f"pytorch_variables.pth: log_ent_coef has shape {tuple(log_ent_coef.shape)} "
                    "or is not finite; one finite number is needed"
                )
            with torch.no_grad():
                agent.ent_coef_module.log_value.copy_(log_ent_coef.reshape(1))


# ------------------------------------------------------------------------------------ export
SB3_VERSION = "2.3.0"  # the format version written (read by SB3 2.x)
SB3_POLICIES = {
    "on": ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    "sac": ("stable_baselines3.sac.policies", "SACPolicy"),
}
TORCH_CLASSES = {name: cls for cls, name in TORCH_ACTIVATIONS.items()}


def _global_pickle(module: str, name: str) -> bytes:
    """Pickle bytes that load as the object ``module.name`` (written without importing it)."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


def _serialized(kind: str, payload: bytes, **readable: Any) -> dict[str, Any]:
    """An SB3 ``data`` record: cloudpickle-compatible bytes plus readable fields."""

    return {":type:": kind, ":serialized:": base64.b64encode(payload).decode(), **readable}


def _space_record(space: spaces.Space) -> dict[str, Any]:

    readable: dict[str, Any] = {"dtype": str(space.dtype), "_shape": list(space.shape)}
    if isinstance(space, spaces.Box):
        readable.update(
            low=np.array2string(space.low, threshold=1 << 30),
            high=np.array2string(space.high, threshold=1 << 30),
        )
    else:
        readable.update(n=str(int(space.n)), start=str(int(space.start)))
    kind = f"<class '{type(space).__module__}.{type(space).__name__}'>"
    return _serialized(kind, pickle.dumps(space, protocol=4), **readable)


def _folded_normalization(agent: Agent) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` with ``normalized = obs·scale + shift`` (before the ±clip), or None."""
    normalizer = agent.normalizer
    if not normalizer.normalize_obs:
        return None
    std = np.sqrt(normalizer.obs_rms.var + normalizer.epsilon).reshape(-1)
    mean = normalizer.obs_rms.mean.reshape(-1)
    return torch.as_tensor(1.0 / std, dtype=torch.float32), torch.as_tensor(
        -mean / std, dtype=torch.float32
    )


def _fold_first_layer(
    weight: torch.Tensor,
    bias: torch.Tensor,
    fold: tuple[torch.Tensor, torch.Tensor] | None,
    inputs: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first Linear layer (``[out, in]``) with observation normalization folded in: only
    the first ``inputs`` columns (the observation; Q-networks also take the action)."""
    if fold is None:
        return weight.clone(), bias.clone()
    scale, shift = fold
    w_obs = weight[:, :inputs]
    new_weight = weight.clone()
    new_weight[:, :inputs] = w_obs * scale
    return new_weight, bias + w_obs @ shift


def _adam_state(n_params: int, lr: float, eps: float) -> dict[str, Any]:
    """A torch Adam state dict with fresh moments for ``n_params`` parameters."""
    group = {
        "lr": lr,
        "betas": (0.9, 0.999),
        "eps": eps,
        "weight_decay": 0,
        "amsgrad": False,
        "params": list(range(n_params)),
    }
    return {"state": {}, "param_groups": [group]}


def _on_policy_export(agent: Agent, fold) -> tuple[dict, dict[str, Any], dict]:
    policy = agent.policy
    state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    obs_dim = policy.obs_dim
    for net in ("policy_net", "value_net"):
        key = f"mlp_extractor.{net}.0"
        if f"{key}.weight" in state:
            state[f"{key}.weight"], state[f"{key}.bias"] = _fold_first_layer(
                state[f"{key}.weight"], state[f"{key}.bias"], fold, obs_dim
            )
    pi = layer_sizes(state, "mlp_extractor.policy_net")
    vf = layer_sizes(state, "mlp_extractor.value_net")
    policy_kwargs = {
        "net_arch": {"pi": pi, "vf": vf},
        "activation_fn": policy.activation,
        "ortho_init": True,
        "log_std_init": 0.0,
    }
    lr = agent.current_learning_rate
    hyper = {
        "learning_rate": lr,
        "n_steps": agent.n_steps,
        "gamma": agent.gamma,
        "gae_lambda": agent.gae_lambda,
        "batch_size": getattr(agent, "batch_size", 64),
        "n_epochs": getattr(agent, "n_epochs", 10),
        "clip_range": 0.2,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "normalize_advantage": True,
        "target_kl": None,
    }
    if isinstance(agent, PPO):
        hyper.update(
            clip_range=float(agent.clip_range_schedule(1.0)),
            ent_coef=agent.ent_coef,
            vf_coef=agent.vf_coef,
            max_grad_norm=agent.max_grad_norm,
            target_kl=agent.target_kl,
        )
    optimizers = {"policy.optimizer": _adam_state(len(state), lr, 1e-5)}
    return state, {"policy_kwargs": policy_kwargs, **hyper}, optimizers


def _off_policy_export(agent: Agent, fold) -> tuple[dict, dict[str, Any], dict]:
    policy = agent.policy
    obs_dim = policy.obs_dim
    state: dict[str, torch.Tensor] = {}
    for key, value in policy.actor.state_dict().items():
        state[f"actor.{key}"] = value.detach().cpu().clone()
    state["actor.latent_pi.0.weight"], state["actor.latent_pi.0.bias"] = _fold_first_layer(
        state["actor.latent_pi.0.weight"], state["actor.latent_pi.0.bias"], fold, obs_dim
    )
    target = policy.critic_target if hasattr(policy, "critic_target") else policy.critic
    for prefix, ensemble in (("critic", policy.critic), ("critic_target", target)):
        for i, (weight, bias) in enumerate(zip(ensemble.weights, ensemble.biases)):
            for j in range(ensemble.n_critics):
                w, b = weight[j].detach().cpu().T, bias[j, 0].detach().cpu()
                if i == 0:
                    w, b = _fold_first_layer(w, b, fold, obs_dim)
                state[f"{prefix}.qf{j}.{2 * i}.weight"] = w.clone()
                state[f"{prefix}.qf{j}.{2 * i}.bias"] = b.clone()
    pi = layer_sizes(state, "actor.latent_pi")
    qf = layer_sizes(state, "critic.qf0")[:-1]
    n_critics = policy.critic.n_critics
    policy_kwargs = {
        "net_arch": {"pi": pi, "qf": qf},
        "activation_fn": policy.activation,
        "n_critics": n_critics,
        "use_sde": False,
    }
    lr = agent.current_learning_rate
    variables: dict[str, Any] = {}
    if isinstance(agent, SAC) and agent.learns_ent_coef:
        ent_coef: Any = "auto"
        log_alpha = agent.ent_coef_module.log_value.detach().cpu().clone()
        variables["log_ent_coef"] = log_alpha
    else:
        ent_coef = float(
            agent.ent_coef if isinstance(agent, OffPolicyMDPO) else agent.initial_ent_coef
        )
    hyper = {
        "learning_rate": lr,
        "buffer_size": agent.buffer_size,
        "learning_starts": agent.learning_starts,
        "batch_size": agent.batch_size,
        "tau": agent.tau,
        "gamma": agent.gamma,
        "train_freq": agent.train_freq_steps,
        "gradient_steps": agent.gradient_steps,
        "ent_coef": ent_coef,
        "target_update_interval": getattr(agent, "target_update_interval", 1),
        "target_entropy": -float(policy.action_dim),
        "use_sde": False,
        "use_sde_at_warmup": False,
        "sde_sample_freq": -1,
    }
    n_actor = sum(1 for k in state if k.startswith("actor."))
    n_critic = sum(1 for k in state if k.startswith("critic."))
    optimizers = {
        "actor.optimizer": _adam_state(n_actor, lr, 1e-8),
        "critic.optimizer": _adam_state(n_critic, lr, 1e-8),
    }
    if "log_ent_coef" in variables:
        optimizers["ent_coef_optimizer"] = _adam_state(1, lr, 1e-8)
    return state, {"policy_kwargs": policy_kwargs, **hyper, "_variables": variables}, optimizers


def save(agent: Agent, path: str) -> str:
    """Write ``agent`` as a Stable-Baselines3 zip (``PPO.load`` / ``SAC.load`` /
    sb3-contrib ``TRPO.load`` read it).

    On-policy agents (PPO, TRPO, MDPO) become an ``ActorCriticPolicy`` (TRPO for TRPO, PPO for
    the others); SAC and off-policy MDPO a ``SACPolicy`` (MDPO's Q-networks serve as critic and
    target, its fixed λ as ``ent_coef``). Observation normalization, when on, is folded into
    the first layers (exact as long as no normalized value exceeds the ±clip, 10 by default).
    Optimizer moments start fresh.

    Args:
        agent: the agent.
        path: file path (``.zip`` appended when missing).

    Returns:
        The path written.
    """

    if not path.endswith(".zip"):
        path += ".zip"
    fold = _folded_normalization(agent)
    on_policy = isinstance(agent, (PPO, TRPO, MDPO))
    if on_policy:
        state, hyper, optimizers = _on_policy_export(agent, fold)
        variables: dict[str, Any] = {}
        policy_ref = SB3_POLICIES["on"]
    elif isinstance(agent, (SAC, OffPolicyMDPO)):
        state, hyper, optimizers = _off_policy_export(agent, fold)
        variables = hyper.pop("_variables")
        policy_ref = SB3_POLICIES["sac"]
    else:
        raise ValueError(f"{type(agent).__name__} has no Stable-Baselines3 counterpart")
    if isinstance(agent, TRPO):
        hyper = {
            k: v
            for k, v in hyper.items()
            if k not in ("n_epochs", "clip_range", "ent_coef", "vf_coef", "max_grad_norm")
        }
        hyper.update(
            batch_size=agent.batch_size,
            cg_max_steps=agent.cg_max_steps,
            cg_damping=agent.cg_damping,
            n_critic_updates=agent.n_critic_updates,
            line_search_shrinking_factor=agent.line_search_shrinking_factor,
            line_search_max_iter=agent.line_search_max_iter,
            target_kl=agent.target_kl,
            sub_sampling_factor=1,
        )
    policy_kwargs = dict(hyper.pop("policy_kwargs"))
    activation = TORCH_CLASSES[policy_kwargs["activation_fn"]]
    # the activation class pickles as a reference into torch.nn (no SB3 import needed)
    kwargs_payload = pickle.dumps(
        {**policy_kwargs, "activation_fn": getattr(torch.nn, activation)}, protocol=4
    )
    data = {
        "policy_class": _serialized(
            "<class 'abc.ABCMeta'>", _global_pickle(*policy_ref), __module__=policy_ref[0]
        ),
        "policy_kwargs": _serialized(
            "<class 'dict'>",
            kwargs_payload,
            **{k: v for k, v in policy_kwargs.items() if k != "activation_fn"},
            activation_fn=f"<class 'torch.nn.modules.activation.{activation}'>",
        ),
        "observation_space": _space_record(agent.observation_space),
        "action_space": _space_record(agent.action_space),
        "n_envs": 1,
        "num_timesteps": int(agent.num_timesteps),
        "_total_timesteps": int(agent.total_timesteps),
        "seed": agent.seed,
        "verbose": 0,
        **hyper,
    }
    members = {
        "data": json.dumps(data, indent=4).encode(),
        "policy.pth": _torch_bytes(state),
        "pytorch_variables.pth": _torch_bytes(variables),
        "_stable_baselines3_version": SB3_VERSION.encode(),
        "system_info.txt": f"- OS: {platform.platform()}\n- written by mdpo\n".encode(),
    }
    for name, optimizer_state in optimizers.items():
        members[f"{name}.pth"] = _torch_bytes(optimizer_state)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def _torch_bytes(obj: Any) -> bytes:

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


CONVERTERS["sb3"] = sys.modules[__name__]  # Agent.save_sb3 / load_sb3 find this module here
