"""Off-policy Mirror Descent Policy Optimization (Tomar et al., ICLR 2022), KL and Tsallis.

Follows the original ``mdpo_off`` code (manantomar/Mirror-Descent-Policy-Optimization).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.flat_params import FlatAdam, FlatParams
from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_int, check_number
from mdpo.rl.networks import (
    CriticEnsemble,
    SquashedGaussianActor,
    activation_name,
    parse_net_arch,
    squashed_gaussian_log_prob,
)
from mdpo.rl.off_policy import OffPolicyAgent
from mdpo.rl.runners import EnvSpec

DENSITY_FLOOR = 1e-6  # the original floors densities at 1e-6 before taking q-logs


def tsallis_log(x: torch.Tensor, q: float) -> torch.Tensor:
    """Tsallis q-logarithm ``log_q(x) = (x^(1−q) − 1)/(1 − q)`` (``log x`` at ``q = 1``).

    ``x`` is floored at 1e-6 as in the original code. (The original's ``tf_log_q`` also halves
    its result; that factor is not in the paper and is not copied.)
    """
    x = x.clamp_min(DENSITY_FLOOR)
    if q == 1.0:
        return torch.log(x)
    return (x.pow(1.0 - q) - 1.0) / (1.0 - q)


def policy_log(log_prob_dims: torch.Tensor, tsallis_q: float) -> torch.Tensor:
    """``log π(a|s)`` summed over the action dimensions: the natural log at ``q' = 1``, else
    the sum of per-dimension q-logs of the densities with ``q = 2 − q'`` (the original's)."""
    if tsallis_q == 1.0:
        return log_prob_dims.sum(-1)
    return tsallis_log(torch.exp(log_prob_dims), 2.0 - tsallis_q).sum(-1)


class OffPolicyMDPONets(nn.Module):
    """The networks of off-policy MDPO, as the original: actor π_θ, frozen copy π_k, twin Q,
    state value V and its Polyak target V'.

    Args:
        observation_space: a ``Box`` observation space (flattened at the input).
        action_space: a bounded ``Box`` action space.
        net_arch: hidden sizes, a list or ``dict(pi=[...], qf=[...])``; default ``[256, 256]``.
        activation_fn: activation name or ``nn.Module`` class (``"relu"``).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: str | type[nn.Module] = "relu",
    ):
        super().__init__()
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_dim = int(np.prod(action_space.shape))
        self.activation = activation_name(activation_fn)
        pi_sizes, qf_sizes = parse_net_arch(net_arch, "qf", default=(256, 256))
        self.actor = SquashedGaussianActor(self.obs_dim, self.action_dim, pi_sizes, self.activation)
        self.old_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticEnsemble(self.obs_dim + self.action_dim, qf_sizes, self.activation)
        self.value = CriticEnsemble(self.obs_dim, qf_sizes, self.activation, n_critics=1)
        self.value_target = copy.deepcopy(self.value).requires_grad_(False)

    def flatten(self, obs: torch.Tensor) -> torch.Tensor:
        """Flatten the observation dimensions: ``[B, *obs_shape] → [B, obs_dim]``."""
        return obs.reshape(obs.shape[0], self.obs_dim).float()

    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None) -> torch.Tensor:
        """Squashed actions in ``[-1, 1]`` for flat observations."""
        return self.actor.act(obs, deterministic, generator)


