"""The learner base: what every algorithm shares, whatever it learns from.

Seeding and the random streams, the device, the learning-rate schedule, the logger, the
callback loop of :meth:`Learner.learn`, parameters, and model files (:meth:`Learner.save`,
:meth:`Learner.load`, through the algorithm registry). It knows no algorithm family: online
agents (:class:`mdpo.rl.base.Agent`) add the environment and its runner, offline learners
(:class:`mdpo.offline.learner.OfflineAgent`) the dataset, TS-DDR the optimization problem.
"""

from __future__ import annotations

import inspect
import json
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.callbacks import BaseCallback, CallbackList, ProgressBarCallback, as_callback
from mdpo.core.limits import (
    MAX_BUFFER_SIZE,
    MAX_LAYER_WIDTH,
    MAX_VEC_ENVS,
    BadFileError,
    check_env_id_from_file,
    field_float,
    field_int,
    json_object,
    mlp_parameters,
)
from mdpo.core.logger import Logger, next_run_dir
from mdpo.core.registry import ALGORITHMS
from mdpo.core.serialization import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Archive,
    ModelFileError,
    space_from_json,
    space_to_json,
    versions,
    write_archive,
)
from mdpo.core.utils import (
    LinearSchedule,
    Schedule,
    activation_name,
    check_int,
    get_device,
    make_schedule,
    set_random_seed,
)

# Constructor arguments that are not hyperparameters of the learning algorithm.
_NOT_CONFIG = {"self", "policy", "env", "device", "verbose", "tensorboard_log", "_init_setup_model"}


