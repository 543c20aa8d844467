"""Many seeds of PPO as one batched computation (K policies stacked, one optimizer).

``BatchedPPO("torch:CartPole-v1", seeds=[0, 1, 2, 3], n_envs=8, **ppo_kwargs)`` trains one
PPO per seed in one process, each step of all of them as one computation, and member ``k``
ends where ``PPO("MlpPolicy", "torch:CartPole-v1", seed=seeds[k], n_envs=8, **ppo_kwargs)``
trained with the same budget ends (bit for bit in the settings checked, see below; within
float tolerance in general). How each source of a single run is reproduced:

- **weights**: every member *is* a :class:`~mdpo.rl.ppo.PPO` agent, built as a single run
  builds its own (the global generators seeded with its seed, then the policy); their
  parameters are stacked into one ``[K, P]`` tensor for training and copied back to save.
- **environments**: one torch-native env of ``K × n_envs`` envs (:class:`SeedBatchedEnv`)
  whose dynamics step all at once, while member ``k``'s initial states are drawn from a
  generator of its own, seeded as a single run seeds its env and drawn in the same order.
- **action noise and minibatch order**: drawn from member ``k``'s own agent generator
  (``PPO.rng``), in the order a single run draws them (a rollout's noise at its start, one
  permutation per epoch).
- **networks**: the MLP layers of every member as one batched product per layer
  (:class:`_BatchedLinear`: ``baddbmm`` forward, and a backward that forms each product in
  the orientation a single run's ``addmm`` backward does); the distributions' log-densities
  and entropies through ``torch.func.functional_call`` under ``torch.vmap``.
- **update**: the members' losses are summed (member ``k``'s gradient is that of its own loss
  alone), gradient norms are clipped per member, and one Adam (:class:`_RowwiseAdam`, the
  fused kernel of :class:`~mdpo.core.flat_params.FlatAdam` given one row per member) steps
  the ``[K, P]`` stack: Adam is elementwise, so it is ``K`` Adams.

Bit for bit or within float tolerance: float rounding depends on which kernel forms a sum
and in what order, and PPO's training amplifies a last-bit difference until, after a few
thousand updates, two runs take different actions and part. On the CPU the batch therefore
forms its sums as the single runs do: the rows of the parameter stack start on 64-byte lines
(as a single run's flat vector), one-output layers (the value head) and the few-row
products of the rollout's end go member by member, and Adam steps each member's row as a
tensor of its own. With the default network, torch 2.13's CPU kernels and this repository's
tests and benchmark settings, each member then equals its separate run bit for bit (30k
steps of the benchmark's CartPole PPO checked); for other shapes some batched products
(small widths, few rows) still round differently from ``mm`` in rare last bits, and long
runs can part. ``tests/test_batched_seeds.py`` holds each member to its run within tight
float tolerances. On an accelerator, batched products are not single ones: float tolerance
only, and runs part over long training.

Not supported (refused with a one-line error before anything is built): per-member early
stopping (``target_kl``), observation / reward normalization, gymnasium (non-torch) envs.
On an accelerator, exact per-seed env streams cost ``K`` small draws per step
(``env_rng="shared"`` draws every reset from one generator instead: faster, but the runs are
then no longer those of separate ``PPO`` runs).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from mdpo.core.flat_params import FlatAdam
from mdpo.core.learner import NonFiniteLossError
from mdpo.core.utils import check_int, get_device
from mdpo.rl.buffers import compute_gae
from mdpo.rl.ppo import PPO, clipped_surrogate_loss, value_loss_of
from mdpo.rl.runners import (
    TORCH_PREFIX,
    Normalizer,
    TensorPolicy,
    TorchEnvRunner,
    check_env_id,
)
from mdpo.rl.torch_classic import TORCH_ENVS, TorchVectorEnv

__all__ = ["BatchedPPO", "SeedBatchedEnv", "make_seed_batched_env"]

#: PPO arguments a batch sets itself, per member or for all
_SET_BY_BATCH = {"policy", "env", "seed", "device", "n_envs", "env_kwargs", "_init_setup_model"}
ENV_RNG_MODES = ("per_seed", "shared")


# --------------------------------------------------------------------------------- the envs
class SeedBatchedEnv(TorchVectorEnv):
    """``K`` seeds × ``n`` envs of one torch-native env, stepped as one batch of ``K·n`` envs,
    with every seed's initial states drawn from its own generator.

    Env ``k·n + i`` is env ``i`` of seed ``k``. A separate env of ``n`` envs seeded with
    ``seeds[k] + offset`` draws exactly the initial states that block ``k`` draws here: the
    same generator, the same draw sizes, in the same order (on the CPU only the envs that
    finished draw, in index order; elsewhere every env draws at every step, as
    :class:`~mdpo.rl.torch_classic.TorchVectorEnv` does). Built by
    :func:`make_seed_batched_env` as a subclass of the env's own class, so its dynamics are
    that class's.

    Args:
        seeds: one seed per block (``reset(seed=offset)`` seeds block ``k`` with
            ``seeds[k] + offset``).
        envs_per_seed: ``n``, the envs of each seed.
        env_rng: ``"per_seed"`` (the streams of separate envs) or ``"shared"`` (one generator
            for every reset: ``K`` times fewer draws, the streams of no separate env).
        **kwargs: ``device``, ``dtype``, ``max_episode_steps`` (see
            :class:`~mdpo.rl.torch_classic.TorchVectorEnv`).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        envs_per_seed: int = 1,
        env_rng: str = "per_seed",
        **kwargs: Any,
    ):
        if env_rng not in ENV_RNG_MODES:
            raise ValueError(f"env_rng must be one of {ENV_RNG_MODES}, got {env_rng!r}")
        self.seeds = [int(seed) for seed in seeds]
        self.envs_per_seed = check_int(envs_per_seed, "envs_per_seed")
        super().__init__(len(self.seeds) * self.envs_per_seed, **kwargs)
        self.env_rng = env_rng
        self.generators = [torch.Generator(device=self.device) for _ in self.seeds]
        for generator in self.generators:
            generator.seed()
        self.generator = self.generators[0]

    def _draw(self, block: int, count: int) -> torch.Tensor:
        """``count`` initial states ``[state_dim, count]`` from block ``block``'s generator."""
        self.generator = self.generators[block]  # what _uniform draws from
        return self._initial_state(count, None)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env; ``seed`` is an offset: block ``k``'s generator gets
        ``seeds[k] + seed`` (``None`` continues the streams). No reset options."""
        if options:
            raise ValueError(f"{type(self).__name__} takes no reset options, got {options!r}")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(
                    f"{type(self).__name__} takes an integer seed offset, got {seed!r}"
                )
            for generator, own in zip(self.generators, self.seeds):
                generator.manual_seed(own + int(seed))
        n = self.envs_per_seed
        self._state = torch.cat([self._draw(k, n) for k in range(len(self.seeds))], dim=1)
        self.elapsed_steps.zero_()
        return self._observe(self._state), {}

    def _fresh_states(self, index: torch.Tensor | None) -> torch.Tensor:
        """New initial states for the envs ``index`` (None: all), those of block ``k`` from
        block ``k``'s generator, in index order (the step itself is the class's own)."""
        if self.env_rng == "shared":
            self.generator = self.generators[0]
            return super()._fresh_states(index)
        n, blocks = self.envs_per_seed, len(self.seeds)
        if index is None:  # every env draws (where() keeps the needed ones)
            return torch.cat([self._draw(k, n) for k in range(blocks)], dim=1)
        counts = torch.bincount(index // n, minlength=blocks).tolist()
        return torch.cat([self._draw(k, c) for k, c in enumerate(counts) if c], dim=1)


_BATCHED_CLASSES: dict[type[TorchVectorEnv], type[SeedBatchedEnv]] = {}


def make_seed_batched_env(
    env_id: str,
    seeds: Sequence[int],
    envs_per_seed: int = 1,
    device: str | torch.device = "cpu",
    env_rng: str = "per_seed",
    **kwargs: Any,
) -> SeedBatchedEnv:
    """A :class:`SeedBatchedEnv` of the torch-native env ``env_id``.

    Args:
        env_id: ``"torch:<id>"`` or ``"<id>"``, a key of
            :data:`~mdpo.rl.torch_classic.TORCH_ENVS`.
        seeds: one seed per block of ``envs_per_seed`` envs.
        envs_per_seed: envs per seed.
        device: where the tensors live.
        env_rng: ``"per_seed"`` or ``"shared"`` (see :class:`SeedBatchedEnv`).
        **kwargs: ``dtype`` (a ``torch.dtype`` or ``"float32"`` / ``"float64"``),
            ``max_episode_steps``, ``compile`` (step through one compiled function, as
            :func:`~mdpo.rl.torch_classic.make_torch_env`; the new states are then drawn for
            every env at every step, so on the CPU the streams are those of a compiled env).

    Raises:
        ValueError: an id without a torch-native version, or a bad argument.
    """
    name = env_id.removeprefix(TORCH_PREFIX)
    if name not in TORCH_ENVS:
        raise ValueError(
            f"no torch-native version of {env_id!r}; available: "
            f"{', '.join(TORCH_PREFIX + key for key in TORCH_ENVS)}"
        )
    allowed = ["compile", "dtype", "max_episode_steps"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"{TORCH_PREFIX}{name} takes the keyword arguments {allowed}, got {unknown}"
        )
    compiled = kwargs.pop("compile", False)
    if not isinstance(compiled, bool):
        raise ValueError(f"compile must be true or false, got {compiled!r}")
    if isinstance(kwargs.get("dtype"), str):  # from JSON / a sweep spec: "float64"
        dtype = kwargs["dtype"].removeprefix("torch.")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {kwargs['dtype']!r}")
        kwargs["dtype"] = getattr(torch, dtype)
    base = TORCH_ENVS[name]
    cls = _BATCHED_CLASSES.get(base)
    if cls is None:
        cls = type(f"SeedBatched{base.__name__}", (SeedBatchedEnv, base), {})
        _BATCHED_CLASSES[base] = cls
    env = cls(seeds, envs_per_seed, env_rng, device=device, **kwargs)
    return env.compile_step() if compiled else env


# --------------------------------------------------------------------------------- the agent
_ALIGN = 16  # floats in 64 bytes: the rows of the parameter stack start on a cache line


class _RowwiseAdam(FlatAdam):
    """:class:`~mdpo.core.flat_params.FlatAdam` over the ``[K, P]`` stack, each member's row
    stepped as a tensor of its own.

    The fused kernel steps a tensor in vector-wide chunks from its first element and the last
    few elements one by one, and the two paths round differently; a member's parameters in
    the middle of one long vector would have other elements in each path than its single
    run's vector. As a list of rows (one kernel call still), each member's ``P`` parameters
    are split as the single run's vector is. Without the fused kernel, the whole stack steps
    at once (equal within float tolerance).
    """

    def __init__(self, stack: Any, width: int, lr: float, eps: float):
        super().__init__(stack, lr=lr, eps=eps)
        self._steps_rows = torch.zeros(stack.data.shape[0], device=stack.data.device)
        self._rows = [
            [row[:width] for row in tensor.unbind(0)]
            for tensor in (stack.data, stack.grad, self.exp_avg, self.exp_avg_sq)
        ]
        self._rows.append(list(self._steps_rows.unbind(0)))

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every member with the current gradients."""
        if not self.fused:
            super().step()
            return
        self.steps += 1
        self._steps_rows.fill_(self.steps)
        self._fused_step(*self._rows)


