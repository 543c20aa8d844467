"""TS-DDR: two-stage deep decision rules trained through Lagrangian duality (Rosemberg, Street,
Valladão, Van Hentenryck, arXiv 2405.14973), and TS-LDR, its linear baseline.

A decision rule maps the uncertainty seen so far (and optionally the state) to a target state
``x̂_t`` for every stage. Training, per gradient step, on a batch of sampled scenarios:

- forward: the targets of each scenario; the ``T``-stage deterministic equivalent of the
  scenario with ``x_t + δ⁺_t − δ⁻_t = x̂_t`` and ``C·‖δ_t‖₁`` in the cost is solved (scenarios of
  the batch in parallel worker processes);
- backward: the optimal cost's derivative with respect to ``x̂_t`` is the dual ``λ_t`` of the
  target row (envelope theorem), so ``∇_θ cost = Σ_t λ_t·∂x̂_t/∂θ`` is backpropagated through
  the rule (:class:`TargetCost`); Adam on the batch mean.

Evaluation is non-anticipative, stage by stage (:func:`mdpo.rules.multistage.simulate_stagewise`):
each stage problem sees the actual incoming state, the stage's uncertainty and the rule's target
for that stage; the reported cost leaves out the slack penalty.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.callbacks import BaseCallback, as_callback
from mdpo.core.learner import Learner
from mdpo.core.limits import (
    MAX_BUFFER_SIZE,
    MAX_NETWORK_PARAMETERS,
    dumps_json,
    field_int,
    inside,
)
from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_int, check_number, write_text_atomic
from mdpo.rules.backend import SolverPool
from mdpo.rules.multistage import (
    MultiStageProblem,
    TargetSolve,
    check_targets,
    simulate_stagewise,
    solve_with_targets,
    target_selection,
)


# ----------------------------------------------------------------------------- decision rules
class DecisionRule(nn.Module):
    """Base of the rules: observation layout ``[state (S), noise (U), t / T]`` and scales.

    Args:
        observation_space: ``Box`` of ``[state, noise, stage fraction]``; its bounds scale the
            rule's inputs (state by its range, noise by its upper bound).
        action_space: ``Box(-1, 1, (S,))``: targets scaled into the state range.
        n_stages: the horizon ``T``.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, n_stages: int):
        super().__init__()
        self.state_dim = int(action_space.shape[0])
        self.noise_dim = int(observation_space.shape[0]) - self.state_dim - 1
        if self.noise_dim < 1:
            raise ValueError(
                f"observation space {observation_space} is not [state "
                f"({self.state_dim}), noise, stage fraction]"
            )
        self.n_stages = int(n_stages)
        low, high = observation_space.low, observation_space.high
        s, u = self.state_dim, self.noise_dim
        self.register_buffer("state_low", torch.as_tensor(low[:s], dtype=torch.float32))
        self.register_buffer("state_high", torch.as_tensor(high[:s], dtype=torch.float32))
        noise_scale = np.where(high[s : s + u] > 0, high[s : s + u], 1.0)
        self.register_buffer("noise_scale", torch.as_tensor(noise_scale, dtype=torch.float32))

    def scaled_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return noise / self.noise_scale

    def scaled_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_low) / (self.state_high - self.state_low).clamp_min(1e-12)

    def targets(self, noise: torch.Tensor, initial_state: torch.Tensor) -> torch.Tensor:
        """``[B, T, S]`` targets of whole scenarios ``noise`` ``[B, T, U]`` (training)."""
        raise NotImplementedError

    def initial_memory(self, batch: int) -> tuple[torch.Tensor, ...]:
        """What :meth:`step` remembers between stages, at the start of a scenario."""
        raise NotImplementedError

    def step(
        self, memory: tuple[torch.Tensor, ...], t: int, state: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Targets ``[B, S]`` of stage ``t`` from the incoming state and the stage's noise."""
        raise NotImplementedError

    memory_batch_dim = 0  # the batch dimension of the memory tensors

    def reset_memory(self, memory: tuple[torch.Tensor, ...], starts: torch.Tensor):
        """``memory`` with the scenarios flagged in ``starts`` ``[B]`` (bool) started afresh."""
        fresh = self.initial_memory(len(starts))
        shape = [1] * memory[0].dim()
        shape[self.memory_batch_dim] = len(starts)
        mask = starts.reshape(shape)
        return tuple(torch.where(mask, f, m) for f, m in zip(fresh, memory))


class LSTMRule(DecisionRule):
    """The paper's rule: stacked LSTMs over the noise sequence, the same weights at every
    stage, ``U → 32 → 32 → S`` by default; the last layer's output (in (−1, 1)) times
    ``output_scale`` is the target (the paper uses it as is).

    Args:
        observation_space, action_space, n_stages: see :class:`DecisionRule`.
        hidden_sizes: sizes of the LSTM layers before the last ((32, 32)).
        output_scale: factor on the last layer's output (1).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        n_stages: int,
        hidden_sizes: tuple[int, ...] | list[int] = (32, 32),
        output_scale: float = 1.0,
    ):
        super().__init__(observation_space, action_space, n_stages)
        sizes = [self.noise_dim, *[int(h) for h in hidden_sizes], self.state_dim]
        self.layers = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.output_scale = float(output_scale)

    memory_batch_dim = 1  # (h, c) of each layer: [1, B, hidden]

    def _run(self, x: torch.Tensor, memory: tuple[torch.Tensor, ...] | None):
        new_memory = []
        for i, layer in enumerate(self.layers):
            hc = None if memory is None else (memory[2 * i], memory[2 * i + 1])
            x, (h, c) = layer(x, hc)
            new_memory += [h, c]
        return x * self.output_scale, tuple(new_memory)

    def targets(self, noise, initial_state):
        return self._run(self.scaled_noise(noise), None)[0]

    def initial_memory(self, batch):
        device = self.noise_scale.device
        memory = []
        for layer in self.layers:
            zeros = torch.zeros(1, batch, layer.hidden_size, device=device)
            memory += [zeros, zeros.clone()]
        return tuple(memory)

    def step(self, memory, t, state, noise):
        out, memory = self._run(self.scaled_noise(noise)[:, None], memory)
        return out[:, 0], memory


class StateRule(LSTMRule):
    """State-conditioned rule (the later version of TS-DDR): LSTMs over the noise, then a
    feed-forward head on ``[LSTM output, scaled previous state]`` and a sigmoid into the state
    range. In training the previous state is the previous target (the deterministic
    equivalent follows the targets up to the slack); in simulation, the actual state.

    With ``reachable_gain`` ``g`` (the "strict" variant) the sigmoid maps into the interval a
    stage can reach, ``[low, min(high, x_{t-1} + g·w_t)]`` (for hydro ``g = K``: a reservoir
    can always spill down to empty, and fill at most by its own inflow, upstream water aside),
    so that every target is feasible; trained with a slack penalty above the value of water,
    the deterministic equivalent then follows the targets exactly and has no foresight to
    exploit, which is what the stage-by-stage evaluation sees.

    Args:
        observation_space, action_space, n_stages: see :class:`DecisionRule`.
        hidden_sizes: sizes of the LSTM layers ((32, 32)).
        head_sizes: hidden sizes of the head ((32,)).
        reachable_gain: ``g`` above (needs as many noise as state components), or ``None``.
    """

    def __init__(
        self,
        observation_space,
        action_space,
        n_stages: int,
        hidden_sizes: tuple[int, ...] | list[int] = (32, 32),
        head_sizes: tuple[int, ...] | list[int] = (32,),
        reachable_gain: float | None = None,
    ):
        DecisionRule.__init__(self, observation_space, action_space, n_stages)
        if reachable_gain is not None and self.noise_dim != self.state_dim:
            raise ValueError(
                f"reachable_gain needs one noise component per state component, "
                f"got {self.noise_dim} and {self.state_dim}"
            )
        self.reachable_gain = None if reachable_gain is None else float(reachable_gain)
        sizes = [self.noise_dim, *[int(h) for h in hidden_sizes]]
        self.layers = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.output_scale = 1.0
        dims = [sizes[-1] + self.state_dim, *[int(h) for h in head_sizes], self.state_dim]
        head: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            head += [nn.Linear(a, b), nn.Tanh()]
        self.head = nn.Sequential(*head[:-1])

    def _target(self, features: torch.Tensor, state: torch.Tensor, noise: torch.Tensor):
        z = self.head(torch.cat([features, self.scaled_state(state)], dim=-1))
        high = self.state_high
        if self.reachable_gain is not None:
            high = torch.minimum(high, state + self.reachable_gain * noise)
        return self.state_low + torch.sigmoid(z) * (high - self.state_low)

    def targets(self, noise, initial_state):
        features = self._run(self.scaled_noise(noise), None)[0]
        previous = initial_state.expand(noise.shape[0], self.state_dim)
        out = []
        for t in range(noise.shape[1]):
            previous = self._target(features[:, t], previous, noise[:, t])
            out.append(previous)
        return torch.stack(out, dim=1)

    def step(self, memory, t, state, noise):
        features, memory = self._run(self.scaled_noise(noise)[:, None], memory)
        return self._target(features[:, 0], state, noise), memory


class LinearRule(DecisionRule):
    """TS-LDR: ``x̂_t = b_t + Σ_{τ<=t} A_{t,τ}·w_τ`` (one linear map per stage over the noise
    history, scaled noise), initialised at zero.

    Args:
        observation_space, action_space, n_stages: see :class:`DecisionRule`.
    """

    def __init__(self, observation_space, action_space, n_stages: int):
        super().__init__(observation_space, action_space, n_stages)
        t, s, u = self.n_stages, self.state_dim, self.noise_dim
        self.weight = nn.Parameter(torch.zeros(t, t, s, u))
        self.bias = nn.Parameter(torch.zeros(t, s))
        self.register_buffer("causal", torch.tril(torch.ones(t, t))[:, :, None, None])

    def targets(self, noise, initial_state):
        w = self.scaled_noise(noise)
        return self.bias + torch.einsum("tksu,bku->bts", self.weight * self.causal, w)

    def initial_memory(self, batch):
        return (torch.zeros(batch, self.n_stages, self.noise_dim, device=self.bias.device),)

    def step(self, memory, t, state, noise):
        history = memory[0].clone()
        history[:, t] = self.scaled_noise(noise)
        weight = self.weight[t, : t + 1]  # [t+1, S, U]
        return self.bias[t] + torch.einsum("ksu,bku->bs", weight, history[:, : t + 1]), (history,)


# ----------------------------------------------------------------------------- the gradient
class TargetCost(torch.autograd.Function):
    """Optimal costs ``[B]`` of the deterministic equivalents with targets ``[B, T, S]``; the
    backward pass returns the target rows' duals (``d cost / d x̂``)."""

    @staticmethod
    def forward(ctx, targets: torch.Tensor, solve, holder: dict) -> torch.Tensor:
        result: TargetSolve = solve(targets.detach().cpu().double().numpy())
        holder["result"] = result
        duals = torch.as_tensor(result.target_duals, dtype=targets.dtype, device=targets.device)
        ctx.save_for_backward(duals)
        return torch.as_tensor(result.cost, dtype=targets.dtype, device=targets.device)

    @staticmethod
    def backward(ctx, grad_cost: torch.Tensor):
        (duals,) = ctx.saved_tensors
        return grad_cost[:, None, None] * duals, None, None


def target_cost(targets: torch.Tensor, solve) -> tuple[torch.Tensor, TargetSolve]:
    """``(costs [B] with the dual gradient, the solve's results)``; ``solve`` maps numpy
    targets ``[B, T, S]`` to a :class:`~mdpo.rules.multistage.TargetSolve`."""
    holder: dict[str, TargetSolve] = {}
    cost = TargetCost.apply(targets, solve, holder)
    return cost, holder["result"]


# ----------------------------------------------------------------------------- the agent
def resolve_problem(env: Any, env_kwargs: dict[str, Any] | None) -> MultiStageProblem:
    """The problem of ``env``: a :class:`MultiStageProblem`, or an env (or env id) whose
    ``target_problem()`` gives one (``HydroDispatch-v0``)."""
    if isinstance(env, MultiStageProblem):
        return env
    if isinstance(env, str):
        try:
            env = gym.make(env, **(env_kwargs or {}))
        except gym.error.Error as err:
            raise ValueError(f"unknown env {env!r}: {err}") from None
    target_problem = getattr(getattr(env, "unwrapped", env), "target_problem", None)
    if not callable(target_problem):
        raise ValueError(
            f"TS-DDR trains on a MultiStageProblem or an env with target_problem() "
            f"(e.g. HydroDispatch-v0); got {env!r}"
        )
    return target_problem()


def problem_spaces(problem: MultiStageProblem) -> tuple[spaces.Box, spaces.Box]:
    """``(observation, action)`` spaces: ``[state, noise, t / T]`` and targets in [-1, 1]."""
    low = np.concatenate([problem.state_low, np.zeros(problem.noise_dim), [0.0]])
    high = np.concatenate([problem.state_high, problem.noise_high, [1.0]])
    observation = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
    return observation, spaces.Box(-1.0, 1.0, (problem.state_dim,), dtype=np.float32)


@register_algorithm
class TSDDR(Learner):
    """TS-DDR (``policy="LSTMPolicy"`` or ``"StatePolicy"``) and TS-LDR (``"LinearPolicy"``).

    A "timestep" of :meth:`learn` is one gradient step on a batch of ``batch_size`` scenarios.

    Args:
        policy: ``"LSTMPolicy"`` (the paper's), ``"StatePolicy"`` (state-conditioned, sigmoid
            into the state range) or ``"LinearPolicy"`` (TS-LDR).
        env: a :class:`~mdpo.rules.multistage.MultiStageProblem`, or an env or env id whose
            ``target_problem()`` gives one (``"HydroDispatch-v0"`` with ``env_kwargs``).
        learning_rate: Adam's learning rate or a schedule (1e-3, the paper's).
        batch_size: scenarios per gradient step (4; the paper used 1).
        workers: solvers of the scenarios of a batch (1 with the local backend: in this
            process).
        solver_backend: ``"local"`` (worker processes here) or ``"ray"`` (Ray actors on the
            cluster at ``ray_address``, or a Ray instance started here); not saved with the
            model: a loaded agent solves locally unless told otherwise.
        ray_address: the Ray cluster of ``solver_backend="ray"`` (its nodes need mdpo).
        max_grad_norm: clip the gradient's norm (``None``: no clipping).
        eval_freq: gradient steps between evaluations (0: never).
        eval_scenarios: scenarios of each evaluation (stage by stage, non-anticipative).
        eval_seed: seed of the evaluation scenarios (keep it apart from those a final result is
            reported on: the best model is chosen on these).
        best_model_path: where to save the agent when an evaluation improves (or ``None``).
            A saved agent stores it relative to the folder it is saved into (only if it lies
            inside); :meth:`load` resolves it against the folder of the file loaded, and
            refuses one that leads out of it. An agent loaded by :func:`mdpo.load` has none.
        n_stages: the horizon (taken from the problem; needed to load a model without one).
        env_kwargs, policy_kwargs, tensorboard_log, verbose, seed, device: see
            :class:`~mdpo.core.learner.Learner`.
    """

    algo_name = "TSDDR"
    policy_aliases = {"LSTMPolicy": LSTMRule, "StatePolicy": StateRule, "LinearPolicy": LinearRule}
    needs_env_runner = False

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: Any,
        learning_rate: float | Schedule = 1e-3,
        batch_size: int = 4,
        workers: int = 1,
        solver_backend: str = "local",
        ray_address: str | None = None,
        max_grad_norm: float | None = None,
        eval_freq: int = 100,
        eval_scenarios: int = 100,
        eval_seed: int = 1,
        best_model_path: str | None = None,
        n_stages: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
        _init_setup_model: bool = True,
    ):
        self.batch_size = check_int(batch_size, "batch_size")
        self.workers = check_int(workers, "workers")
        if solver_backend not in ("local", "ray"):
            raise ValueError(f"solver_backend must be 'local' or 'ray', not {solver_backend!r}")
        self.solver_backend, self.ray_address = solver_backend, ray_address
        if max_grad_norm is not None:
            check_number(max_grad_norm, "max_grad_norm", positive=True)
        self.max_grad_norm = max_grad_norm
        self.eval_freq = check_int(eval_freq, "eval_freq", minimum=0)
        self.eval_scenarios = check_int(eval_scenarios, "eval_scenarios")
        self.eval_seed = check_int(eval_seed, "eval_seed", minimum=0)
        self._from_file = not _init_setup_model  # built by a loader from a file's config
        # a path read from a file is never used as it is: TSDDR.load resolves it inside the
        # folder of the file (a tampered checkpoint must not write anywhere)
        self._best_model_in_file = best_model_path if self._from_file else None
        self.best_model_path = None if self._from_file else best_model_path
        self._save_folder: str | None = None
        super().__init__(
            policy,
            learning_rate,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.env_kwargs = env_kwargs
        self.problem: MultiStageProblem | None = None
        self.n_stages = None if n_stages is None else check_int(n_stages, "n_stages")
        if self._from_file:
            # sizes that decide allocations (the rule's weights, the evaluation scenarios)
            stages = field_int(n_stages, "config.json: n_stages", 1, MAX_BUFFER_SIZE)
            field_int(
                self.eval_scenarios * stages,
                "config.json: eval_scenarios × n_stages",
                1,
                MAX_BUFFER_SIZE,
            )
            field_int(
                self.batch_size * stages, "config.json: batch_size × n_stages", 1, MAX_BUFFER_SIZE
            )
        self.best_eval_cost = float("inf")
        self._pool = None
        self._eval_noise: tuple[tuple[int, int], np.ndarray] | None = None
        if env is not None:
            self.set_problem(env)
        if _init_setup_model and self.observation_space is not None:
            self._setup_model()

    def set_problem(self, env: Any) -> None:
        """Train on ``env`` (a problem, or an env with ``target_problem()``) from now on."""
        problem = resolve_problem(env, self.env_kwargs)
        observation_space, action_space = problem_spaces(problem)
        if self.observation_space is not None and (
            self.observation_space != observation_space or self.n_stages != problem.n_stages
        ):
            raise ValueError(
                f"the problem {problem.name!r} ({problem.n_stages} stages, "
                f"{observation_space}) does not fit this agent ({self.n_stages} "
                f"stages, {self.observation_space})"
            )
        if self.n_stages is not None and self.n_stages != problem.n_stages:
            raise ValueError(f"n_stages={self.n_stages} but the problem has {problem.n_stages}")
        self.problem, self.n_stages = problem, problem.n_stages
        self._eval_noise = None
        self.close()
        if self.observation_space is None:
            self._set_spaces(observation_space, action_space)

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """The same as :meth:`set_problem` (the base class's name)."""
        self.set_problem(env)

    def get_env(self) -> MultiStageProblem | None:
        """The problem trained on."""
        return self.problem

    def _setup_model(self) -> None:
        if self.n_stages is None:
            raise ValueError("TSDDR needs a problem (env=) or n_stages to build its policy")
        if self._from_file:  # counted on the meta device first: nothing is allocated
            with torch.device("meta"):
                sizes = self.policy_class(
                    self.observation_space, self.action_space, self.n_stages, **self.policy_kwargs
                )
            count = sum(t.numel() for t in [*sizes.parameters(), *sizes.buffers()])
            field_int(
                count,
                "config.json: the rule's parameters (n_stages, policy_kwargs)",
                0,
                MAX_NETWORK_PARAMETERS,
            )
        rule = self.policy_class(
            self.observation_space, self.action_space, self.n_stages, **self.policy_kwargs
        )
        self.policy = rule.to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr_schedule(1.0))

    def _state_modules(self) -> dict[str, Any]:
        return {"policy": self.policy, "policy.optimizer": self.optimizer}

    # ----------------------------------------------------------------------------- files
    def _config(self) -> dict[str, Any]:
        config = super()._config()
        # where a run solved is not part of the model (a file must not send work to a cluster)
        config.pop("solver_backend", None)
        config.pop("ray_address", None)
        config["best_model_path"] = self._relative_best_model_path()
        return config

    def _relative_best_model_path(self) -> str | None:
        """``best_model_path`` relative to the folder being saved into, or ``None`` when it
        lies outside it (a run's files hold no path out of the run folder)."""
        if self.best_model_path is None:
            return None
        folder = os.path.realpath(self._save_folder or os.getcwd())
        best = os.path.realpath(self.best_model_path)
        if os.path.commonpath([folder, best]) != folder or best == folder:
            return None
        return os.path.relpath(best, folder)

    def save(self, path: str) -> str:
        """Save the agent (see :meth:`Learner.save`); ``best_model_path`` is stored relative to
        the folder of ``path``."""
        self._save_folder = os.path.dirname(os.path.abspath(path))
        try:
            return super().save(path)
        finally:
            self._save_folder = None

    @classmethod
    def load(
        cls,
        path: str,
        env: Any = None,
        device: str | torch.device = "auto",
        custom_objects: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TSDDR:
        """Load a TS-DDR agent (see :meth:`Learner.load`). The best model path the file holds
        is resolved against the folder of ``path`` (a copied run folder writes into the
        copy); ``best_model_path=`` given here replaces it.

        Raises:
            ModelFileError: a corrupt file; :class:`~mdpo.core.limits.BadFileError`: a best model
                path that is absolute or leads out of the folder.
        """
        overrides = {**(custom_objects or {}), **kwargs}
        given = "best_model_path" in overrides
        chosen = overrides.pop("best_model_path", None)
        agent = super().load(path, env=env, device=device, **overrides)
        stored, agent._best_model_in_file = agent._best_model_in_file, None
        if given:
            agent.best_model_path = chosen
        elif stored is not None:
            folder = os.path.dirname(os.path.abspath(path))
            agent.best_model_path = inside(folder, stored, f"{path}: config best_model_path")
        return agent

    # ----------------------------------------------------------------------------- training
    def _solver(self):
        if self._pool is None:
            target_problem = self.problem.target_equivalent()
            self._target_problem = target_problem
            self._pool = SolverPool(
                target_problem.program,
                self.workers,
                target_selection(target_problem),
                backend=self.solver_backend,
                address=self.ray_address,
            )
        return self._pool

    def close(self) -> None:
        """Stop the solver's worker processes (restarted by the next :meth:`learn`)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> TSDDR:
        """``total_timesteps`` gradient steps (see :meth:`Learner.learn` for the arguments)."""
        if self.problem is None:
            raise ValueError("TSDDR has no problem to train on: pass env= or call set_problem()")
        callbacks = [c for c in [as_callback(callback)] if c is not None]
        if self.eval_freq:
            callbacks.append(
                KeepBestRule(
                    self.eval_freq, self.eval_scenarios, self.eval_seed, self.best_model_path
                )
            )
        try:
            super().learn(
                total_timesteps,
                callbacks,
                log_interval,
                tb_log_name,
                reset_num_timesteps,
                progress_bar,
            )
        finally:
            self.close()
        return self

    def solve(self, noise: np.ndarray, targets: np.ndarray) -> TargetSolve:
        """Solve the deterministic equivalents of scenarios ``noise`` ``[B, T, U]`` with
        ``targets`` ``[B, T, S]``."""
        check_targets(self.problem, targets, noise)
        pool = self._solver()
        return solve_with_targets(
            pool, self._target_problem, self.problem.initial_state, noise, targets
        )

    def _learn_iteration(self, callback: BaseCallback, log_interval: int) -> bool:
        problem = self.problem
        callback.on_rollout_start()  # a batch of scenarios plays the part of a rollout
        self._update_progress()
        self._update_learning_rate(self.optimizer)
        # a fresh stream per step: a resumed run draws what the uninterrupted one would have
        rng = np.random.default_rng([self.seed, self.num_timesteps])
        noise = problem.sample_noise(self.batch_size, rng)
        noise_t = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
        initial = torch.as_tensor(problem.initial_state, dtype=torch.float32, device=self.device)
        targets = self.policy.targets(noise_t, initial)
        tic = time.perf_counter()
        cost, result = target_cost(targets, lambda x: self.solve(noise, x))
        solve_seconds = time.perf_counter() - tic
        loss = cost.mean()
        self.optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])
        )
        self._check_finite({"gradient": grad_norm})
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.num_timesteps += 1
        self._n_updates += 1
        self._iteration += 1
        logger = self.logger
        logger.record("train/cost", float(result.cost.mean()))
        logger.record("train/operating_cost", float(result.operating_cost.mean()))
        logger.record("train/slack", float(result.slack.mean()))
        logger.record("train/grad_norm", float(grad_norm))
        logger.record("time/solve_seconds", solve_seconds)
        keep_going = callback.on_step()  # KeepBestRule evaluates here, every eval_freq steps
        if log_interval and self._iteration % log_interval == 0:
            self._record_time()
            logger.dump(self.num_timesteps)
        callback.on_rollout_end()
        return keep_going

    def evaluation_noise(self, n_scenarios: int, seed: int) -> np.ndarray:
        """The fixed validation scenarios ``[n, T, U]`` of seed ``seed`` (drawn once)."""
        key = (n_scenarios, seed)
        if self._eval_noise is None or self._eval_noise[0] != key:
            rng = np.random.default_rng(seed)
            self._eval_noise = (key, self.problem.sample_noise(n_scenarios, rng))
        return self._eval_noise[1]

    # ----------------------------------------------------------------------------- acting
    def evaluate(self, noise: np.ndarray):
        """Stage-by-stage simulation of the rule on scenarios ``noise`` ``[N, T, U]``
        (:class:`~mdpo.rules.multistage.StagewiseResult`; costs without the slack penalty)."""
        if self.problem is None:
            raise ValueError("TSDDR has no problem to evaluate on: call set_problem() first")
        memory = self.policy.initial_memory(len(noise))

        def decide(t, states, noise_t):
            nonlocal memory
            with torch.no_grad():
                state = torch.as_tensor(states, dtype=torch.float32, device=self.device)
                w = torch.as_tensor(noise_t, dtype=torch.float32, device=self.device)
                targets, memory = self.policy.step(memory, t, state, w)
            return targets.cpu().double().numpy()

        return simulate_stagewise(self.problem, decide, np.asarray(noise, dtype=np.float64))

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ):
        """Targets (scaled to [-1, 1]) for observations ``[state, noise, t / T]`` of one
        stage; ``state`` is the rule's memory returned by the previous call of the scenario
        (``None`` or ``episode_start`` true: a new scenario). Returns ``(action, memory)``."""
        obs, batched = self._obs_to_tensor(observation)
        policy = self.policy
        s, u = policy.state_dim, policy.noise_dim
        stages = torch.round(obs[:, -1] * self.n_stages).long()
        if bool((stages != stages[0]).any()):
            raise ValueError(
                f"TSDDR.predict takes a batch of scenarios at the same stage, got "
                f"stages {stages.tolist()}"
            )
        stage = int(stages[0])
        with torch.no_grad():
            if state is None:
                memory = policy.initial_memory(obs.shape[0])
            else:
                memory = tuple(torch.as_tensor(m, device=self.device) for m in state)
                if episode_start is not None:
                    starts = torch.as_tensor(
                        np.asarray(episode_start, bool).reshape(-1), device=self.device
                    )
                    memory = policy.reset_memory(memory, starts)
            targets, memory = policy.step(memory, stage, obs[:, :s], obs[:, s : s + u])
            low, high = policy.state_low, policy.state_high
            action = 2.0 * (targets - low) / (high - low).clamp_min(1e-12) - 1.0
        action = np.clip(action.cpu().numpy(), -1.0, 1.0)
        memory_np = tuple(m.cpu().numpy() for m in memory)
        return (action if batched else action[0]), memory_np

    def actor(self):
        """``observation -> action`` for one scenario at a time, stage by stage, carrying the
        rule's memory (a new scenario starts when the stage fraction is 0); e.g. for
        :func:`mdpo.envs.hydro.simulate.simulate_env_policy`."""
        memory: dict[str, Any] = {"state": None}

        def act(observation: np.ndarray) -> np.ndarray:
            if observation[-1] == 0:
                memory["state"] = None
            action, memory["state"] = self.predict(observation, memory["state"])
            return action

        return act


class KeepBestRule(BaseCallback):
    """Evaluate the rule stage by stage every ``eval_freq`` gradient steps on fixed validation
    scenarios; keep the best mean cost (``model.best_eval_cost``) and its weights
    (``model.best_policy_state``), and save the best agent to ``best_model_path`` with a side
    file ``<path>.json`` that a resumed run reads back. :meth:`TSDDR.learn` adds it when
    ``eval_freq`` is set.

    Args:
        eval_freq: gradient steps between evaluations.
        n_scenarios: validation scenarios.
        seed: their seed.
        best_model_path: where to save the best agent (``None``: kept in memory only).
    """

    def __init__(
        self, eval_freq: int, n_scenarios: int, seed: int, best_model_path: str | None = None
    ):
        super().__init__()
        self.eval_freq = check_int(eval_freq, "eval_freq")
        self.n_scenarios = check_int(n_scenarios, "n_scenarios")
        self.seed = check_int(seed, "seed", minimum=0)
        self.best_model_path = best_model_path

    def _on_step(self) -> bool:
        agent = self.model
        if agent.num_timesteps % self.eval_freq:
            return True
        noise = agent.evaluation_noise(self.n_scenarios, self.seed)
        mean = float(agent.evaluate(noise).operating_cost.sum(axis=1).mean())
        self.logger.record("eval/mean_cost", mean)
        if mean < agent.best_eval_cost:
            agent.best_eval_cost = mean
            agent.best_policy_state = copy.deepcopy(agent.policy.state_dict())
            if self.best_model_path is not None:
                path = agent.save(self.best_model_path)
                side = {"eval_mean_cost": mean, "step": agent.num_timesteps}
                write_text_atomic(f"{path}.json", dumps_json(side))  # read back on resume
        self.logger.record("eval/best_mean_cost", agent.best_eval_cost)
        return True
