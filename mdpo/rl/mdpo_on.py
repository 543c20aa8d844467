"""On-policy Mirror Descent Policy Optimization (Tomar et al., ICLR 2022).

Reference: the paper (arXiv 2005.09814) and its code, ``mdpo_on/mdpo.py`` of
manantomar/Mirror-Descent-Policy-Optimization.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from mdpo.core.flat_params import FlatAdam, FlatParams
from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_bool, check_int, check_number, make_schedule
from mdpo.rl.buffers import RolloutBatch
from mdpo.rl.compiled import loss_function
from mdpo.rl.on_policy import OnPolicyAgent, explained_variance
from mdpo.rl.runners import EnvSpec


def tsallis_log(x: torch.Tensor, q: float) -> torch.Tensor:
    """Tsallis q-logarithm ``(x^(1−q) − 1)/(1 − q)``; the natural log at ``q = 1``."""
    if q == 1.0:
        return torch.log(x)
    return (x.pow(1.0 - q) - 1.0) / (1.0 - q)


def step_size_t_k(iteration: int, n_iterations: int, t_k: float | str) -> float:
    """Mirror-descent step size of iteration ``k`` (1-based) of ``K``.

    ``"annealed"`` is the paper's ``t_k = 1 − (k − 1)/K`` (floored at ``1/K``); a number is a
    constant step size.
    """
    if t_k == "annealed":
        return max(1.0 - (iteration - 1) / n_iterations, 1.0 / n_iterations)
    return float(t_k)


@register_algorithm
class MDPO(OnPolicyAgent):
    """On-policy MDPO: ``m`` Adam steps per iteration on the mirror-descent objective.

    Per iteration ``k`` with the rollout policy ``π_k`` and standardized GAE advantages ``Â``,
    the policy maximizes (no ratio clipping, no line search)::

        L(θ) = mean(r_θ · Â) − (1/t_k) · mean(KL(π_θ(·|s) ‖ π_k(·|s)))

    with ``r_θ = π_θ(a|s)/π_k(a|s)``, the closed-form KL in the new ‖ old direction, and
    ``t_k = 1 − (k−1)/K`` over the real budget of ``K`` iterations (or a constant). Then the
    value network is fitted with the clipped value loss ``mean(max((V − R)², (V_clip − R)²))``.
    Defaults are the paper's: m = 10 full-batch steps (Adam 3e-4, ε 1e-5, gradient norm 0.5),
    5 value epochs of minibatch 128 (Adam 3e-4), γ 0.99, λ 0.95, 2048 steps, observation and
    reward normalization, separate [64, 64] tanh actor and critic.

    Differences from the original code, on purpose: ``K`` comes from the ``total_timesteps``
    passed to ``learn`` (the original hard-codes 10M) and ``k`` counts from 1 (the original's
    first step size is ``1 + 1/K``).

    Args:
        policy: ``"MlpPolicy"``.
        env: env id, ``gymnasium.Env``, factory or vector env.
        learning_rate: policy Adam learning rate or schedule (3e-4).
        n_steps: steps per env per rollout (2048).
        gamma: discount (0.99).
        gae_lambda: GAE λ (0.95).
        n_policy_steps: ``m``, policy updates per iteration (10; 1 gives a policy-gradient step).
        policy_batch_size: ``None`` for full-batch steps (the paper); an int makes each of the
            ``m`` steps a pass over shuffled minibatches of that size.
        t_k: ``"annealed"`` (the paper's schedule) or a constant step size.
        tsallis_q: 1 for the KL (MDPO-KL); another value replaces the KL by a Tsallis
            divergence estimate with ``q = 2 − tsallis_q`` (see :meth:`divergence`).
        vf_learning_rate: value Adam learning rate or schedule (3e-4).
        vf_epochs: value epochs per iteration (5).
        vf_batch_size: value minibatch size (128; a last partial minibatch is dropped).
        clip_range_vf: clip of the value prediction around the rollout's (0.2; ``None``: off).
        max_grad_norm: global gradient-norm clip of the policy steps (0.5).
        normalize_advantage: standardize advantages over the rollout (True).
        ent_coef: entropy bonus (0).
        compile_update: compute the policy steps' and value minibatches' losses through
            ``torch.compile`` (see :class:`~mdpo.rl.ppo.PPO`).
        normalize_obs: observation normalization (True, as the paper).
        normalize_reward: reward normalization (True, as the paper).
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device, n_envs,
        vec_env_cls, env_kwargs: see :class:`~mdpo.rl.base.Agent`.
    """

    algo_name = "MDPO"
    minibatch_attributes = ("policy_batch_size", "vf_batch_size")

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        n_policy_steps: int = 10,
        policy_batch_size: int | None = None,
        t_k: Literal["annealed"] | float = "annealed",
        tsallis_q: float = 1.0,
        vf_learning_rate: float | Schedule = 3e-4,
        vf_epochs: int = 5,
        vf_batch_size: int = 128,
        clip_range_vf: float | None = 0.2,
        max_grad_norm: float = 0.5,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
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
        normalize_obs: bool = True,
        normalize_reward: bool = True,
        _init_setup_model: bool = True,
    ):
        self.n_policy_steps = check_int(n_policy_steps, "n_policy_steps")
        self.policy_batch_size = (
            None if policy_batch_size is None else check_int(policy_batch_size, "policy_batch_size")
        )
        if t_k != "annealed":
            check_number(t_k, "t_k", positive=True)
        self.t_k = t_k
        check_number(tsallis_q, "tsallis_q", positive=True)
        self.tsallis_q = float(tsallis_q)
        self.vf_learning_rate = vf_learning_rate
        self.vf_lr_schedule = make_schedule(vf_learning_rate, "vf_learning_rate")
        self.vf_epochs = check_int(vf_epochs, "vf_epochs", minimum=0)
        self.vf_batch_size = check_int(vf_batch_size, "vf_batch_size")
        if clip_range_vf is not None:
            check_number(clip_range_vf, "clip_range_vf", positive=True)
        self.clip_range_vf = clip_range_vf
        check_number(max_grad_norm, "max_grad_norm", positive=True)
        self.max_grad_norm = float(max_grad_norm)
        self.normalize_advantage = bool(normalize_advantage)
        self.compile_update = check_bool(compile_update, "compile_update")
        check_number(ent_coef, "ent_coef")
        self.ent_coef = float(ent_coef)
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

    def _setup_optimizers(self) -> None:
        self.actor_params = FlatParams(self.policy.actor_parameters())
        self.critic_params = FlatParams(self.policy.critic_parameters())
        self.policy_optimizer = FlatAdam(self.actor_params, lr=self.lr_schedule(1.0), eps=1e-5)
        # the original fits the value function with stable-baselines' MpiAdam (ε = 1e-8)
        self.value_optimizer = FlatAdam(self.critic_params, lr=self.vf_lr_schedule(1.0), eps=1e-8)

    def _state_modules(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "policy.optimizer": self.policy_optimizer,
            "value.optimizer": self.value_optimizer,
        }

    def current_t_k(self) -> float:
        """The step size of the current iteration over the real training budget.

        ``k`` counts the rollouts collected so far (from the step counter, so a resumed run
        continues the schedule) and ``K = ceil(total_timesteps / rollout)``. A further
        ``learn(..., reset_num_timesteps=False)`` with a new budget stretches ``K`` over the
        longer run, as SB3's learning-rate schedules do.
        """
        rollout = self.n_steps * self.n_envs
        n_iterations = max(1, math.ceil(self._total_timesteps / rollout))
        iteration = max(1, math.ceil(self.num_timesteps / rollout))
        return step_size_t_k(iteration, n_iterations, self.t_k)

    def divergence(
        self,
        old_dist_params: torch.Tensor,
        old_log_prob: torch.Tensor,
        params: torch.Tensor,
        log_prob: torch.Tensor,
        old_log_std: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean divergence of π_θ from π_k: closed-form KL(π_θ ‖ π_k), or the Tsallis estimate.

        The Tsallis estimate is ``mean(r_θ · (log_q π_θ(a|s) − log_q π_k(a|s)))`` over the
        rollout's actions (drawn from π_k, hence the ratio ``r_θ``): it tends to
        KL(π_θ ‖ π_k) as q → 1. The original code omits the ratio, which makes its estimate
        tend to −KL(π_k ‖ π_θ) ≤ 0, a bonus for moving away from π_k; we do not copy that.
        """
        if self.tsallis_q == 1.0:
            kl = self.policy.kl_divergence(params, old_dist_params, None, old_log_std)
            return kl.mean()
        q = 2.0 - self.tsallis_q
        ratio = torch.exp(log_prob - old_log_prob)
        log_q_new = tsallis_log(log_prob.exp(), q)
        log_q_old = tsallis_log(old_log_prob.exp(), q)
        return torch.mean(ratio * (log_q_new - log_q_old))

    def _policy_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        old_dist_params: torch.Tensor,
        old_log_std: torch.Tensor | None,
        t_k: torch.Tensor,
    ) -> torch.Tensor:
        """``−(mean(r_θ·Â) − D(π_θ, π_k)/t_k + c_ent·H)``, the negated mirror-descent
        objective of a minibatch (``t_k`` a tensor, so that its schedule does not recompile)."""
        params = self.policy.distribution_params(obs)
        log_prob, entropy = self.policy.log_prob_entropy(params, actions)
        surrogate = torch.mean(torch.exp(log_prob - old_log_prob) * advantages)
        divergence = self.divergence(old_dist_params, old_log_prob, params, log_prob, old_log_std)
        objective = surrogate - divergence / t_k
        if self.ent_coef != 0.0:
            objective = objective + self.ent_coef * entropy.mean()
        return -objective

    def _value_loss(
        self, obs: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error of the values, clipped around the rollout's (PPO's form)."""
        values = self.policy.predict_values(obs)
        value_loss = (values - returns) ** 2
        if self.clip_range_vf is not None:
            clipped = old_values + torch.clamp(
                values - old_values, -self.clip_range_vf, self.clip_range_vf
            )
            value_loss = torch.maximum(value_loss, (clipped - returns) ** 2)
        return value_loss.mean()

    def train(self, batch: RolloutBatch) -> None:
        """``m`` policy steps on the mirror-descent objective, then the value epochs."""
        policy = self.policy
        progress = self._current_progress_remaining
        self._update_learning_rate(self.policy_optimizer)
        vf_lr = self._update_learning_rate(
            self.value_optimizer, lr=self.vf_lr_schedule(progress), key="train/vf_learning_rate"
        )
        t_k = self.current_t_k()
        old_log_std = policy.log_std.detach().clone() if policy.continuous else None
        advantages = batch.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        data = RolloutBatch(*batch.columns()[:4], advantages, *batch.columns()[5:])

        policy_loss = loss_function(self, "_policy_loss", self.compile_update)
        value_loss_fn = loss_function(self, "_value_loss", self.compile_update)
        t_k_tensor = torch.tensor(t_k, device=self.device)
        for _ in range(self.n_policy_steps):
            if self.policy_batch_size is None:
                minibatches = [data]
            else:
                minibatches = data.minibatches(self.policy_batch_size, self.rng)
            for mb in minibatches:
                loss = policy_loss(
                    mb.obs,
                    mb.actions,
                    mb.old_log_prob,
                    mb.advantages,
                    mb.old_dist_params,
                    old_log_std,
                    t_k_tensor,
                )
                self._check_finite({"policy loss": loss})
                self.actor_params.zero_grad()
                loss.backward()
                self.actor_params.clip_grad_norm_(self.max_grad_norm)
                self.policy_optimizer.step()

        with torch.no_grad():  # where the policy steps ended, on the whole rollout
            params = policy.distribution_params(batch.obs)
            log_prob, entropy = policy.log_prob_entropy(params, batch.actions)
            log_ratio = log_prob - batch.old_log_prob
            surrogate = torch.mean(torch.exp(log_ratio) * advantages)
            divergence = self.divergence(
                batch.old_dist_params, batch.old_log_prob, params, log_prob, old_log_std
            )

        value_losses = []
        for _ in range(self.vf_epochs):
            for mb in batch.minibatches(self.vf_batch_size, self.rng, drop_last=True):
                value_loss = value_loss_fn(mb.obs, mb.returns, mb.old_values)
                self._check_finite({"value loss": value_loss})
                self.critic_params.zero_grad()
                value_loss.backward()
                self.value_optimizer.step()
                value_losses.append(value_loss.detach())
        self._n_updates += 1

        record = self.logger.record
        record("train/t_k", t_k)
        record("train/kl", float(divergence))
        record("train/policy_objective", float(surrogate - divergence / t_k))
        record("train/policy_gradient_loss", -float(surrogate))
        record("train/approx_kl", float(torch.mean(torch.expm1(log_ratio) - log_ratio)))
        record("train/entropy_loss", -float(entropy.mean()))
        if value_losses:
            record("train/value_loss", float(torch.stack(value_losses).mean()))
        record("train/explained_variance", explained_variance(batch.old_values, batch.returns))
        if policy.continuous:
            record("train/std", float(policy.log_std.detach().exp().mean()))
        record("train/n_updates", self._n_updates)
        record("train/vf_learning_rate", vf_lr)
