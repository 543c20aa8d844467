"""Stable-Baselines3 model files: a safe import into mdpo agents, and an export back.

Import never unpickles: SB3 stores ``data`` as JSON in which every non-JSON value is a
``{":type:", ":serialized:" (cloudpickle), readable fields...}`` record; only the readable
fields are used, and tensors are read with ``torch.load(weights_only=True)``. Nothing from
``stable_baselines3`` is imported. The network architecture is read from the weights' shapes,
the activation from the readable ``policy_kwargs``.

Supported: SB3 ``PPO``, ``A2C`` (loaded as our ``PPO``: same policy network; continued training
uses PPO's update), ``SAC``, ``TD3`` (loaded as our ``SAC`` for inference: the deterministic
actor becomes the squashed Gaussian's mean; continued training is SAC's), and sb3-contrib's
``TRPO``. An SB3 PPO can warm-start our on-policy ``MDPO`` and an SB3 SAC our
``OffPolicyMDPO`` (``algo=`` below).
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from mdpo.agents import ALGORITHMS, MDPO, PPO, SAC, TRPO, Agent, OffPolicyMDPO
from mdpo.runners import EnvSpec
from mdpo.serialization import Archive, ModelFileError

SB3_MEMBER_LIMIT = 1 << 30  # no member of an SB3 zip is read past 1 GiB
SB3_DATA_LIMIT = 64 << 20  # the JSON ``data`` member
MAX_SPACE_SIZE = 1 << 20  # elements of an observation or action space

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


# ------------------------------------------------------------------------------------ reading
class SB3Model:
    """The readable contents of an SB3 zip: ``data`` fields, tensors, the algorithm's name.

    Args:
        path: the ``.zip`` file.

    Raises:
        ModelFileError: not a zip, a member missing, corrupt or oversized, ``data`` not JSON,
            a tensor file carrying anything but tensors, or an algorithm we cannot tell.
    """

    def __init__(self, path: str):
        with Archive(path, expected_format=None, member_limit=SB3_MEMBER_LIMIT) as archive:
            self.path = archive.path
            if archive.has("mdpo.json"):
                raise ModelFileError(f"{self.path!r} is an mdpo model file: use mdpo.load")
            for member in ("data", "policy.pth"):
                if not archive.has(member):
                    raise ModelFileError(
                        f"{self.path!r} is not a Stable-Baselines3 model (no {member!r} member)"
                    )
            try:
                self.data = json.loads(archive.read("data", SB3_DATA_LIMIT))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ModelFileError(f"'data' in {self.path!r} is not JSON: {err}") from None
            if not isinstance(self.data, dict):
                raise ModelFileError(f"'data' in {self.path!r} is not a JSON object")
            self.params = archive.tensors("policy", suffix=".pth")
            self.variables = (
                archive.tensors("pytorch_variables", suffix=".pth")
                if archive.has("pytorch_variables.pth")
                else {}
            )
        if not isinstance(self.params, dict) or not all(
            isinstance(v, torch.Tensor) for v in self.params.values()
        ):
            raise ModelFileError(f"policy.pth in {self.path!r} is not a dict of tensors")
        self.algo = self._algorithm()

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
        """A hyperparameter stored as a number, or as a constant schedule's readable text."""
        value = self.data.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, dict):  # e.g. FloatSchedule: 'ConstantSchedule(val=0.2)'
            match = re.search(r"ConstantSchedule\(val=([-+0-9.eE]+)\)", str(value))
            if match:
                return float(match.group(1))
        return None

    def space(self, key: str) -> spaces.Space:
        """The observation or action space from its readable fields."""
        entry = self.data.get(key)
        kind = entry.get(":type:", "") if isinstance(entry, dict) else ""
        try:
            if kind.endswith("spaces.box.Box'>"):
                shape = tuple(int(n) for n in entry["_shape"])
                if int(np.prod(shape)) > MAX_SPACE_SIZE:
                    raise ValueError(f"shape {shape} is too large")
                dtype = np.dtype(entry["dtype"])
                low = parse_array(entry["low"], shape).astype(dtype)
                high = parse_array(entry["high"], shape).astype(dtype)
                return spaces.Box(low, high, shape, dtype)
            if kind.endswith("spaces.discrete.Discrete'>"):
                return spaces.Discrete(int(entry["n"]), start=int(entry.get("start", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{self.path!r}: unreadable {key}: {err}") from None
        raise ModelFileError(
            f"{self.path!r}: {key} of type {kind or type(entry).__name__} is not supported "
            "(Box and Discrete are)"
        )

    def activation(self, default: str) -> str:
        """The activation named in ``policy_kwargs`` (or ``default``)."""
        kwargs = self.readable("policy_kwargs") or {}
        name = kwargs.get("activation_fn") if isinstance(kwargs, dict) else None
        if name is None:
            return default
        match = re.search(r"\.(\w+)'>$", str(name))
        if not match or match.group(1) not in TORCH_ACTIVATIONS:
            raise ModelFileError(
                f"{self.path!r}: activation {name!r} is not supported; supported: "
                f"{sorted(TORCH_ACTIVATIONS)}"
            )
        return TORCH_ACTIVATIONS[match.group(1)]

    def check_policy_kwargs(self) -> None:
        """Refuse policies whose networks we do not build (custom extractors, gSDE ...)."""
        kwargs = self.readable("policy_kwargs") or {}
        if not isinstance(kwargs, dict):
            return
        if kwargs.get("use_sde") or self.data.get("use_sde"):
            raise ModelFileError(f"{self.path!r}: gSDE policies (use_sde=True) are not supported")
        if kwargs.get("squash_output"):
            raise ModelFileError(f"{self.path!r}: squash_output=True is not supported")
        extractor = str(kwargs.get("features_extractor_class", "FlattenExtractor"))
        if "FlattenExtractor" not in extractor:
            raise ModelFileError(
                f"{self.path!r}: features extractor {extractor} is not supported (MLP policies "
                "on flat observations only)"
            )


def parse_array(text: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A NumPy array from its printed form (``'[-1. -1. -8.]'``, with ``inf``)."""
    if not isinstance(text, str) or "..." in text:
        raise ValueError(f"bounds {text!r} are not printed in full")
    values = [float(v) for v in text.replace("[", " ").replace("]", " ").split()]
    array = np.asarray(values, dtype=np.float64)
    if array.size == 1 and int(np.prod(shape)) != 1:
        array = np.full(shape, array[0])
    return array.reshape(shape)


def layer_sizes(params: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Hidden sizes of an ``nn.Sequential`` of Linear layers stored under ``prefix``."""
    sizes, index = [], 0
    while f"{prefix}.{index}.weight" in params:
        sizes.append(int(params[f"{prefix}.{index}.weight"].shape[0]))
        index += 2
    return sizes


# ------------------------------------------------------------------------------------ VecNormalize
VECNORMALIZE_LIMIT = 64 << 20


def read_vecnormalize(path: str) -> dict[str, Any]:
    """The statistics of an SB3 ``VecNormalize.save`` file, read without unpickling it.

    The file is a pickle; :func:`mdpo.safe_pickle.read_symbolic` walks its opcodes without
    importing or calling anything, and only numbers, flags and NumPy arrays (rebuilt from
    their raw bytes) are taken from it.

    Returns:
        A :meth:`mdpo.runners.Normalizer.state_dict`-style dict.

    Raises:
        ModelFileError: missing, oversized, not a VecNormalize pickle, or unreadable values.
    """
    import os

    from mdpo.safe_pickle import Call, UnsupportedPickle, as_array, read_symbolic

    if not os.path.isfile(path):
        raise ModelFileError(f"VecNormalize file {path!r} does not exist")
    if os.path.getsize(path) > VECNORMALIZE_LIMIT:
        raise ModelFileError(f"{path!r} is over {VECNORMALIZE_LIMIT} bytes")
    with open(path, "rb") as handle:
        data = handle.read(VECNORMALIZE_LIMIT + 1)
    try:
        root = read_symbolic(data)
        if not (isinstance(root, Call) and getattr(root.func, "name", "") == "VecNormalize"
                and isinstance(root.state, dict)):  # fmt: skip
            raise UnsupportedPickle("not a VecNormalize object")
        state = root.state

        def rms(key: str) -> tuple[np.ndarray, np.ndarray, float]:
            node = state[key]
            if not (isinstance(node, Call) and isinstance(node.state, dict)):
                raise UnsupportedPickle(f"{key} is not a RunningMeanStd (dict observations?)")
            stats = node.state
            return as_array(stats["mean"]), as_array(stats["var"]), float(as_array(stats["count"]))

        obs_mean, obs_var, obs_count = rms("obs_rms")
        ret_mean, ret_var, ret_count = rms("ret_rms")
        return {
            "normalize_obs": bool(state["norm_obs"]),
            "normalize_reward": bool(state["norm_reward"]),
            "gamma": float(state["gamma"]),
            "clip_obs": float(state["clip_obs"]),
            "clip_reward": float(state["clip_reward"]),
            "epsilon": float(state["epsilon"]),
            "obs_mean": torch.as_tensor(obs_mean.astype(np.float64)),
            "obs_var": torch.as_tensor(obs_var.astype(np.float64)),
            "obs_count": obs_count,
            "ret_mean": float(ret_mean),
            "ret_var": float(ret_var),
            "ret_count": ret_count,
        }
    except (UnsupportedPickle, KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path!r} is not a readable VecNormalize file: {err}") from None


# ------------------------------------------------------------------------------------ import
HYPERPARAMETERS = {  # SB3 data keys we carry over when our class has the same name
    "PPO": ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda",
            "clip_range", "ent_coef", "vf_coef", "max_grad_norm", "target_kl",
            "normalize_advantage"),
    "TRPO": ("learning_rate", "n_steps", "batch_size", "gamma", "gae_lambda", "cg_max_steps",
             "cg_damping", "line_search_shrinking_factor", "line_search_max_iter",
             "n_critic_updates", "target_kl", "normalize_advantage"),
    "A2C": ("gamma", "gae_lambda"),
    "SAC": ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma",
            "gradient_steps", "ent_coef", "target_update_interval", "target_entropy"),
    "TD3": ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma"),
}  # fmt: skip


def _hyperparameters(model: SB3Model, target: type[Agent]) -> dict[str, Any]:
    accepted = set(inspect.signature(target.__init__).parameters)
    if target.algo_name != model.algo:  # another algorithm's step sizes and schedule do not carry
        accepted &= {"gamma", "gae_lambda", "tau", "buffer_size", "batch_size"}
    found: dict[str, Any] = {}
    for key in HYPERPARAMETERS[model.algo]:
        if key not in accepted or key not in model.data:
            continue
        value = model.data[key]
        if key == "ent_coef" and isinstance(value, str):
            found[key] = value  # "auto" or "auto_0.1"
        elif key in ("target_kl",) and value is None:
            found[key] = None
        elif isinstance(value, bool):
            found[key] = value
        else:
            number = model.number(key)
            if number is not None:
                found[key] = number
    return found


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
        ModelFileError: an unreadable, unsafe, corrupt or unsupported file.
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
    params = model.params
    if on_policy:
        pi = layer_sizes(params, "mlp_extractor.policy_net")
        vf = layer_sizes(params, "mlp_extractor.value_net")
        policy_kwargs = {
            "net_arch": {"pi": pi, "vf": vf},
            "activation_fn": model.activation("tanh"),
        }
    elif model.algo == "SAC":
        pi = layer_sizes(params, "actor.latent_pi")
        qf = layer_sizes(params, "critic.qf0")[:-1]
        policy_kwargs = {
            "net_arch": {"pi": pi, "qf": qf},
            "activation_fn": model.activation("relu"),
        }
    else:  # TD3: actor.mu is the whole MLP, its last Linear the action head
        pi = layer_sizes(params, "actor.mu")[:-1]
        qf = layer_sizes(params, "critic.qf0")[:-1]
        policy_kwargs = {
            "net_arch": {"pi": pi, "qf": qf},
            "activation_fn": model.activation("relu"),
        }
    try:
        agent = target(
            "MlpPolicy", None, device=device, policy_kwargs=policy_kwargs,
            _init_setup_model=False, **hyper,
        )  # fmt: skip
        agent._set_spaces(observation_space, action_space)
        agent._setup_model()
    except ValueError as err:
        raise ModelFileError(f"{model.path!r} does not fit {target.__name__}: {err}") from err
    try:
        if on_policy:
            _load_on_policy(agent, params)
        else:
            _load_off_policy(agent, model)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelFileError(
            f"{model.path!r}: the weights do not fit the networks they describe: {err}"
        ) from None
    agent.num_timesteps = int(model.number("num_timesteps") or 0)
    if vecnormalize is not None:
        stats = read_vecnormalize(vecnormalize)
        try:
            agent.normalizer.load_state_dict(stats)
        except ValueError as err:
            raise ModelFileError(f"{vecnormalize!r} does not fit the model: {err}") from None
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
        actor_state = {k[len("actor."):]: v for k, v in params.items() if k.startswith("actor.")
                       and not k.startswith("actor.features_extractor")}  # fmt: skip
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
        log_ent_coef = (
            model.variables.get("log_ent_coef") if isinstance(model.variables, dict) else None
        )
        if agent._learn_ent_coef and isinstance(log_ent_coef, torch.Tensor):
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
    import base64

    return {":type:": kind, ":serialized:": base64.b64encode(payload).decode(), **readable}


def _space_record(space: spaces.Space) -> dict[str, Any]:
    import pickle

    readable: dict[str, Any] = {"dtype": str(space.dtype), "_shape": list(space.shape)}
    if isinstance(space, spaces.Box):
        readable.update(low=np.array2string(space.low, threshold=1 << 30),
                        high=np.array2string(space.high, threshold=1 << 30))  # fmt: skip
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
    group = {"lr": lr, "betas": (0.9, 0.999), "eps": eps, "weight_decay": 0,
             "amsgrad": False, "params": list(range(n_params))}  # fmt: skip
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
    policy_kwargs = {"net_arch": {"pi": pi, "vf": vf}, "activation_fn": policy.activation,
                     "ortho_init": True, "log_std_init": 0.0}  # fmt: skip
    lr = float(agent.lr_schedule(agent._current_progress_remaining))
    hyper = {"learning_rate": lr, "n_steps": agent.n_steps, "gamma": agent.gamma,
             "gae_lambda": agent.gae_lambda, "batch_size": getattr(agent, "batch_size", 64),
             "n_epochs": getattr(agent, "n_epochs", 10), "clip_range": 0.2, "ent_coef": 0.0,
             "vf_coef": 0.5, "max_grad_norm": 0.5, "normalize_advantage": True,
             "target_kl": None}  # fmt: skip
    if isinstance(agent, PPO):
        hyper.update(clip_range=float(agent.clip_range_schedule(1.0)), ent_coef=agent.ent_coef,
                     vf_coef=agent.vf_coef, max_grad_norm=agent.max_grad_norm,
                     target_kl=agent.target_kl)  # fmt: skip
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
    policy_kwargs = {"net_arch": {"pi": pi, "qf": qf}, "activation_fn": policy.activation,
                     "n_critics": n_critics, "use_sde": False}  # fmt: skip
    lr = float(agent.lr_schedule(agent._current_progress_remaining))
    variables: dict[str, Any] = {}
    if isinstance(agent, SAC) and agent._learn_ent_coef:
        ent_coef: Any = "auto"
        log_alpha = agent.ent_coef_module.log_value.detach().cpu().clone()
        variables["log_ent_coef"] = log_alpha
    else:
        ent_coef = float(
            agent.ent_coef if isinstance(agent, OffPolicyMDPO) else agent._ent_coef_init
        )
    hyper = {"learning_rate": lr, "buffer_size": agent.buffer_size,
             "learning_starts": agent.learning_starts, "batch_size": agent.batch_size,
             "tau": agent.tau, "gamma": agent.gamma, "train_freq": agent._train_freq_steps,
             "gradient_steps": agent.gradient_steps, "ent_coef": ent_coef,
             "target_update_interval": getattr(agent, "target_update_interval", 1),
             "target_entropy": -float(policy.action_dim), "use_sde": False,
             "use_sde_at_warmup": False, "sde_sample_freq": -1}  # fmt: skip
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
    import io
    import pickle
    import platform
    import zipfile

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
        hyper = {k: v for k, v in hyper.items() if k not in ("n_epochs", "clip_range",
                 "ent_coef", "vf_coef", "max_grad_norm")}  # fmt: skip
        hyper.update(batch_size=agent.batch_size, cg_max_steps=agent.cg_max_steps,
                     cg_damping=agent.cg_damping, n_critic_updates=agent.n_critic_updates,
                     line_search_shrinking_factor=agent.line_search_shrinking_factor,
                     line_search_max_iter=agent.line_search_max_iter, target_kl=agent.target_kl,
                     sub_sampling_factor=1)  # fmt: skip
    policy_kwargs = dict(hyper.pop("policy_kwargs"))
    activation = TORCH_CLASSES[policy_kwargs["activation_fn"]]
    # the activation class pickles as a reference into torch.nn (no SB3 import needed)
    kwargs_payload = pickle.dumps(
        {**policy_kwargs, "activation_fn": getattr(torch.nn, activation)}, protocol=4
    )
    data = {
        "policy_class": _serialized(
            "<class 'abc.ABCMeta'>", _global_pickle(*policy_ref), __module__=policy_ref[0]
        ),  # fmt: skip
        "policy_kwargs": _serialized(
            "<class 'dict'>",
            kwargs_payload,
            **{k: v for k, v in policy_kwargs.items() if k != "activation_fn"},
            activation_fn=f"<class 'torch.nn.modules.activation.{activation}'>",
        ),  # fmt: skip
        "observation_space": _space_record(agent.observation_space),
        "action_space": _space_record(agent.action_space),
        "n_envs": 1,
        "num_timesteps": int(agent.num_timesteps),
        "_total_timesteps": int(agent._total_timesteps),
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
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