def json_policy_kwargs(policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Policy keyword arguments in the JSON form model files store (activations by name).

    Raises:
        ValueError: when a value cannot be described in JSON.
    """
    kwargs = dict(policy_kwargs or {})
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = activation_name(kwargs["activation_fn"])
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ValueError(
            f"policy_kwargs must be plain values (JSON), got {kwargs!r}: {err}"
        ) from None
    return kwargs


#: integer hyperparameters that size an allocation, and the most a model file may ask for
SIZE_HYPERPARAMETERS = {
    "n_steps": 1 << 24,
    "batch_size": 1 << 24,
    "n_envs": MAX_VEC_ENVS,
    "buffer_size": MAX_BUFFER_SIZE,
    "n_epochs": 1 << 16,
    "gradient_steps": 1 << 16,
    "stats_window_size": 1 << 20,
    "train_freq": 1 << 24,
    "learning_starts": 1 << 40,
    "policy_batch_size": 1 << 24,
    "n_policy_steps": 1 << 16,
    "n_critic_updates": 1 << 16,
    "cg_max_steps": 1 << 16,
    "line_search_max_iter": 1 << 16,
    "segment_length": 1 << 16,
    "context_length": 1 << 16,
    "n_pairs": 1 << 20,
    "workers": 1 << 10,
    "horizon": 1 << 20,
}


def stored_elements(tensors: Any) -> int:
    """The number of elements of every tensor in a loaded state (what the file holds)."""
    total, stack = 0, [tensors]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def check_config_from_file(
    config: dict[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    elements: int,
    where: str,
) -> None:
    """Refuse hyperparameters read from a model file that would allocate without bound.

    Sizes (:data:`SIZE_HYPERPARAMETERS`) are bounded; an env id must be registered and plain
    (:func:`mdpo.core.limits.check_env_id_from_file`); the networks that ``policy_kwargs`` and the
    other ``*_kwargs`` describe must fit in the ``elements`` the file's parameters hold: an MLP
    given by ``net_arch`` is counted exactly, any other network has at least the product of
    its two largest sizes (a layer between them) as parameters.

    Raises:
        ModelFileError: naming the file and the field.
    """

    try:
        for key, high in SIZE_HYPERPARAMETERS.items():
            if config.get(key) is not None and not isinstance(config[key], (list, dict, str)):
                # -1 is a value some take (gradient_steps=-1: as many as steps collected)
                field_int(config[key], f"config.json in {where}: {key}", -1, high)
        if config.get("env_id") is not None:
            check_env_id_from_file(config["env_id"], f"config.json in {where}: env_id")
        obs_dim = int(spaces.flatdim(observation_space))
        out_dim = int(getattr(action_space, "n", 0) or spaces.flatdim(action_space))
        for key, value in config.items():
            if not key.endswith("_kwargs") or key == "env_kwargs" or value is None:
                continue
            kwargs = json_object(value, f"config.json in {where}: {key}")
            sizes = _sizes_in(kwargs, f"config.json in {where}: a layer size in {key}")
            need = sorted(sizes)[-2] * sorted(sizes)[-1] if len(sizes) >= 2 else 0
            net_arch = kwargs.get("net_arch")
            arches = net_arch.values() if isinstance(net_arch, dict) else [net_arch]
            for arch in arches:
                if isinstance(arch, list):
                    need = max(need, mlp_parameters(obs_dim, arch, out_dim))
            if need > elements:
                raise ModelFileError(
                    f"config.json in {where}: {key} describes a network of at least {need} "
                    f"parameters, but the file holds only {elements} numbers"
                )
    except ModelFileError:
        raise
    except BadFileError as err:
        raise ModelFileError(str(err)) from None


def _sizes_in(value: Any, where: str, depth: int = 0) -> list[int]:
    """Every integer in a JSON value of ``*_kwargs``, each at most ``MAX_LAYER_WIDTH``."""
    if depth > 8:
        raise BadFileError(f"{where} nests deeper than 8 levels")
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return []
    if isinstance(value, int):  # negative integers are not sizes (e.g. a log_std_init of -1)
        return [field_int(value, where, None, MAX_LAYER_WIDTH)] if value > 0 else []
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(items, (list, type({}.values()))):
        return []
    return [size for item in items for size in _sizes_in(item, where, depth + 1)]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops before the parameters are touched."""


class Learner(ABC):
    """Base of every algorithm: device, seeding, learning-rate schedule, logging, the callback
    loop, parameters, save / load.

    Subclasses store every constructor argument under its own name (that is how the
    configuration is saved), implement :meth:`_setup_model`, :meth:`_state_modules`,
    :meth:`_learn_iteration` and :meth:`predict`, and say what they learn from with the hooks
    (:meth:`_check_can_learn`, :meth:`_on_learn_setup`, :meth:`get_env`, :meth:`set_env`).

    Args:
        policy: a policy name (a key of ``policy_aliases``) or a policy class.
        learning_rate: a float, or a schedule mapping progress remaining (1 → 0) to the rate.
        policy_kwargs: keyword arguments for the policy class.
        tensorboard_log: folder of TensorBoard runs (one ``{tb_log_name}_{K}`` folder a run).
        verbose: 0 silent, 1 training tables, 2 debug.
        seed: seed of weights and sampling; drawn at random (and stored) when ``None``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    algo_name: ClassVar[str] = "Learner"
    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (
        spaces.Box,
        spaces.Discrete,
    )
    policy_aliases: ClassVar[dict[str, type[nn.Module]]] = {}
    # algorithms that learn from an environment's transitions (``mdpo train``, sweeps)
    needs_env_runner: ClassVar[bool] = False

    def __init__(
        self,
        policy: str | type[nn.Module],
        learning_rate: float | Schedule,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
    ):
        if isinstance(policy, str):
            if policy not in self.policy_aliases:
                raise ValueError(
                    f"unknown policy {policy!r} for {self.algo_name}; "
                    f"choose one of {sorted(self.policy_aliases)}"
                )
            self.policy_class = self.policy_aliases[policy]
        elif isinstance(policy, type) and issubclass(policy, nn.Module):
            self.policy_class = policy
        else:
            raise ValueError(f"policy must be a policy name or an nn.Module class, got {policy!r}")
        self.policy_name = policy if isinstance(policy, str) else policy.__name__
        self.device = get_device(device)
        self.learning_rate = learning_rate
        self.lr_schedule = make_schedule(learning_rate, "learning_rate")
        self.policy_kwargs = json_policy_kwargs(policy_kwargs)
        self.tensorboard_log = tensorboard_log
        self.verbose = verbose
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
        self.seed = check_int(seed, "seed", minimum=0)
        set_random_seed(self.seed)
        # the learner's own stream (action noise, minibatch order), independent of the global
        # one that initialised the weights: seeding both with `seed` would make the first
        # action noise repeat the normals the first weight matrix was drawn from
        learner_seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0])
        self.rng = torch.Generator().manual_seed(learner_seed)

        self.num_timesteps = 0
        self._total_timesteps = 0
        self._num_timesteps_at_start = 0
        self._n_updates = 0
        self._iteration = 0
        self._current_progress_remaining = 1.0
        self._start_time = time.time_ns()
        self.logger = Logger(verbose=verbose)
        self.observation_space: spaces.Space | None = None
        self.action_space: spaces.Space | None = None

    # ----------------------------------------------------------------------------- set-up
    def _set_spaces(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        """Check the spaces this algorithm supports and keep them."""
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(
                f"{self.algo_name} supports Box observation spaces; the env has {observation_space}"
            )
        if not isinstance(action_space, self.supported_action_spaces):
            names = ", ".join(s.__name__ for s in self.supported_action_spaces)
            raise ValueError(
                f"{self.algo_name} supports {names} action spaces; the env has {action_space}"
            )
        self.observation_space, self.action_space = observation_space, action_space
        self._on_spaces_set()

    def build_for_spaces(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        """Take these spaces and build the networks and optimizers for them: how a loader (a
        model file, a Stable-Baselines3 zip) makes a learner without its env or data."""
        self._set_spaces(observation_space, action_space)
        self._setup_model()

    @property
    def current_learning_rate(self) -> float:
        """The learning rate at the current progress of training."""
        return float(self.lr_schedule(self._current_progress_remaining))

    @property
    def total_timesteps(self) -> int:
        """The budget of the current (or last) :meth:`learn`, in timesteps."""
        return self._total_timesteps

    def _finish_init(self, init_setup_model: bool) -> None:
        """The end of every algorithm's ``__init__``, once its own attributes are set: the
        checks that need them, then the model (unless a loader builds it). The base classes
        read no subclass attribute before this point."""
        if init_setup_model:
            self._setup_model()

    @property
    def timesteps_per_iteration(self) -> int:
        """Timesteps one iteration of :meth:`learn` takes (a budget is rounded up to whole
        iterations)."""
        return 1

    @property
    def planned_timesteps(self) -> int:
        """Where the current :meth:`learn` ends: its budget rounded up to whole iterations."""
        start, size = self._num_timesteps_at_start, self.timesteps_per_iteration
        return start + -(-(self._total_timesteps - start) // size) * size

    def _on_spaces_set(self) -> None:  # noqa: B027 - optional hook
        """What depends on the spaces (an online agent's observation normalizer)."""

    def _generators(self) -> dict[str, torch.Generator]:
        """The random generators training draws from, by name (saved in model files)."""
        return {"agent": self.rng}

    @abstractmethod
    def _setup_model(self) -> None:
        """Build networks and optimizers (the spaces are known)."""

    @abstractmethod
    def _state_modules(self) -> dict[str, Any]:
        """Modules and optimizers (anything with ``state_dict``) saved in model files, by name."""

    @abstractmethod
    def _learn_iteration(self, callback: BaseCallback, log_interval: int) -> bool:
        """One iteration (a rollout and its update, or a gradient step); False stops."""

    # ------------------------------------------------------------------- what it learns from
    def _check_can_learn(self) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` when the learner lacks what it learns from (env, dataset...)."""

    def _on_learn_setup(self, reset_num_timesteps: bool) -> None:  # noqa: B027 - optional hook
        """Prepare the data source at the start of :meth:`learn` (e.g. reset the envs)."""

    def get_env(self) -> Any:
        """What the learner learns from (an env, a dataset, a problem), or ``None``."""
        return None

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """Learn from ``env`` from now on."""
        raise ValueError(f"{self.algo_name} learns from no environment")

    def _normalize_observation(self, obs: np.ndarray) -> np.ndarray:
        """Observations as the policy takes them (online agents apply their statistics)."""
        return obs

    def _normalizer_state(self) -> dict[str, Any]:
        """The observation and reward statistics saved in model files (none by default)."""
        return {}

    def _load_normalizer_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore :meth:`_normalizer_state` (nothing to restore by default)."""

    # ----------------------------------------------------------------------------- learning
    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> Learner:
        """Train for ``total_timesteps`` environment steps.

        Args:
            total_timesteps: env transitions to collect (summed over the envs).
            callback: a callback, a list of callbacks, or a function ``f(locals, globals)``.
            log_interval: dump logs every this many iterations.
            tb_log_name: TensorBoard run name (default the algorithm's name).
            reset_num_timesteps: start counting at 0; False continues a previous run (the
                budget is then added to the steps already taken, as SB3).
            progress_bar: show a progress bar.

        Returns:
            The agent.
        """
        check_int(total_timesteps, "total_timesteps")
        check_int(log_interval, "log_interval", minimum=0)
        self._check_can_learn()
        self._setup_learn(total_timesteps, reset_num_timesteps, tb_log_name or self.algo_name)
        callbacks = [c for c in [as_callback(callback)] if c is not None]
        if progress_bar:
            callbacks.append(ProgressBarCallback())
        callback_list = CallbackList(callbacks)
        callback_list.init_callback(self)
        callback_list.on_training_start(locals(), globals())
        try:
            while self.num_timesteps < self._total_timesteps:
                if not self._learn_iteration(callback_list, log_interval):
                    break
        finally:
            callback_list.on_training_end()
            self.logger.close()
        return self

    def _setup_learn(self, total_timesteps: int, reset_num_timesteps: bool, tb_log_name: str):
        self._start_time = time.time_ns()
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._n_updates = 0
            self._iteration = 0
            self._total_timesteps = total_timesteps
        else:
            self._total_timesteps = total_timesteps + self.num_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        self._on_learn_setup(reset_num_timesteps)
        folder = None
        if self.tensorboard_log is not None:
            folder = next_run_dir(self.tensorboard_log, tb_log_name, not reset_num_timesteps)
        self.logger = Logger(folder, self.verbose)

    def _update_learning_rate(
        self, *optimizers: Any, lr: float | None = None, key: str = "train/learning_rate"
    ) -> float:
        """Set every parameter group of ``optimizers`` to ``lr`` (default: the schedule's rate
        now) and log it under ``key``; returns the rate."""
        lr = self.current_learning_rate if lr is None else float(lr)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.logger.record(key, lr)
        return lr

    def _record_time(self, rate_key: str | None = None) -> None:
        """Log the time elapsed, the timesteps so far and (under ``rate_key``) their rate."""
        elapsed = max((time.time_ns() - self._start_time) / 1e9, 1e-9)
        self.logger.record("time/time_elapsed", int(elapsed))
        self.logger.record("time/total_timesteps", self.num_timesteps)
        if rate_key is not None:
            rate = (self.num_timesteps - self._num_timesteps_at_start) / elapsed
            self.logger.record(rate_key, int(rate))

    def _update_progress(self) -> None:
        self._current_progress_remaining = 1.0 - self.num_timesteps / max(self._total_timesteps, 1)

    def _check_finite(self, values: dict[str, torch.Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` naming the loss and the step when one is not finite."""
        for name, value in values.items():
            if not bool(torch.isfinite(value).all()):
                raise NonFiniteLossError(
                    f"{self.algo_name}: {name} is not finite ({value.detach().cpu().tolist()}) at "
                    f"timestep {self.num_timesteps} (iteration {self._iteration}, update "
                    f"{self._n_updates}); training stopped before applying it"
                )

    # ----------------------------------------------------------------------------- acting
    @abstractmethod
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """The policy's action for one observation or a batch, and the next ``state``."""

    def _obs_to_tensor(self, observation: np.ndarray) -> tuple[torch.Tensor, bool]:
        obs = np.asarray(observation, dtype=np.float32)
        shape = self.observation_space.shape
        if obs.shape == shape:
            batched = False
            obs = obs[None]
        elif obs.shape[1:] == shape:
            batched = True
        else:
            raise ValueError(
                f"observation of shape {obs.shape} does not match the observation space "
                f"{shape} (single) or (batch, *{shape})"
            )
        obs = self._normalize_observation(obs)
        return torch.from_numpy(obs.reshape(obs.shape[0], -1)).to(self.device), batched

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        """The policy's batch of actions as the env takes them (Box: clipped to the bounds)."""
        if isinstance(self.action_space, spaces.Box):
            action = action.reshape(-1, *self.action_space.shape)
            return np.clip(action, self.action_space.low, self.action_space.high)
        if isinstance(self.action_space, spaces.Discrete):
            return action + self.action_space.start
        return action

    # ----------------------------------------------------------------------------- parameters
    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """State dicts of the policy and optimizers, by name (as SB3's ``get_parameters``)."""
        return {name: module.state_dict() for name, module in self._state_modules().items()}

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, dict[str, Any]],
        exact_match: bool = True,
        device: str | torch.device = "auto",
    ) -> None:
        """Load parameters from a dict of state dicts or a model file.

        Args:
            load_path_or_dict: a dict as :meth:`get_parameters` returns, or a model file.
            exact_match: require every module to be present with exactly the same keys.
            device: unused (tensors go to the agent's device); SB3 compatibility.
        """
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            with Archive(load_path_or_dict) as archive:
                params = archive.tensors("parameters", self.device)
        modules = self._state_modules()
        if exact_match and set(params) != set(modules):
            raise ValueError(
                f"parameters have modules {sorted(params)}, expected {sorted(modules)}"
            )
        for name, state in params.items():
            if name not in modules:
                raise ValueError(
                    f"unknown module {name!r} in parameters; expected {sorted(modules)}"
                )
            try:
                if isinstance(modules[name], nn.Module):
                    modules[name].load_state_dict(state, strict=exact_match)
                else:  # an optimizer
                    modules[name].load_state_dict(state)
            except (RuntimeError, ValueError, KeyError) as err:
                raise ValueError(f"parameters of {name!r} do not fit this agent: {err}") from None

    # ----------------------------------------------------------------------------- save / load
    def _config(self) -> dict[str, Any]:
        """Constructor hyperparameters as JSON (schedules by description or start value)."""
        config: dict[str, Any] = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name in _NOT_CONFIG or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if isinstance(value, LinearSchedule):
                value = value.to_json()
            elif callable(value):
                value = float(value(self._current_progress_remaining))
            config[name] = value
        return config

    def save(self, path: str) -> str:
        """Save the agent to a zip of JSON and torch state dicts (nothing pickled).

        Args:
            path: file path (``.zip`` appended when missing).

        Returns:
            The path written.
        """
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "algo": self.algo_name}
        meta["versions"] = versions()
        state = {
            "num_timesteps": self.num_timesteps,
            "n_updates": self._n_updates,
            "iteration": self._iteration,
            "total_timesteps": self._total_timesteps,
            "progress_remaining": self._current_progress_remaining,
            "seed": self.seed,
        }
        spaces_json = {
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
        }
        tensors: dict[str, Any] = {
            "parameters": self.get_parameters(),
            "normalizer": self._normalizer_state(),
        }
        # training draws its randomness (action noise, minibatches) from these generators only
        tensors["rng"] = {name: gen.get_state() for name, gen in self._generators().items()}
        json_parts = {
            "mdpo": meta,
            "config": {"policy": self.policy_name, **self._config()},
            "spaces": spaces_json,
            "state": state,
        }
        return write_archive(path, json_parts, tensors)

    @classmethod
    def load(
        cls,
        path: str,
        env: Any = None,
        device: str | torch.device = "auto",
        custom_objects: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Learner:
        """Load an agent saved by :meth:`save`.

        Args:
            path: the model file.
            env: an env to continue training on (its spaces must match), or ``None``.
            device: where to put the networks.
            custom_objects: hyperparameters to override (SB3 compatibility), as ``kwargs``.
            **kwargs: hyperparameters to override.

        Raises:
            ModelFileError: corrupt or foreign file, or one saved by another algorithm.
        """
        with Archive(path) as archive:
            algo = archive.meta.get("algo")
            if not isinstance(algo, str) or len(algo) > 40:
                raise ModelFileError(f"mdpo.json in {archive.path!r}: algo must be a name")
            target = cls
            if cls is Learner or getattr(cls, "__abstractmethods__", None):
                if algo not in ALGORITHMS:
                    raise ModelFileError(f"{archive.path!r} holds an unknown algorithm {algo!r}")
                target = ALGORITHMS[algo]
            elif algo != cls.algo_name:
                raise ModelFileError(
                    f"{archive.path!r} holds a {algo} agent, not {cls.algo_name}; "
                    f"use mdpo.{algo}.load or mdpo.load"
                )
            config = json_object(archive.json("config"), f"config.json in {archive.path!r}")
            spaces_json = json_object(archive.json("spaces"), f"spaces.json in {archive.path!r}")
            state = json_object(archive.json("state"), f"state.json in {archive.path!r}")
            params = archive.tensors("parameters", "cpu")
            normalizer = archive.tensors("normalizer")
            rng = archive.tensors("rng") if archive.has("rng.pt") else None
        where = f"{archive.path!r}"
        observation_space = space_from_json(
            spaces_json.get("observation_space"), f"spaces.json in {where}: observation_space"
        )
        action_space = space_from_json(
            spaces_json.get("action_space"), f"spaces.json in {where}: action_space"
        )
        check_config_from_file(
            config, observation_space, action_space, stored_elements(params), where
        )
        try:
            config = dict(config)
            policy = config.pop("policy")
            for name, value in list(config.items()):
                if isinstance(value, dict) and value.get("schedule") == "linear":
                    config[name] = LinearSchedule.from_json(value)
            # env_kwargs go to gymnasium.make: take them from the caller, never from the file;
            # nor does a file choose where logs go or which device runs
            config.pop("env_kwargs", None)
            for key in _NOT_CONFIG:
                config.pop(key, None)
            config.update(custom_objects or {})
            config.update(kwargs)
            agent = target(policy, None, device=device, _init_setup_model=False, **config)
            agent.build_for_spaces(observation_space, action_space)
            agent._load_normalizer_state(normalizer)
            agent.set_parameters(params, exact_match=True)
            counters = f"state.json in {where}"
            agent.num_timesteps = field_int(
                state.get("num_timesteps"), f"{counters}: num_timesteps", 0, 2**62
            )
            agent._n_updates = field_int(state.get("n_updates"), f"{counters}: n_updates", 0, 2**62)
            agent._iteration = field_int(state.get("iteration"), f"{counters}: iteration", 0, 2**62)
            agent._total_timesteps = field_int(
                state.get("total_timesteps"), f"{counters}: total_timesteps", 0, 2**62
            )
            agent._current_progress_remaining = field_float(
                state.get("progress_remaining"), f"{counters}: progress_remaining"
            )
            if rng is not None:
                for name, generator in agent._generators().items():
                    if name in rng:
                        generator.set_state(rng[name].cpu())
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            if isinstance(err, BadFileError):
                raise ModelFileError(str(err)) from None
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ModelFileError(
                f"{path!r} does not describe a valid {algo} agent: {reason}"
            ) from None
        if env is not None:
            agent.set_env(env)
        return agent
