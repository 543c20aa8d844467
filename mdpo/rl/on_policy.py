"""On-policy core: rollout collection through the runner, GAE, and the iteration loop.

Subclasses (PPO, TRPO, MDPO) write only :meth:`OnPolicyAgent.train`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.flat_params import FlatAdam, FlatParams
from mdpo.core.utils import Schedule, check_fraction, check_int, check_number
from mdpo.rl.base import Agent
from mdpo.rl.buffers import RolloutBatch, compute_gae
from mdpo.rl.callbacks import BaseCallback
from mdpo.rl.networks import ActorCriticPolicy
from mdpo.rl.runners import EnvSpec, Rollout, TensorPolicy


class OnPolicyAgent(Agent):
    """Collects ``n_steps × n_envs`` transitions, computes GAE(λ), then calls :meth:`train`.

    Truncated episodes (time limits) are bootstrapped with ``γ·V(final observation)`` folded
    into the last reward; terminated episodes are not bootstrapped.

    Args:
        policy, env, learning_rate, ...: see :class:`~mdpo.rl.base.Agent`.
        n_steps: steps per env per rollout.
        gamma: discount factor.
        gae_lambda: GAE's λ.
        adam_eps: ε of the Adam optimizer (1e-5 as SB3).
    """

    policy_aliases = {"MlpPolicy": ActorCriticPolicy}

    def __init__(
        self,
        policy: str | type[nn.Module],
        env: EnvSpec | None,
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        gae_lambda: float,
        adam_eps: float = 1e-5,
        **kwargs: Any,
    ):
        super().__init__(policy, env, learning_rate, gamma=check_fraction(gamma, "gamma"), **kwargs)
        self.n_steps = check_int(n_steps, "n_steps")
        self.gae_lambda = check_fraction(gae_lambda, "gae_lambda")
        check_number(adam_eps, "adam_eps", positive=True)
        self.adam_eps = float(adam_eps)

    # minibatch-size attributes that must fit in a rollout (checked whenever an env is attached)
    minibatch_attributes: tuple[str, ...] = ()

    @property
    def timesteps_per_iteration(self) -> int:
        """A whole rollout: ``n_steps × n_envs``."""
        return self.n_steps * self.n_envs

    def _check_env_settings(self) -> None:
        rollout_size = self.n_steps * self.n_envs
        for name in self.minibatch_attributes:
            size = getattr(self, name)
            if size is not None and size > rollout_size:
                raise ValueError(
                    f"{name}={size} is larger than the rollout "
                    f"(n_steps × n_envs = {self.n_steps} × {self.n_envs} = {rollout_size})"
                )

    def _setup_model(self) -> None:
        self.policy = self.policy_class(
            self.observation_space, self.action_space, **self.policy_kwargs
        ).to(self.device)
        self._setup_optimizers()

    def _setup_optimizers(self) -> None:
        """One Adam over all policy and value parameters (PPO's arrangement)."""
        self.flat_params = FlatParams(self.policy.parameters())
        self.optimizer = FlatAdam(self.flat_params, lr=self.lr_schedule(1.0), eps=self.adam_eps)

    def _state_modules(self) -> dict[str, Any]:
        return {"policy": self.policy, "policy.optimizer": self.optimizer}

    # ----------------------------------------------------------------------------- collection
    def _rollout_policy(self):
        """``policy(obs, t) -> (env_action, stored_action)`` for one rollout.

        The sampling noise of the whole rollout is drawn up front from the agent's generator;
        the deterministic part runs on a NumPy snapshot of the actor when it has one (gymnasium
        envs), or on the agent's device (torch-native envs, :meth:`_tensor_rollout_policy`).
        """
        if self.runner.tensor_policy:
            return self._tensor_rollout_policy()
        policy, n_steps, n_envs = self.policy, self.n_steps, self.n_envs
        actor = policy.numpy_actor()
        if actor is None:

            def actor(obs: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    flat = torch.from_numpy(obs).to(self.device).reshape(obs.shape[0], -1)
                    return policy.distribution_params(flat).cpu().numpy()

        if isinstance(self.action_space, spaces.Box):
            noise = torch.randn((n_steps, n_envs, policy.action_dim), generator=self.rng)
            noise = (noise * policy.log_std.detach().cpu().exp()).numpy()
            low, high = self.action_space.low.ravel(), self.action_space.high.ravel()
            shape = (n_envs, *self.action_space.shape)

            def act(obs: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
                action = actor(obs.reshape(n_envs, -1)) + noise[t]
                return np.clip(action, low, high).reshape(shape), action

            return act
        # Gumbel-max sampling from the logits: argmax(logits + Gumbel noise) ~ softmax(logits)
        uniform = torch.rand((n_steps, n_envs, policy.action_dim), generator=self.rng)
        gumbel = (-torch.log(-torch.log(uniform.clamp_min(1e-20)))).numpy()
        start = int(self.action_space.start)

        def act_discrete(obs: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
            action = np.argmax(actor(obs.reshape(n_envs, -1)) + gumbel[t], axis=-1)
            return action + start, action

        return act_discrete

    def _tensor_rollout_policy(self) -> TensorPolicy:
        """:meth:`_rollout_policy` on tensors on the agent's device (same noise draws), as a
        :class:`~mdpo.rl.runners.TensorPolicy` that the runner can compile with the env."""
        policy, n_steps, n_envs, dev = self.policy, self.n_steps, self.n_envs, self.device
        if isinstance(self.action_space, spaces.Box):
            noise = torch.randn((n_steps, n_envs, policy.action_dim), generator=self.rng)
            noise = noise.to(dev) * policy.log_std.detach().exp()
            low = torch.as_tensor(self.action_space.low.ravel(), device=dev)
            high = torch.as_tensor(self.action_space.high.ravel(), device=dev)
            return TensorPolicy(self._act_box, (noise,), (low, high))
        uniform = torch.rand((n_steps, n_envs, policy.action_dim), generator=self.rng)
        gumbel = (-torch.log(-torch.log(uniform.clamp_min(1e-20)))).to(dev)
        return TensorPolicy(self._act_discrete, (gumbel,), (int(self.action_space.start),))

    @torch.no_grad()
    def _act_box(
        self, obs: torch.Tensor, noise: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian actions: the mean plus the step's scaled noise, clipped for the env."""
        action = self.policy.distribution_params(obs.reshape(obs.shape[0], -1)) + noise
        return torch.clamp(action, low, high).reshape(-1, *self.action_space.shape), action

    @torch.no_grad()
    def _act_discrete(
        self, obs: torch.Tensor, gumbel: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gumbel-max actions from the logits (offset by the space's ``start`` for the env)."""
        logits = self.policy.distribution_params(obs.reshape(obs.shape[0], -1))
        action = torch.argmax(logits + gumbel, dim=-1)
        return action + start, action

    def collect_rollouts(self, callback: BaseCallback) -> RolloutBatch | None:
        """Collect one rollout and turn it into flat training samples (``None`` if stopped)."""
        callback.on_rollout_start()
        on_step = self._step_counter(callback)
        rollout = self.runner.rollout(self.n_steps, self._rollout_policy(), on_step)
        if on_step is None:
            self.num_timesteps += rollout.rewards.numel()
        if rollout.stopped:  # as SB3: a stopped rollout is neither ended nor trained on
            return None
        batch = self._process_rollout(rollout)
        callback.on_rollout_end()
        return batch

    @torch.no_grad()
    def _process_rollout(self, rollout: Rollout) -> RolloutBatch:
        """Log-probs and values of the rollout, truncation bootstrap, GAE; flattened."""
        steps, n_envs = rollout.rewards.shape
        policy = self.policy
        flat_obs = policy.flatten(rollout.obs.reshape(steps * n_envs, *rollout.obs.shape[2:]))
        actions = rollout.actions.reshape(steps * n_envs, *rollout.actions.shape[2:])
        params = policy.distribution_params(flat_obs)
        log_prob, _ = policy.log_prob_entropy(params, actions)
        values = policy.predict_values(flat_obs).reshape(steps, n_envs)
        last_values = policy.predict_values(policy.flatten(rollout.last_obs))
        rewards = rollout.rewards.clone()
        if len(rollout.final_step):
            # bootstrap time-limit truncations, never terminations (value of the final obs)
            t, i = rollout.final_step, rollout.final_env
            keep = rollout.truncated[t, i] & ~rollout.terminated[t, i]
            final_values = policy.predict_values(policy.flatten(rollout.final_obs))
            rewards[t[keep], i[keep]] += self.gamma * final_values[keep]
        gae_inputs = [rewards, values, rollout.episode_starts, last_values]
        gae_inputs.append(rollout.last_episode_starts)
        if self.device.type == "cpu":  # NumPy's per-step cost is lower; nothing to copy
            gae_inputs = [x.numpy() for x in gae_inputs]
        advantages, returns = compute_gae(*gae_inputs, self.gamma, self.gae_lambda)
        advantages, returns = torch.as_tensor(advantages), torch.as_tensor(returns)
        return RolloutBatch(
            obs=flat_obs,
            actions=actions,
            old_values=values.reshape(-1),
            old_log_prob=log_prob,
            old_dist_params=params,
            advantages=advantages.reshape(-1),
            returns=returns.reshape(-1),
        )

    # ----------------------------------------------------------------------------- loop
    def _learn_iteration(self, callback: BaseCallback, log_interval: int) -> bool:
        batch = self.collect_rollouts(callback)
        if batch is None:
            return False
        self._iteration += 1
        self._update_progress()
        self.train(batch)
        if log_interval and self._iteration % log_interval == 0:
            self._record_time_and_rollout()
            self.logger.dump(self.num_timesteps)
        return True

    @abstractmethod
    def train(self, batch: RolloutBatch) -> None:
        """Update the policy (and value function) from one rollout's samples."""


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """``1 − Var[target − predicted] / Var[target]`` (NaN when the target is constant)."""
    var_target = torch.var(target, correction=0)
    if var_target == 0:
        return float("nan")
    return float(1.0 - torch.var(target - predicted, correction=0) / var_target)