@register_algorithm
class OffPolicyMDPO(OffPolicyAgent):
    """Off-policy MDPO (MDPO-KL, or MDPO-Tsallis with ``tsallis_q > 1``).

    Per gradient step, on a minibatch ``(s, a, r, s', d)``, with ``ã = tanh(u)``,
    ``u ~ π_θ(·|s)`` reparameterized, and ``π_k`` the frozen copy of ``π_θ`` refreshed every
    ``m`` environment steps, evaluated at the same ``ã``:

    - actor: ``L(θ) = mean(c·log π_θ(ã|s) + q'·(λ − c)·log π_k(ã|s) − Q1(s, ã))
      + 1e-3·mean(μ²) + 1e-3·mean((log σ)²)``, with ``c = 1/t_k`` (``kl_coef``), ``λ`` the
      entropy coefficient and ``q'`` the Tsallis coefficient (logs become Tsallis q-logs of
      the per-dimension densities, ``q = 2 − q'``, when ``q' ≠ 1``). With ``π_k`` uniform
      and ``c = λ`` this is SAC's actor loss with Q1;
    - critics (one Adam for Q1, Q2 and V): ``L = ½mean((Q_i(s, a) − r − γ(1 − d)V'(s'))²)``
      for i = 1, 2, plus ``½mean((V(s) − min_i Q_i(s, ã) + λ log π_θ(ã|s))²)``;
    - target: ``V' ← (1 − τ)V' + τV`` every gradient step.

    Actor and critics are updated from the same forward pass (the original's order).
    Differences from the original code, on purpose: data is collected with *sampled* actions
    (the original acts with the deterministic mean after warm-up); ``log_q`` is not halved;
    truncated episodes are bootstrapped from their real final observation. Layers start from
    PyTorch's default initialisation (the original's TensorFlow layers use Glorot's).

    Args:
        policy: ``"MlpPolicy"``.
        env: env id, ``gymnasium.Env``, factory or vector env with a bounded ``Box`` action space.
        learning_rate: Adam learning rate of actor and critics, or a schedule (3e-4).
        buffer_size: replay buffer capacity (1 000 000).
        learning_starts: uniform-random transitions before learning (10 000, the original's).
        batch_size: minibatch size (256).
        tau: Polyak coefficient of V' (0.005).
        gamma: discount (0.99).
        train_freq: vector steps between training phases (1).
        gradient_steps: gradient steps per phase; -1 as many as transitions collected (1).
        kl_coef: ``c = 1/t_k``, weight of the KL (or Tsallis) proximity term (1.0).
        ent_coef: ``λ``, the entropy regularisation (0.2).
        tsallis_q: ``q'``: 1 for MDPO-KL, in ``(1, 2]`` for MDPO-Tsallis (1.0).
        old_policy_interval: ``m``, environment steps between refreshes of ``π_k`` (1000).
        precision, compile_update: see :class:`~mdpo.rl.off_policy.OffPolicyAgent`.
        n_envs, vec_env_cls, env_kwargs, policy_kwargs, stats_window_size, tensorboard_log,
        verbose, seed, device: see :class:`~mdpo.rl.base.Agent`.
    """

    algo_name = "OffPolicyMDPO"
    policy_aliases = {"MlpPolicy": OffPolicyMDPONets}

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        kl_coef: float = 1.0,
        ent_coef: float = 0.2,
        tsallis_q: float = 1.0,
        old_policy_interval: int = 1000,
        precision: str = "float32",
        compile_update: bool = False,
        n_envs: int = 1,
        vec_env_cls: str = "sync",
        env_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
        _init_setup_model: bool = True,
    ):
        check_number(kl_coef, "kl_coef", positive=True)
        check_number(ent_coef, "ent_coef", non_negative=True)
        check_number(tsallis_q, "tsallis_q")
        if not 1.0 <= tsallis_q <= 2.0:
            raise ValueError(f"tsallis_q (q') must be in [1, 2], got {tsallis_q!r}")
        self.kl_coef, self.ent_coef, self.tsallis_q = (
            float(kl_coef),
            float(ent_coef),
            float(tsallis_q),
        )
        self.old_policy_interval = check_int(old_policy_interval, "old_policy_interval")
        self._last_refresh = 0
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            precision=precision,
            compile_update=compile_update,
            n_envs=n_envs,
            vec_env_cls=vec_env_cls,
            env_kwargs=env_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self._finish_init(_init_setup_model)

    def _setup_model(self) -> None:
        self.policy = self.policy_class(
            self.observation_space, self.action_space, **self.policy_kwargs
        ).to(self.device)
        lr = self.lr_schedule(1.0)
        self.actor_params = FlatParams(self.policy.actor.parameters())
        self.old_actor_params = FlatParams(self.policy.old_actor.parameters())
        # Q1, Q2 and V share one flat vector (one Adam, as the original); V is its tail
        q_params = list(self.policy.critic.parameters())
        self.critic_params = FlatParams([*q_params, *self.policy.value.parameters()])
        self._value_slice = slice(sum(p.numel() for p in q_params), None)
        self.value_target_params = FlatParams(self.policy.value_target.parameters())
        self.actor_optimizer = FlatAdam(self.actor_params, lr=lr)
        self.critic_optimizer = FlatAdam(self.critic_params, lr=lr)
        self._finish_setup()

    def _state_modules(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "actor.optimizer": self.actor_optimizer,
            "critic.optimizer": self.critic_optimizer,
        }

    # ----------------------------------------------------------------------------- π_k
    def refresh_old_policy(self) -> None:
        """``π_k ← π_θ`` (one copy of the flat parameters)."""
        with torch.no_grad():
            self.old_actor_params.data.copy_(self.actor_params.data)
        self._last_refresh = self.num_timesteps

    def _setup_learn(self, total_timesteps: int, reset_num_timesteps: bool, tb_log_name: str):
        super()._setup_learn(total_timesteps, reset_num_timesteps, tb_log_name)
        if reset_num_timesteps:
            self.refresh_old_policy()

    def _after_train(self) -> None:
        """Refresh ``π_k`` once ``m`` more environment steps have been taken."""
        if self.num_timesteps - self._last_refresh >= self.old_policy_interval:
            self.refresh_old_policy()

    # ----------------------------------------------------------------------------- update
    def actor_objective(
        self, log_pi: torch.Tensor, log_pi_old: torch.Tensor, q_pi: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``c·log π_θ + q'·(λ − c)·log π_k − Q`` (before the regularisers)."""
        c, lam, q_prime = self.kl_coef, self.ent_coef, self.tsallis_q
        return c * log_pi + q_prime * (lam - c) * log_pi_old - q_pi

    def _losses(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        dones: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """``(actor loss, Q loss, V loss, KL(π_θ‖π_k), entropy)`` of one minibatch, from one
        forward pass of each network."""
        policy, q_prime = self.policy, self.tsallis_q
        actions_pi, u, log_prob_dims, mean, log_std = policy.actor.sample(obs, noise)
        with torch.no_grad():
            old_mean, old_log_std = policy.old_actor(obs)
        # π_k at the same sample: its density depends on θ through u and ã only
        old_log_prob_dims = squashed_gaussian_log_prob(u, actions_pi, old_mean, old_log_std)
        log_pi = policy_log(log_prob_dims, q_prime)
        log_pi_old = policy_log(old_log_prob_dims, q_prime)

        # the actor needs Q1 with its gradient to ã only (frozen: none to Q1's parameters);
        # V's target needs min(Q1, Q2) at ã
        q1_pi = policy.critic.forward_member(0, obs, actions_pi, frozen=True)
        regularizer = 1e-3 * (mean**2).mean() + 1e-3 * (log_std**2).mean()
        actor_loss = self.actor_objective(log_pi, log_pi_old, q1_pi).mean() + regularizer

        with torch.no_grad():
            next_value = policy.value_target(next_obs)[0]
            q_backup = rewards + (1.0 - dones) * self.gamma * next_value
            q2_pi = policy.critic.forward_member(1, obs, actions_pi)
            v_backup = torch.minimum(q1_pi, q2_pi) - self.ent_coef * log_pi
        current_q = policy.critic(obs, actions)
        value = policy.value(obs)[0]
        q_loss = 0.5 * ((current_q - q_backup) ** 2).mean(-1).sum()
        value_loss = 0.5 * ((value - v_backup) ** 2).mean()
        with torch.no_grad():
            kl = (log_prob_dims.sum(-1) - old_log_prob_dims.sum(-1)).mean()
            entropy = -log_prob_dims.sum(-1).mean()
        return actor_loss, q_loss, value_loss, kl, entropy

    def train(self, gradient_steps: int) -> None:
        """``gradient_steps`` updates of actor, critics (Q1, Q2, V) and the target V'."""
        self._update_learning_rate(self.actor_optimizer, self.critic_optimizer)
        generator, shape = self.train_rng, (self.batch_size, self.policy.action_dim)
        losses = self._loss("_losses")
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(self.batch_size, generator)
            noise = torch.randn(shape, device=self.device, generator=generator)
            batch = (data.obs, data.actions, data.rewards, data.next_obs, data.dones)
            actor_loss, q_loss, value_loss, kl, entropy = losses(*batch, noise)

            # both losses from the same forward pass, one backward pass: the actor's loss
            # reaches no critic parameter, the critics' losses no actor parameter
            self.actor_params.zero_grad()
            self.critic_params.zero_grad()
            (actor_loss + q_loss + value_loss).backward()
            self.actor_optimizer.step()
            self.critic_optimizer.step()
            self._polyak_update(
                self.value_target_params.data, self.critic_params.data[self._value_slice], self.tau
            )
            self._accumulate(
                actor_loss=actor_loss,
                critic_loss=q_loss,
                value_loss=value_loss,
                kl=kl,
                entropy=entropy,
            )
        self._n_updates += gradient_steps
