"""Soft Actor-Critic (Haarnoja et al. 2018), as Stable-Baselines3's ``SAC``."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.flat_params import FlatAdam, FlatParams
from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_int, check_number
from mdpo.rl.networks import CriticEnsemble, SquashedGaussianActor, activation_name, parse_net_arch
from mdpo.rl.off_policy import OffPolicyAgent
from mdpo.rl.runners import EnvSpec


class SACPolicy(nn.Module):
    """Squashed Gaussian actor, ``n_critics`` Q-networks and their target copies.

    Args:
        observation_space: a ``Box`` observation space (flattened at the input).
        action_space: a bounded ``Box`` action space.
        net_arch: hidden sizes, a list (actor and critics) or ``dict(pi=[...], qf=[...])``;
            default ``[256, 256]``.
        activation_fn: activation name or ``nn.Module`` class (``"relu"``).
        n_critics: number of Q-networks (2).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: str | type[nn.Module] = "relu",
        n_critics: int = 2,
    ):
        super().__init__()
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_dim = int(np.prod(action_space.shape))
        self.activation = activation_name(activation_fn)
        pi_sizes, qf_sizes = parse_net_arch(net_arch, "qf", default=(256, 256))
        n_critics = check_int(n_critics, "n_critics")
        self.actor = SquashedGaussianActor(self.obs_dim, self.action_dim, pi_sizes, self.activation)
        self.critic = CriticEnsemble(
            self.obs_dim + self.action_dim, qf_sizes, self.activation, n_critics
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    def flatten(self, obs: torch.Tensor) -> torch.Tensor:
        """Flatten the observation dimensions: ``[B, *obs_shape] → [B, obs_dim]``."""
        return obs.reshape(obs.shape[0], self.obs_dim).float()

    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None) -> torch.Tensor:
        """Squashed actions in ``[-1, 1]`` for flat observations."""
        return self.actor.act(obs, deterministic, generator)


class EntropyCoefficient(nn.Module):
    """The learned temperature ``α = exp(log_α)`` (a module so that it is saved by name)."""

    def __init__(self, initial: float):
        super().__init__()
        self.log_value = nn.Parameter(torch.full((1,), math.log(initial)))


def parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
    """``(learned, initial value)`` from ``"auto"``, ``"auto_0.1"`` or a positive float."""
    if isinstance(ent_coef, str):
        if ent_coef == "auto":
            return True, 1.0
        if ent_coef.startswith("auto_"):
            try:
                value = float(ent_coef[5:])
            except ValueError:
                value = -1.0
            if value > 0:
                return True, value
        raise ValueError(f"ent_coef must be 'auto', 'auto_<initial>' or a number, got {ent_coef!r}")
    check_number(ent_coef, "ent_coef", positive=True)
    return False, float(ent_coef)