class _BatchedLinear(torch.autograd.Function):
    """``Linear`` of every member: ``y[k] = x[k] @ weight[k]ᵀ + bias[k]`` for ``x [K, N, in]``,
    ``weight [K, out, in]``, ``bias [K, out]``, with the products a single run's ``F.linear``
    makes, bit for bit (for more than one output).

    The forward is one ``baddbmm``; the backward makes the weight's gradient as ``addmm``'s
    backward does for a transposed weight, ``gradᵀ @ x``. (Autograd through ``vmap`` makes it
    as ``(xᵀ @ grad)ᵀ``: the same sums in another order, which rounds differently for an
    input of a few features, and over thousands of updates a last-bit difference makes two
    runs of a chaotic learning process drift apart.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


class _Method(nn.Module):
    """Calls one method of a policy, so that ``functional_call`` can run it (it runs
    ``forward``) with the parameters given by name (``"policy.<name>"``)."""

    def __init__(self, policy: nn.Module, method: str):
        super().__init__()
        self.policy = policy
        self.method = method

    def forward(self, *args: torch.Tensor) -> Any:
        return getattr(self.policy, self.method)(*args)


class BatchedPPO:
    """``K`` PPO agents of the same shapes, one per seed, trained as one computation.

    Member ``k`` is the :class:`~mdpo.rl.ppo.PPO` agent ``PPO("MlpPolicy", env, seed=seeds[k],
    n_envs=n_envs, **ppo_kwargs)`` and, after :meth:`learn`, holds what that agent would hold
    after the same ``learn`` (see the module's docstring for how, and what is only equal
    within float tolerance). :meth:`member` returns it, ready to ``save`` as an ordinary
    model file (``mdpo.PPO.load`` reads it).

    Args:
        env: a torch-native env id, ``"torch:<id>"`` (e.g. ``"torch:CartPole-v1"``).
        seeds: the members' seeds (distinct non-negative integers).
        n_envs: envs per member (each member steps ``n_envs`` envs, as its single run would).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        env_kwargs: ``dtype``, ``max_episode_steps``, ``compile`` of the torch-native env.
        env_rng: ``"per_seed"`` (default: the env streams of separate runs) or ``"shared"``
            (one generator for all resets: faster on accelerators, not separate runs' streams).
        stats_window_size: episodes averaged in :meth:`episode_return_means`.
        **ppo_kwargs: PPO's hyperparameters (``learning_rate``, ``n_steps``, ``batch_size``,
            ``n_epochs``, ``gamma``, ``gae_lambda``, ``clip_range``, ``clip_range_vf``,
            ``normalize_advantage``, ``ent_coef``, ``vf_coef``, ``max_grad_norm``,
            ``policy_kwargs``...), the same for every member.

    Raises:
        ValueError: a non-torch env, repeated seeds, ``target_kl``, normalization, or any
            argument ``PPO`` itself refuses; before anything is trained.
    """

    def __init__(
        self,
        env: str,
        seeds: Sequence[int],
        n_envs: int = 1,
        device: str | torch.device = "auto",
        env_kwargs: dict[str, Any] | None = None,
        env_rng: str = "per_seed",
        stats_window_size: int = 100,
        **ppo_kwargs: Any,
    ):
        reason = self.unsupported(env, ppo_kwargs)
        if reason is not None:
            raise ValueError(f"BatchedPPO: {reason}")
        check_env_id(env)
        seeds = list(seeds)
        if not seeds:
            raise ValueError("seeds is empty: give at least one seed")
        for seed in seeds:
            check_int(seed, "a seed", minimum=0)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat in {seeds}: each member needs its own seed")
        if env_rng not in ENV_RNG_MODES:
            raise ValueError(f"env_rng must be one of {ENV_RNG_MODES}, got {env_rng!r}")
        clash = sorted(set(ppo_kwargs) & _SET_BY_BATCH)
        if clash:
            raise ValueError(f"BatchedPPO sets {clash[0]!r} itself; pass it as its own argument")
        self.env_id = env
        self.seeds = seeds
        self.device = get_device(device)
        self.env_kwargs = dict(env_kwargs or {})
        self.env_rng = env_rng
        self.venv = make_seed_batched_env(
            env, seeds, n_envs, self.device, env_rng, **self.env_kwargs
        )
        obs_space = self.venv.single_observation_space
        action_space = self.venv.single_action_space
        # each member built as a single run builds itself: the global generators are seeded
        # with its seed and the policy is drawn next, before the next member is made
        self.members: list[PPO] = []
        for seed in seeds:
            member = PPO(
                "MlpPolicy",
                None,
                seed=seed,
                device=self.device,
                n_envs=n_envs,
                env_kwargs=env_kwargs,
                stats_window_size=stats_window_size,
                _init_setup_model=False,
                **ppo_kwargs,
            )
            member.build_for_spaces(obs_space, action_space)
            member._check_env_settings()  # batch_size against the rollout, as with an env
            self.members.append(member)
        first = self.members[0]
        self.n_envs, self.n_steps = first.n_envs, first.n_steps
        self.observation_space, self.action_space = obs_space, action_space
        self.continuous = isinstance(action_space, spaces.Box)
        self.runner = TorchEnvRunner(
            self.venv, self.device, Normalizer(obs_space.shape), stats_window_size
        )
        # the stack: row k starts with member k's flat parameter vector (FlatParams' order),
        # padded to whole 64-byte lines so that every member's parameters lie as its single
        # run's do (the kernels' paths, and so their roundings, depend on the alignment)
        self.names = [name for name, _ in first.policy.named_parameters()]
        self.shapes = [param.shape for _, param in first.policy.named_parameters()]
        self.width = first.flat_params.data.numel()
        padded = -(-self.width // _ALIGN) * _ALIGN
        data = torch.zeros((len(seeds), padded), device=self.device)
        data[:, : self.width] = torch.stack([m.flat_params.data for m in self.members])
        self.data = data.requires_grad_(True)
        self.grad = torch.zeros_like(self.data)
        self.data.grad = self.grad  # autograd adds into it in place (zeroed before each step)
        # FlatAdam reads only .data and .grad: Adam is elementwise, so K Adams in one
        self.optimizer = _RowwiseAdam(
            self, self.width, lr=first.lr_schedule(1.0), eps=first.adam_eps
        )
        # member 0's policy is only the template of the layers: the parameters are the stack's
        self._template = first.policy
        self._calls = {"log_prob_entropy": _Method(first.policy, "log_prob_entropy")}
        self.ep_info_buffers = [deque(maxlen=stats_window_size) for _ in seeds]
        self.num_timesteps = 0
        self._total_timesteps = 0
        self._iteration = 0
        self._n_updates = 0
        self._progress = 1.0
        self.train_time = 0.0

    @staticmethod
    def unsupported(env: Any, hyperparameters: dict[str, Any]) -> str | None:
        """Why PPO runs on ``env`` with ``hyperparameters`` cannot be batched (one line that
        says what to do instead), or ``None`` when they can."""
        if not isinstance(env, str) or not env.startswith(TORCH_PREFIX):
            return (
                f"only torch-native envs ('torch:<id>') are batched, not {env!r}: use the "
                "torch-native id or train the runs separately"
            )
        if hyperparameters.get("target_kl") is not None:
            return (
                "target_kl is not supported (each member would stop its epochs at a different "
                "minibatch): drop it or train the runs separately"
            )
        for name in ("normalize_obs", "normalize_reward"):
            if hyperparameters.get(name):
                return (
                    f"{name}=True is not supported (per-member running statistics): drop it or "
                    "train the runs separately"
                )
        return None

    # ----------------------------------------------------------------------------- networks
    @property
    def n_members(self) -> int:
        """``K``, the number of members."""
        return len(self.members)

    def _params(self, detach: bool) -> dict[str, torch.Tensor]:
        """The stacked parameters by name (``"policy.<name>"``), ``[K, *shape]`` views of
        :attr:`data` (whose gradient they carry unless ``detach``)."""
        data = self.data.detach() if detach else self.data
        params, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            params["policy." + name] = data[:, offset : offset + size].unflatten(1, shape)
            offset += size
        return params

    def _batched(self, method: str, params: dict[str, torch.Tensor], *inputs: torch.Tensor):
        """``policy.method(*inputs[k])`` of every member ``k`` at once (inputs ``[K, ...]``)."""
        module = self._calls[method]

        def call(p: dict[str, torch.Tensor], *xs: torch.Tensor):
            return torch.func.functional_call(module, p, xs)

        return torch.vmap(call)(params, *inputs)

    def _mlp(
        self, layers: nn.Sequential, prefix: str, params: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """The template's ``layers`` (``Linear`` and activations) on ``x [K, N, in]``, each
        member with its own parameters (``prefix`` names the layers in ``params``)."""
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                weight = params[f"{prefix}.{index}.weight"]
                x = _BatchedLinear.apply(x, weight, params[f"{prefix}.{index}.bias"])
            else:  # an activation: elementwise, the same for every member
                x = layer(x)
        return x

    def _distribution_params(
        self, params: dict[str, torch.Tensor], obs: torch.Tensor
    ) -> torch.Tensor:
        """``policy.distribution_params`` of every member: means or logits ``[K, N, A]``."""
        latent = self._mlp(
            self._template.mlp_extractor.policy_net, "policy.mlp_extractor.policy_net", params, obs
        )
        weight, bias = params["policy.action_net.weight"], params["policy.action_net.bias"]
        return self._head(latent, weight, bias)

    def _values(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """``policy.predict_values`` of every member, ``[K, N]`` for observations
        ``[K, N, obs_dim]``."""
        latent = self._mlp(
            self._template.mlp_extractor.value_net, "policy.mlp_extractor.value_net", params, obs
        )
        weight, bias = params["policy.value_net.weight"], params["policy.value_net.bias"]
        return self._head(latent, weight, bias).squeeze(-1)

    def _head(self, latent: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        """An output layer of every member.

        One output (the value head, a one-dimensional action's mean) goes member by member
        on the CPU: a single run's ``Linear(h, 1)`` is a matrix-vector product whose sums no
        batched product reproduces bit for bit, and ``K`` small products cost little there
        next to the batched rest. On an accelerator they would cost ``K`` launches each, and
        its batched products differ from single ones anyway: one batched product.
        """
        if weight.shape[1] == 1 and self.device.type == "cpu":
            # unbind, not indexing: its backward stacks the K gradients once, where each
            # index's backward would write one into a zero tensor of the whole batch
            parts = zip(latent.unbind(0), weight.unbind(0), bias.unbind(0))
            return torch.stack([F.linear(x, w, b) for x, w, b in parts])
        return _BatchedLinear.apply(latent, weight, bias)

    def _member_values(
        self, params: dict[str, torch.Tensor], member: int, obs: torch.Tensor
    ) -> torch.Tensor:
        """``policy.predict_values`` of one member, ``[N]`` for ``obs [N, obs_dim]``, with the
        very operations of its single run."""
        x = obs
        for index, layer in enumerate(self._template.mlp_extractor.value_net):
            if isinstance(layer, nn.Linear):
                name = f"policy.mlp_extractor.value_net.{index}"
                x = F.linear(x, params[name + ".weight"][member], params[name + ".bias"][member])
            else:
                x = layer(x)
        weight, bias = params["policy.value_net.weight"], params["policy.value_net.bias"]
        return F.linear(x, weight[member], bias[member]).squeeze(-1)

    # ----------------------------------------------------------------------------- collection
    def _rollout_policy(self) -> TensorPolicy:
        """Each member's :meth:`~mdpo.rl.on_policy.OnPolicyAgent._tensor_rollout_policy`, its
        noise drawn from its own generator, the network run once for all members."""
        n, steps, dev = self.n_envs, self.n_steps, self.device
        params = self._params(detach=True)
        dim = self.members[0].policy.action_dim
        if self.continuous:
            noise = torch.stack(
                [torch.randn((steps, n, dim), generator=m.rng) for m in self.members]
            ).to(dev)
            log_std = params["policy.log_std"].detach()  # [K, dim]
            noise = (noise * log_std.exp()[:, None, None, :]).transpose(0, 1)  # [T, K, n, dim]
            low = torch.as_tensor(self.action_space.low.ravel(), device=dev)
            high = torch.as_tensor(self.action_space.high.ravel(), device=dev)
            return TensorPolicy(self._act_box, (noise,), (params, low, high))
        uniform = torch.stack([torch.rand((steps, n, dim), generator=m.rng) for m in self.members])
        gumbel = (-torch.log(-torch.log(uniform.clamp_min(1e-20)))).to(dev).transpose(0, 1)
        return TensorPolicy(self._act_discrete, (gumbel,), (params, int(self.action_space.start)))

    @torch.no_grad()
    def _act_box(
        self,
        obs: torch.Tensor,
        noise: torch.Tensor,
        params: dict[str, torch.Tensor],
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian actions (``noise``: ``[K, n, dim]``), clipped for the env."""
        k, n = self.n_members, self.n_envs
        mean = self._distribution_params(params, obs.reshape(k, n, -1))
        action = (mean + noise).reshape(k * n, -1)
        return torch.clamp(action, low, high).reshape(k * n, *self.action_space.shape), action

    @torch.no_grad()
    def _act_discrete(
        self, obs: torch.Tensor, gumbel: torch.Tensor, params: dict[str, torch.Tensor], start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gumbel-max actions (``gumbel``: ``[K, n, dim]``)."""
        k, n = self.n_members, self.n_envs
        logits = self._distribution_params(params, obs.reshape(k, n, -1))
        action = torch.argmax(logits + gumbel, dim=-1).reshape(k * n)
        return action + start, action

    def _per_member(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, K·n, ...]`` rollout tensor as ``[K, T·n, ...]`` (a single run's flat order,
        ``t·n + i``, within each member)."""
        steps, k, n = x.shape[0], self.n_members, self.n_envs
        x = x.reshape(steps, k, n, *x.shape[2:]).transpose(0, 1)
        return x.reshape(k, steps * n, *x.shape[3:])

    @torch.no_grad()
    def _process_rollout(self, rollout: Any) -> dict[str, torch.Tensor]:
        """:meth:`~mdpo.rl.on_policy.OnPolicyAgent._process_rollout` for every member."""
        k, n = self.n_members, self.n_envs
        steps = rollout.rewards.shape[0]
        params = self._params(detach=True)
        obs = self._per_member(rollout.obs.reshape(steps, k * n, -1).float())
        actions = self._per_member(rollout.actions)
        dist = self._distribution_params(params, obs)
        log_prob, _ = self._batched("log_prob_entropy", params, dist, actions)
        values = self._values(params, obs)  # [K, T·n]
        last_obs = rollout.last_obs.reshape(k, n, -1).float()
        if self.device.type == "cpu":  # a product of a few rows may round otherwise batched
            last_values = torch.cat([self._member_values(params, m, last_obs[m]) for m in range(k)])
        else:
            last_values = self._values(params, last_obs).reshape(k * n)
        rewards = rollout.rewards.clone()
        gamma = self.members[0].gamma
        if len(rollout.final_step):
            t, i = rollout.final_step, rollout.final_env
            keep = rollout.truncated[t, i] & ~rollout.terminated[t, i]
            member = i // n
            final_obs = rollout.final_obs.reshape(len(t), -1).float()
            # member by member, on all its ended episodes' final observations as its single
            # run evaluates them (the rows of a product round as their neighbours allow);
            # only the members with a truncation need them: there are few
            for m in member[keep].unique().tolist():
                rows = member == m
                values_m = self._member_values(params, m, final_obs[rows])
                kept = keep[rows]
                rewards[t[rows][kept], i[rows][kept]] += gamma * values_m[kept]
        values_tn = values.reshape(k, steps, n).transpose(0, 1).reshape(steps, k * n)
        gae_inputs = [rewards, values_tn, rollout.episode_starts, last_values]
        gae_inputs.append(rollout.last_episode_starts)
        if self.device.type == "cpu":  # as a single run: NumPy on the CPU (columns independent)
            gae_inputs = [x.numpy() for x in gae_inputs]
        advantages, returns = compute_gae(*gae_inputs, gamma, self.members[0].gae_lambda)
        advantages = torch.as_tensor(advantages).to(self.device)
        returns = torch.as_tensor(returns).to(self.device)
        return {
            "obs": obs,
            "actions": actions,
            "old_values": values,
            "old_log_prob": log_prob,
            "advantages": self._per_member(advantages),
            "returns": self._per_member(returns),
        }

    # ----------------------------------------------------------------------------- training
    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to L2 norm ``max_norm`` (a single run's rule, per
        row); returns the ``[K]`` norms before clipping."""
        norms = torch.linalg.vector_norm(self.grad[:, : self.width], dim=1, keepdim=True)
        self.grad.mul_(torch.clamp(max_norm / (norms + 1e-6), max=1.0))
        return norms.squeeze(1)

    def train(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`~mdpo.rl.ppo.PPO.train` of every member at once (one rollout).

        Returns:
            Per-member ``[K]`` means of the policy, value and entropy losses.
        """
        first = self.members[0]
        lr = first.lr_schedule(self._progress)
        self.optimizer.param_groups[0]["lr"] = lr
        clip_range = first.clip_range_schedule(self._progress)
        clip_range_vf = None
        if first.clip_range_vf_schedule is not None:
            clip_range_vf = first.clip_range_vf_schedule(self._progress)
        k, size, bs = self.n_members, batch["obs"].shape[1], first.batch_size
        rows = torch.arange(k, device=self.device)[:, None]
        params = self._params(detach=False)
        sums = torch.zeros(3, k, device=self.device)
        count = 0
        for _ in range(first.n_epochs):
            order = torch.stack([torch.randperm(size, generator=m.rng) for m in self.members])
            order = order.to(self.device)
            shuffled = {name: column[rows, order] for name, column in batch.items()}
            for start in range(0, size, bs):
                mb = {
                    name: column[:, start : start + bs].contiguous()
                    for name, column in shuffled.items()
                }
                # policy.evaluate_actions, its value head member by member (see _values)
                dist = self._distribution_params(params, mb["obs"])
                log_prob, entropy = self._batched("log_prob_entropy", params, dist, mb["actions"])
                values = self._values(params, mb["obs"])
                advantages = mb["advantages"]
                if first.normalize_advantage and advantages.shape[1] > 1:
                    mean = advantages.mean(1, keepdim=True)
                    advantages = (advantages - mean) / (advantages.std(1, keepdim=True) + 1e-8)
                ratio = torch.exp(log_prob - mb["old_log_prob"])
                policy_loss = clipped_surrogate_loss(advantages, ratio, clip_range, dim=1)
                value_loss = value_loss_of(
                    values, mb["old_values"], mb["returns"], clip_range_vf, dim=1
                )
                entropy_loss = -entropy.reshape(k, -1).mean(1)
                loss = policy_loss + first.vf_coef * value_loss
                if first.ent_coef != 0.0:
                    loss = loss + first.ent_coef * entropy_loss
                self._check_finite(loss)  # before the step: the parameters stay good
                self.grad.zero_()
                loss.sum().backward()  # member k's gradient is its own loss's alone
                self.clip_grad_norm_(first.max_grad_norm)
                self.optimizer.step()
                sums += torch.stack((policy_loss, value_loss, entropy_loss)).detach()
                count += 1
            self._n_updates += 1  # SB3 counts epochs
        means = sums / max(count, 1)
        return {"policy_loss": means[0], "value_loss": means[1], "entropy_loss": means[2]}

    def _check_finite(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss)
        if not bool(finite.all()):
            bad = [self.seeds[i] for i in (~finite).nonzero().flatten().tolist()]
            raise NonFiniteLossError(
                f"BatchedPPO: the loss of seed(s) {bad} is not finite at timestep "
                f"{self.num_timesteps} (iteration {self._iteration}); training stopped before "
                "applying it"
            )

    def learn(
        self,
        total_timesteps: int,
        on_rollout_start: Callable[[BatchedPPO], bool | None] | None = None,
    ) -> BatchedPPO:
        """Train every member for ``total_timesteps`` env steps (each member's own count, as
        ``PPO.learn(total_timesteps)``: rounded up to whole rollouts).

        Args:
            total_timesteps: env steps per member.
            on_rollout_start: called with the batch before every rollout (where a single run's
                callbacks see ``on_rollout_start``; e.g. to evaluate); returning ``False``
                stops training.

        Returns:
            The batch.
        """
        check_int(total_timesteps, "total_timesteps")
        self.num_timesteps = 0
        self._n_updates = 0
        self._iteration = 0
        self._total_timesteps = total_timesteps
        self._progress = 1.0
        # as a single run: its env is seeded once, at its first reset, with seed + 0
        self.runner.reset(seed=None if self.runner.seeded else 0)
        tic = time.perf_counter()
        paused = 0.0
        while self.num_timesteps < total_timesteps:
            if on_rollout_start is not None:
                pause = time.perf_counter()
                stop = on_rollout_start(self) is False
                paused += time.perf_counter() - pause
                if stop:
                    break
            self.runner.ep_info_buffer = deque()  # this rollout's episodes, in final_env order
            rollout = self.runner.rollout(self.n_steps, self._rollout_policy())
            self.num_timesteps += self.n_steps * self.n_envs
            block = (rollout.final_env // self.n_envs).tolist()
            for member, episode in zip(block, self.runner.ep_info_buffer):
                self.ep_info_buffers[member].append(episode)
            batch = self._process_rollout(rollout)
            self._iteration += 1
            self._progress = 1.0 - self.num_timesteps / max(total_timesteps, 1)
            self.train(batch)
        self.train_time += time.perf_counter() - tic - paused
        self._sync_members()
        return self

    # ----------------------------------------------------------------------------- members
    def _sync_members(self) -> None:
        """Copy parameters, optimizer moments and counters into the member agents."""
        opt = self.optimizer
        with torch.no_grad():
            for k, member in enumerate(self.members):
                member.flat_params.set_(self.data[k, : self.width])
                member.optimizer.exp_avg.copy_(opt.exp_avg[k, : self.width])
                member.optimizer.exp_avg_sq.copy_(opt.exp_avg_sq[k, : self.width])
                member.optimizer.steps = opt.steps
                member.optimizer.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
                member.num_timesteps = self.num_timesteps
                member._n_updates = self._n_updates
                member._iteration = self._iteration
                member._total_timesteps = self._total_timesteps
                member._current_progress_remaining = self._progress

    def member(self, index: int) -> PPO:
        """Member ``index`` as a :class:`~mdpo.rl.ppo.PPO` agent holding its current state
        (parameters, optimizer, counters, generator): ``save`` writes an ordinary model file.
        The agent has no env (``set_env`` gives it one)."""
        self._sync_members()
        return self.members[index]

    def save(self, paths: Sequence[str]) -> list[str]:
        """Save every member as an ordinary PPO model file, member ``k`` to ``paths[k]``.

        Returns:
            The paths written (``.zip`` appended where missing).
        """
        if len(paths) != self.n_members:
            raise ValueError(f"give one path per member: {self.n_members}, got {len(paths)}")
        self._sync_members()
        return [member.save(path) for member, path in zip(self.members, paths)]

    def episode_return_means(self) -> list[float]:
        """Each member's mean training-episode return over its recent episodes (NaN before
        any ended)."""
        return [
            float(np.mean([r for r, _ in buf])) if buf else float("nan")
            for buf in self.ep_info_buffers
        ]

    @torch.no_grad()
    def evaluate(
        self,
        n_eval_episodes: int = 10,
        seed_offset: int = 0,
        device: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> tuple[list[list[float]], list[list[int]]]:
        """Deterministic episodes of every member, as
        :func:`~mdpo.rl.evaluation.evaluate_policy` on one env of its own seeded with
        ``seeds[k] + seed_offset`` (all members' envs stepped as one batch).

        Args:
            n_eval_episodes: episodes per member.
            seed_offset: added to each member's seed for its eval env's first reset.
            device: where the eval envs and networks run (default the batch's device; on the
                CPU the initial states are those of ``evaluate_policy``'s CPU env).
            env_kwargs: the eval envs' ``dtype`` / ``max_episode_steps`` (default the training
                env's; ``{}`` for the env's defaults, as a sweep evaluates). Never compiled:
                each evaluation makes new envs.

        Returns:
            ``(returns, lengths)``: per member, its episodes' returns and lengths.
        """
        check_int(n_eval_episodes, "n_eval_episodes")
        dev = self.device if device is None else get_device(device)
        k = self.n_members
        if env_kwargs is None:
            env_kwargs = {key: v for key, v in self.env_kwargs.items() if key != "compile"}
        env = make_seed_batched_env(self.env_id, self.seeds, 1, dev, **env_kwargs)
        params = {name: p.to(dev) for name, p in self._params(detach=True).items()}
        obs, _ = env.reset(seed=seed_offset)
        returns: list[list[float]] = [[] for _ in range(k)]
        lengths: list[list[int]] = [[] for _ in range(k)]
        current = np.zeros(k)
        steps = np.zeros(k, int)
        low, high = None, None
        if self.continuous:
            low = torch.as_tensor(self.action_space.low, device=dev)
            high = torch.as_tensor(self.action_space.high, device=dev)
        while min(len(r) for r in returns) < n_eval_episodes:
            out = self._distribution_params(params, obs.reshape(k, 1, -1))
            if self.continuous:
                action = torch.clamp(out.reshape(k, *self.action_space.shape), low, high)
            else:
                action = out.argmax(-1).reshape(k) + int(self.action_space.start)
            obs, reward, terminated, truncated, _ = env.step(action)
            current += reward.cpu().numpy()
            steps += 1
            done = (terminated | truncated).cpu().numpy()
            for i in np.flatnonzero(done):
                if len(returns[i]) < n_eval_episodes:
                    returns[i].append(float(current[i]))
                    lengths[i].append(int(steps[i]))
            current[done] = 0.0
            steps[done] = 0
        return returns, lengths
