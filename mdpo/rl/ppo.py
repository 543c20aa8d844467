"""Proximal Policy Optimization (Schulman et al. 2017), as Stable-Baselines3's ``PPO``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_bool, check_int, check_number, make_schedule
from mdpo.rl.buffers import RolloutBatch
from mdpo.rl.compiled import loss_function
from mdpo.rl.on_policy import OnPolicyAgent, explained_variance
from mdpo.rl.runners import EnvSpec


def clipped_surrogate_loss(
    advantages: torch.Tensor, ratio: torch.Tensor, clip_range: Any, dim: int | None = None
) -> torch.Tensor:
    """PPO's policy loss ``−mean(min(r·Â, clip(r, 1 − ε, 1 + ε)·Â))``, the mean over ``dim``
    (over everything when None)."""
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    objective = torch.min(advantages * ratio, advantages * clipped)
    return -(objective.mean() if dim is None else objective.mean(dim))


def value_loss_of(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range_vf: Any,
    dim: int | None = None,
) -> torch.Tensor:
    """``mean((R − V)²)`` over ``dim`` (everything when None), ``V`` clipped to
    ``old ± clip_range_vf`` first unless that is None."""
    if clip_range_vf is not None:
        values = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    squared = (returns - values) ** 2
    return squared.mean() if dim is None else squared.mean(dim)


@register_algorithm
class PPO(OnPolicyAgent):
    """PPO with the clipped surrogate objective; defaults and semantics of SB3's ``PPO``.

    Per minibatch: ``L = −mean(min(r·Â, clip(r, 1 ± ε)·Â)) + c_ent·(−H) + c_vf·MSE(V, R)``,
    with ``r = π_θ(a|s)/π_old(a|s)``, advantages standardized per minibatch, the value
    prediction optionally clipped around the old one, gradients clipped to ``max_grad_norm``,
    and the epoch loop stopped when the approximate KL exceeds ``1.5·target_kl``.

    Args:
        policy: ``"MlpPolicy"``.
        env: env id, ``gymnasium.Env``, factory or vector env.
        learning_rate: Adam learning rate or schedule (3e-4).
        n_steps: steps per env per rollout (2048).
        batch_size: minibatch size (64).
        n_epochs: passes over the rollout (10).
        gamma: discount (0.99).
        gae_lambda: GAE λ (0.95).
        clip_range: ε of the ratio clip, float or schedule (0.2).
        clip_range_vf: clip of the value prediction around the old value; ``None`` disables.
        normalize_advantage: standardize advantages per minibatch (True).
        ent_coef: entropy bonus coefficient (0.0).
        vf_coef: value loss coefficient (0.5).
        max_grad_norm: global gradient-norm clip (0.5).
        target_kl: stop the epochs early when the approximate KL exceeds 1.5× this.
        compile_update: compute each minibatch's losses through ``torch.compile`` (about
            1.5x faster on the update of a 64×64 MLP on the CPU; a few seconds to compile at
            the first update; eager with a warning where it cannot compile).
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device, n_envs,
        vec_env_cls, env_kwargs, normalize_obs, normalize_reward: see
            :class:`~mdpo.rl.base.Agent`.
    """

    algo_name = "PPO"
    minibatch_attributes = ("batch_size",)

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        compile_update: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
        n_envs: int = 1,
        vec_env_cls: str = "sync",
        env_kwargs: dict[str, Any] | None = None,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        _init_setup_model: bool = True,
    ):
        self.batch_size = check_int(batch_size, "batch_size")
        self.n_epochs = check_int(n_epochs, "n_epochs")
        self.clip_range = clip_range
        self.clip_range_schedule = make_schedule(clip_range, "clip_range")
        self.clip_range_vf = clip_range_vf
        self.clip_range_vf_schedule = (
            None if clip_range_vf is None else make_schedule(clip_range_vf, "clip_range_vf")
        )
        self.normalize_advantage = bool(normalize_advantage)
        check_number(ent_coef, "ent_coef")
        check_number(vf_coef, "vf_coef", non_negative=True)
        check_number(max_grad_norm, "max_grad_norm", positive=True)
        if target_kl is not None:
            check_number(target_kl, "target_kl", positive=True)
        self.ent_coef, self.vf_coef, self.max_grad_norm = ent_coef, vf_coef, max_grad_norm
        self.target_kl = target_kl
        self.compile_update = check_bool(compile_update, "compile_update")
        super().__init__(
            policy,
            env,
            learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            n_envs=n_envs,
            vec_env_cls=vec_env_cls,
            env_kwargs=env_kwargs,
            normalize_obs=normalize_obs,
            normalize_reward=normalize_reward,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self._finish_init(_init_setup_model)

    def _minibatch_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        advantages: torch.Tensor,
        old_log_prob: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        clip_range: torch.Tensor,
        clip_range_vf: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """``(loss, policy loss, value loss, entropy loss, log-ratio, ratio)`` of a
        minibatch (the clip ranges as tensors, so that a schedule does not recompile)."""
        values, log_prob, entropy = self.policy.evaluate_actions(obs, actions)
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_prob - old_log_prob
        ratio = torch.exp(log_ratio)
        policy_loss = clipped_surrogate_loss(advantages, ratio, clip_range)
        value_loss = value_loss_of(values, old_values, returns, clip_range_vf)
        entropy_loss = -torch.mean(entropy)
        loss = policy_loss + self.vf_coef * value_loss
        if self.ent_coef != 0.0:
            loss = loss + self.ent_coef * entropy_loss
        return loss, policy_loss, value_loss, entropy_loss, log_ratio.detach(), ratio.detach()

    def train(self, batch: RolloutBatch) -> None:
        """Run ``n_epochs`` passes of minibatch updates over one rollout."""
        self._update_learning_rate(self.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range_schedule(progress)
        clip_range_vf = None
        if self.clip_range_vf_schedule is not None:
            clip_range_vf = self.clip_range_vf_schedule(progress)
        device = self.device
        clip_t = torch.tensor(clip_range, device=device)
        clip_vf_t = None if clip_range_vf is None else torch.tensor(clip_range_vf, device=device)
        minibatch_loss = loss_function(self, "_minibatch_loss", self.compile_update)
        # per-minibatch values stay tensors and are reduced once at the end; logged as SB3
        # does: losses and clip fraction over all minibatches, approx KL over the last epoch
        pg_losses, value_losses, entropy_losses, clip_fractions = [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            log_ratios: list[torch.Tensor] = []
            for mb in batch.minibatches(self.batch_size, self.rng):
                loss, policy_loss, value_loss, entropy_loss, log_ratio, ratio = minibatch_loss(
                    mb.obs,
                    mb.actions,
                    mb.advantages,
                    mb.old_log_prob,
                    mb.old_values,
                    mb.returns,
                    clip_t,
                    clip_vf_t,
                )
                log_ratios.append(log_ratio)
                pg_losses.append(policy_loss.detach())
                value_losses.append(value_loss.detach())
                entropy_losses.append(entropy_loss.detach())
                clipped = torch.abs(ratio - 1.0) > clip_range
                clip_fractions.append(torch.mean(clipped.float()))
                self._check_finite({"loss": loss})  # before the step: parameters stay good
                if self.target_kl is not None:
                    approx_kl = float(torch.mean(torch.expm1(log_ratio) - log_ratio))
                    if approx_kl > 1.5 * self.target_kl:
                        continue_training = False
                        if self.verbose >= 1:
                            print(f"Early stopping at epoch {epoch}: approx_kl {approx_kl:.4f}")
                        break
                self.flat_params.zero_grad()
                loss.backward()
                self.flat_params.clip_grad_norm_(self.max_grad_norm)
                self.optimizer.step()
            self._n_updates += 1  # SB3 counts epochs
            if not continue_training:
                break
        record = self.logger.record
        record("train/policy_gradient_loss", float(torch.stack(pg_losses).mean()))
        record("train/value_loss", float(torch.stack(value_losses).mean()))
        record("train/entropy_loss", float(torch.stack(entropy_losses).mean()))
        record("train/loss", float(loss.detach()))
        record("train/clip_fraction", float(torch.stack(clip_fractions).mean()))
        kls = [torch.mean(torch.expm1(lr) - lr) for lr in log_ratios]
        record("train/approx_kl", float(torch.stack(kls).mean()))
        record("train/explained_variance", explained_variance(batch.old_values, batch.returns))
        if self.policy.continuous:
            record("train/std", float(self.policy.log_std.detach().exp().mean()))
        record("train/n_updates", self._n_updates)
        record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            record("train/clip_range_vf", clip_range_vf)