@register_algorithm
class SAC(OffPolicyAgent):
    """Soft Actor-Critic; defaults and semantics of SB3's ``SAC``.

    Per gradient step, on a minibatch ``(s, a, r, s', d)`` from the replay buffer, with
    ``ã ~ π(·|s)``, ``ã' ~ π(·|s')`` reparameterized and squashed:

    - temperature (``ent_coef="auto"``): ``L(log α) = −mean(log α · (log π(ã|s) + H̄))``,
      ``H̄ = target_entropy`` (``−dim(A)``); the step uses α from before this update;
    - critics: ``y = r + γ(1 − d)(min_i Q'_i(s', ã') − α log π(ã'|s'))``,
      ``L(Q) = ½ Σ_i mean((Q_i(s, a) − y)²)``;
    - actor (after the critic step, as SB3): ``L(π) = mean(α log π(ã|s) − min_i Q_i(s, ã))``;
    - targets: ``Q' ← (1 − τ)Q' + τQ`` every ``target_update_interval`` gradient steps.

    Args:
        policy: ``"MlpPolicy"``.
        env: env id, ``gymnasium.Env``, factory or vector env with a bounded ``Box`` action space.
        learning_rate: Adam learning rate of actor, critics and temperature, or a schedule (3e-4).
        buffer_size: replay buffer capacity (1 000 000).
        learning_starts: uniform-random transitions before learning (100).
        batch_size: minibatch size (256).
        tau: Polyak coefficient (0.005).
        gamma: discount (0.99).
        train_freq: vector steps between training phases (1).
        gradient_steps: gradient steps per phase; -1 as many as transitions collected (1).
        ent_coef: ``"auto"`` (learned, initial 1), ``"auto_<x>"`` (learned, initial x) or a
            fixed positive float.
        target_update_interval: gradient steps between target updates (1).
        target_entropy: ``"auto"`` (``−dim(A)``) or a float.
        precision, compile_update: see :class:`~mdpo.rl.off_policy.OffPolicyAgent`.
        n_envs, vec_env_cls, env_kwargs, policy_kwargs, stats_window_size, tensorboard_log,
        verbose, seed, device: see :class:`~mdpo.rl.base.Agent`.
    """

    algo_name = "SAC"
    policy_aliases = {"MlpPolicy": SACPolicy}

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
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
        self.ent_coef = ent_coef
        self._learn_ent_coef, self._ent_coef_init = parse_ent_coef(ent_coef)
        self.target_update_interval = check_int(target_update_interval, "target_update_interval")
        if target_entropy != "auto":
            check_number(target_entropy, "target_entropy")
        self.target_entropy = target_entropy
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

    @property
    def learns_ent_coef(self) -> bool:
        """Whether the entropy coefficient is learned (``ent_coef="auto..."``)."""
        return self._learn_ent_coef

    @property
    def initial_ent_coef(self) -> float:
        """The entropy coefficient at the start (the constant one when it is not learned)."""
        return float(self._ent_coef_init)

    def _setup_model(self) -> None:
        self.policy = self.policy_class(
            self.observation_space, self.action_space, **self.policy_kwargs
        ).to(self.device)
        lr = self.lr_schedule(1.0)
        self.actor_params = FlatParams(self.policy.actor.parameters())
        self.critic_params = FlatParams(self.policy.critic.parameters())
        self.critic_target_params = FlatParams(self.policy.critic_target.parameters())
        self.actor_optimizer = FlatAdam(self.actor_params, lr=lr)
        self.critic_optimizer = FlatAdam(self.critic_params, lr=lr)
        action_dim = self.policy.action_dim
        self._target_entropy = (
            -float(action_dim) if self.target_entropy == "auto" else float(self.target_entropy)
        )
        self.ent_coef_module = EntropyCoefficient(self._ent_coef_init).to(self.device)
        self.ent_coef_params = FlatParams(self.ent_coef_module.parameters())
        self.ent_coef_optimizer = FlatAdam(self.ent_coef_params, lr=lr)
        self._finish_setup()

    def _state_modules(self) -> dict[str, Any]:
        modules = {
            "policy": self.policy,
            "actor.optimizer": self.actor_optimizer,
            "critic.optimizer": self.critic_optimizer,
        }
        if self._learn_ent_coef:
            modules["log_ent_coef"] = self.ent_coef_module
            modules["ent_coef_optimizer"] = self.ent_coef_optimizer
        return modules

    def _ent_coef(self) -> torch.Tensor:
        """The current temperature α (a detached ``[1]`` tensor)."""
        if self._learn_ent_coef:
            return torch.exp(self.ent_coef_module.log_value.detach())
        return torch.full((1,), self._ent_coef_init, device=self.device)

    def _critic_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        dones: torch.Tensor,
        next_noise: torch.Tensor,
        ent_coef: torch.Tensor,
    ) -> torch.Tensor:
        """``½ Σ_i mean((Q_i(s, a) − y)²)`` with the target
        ``y = r + γ(1 − d)(min_i Q'_i(s', ã') − α log π(ã'|s'))``."""
        policy = self.policy
        with torch.no_grad():
            next_actions, _, next_log_prob, _, _ = policy.actor.sample(next_obs, next_noise)
            next_q = policy.critic_target(next_obs, next_actions).min(0).values
            next_q = next_q - ent_coef * next_log_prob.sum(-1)
            target_q = rewards + (1.0 - dones) * self.gamma * next_q
        current_q = policy.critic(obs, actions)
        return 0.5 * ((current_q - target_q) ** 2).mean(-1).sum()

    def _actor_loss(
        self, obs: torch.Tensor, noise: torch.Tensor, ent_coef: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean(α log π(ã|s) − min_i Q_i(s, ã)), log π(ã|s) detached)``."""
        actions_pi, _, log_prob_dims, _, _ = self.policy.actor.sample(obs, noise)
        log_prob = log_prob_dims.sum(-1)
        min_q_pi = self.policy.critic(obs, actions_pi, frozen=True).min(0).values
        return (ent_coef * log_prob - min_q_pi).mean(), log_prob.detach()

    def train(self, gradient_steps: int) -> None:
        """``gradient_steps`` updates of critics, actor, temperature and targets.

        The order of SB3's step, rearranged where nothing depends on it: the temperature
        step comes last (it reads only the actor's log-densities, which the critics' step
        does not change, and every loss uses α from before it), so that the actor's
        forward pass serves both its own loss and the temperature's."""
        optimizers = [self.actor_optimizer, self.critic_optimizer]
        if self._learn_ent_coef:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(*optimizers)
        generator, shape = self.train_rng, (self.batch_size, self.policy.action_dim)
        critic_loss_fn, actor_loss_fn = self._loss("_critic_loss"), self._loss("_actor_loss")
        for step in range(gradient_steps):
            data = self.replay_buffer.sample(self.batch_size, generator)
            noise = torch.randn(shape, device=self.device, generator=generator)
            next_noise = torch.randn(shape, device=self.device, generator=generator)
            ent_coef = self._ent_coef()  # α before this step's temperature update, as SB3

            batch = (data.obs, data.actions, data.rewards, data.next_obs, data.dones)
            critic_loss = critic_loss_fn(*batch, next_noise, ent_coef)
            self.critic_params.zero_grad()
            critic_loss.backward()
            self.critic_optimizer.step()

            # after the critics' step, as SB3; the actor's gradient flows through the critics
            # to the action only (frozen critics: no gradient of their own parameters)
            actor_loss, log_prob = actor_loss_fn(data.obs, noise, ent_coef)
            self.actor_params.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()

            stats: dict[str, torch.Tensor] = {}
            if self._learn_ent_coef:  # L(log α) = −mean(log α · (log π(ã|s) + H̄))
                log_alpha = self.ent_coef_module.log_value
                ent_coef_loss = -(log_alpha * (log_prob + self._target_entropy)).mean()
                self.ent_coef_params.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
                stats["ent_coef_loss"] = ent_coef_loss

            if step % self.target_update_interval == 0:
                self._polyak_update(
                    self.critic_target_params.data, self.critic_params.data, self.tau
                )
            self._accumulate(
                actor_loss=actor_loss, critic_loss=critic_loss, ent_coef=ent_coef[0], **stats
            )
        self._n_updates += gradient_steps
