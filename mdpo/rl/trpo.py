"""Trust Region Policy Optimization (Schulman et al. 2015), as sb3-contrib's ``TRPO``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from mdpo.core.flat_params import FlatAdam, FlatParams
from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_bool, check_int, check_number
from mdpo.rl.buffers import RolloutBatch
from mdpo.rl.compiled import loss_function
from mdpo.rl.on_policy import OnPolicyAgent, explained_variance
from mdpo.rl.runners import EnvSpec


def flat_grad(output: torch.Tensor, params: list[nn.Parameter], **kwargs: Any) -> torch.Tensor:
    """Gradient of a scalar with respect to ``params``, concatenated into one vector."""
    grads = torch.autograd.grad(output, params, **kwargs)
    return torch.cat([g.reshape(-1) for g in grads])


def conjugate_gradient(
    matrix_vector: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_iter: int,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given as ``x ↦ A x``.

    Starts from ``x = 0`` and stops after ``max_iter`` products or when ``‖r‖² < residual_tol``.
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    rr = residual @ residual
    for _ in range(max_iter):
        if float(rr) < residual_tol:
            break
        a_dir = matrix_vector(direction)
        alpha = rr / (direction @ a_dir)
        x += alpha * direction
        residual -= alpha * a_dir
        new_rr = residual @ residual
        direction = residual + (new_rr / rr) * direction
        rr = new_rr
    return x


@register_algorithm
class TRPO(OnPolicyAgent):
    """TRPO: natural-gradient steps inside a KL trust region; defaults of sb3-contrib's ``TRPO``.

    Per iteration, with ``A`` the advantages (standardized) and ``r = π_θ(a|s)/π_old(a|s)``:
    the search direction ``s ≈ F⁻¹ ∇_θ mean(r·A)`` by conjugate gradient on Fisher-vector
    products (the Hessian of the mean ``KL(π_old ‖ π_θ)`` at θ_old, plus ``cg_damping``), a step
    ``β·s`` with ``β = sqrt(2·target_kl / sᵀFs)``, shrunk by ``line_search_shrinking_factor``
    until ``KL(π_old ‖ π_new) < target_kl`` and the surrogate improves (else no step); then the
    critic is fitted by Adam (``learning_rate``) on the λ-returns for ``n_critic_updates``
    epochs of minibatches. sb3-contrib checks ``KL(π_new ‖ π_old)`` in its line search; we use
    the direction of the TRPO paper (both agree to second order).

    Args:
        policy: ``"MlpPolicy"``.
        env: env id, ``gymnasium.Env``, factory or vector env.
        learning_rate: critic Adam learning rate or schedule (1e-3).
        n_steps: steps per env per rollout (2048).
        batch_size: critic minibatch size (128).
        gamma: discount (0.99).
        cg_max_steps: conjugate-gradient iterations (15).
        cg_damping: damping added to the Fisher-vector product (0.1).
        line_search_shrinking_factor: step shrink per line-search iteration (0.8).
        line_search_max_iter: line-search iterations (10).
        n_critic_updates: critic epochs per rollout (10).
        gae_lambda: GAE λ (0.95).
        normalize_advantage: standardize advantages over the rollout (True).
        target_kl: trust-region radius on the mean KL (0.01).
        sub_sampling_factor: use every k-th sample for the policy step (1: all).
        compile_update: compute the Fisher-vector products through ``torch.compile``, in
            their Gauss-Newton form ``JᵀMJ v`` (the Hessian of the KL at θ_old exactly; the
            double backward of the eager form does not compile). Measured on the CPU
            (Hopper-v5, ``benchmarks/trpo_fvp.py``): no faster (2.0 ms a product against
            1.8-2.0 eager, 0.97-1.01x a whole iteration, where the products are 12%); kept
            for the option's uniformity across agents and for accelerators, where it is
            unmeasured. Eager with a warning where it cannot compile.
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device, n_envs,
        vec_env_cls, env_kwargs, normalize_obs, normalize_reward: see
            :class:`~mdpo.rl.base.Agent`.
    """

    algo_name = "TRPO"
    minibatch_attributes = ("batch_size",)

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
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
        self.cg_max_steps = check_int(cg_max_steps, "cg_max_steps")
        check_number(cg_damping, "cg_damping", non_negative=True)
        self.cg_damping = float(cg_damping)
        check_number(line_search_shrinking_factor, "line_search_shrinking_factor", positive=True)
        if line_search_shrinking_factor >= 1:
            raise ValueError(
                "line_search_shrinking_factor must be in (0, 1), "
                f"got {line_search_shrinking_factor}"
            )
        self.line_search_shrinking_factor = float(line_search_shrinking_factor)
        self.line_search_max_iter = check_int(line_search_max_iter, "line_search_max_iter")
        self.n_critic_updates = check_int(n_critic_updates, "n_critic_updates", minimum=0)
        self.normalize_advantage = bool(normalize_advantage)
        check_number(target_kl, "target_kl", positive=True)
        self.target_kl = float(target_kl)
        self.sub_sampling_factor = check_int(sub_sampling_factor, "sub_sampling_factor")
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

    def _check_env_settings(self) -> None:
        super()._check_env_settings()
        if self.normalize_advantage and self.n_steps * self.n_envs < 2:
            raise ValueError("normalize_advantage needs n_steps × n_envs >= 2")

    def _setup_optimizers(self) -> None:
        self.actor_params = FlatParams(self.policy.actor_parameters())
        name_of = {id(p): name for name, p in self.policy.named_parameters()}
        # the actor's parameter names in its order (the functional products call the policy,
        # whose forward gives the distribution parameters; a Gaussian's log-std comes last)
        self._actor_names = [name_of[id(p)] for p in self.actor_params.params]
        if self.policy.continuous and self._actor_names[-1] != "log_std":
            raise RuntimeError(f"TRPO expects the log-std last, got {self._actor_names}")
        self.critic_params = FlatParams(self.policy.critic_parameters())
        self.critic_optimizer = FlatAdam(
            self.critic_params, lr=self.lr_schedule(1.0), eps=self.adam_eps
        )

    def _state_modules(self) -> dict[str, Any]:
        return {"policy": self.policy, "critic.optimizer": self.critic_optimizer}

    def fisher_vector_product(
        self, obs: torch.Tensor, old_params: torch.Tensor, old_log_std: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ (H + cg_damping·I) v`` with ``H`` the Hessian of the mean ``KL(π_old ‖ π_θ)``.

        At θ = θ_old this Hessian is the Fisher information of the policy; it is obtained by
        differentiating ``∇KL · v`` once more (two backward passes per product); with
        ``compile_update`` as :meth:`_gauss_newton_product`, compiled.
        """
        if self.compile_update:
            product_of = loss_function(self, "_gauss_newton_product", True)
            return lambda vector: product_of(obs, old_params, old_log_std, vector)
        params = self.actor_params.params
        new_params = self.policy.distribution_params(obs)
        kl = self.policy.kl_divergence(old_params, new_params, old_log_std, None).mean()
        grad_kl = flat_grad(kl, params, create_graph=True)

        def product(vector: torch.Tensor) -> torch.Tensor:
            hvp = flat_grad(grad_kl @ vector, params, retain_graph=True)
            return hvp + self.cg_damping * vector

        return product

    def _gauss_newton_product(
        self,
        obs: torch.Tensor,
        old_params: torch.Tensor,
        old_log_std: torch.Tensor | None,
        vector: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`fisher_vector_product` as ``(JᵀMJ + cg_damping·I) v``, for θ = θ_old.

        ``J`` is the Jacobian of the distribution parameters (mean or logits) over the batch
        and ``M`` the Hessian of the KL in them at the old distribution: ``1/σ²`` on a
        Gaussian's mean (and 2 on its shared log-std, which the mean does not depend on),
        ``diag(p) − ppᵀ`` on logits; averaged over the batch. At θ = θ_old (where the
        products are taken) the KL's gradient in the distribution parameters is zero, so
        this is the Hessian of the mean KL exactly, obtained by one forward-mode and one
        reverse-mode pass, which ``torch.compile`` compiles (unlike a double backward).
        """
        policy, params = self.policy, self.actor_params.params
        n_net = len(params) - (1 if policy.continuous else 0)  # the log-std comes last
        names, shapes = self._actor_names[:n_net], [p.shape for p in params[:n_net]]
        sizes = [p.numel() for p in params[:n_net]]
        n_weights = sum(sizes)
        weights = self.actor_params.data[:n_weights].detach()  # one flat primal

        def distribution_params(flat: torch.Tensor) -> torch.Tensor:
            pieces = [x.view(shape) for x, shape in zip(flat.split(sizes), shapes, strict=True)]
            return functional_call(policy, dict(zip(names, pieces, strict=True)), (obs,))

        _, jv = jvp(distribution_params, (weights,), (vector[:n_weights],))
        if policy.continuous:
            mjv = jv * torch.exp(-2.0 * old_log_std)
        else:
            probs = torch.softmax(old_params, dim=-1)
            mjv = probs * jv - probs * (probs * jv).sum(-1, keepdim=True)
        _, pullback = vjp(distribution_params, weights)
        parts = [pullback(mjv / obs.shape[0])[0]]
        if policy.continuous:
            parts.append(2.0 * vector[n_weights:])
        return torch.cat(parts) + self.cg_damping * vector

    def _surrogate_and_kl(
        self, batch: RolloutBatch, advantages: torch.Tensor, old_log_std: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean(r·A)`` and the mean ``KL(π_old ‖ π_θ)`` at the current parameters."""
        params = self.policy.distribution_params(batch.obs)
        log_prob, _ = self.policy.log_prob_entropy(params, batch.actions)
        objective = torch.mean(advantages * torch.exp(log_prob - batch.old_log_prob))
        kl = self.policy.kl_divergence(batch.old_dist_params, params, old_log_std, None).mean()
        return objective, kl

    def train(self, batch: RolloutBatch) -> None:
        """One natural-gradient policy step with line search, then the critic epochs."""
        self._update_learning_rate(self.critic_optimizer)
        policy = self.policy
        old_log_std = policy.log_std.detach().clone() if policy.continuous else None
        data = batch[:: self.sub_sampling_factor] if self.sub_sampling_factor > 1 else batch
        advantages = data.advantages
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        params = policy.distribution_params(data.obs)
        log_prob, _ = policy.log_prob_entropy(params, data.actions)
        objective = torch.mean(advantages * torch.exp(log_prob - data.old_log_prob))
        self._check_finite({"policy objective": objective})
        gradient = flat_grad(objective, self.actor_params.params)
        fvp = self.fisher_vector_product(data.obs, data.old_dist_params, old_log_std)
        direction = conjugate_gradient(fvp, gradient, self.cg_max_steps)
        curvature = direction @ fvp(direction)
        step_size = torch.sqrt(2.0 * self.target_kl / curvature.clamp_min(1e-12))

        start = self.actor_params.data.clone()
        success, new_objective, kl = False, objective.detach(), torch.zeros(())
        coefficient = 1.0
        with torch.no_grad():
            for _ in range(self.line_search_max_iter):
                self.actor_params.set_(start + coefficient * step_size * direction)
                new_objective, kl = self._surrogate_and_kl(data, advantages, old_log_std)
                if kl < self.target_kl and new_objective > objective:
                    success = True
                    break
                coefficient *= self.line_search_shrinking_factor
            if not success:
                self.actor_params.set_(start)
                new_objective, kl = objective.detach(), torch.zeros(())
        del fvp  # frees the graph kept for the Fisher-vector products

        value_losses = []
        for _ in range(self.n_critic_updates):
            for mb in batch.minibatches(self.batch_size, self.rng):
                value_loss = torch.mean((mb.returns - policy.predict_values(mb.obs)) ** 2)
                self._check_finite({"value loss": value_loss})
                self.critic_params.zero_grad()
                value_loss.backward()
                self.critic_optimizer.step()
                value_losses.append(value_loss.detach())
        self._n_updates += 1

        record = self.logger.record
        record("train/policy_objective", float(new_objective))
        record("train/kl", float(kl))
        record("train/kl_divergence_loss", float(kl))  # sb3-contrib's name (old ‖ new here)
        record("train/line_search_success", float(success))
        record("train/is_line_search_success", float(success))  # sb3-contrib's name
        record("train/step_size", float(step_size) * coefficient if success else 0.0)
        if value_losses:
            record("train/value_loss", float(torch.stack(value_losses).mean()))
        record("train/explained_variance", explained_variance(batch.old_values, batch.returns))
        if policy.continuous:
            record("train/std", float(policy.log_std.detach().exp().mean()))
        record("train/n_updates", self._n_updates)
