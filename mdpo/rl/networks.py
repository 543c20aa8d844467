"""Networks and action distributions shared by the agents.

Module names follow Stable-Baselines3's ``ActorCriticPolicy`` (``mlp_extractor.policy_net``,
``mlp_extractor.value_net``, ``action_net``, ``value_net``, ``log_std``) so that state dicts map
one to one onto SB3's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mdpo.core.utils import ACTIVATIONS, activation_name, check_sizes, mlp

# Activations the NumPy rollout actor can evaluate; others fall back to torch.
_NUMPY_ACTIVATIONS: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
    nn.Tanh: np.tanh,
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.Identity: lambda x: x,
}

LOG_2PI = math.log(2.0 * math.pi)


def parse_net_arch(
    net_arch: list[int] | dict[str, list[int]] | None,
    critic_key: str = "vf",
    default: tuple[int, ...] = (64, 64),
) -> tuple[list[int], list[int]]:
    """Return (policy sizes, critic sizes). A list means the same sizes for both (SB3 >= 1.8).

    Args:
        net_arch: a list, ``dict(pi=[...], <critic_key>=[...])`` or ``None`` (``default``).
        critic_key: the critic's key: ``"vf"`` (value function) or ``"qf"`` (Q-functions).
        default: hidden sizes of both when ``net_arch`` is ``None``.
    """
    if net_arch is None:
        return list(default), list(default)
    if isinstance(net_arch, dict):
        unknown = set(net_arch) - {"pi", critic_key}
        if unknown:
            raise ValueError(
                f"net_arch keys must be 'pi' and {critic_key!r}, got unknown {sorted(unknown)}"
            )
        return (
            check_sizes(list(net_arch.get("pi", []))),
            check_sizes(list(net_arch.get(critic_key, []))),
        )
    return check_sizes(list(net_arch)), check_sizes(list(net_arch))


class MlpExtractor(nn.Module):
    """Separate policy and value MLPs (SB3's ``MlpExtractor`` without shared layers)."""

    def __init__(self, in_dim: int, pi_sizes: list[int], vf_sizes: list[int], activation: str):
        super().__init__()
        self.policy_net = mlp(in_dim, pi_sizes, activation)
        self.value_net = mlp(in_dim, vf_sizes, activation)
        self.latent_dim_pi = pi_sizes[-1] if pi_sizes else in_dim
        self.latent_dim_vf = vf_sizes[-1] if vf_sizes else in_dim


def gaussian_log_prob(
    actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the action dimensions.

    ``log_std`` may be per state ``[B, d]`` or shared ``[d]`` (broadcast).
    """
    z = (actions - mean) * torch.exp(-log_std)
    return -0.5 * (z * z).sum(-1) - log_std.sum(-1) - 0.5 * LOG_2PI * mean.shape[-1]


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over the action dimensions."""
    return (0.5 + 0.5 * LOG_2PI + log_std).sum(-1)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """Closed-form KL(p ‖ q) of two diagonal Gaussians, summed over the action dimensions."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0).sum(-1) - (log_std_p - log_std_q).sum(-1)


def categorical_log_prob(actions: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Log-probability of integer ``actions`` under ``softmax(logits)``."""
    log_p = torch.log_softmax(logits, dim=-1)
    return log_p.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)``."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) of two categorical distributions given by logits."""
    log_p = torch.log_softmax(logits_p, dim=-1)
    log_q = torch.log_softmax(logits_q, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


class ActorCriticPolicy(nn.Module):
    """Separate actor and critic MLPs with a Gaussian (Box) or categorical (Discrete) head.

    Args:
        observation_space: a ``Box`` observation space (flattened at the input).
        action_space: a ``Box`` (diagonal Gaussian with state-independent log-std) or
            ``Discrete`` (categorical) action space.
        net_arch: hidden sizes, a list (same for actor and critic) or ``dict(pi=[...], vf=[...])``.
            Default ``[64, 64]`` for both, as SB3.
        activation_fn: activation name (``"tanh"``, ``"relu"`` ...) or ``nn.Module`` class.
        ortho_init: orthogonal initialisation with SB3's gains (√2 hidden, 0.01 action head,
            1 value head) and zero biases.
        log_std_init: initial value of the log standard deviation (Box actions).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box | spaces.Discrete,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: str | type[nn.Module] = "tanh",
        ortho_init: bool = True,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.obs_dim = int(np.prod(observation_space.shape))
        self.continuous = isinstance(action_space, spaces.Box)
        self.activation = activation_name(activation_fn)
        pi_sizes, vf_sizes = parse_net_arch(net_arch)
        self.mlp_extractor = MlpExtractor(self.obs_dim, pi_sizes, vf_sizes, self.activation)
        if self.continuous:
            self.action_dim = int(np.prod(action_space.shape))
            self.action_net = nn.Linear(self.mlp_extractor.latent_dim_pi, self.action_dim)
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init)))
        else:
            self.action_dim = int(action_space.n)
            self.action_net = nn.Linear(self.mlp_extractor.latent_dim_pi, self.action_dim)
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if ortho_init:
            for module, gain in (
                (self.mlp_extractor, math.sqrt(2)),
                (self.action_net, 0.01),
                (self.value_net, 1.0),
            ):
                for layer in module.modules():
                    if isinstance(layer, nn.Linear):
                        nn.init.orthogonal_(layer.weight, gain=gain)
                        nn.init.zeros_(layer.bias)

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters of the policy (its MLP, the action head and the log-std)."""
        params = [*self.mlp_extractor.policy_net.parameters(), *self.action_net.parameters()]
        return params + ([self.log_std] if self.continuous else [])

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the value function."""
        return [*self.mlp_extractor.value_net.parameters(), *self.value_net.parameters()]

    def flatten(self, obs: torch.Tensor) -> torch.Tensor:
        """Flatten the observation dimensions: ``[B, *obs_shape] → [B, obs_dim]``."""
        return obs.reshape(obs.shape[0], self.obs_dim).float()

    def distribution_params(self, obs: torch.Tensor) -> torch.Tensor:
        """The Gaussian mean or the categorical logits for flat observations."""
        return self.action_net(self.mlp_extractor.policy_net(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The distribution parameters (mean or logits) for flat observations."""
        return self.distribution_params(obs)

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        """State values ``V(s)`` for flat observations, shape ``[B]``."""
        return self.value_net(self.mlp_extractor.value_net(obs)).squeeze(-1)

    def log_prob_entropy(
        self, params: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``actions`` and entropy (per state, or a scalar when constant)."""
        if self.continuous:  # the log-std is state-independent: broadcast, entropy is a scalar
            return gaussian_log_prob(actions, params, self.log_std), gaussian_entropy(self.log_std)
        return categorical_log_prob(actions, params), categorical_entropy(params)

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values, log-probabilities and entropies for flat observations and taken actions."""
        log_prob, entropy = self.log_prob_entropy(self.distribution_params(obs), actions)
        return self.predict_values(obs), log_prob, entropy

    def kl_divergence(
        self,
        params_p: torch.Tensor,
        params_q: torch.Tensor,
        log_std_p: torch.Tensor | None = None,
        log_std_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-state KL(p ‖ q) of two distributions of this policy's family.

        ``params_*`` are Gaussian means or categorical logits; Gaussian log-stds default to
        this policy's current one.
        """
        if self.continuous:
            log_std_p = self.log_std if log_std_p is None else log_std_p
            log_std_q = self.log_std if log_std_q is None else log_std_q
            return gaussian_kl(params_p, log_std_p, params_q, log_std_q)
        return categorical_kl(params_p, params_q)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None) -> torch.Tensor:
        """Actions for flat observations: the mean / argmax, or a sample."""
        params = self.distribution_params(obs)
        if self.continuous:
            if deterministic:
                return params
            noise = torch.randn(params.shape, generator=generator, device="cpu")
            return params + torch.exp(self.log_std) * noise.to(params.device)
        if deterministic:
            return params.argmax(-1)
        uniform = torch.rand(params.shape, generator=generator, device="cpu").to(params.device)
        return (params - torch.log(-torch.log(uniform.clamp_min(1e-20)))).argmax(-1)

    def numpy_actor(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """A NumPy copy of ``obs → mean / logits`` for the per-step rollout path.

        Stepping one environment at a time, a torch call costs more than the network's
        arithmetic; the weights are constant during a rollout, so a NumPy snapshot taken at its
        start computes the same function with a fraction of the overhead. Returns ``None`` when
        a layer has no NumPy counterpart (the caller then uses torch).
        """
        layers: list[tuple[np.ndarray, np.ndarray, Callable | None]] = []
        for module in [*self.mlp_extractor.policy_net, self.action_net]:
            if isinstance(module, nn.Linear):
                weight = module.weight.detach().cpu().numpy().T.copy()
                layers.append((weight, module.bias.detach().cpu().numpy().copy(), None))
            elif type(module) in _NUMPY_ACTIVATIONS:
                w, b, _ = layers[-1]
                layers[-1] = (w, b, _NUMPY_ACTIVATIONS[type(module)])
            else:
                return None

        def forward(obs: np.ndarray) -> np.ndarray:
            x = obs
            for weight, bias, act in layers:
                x = x @ weight + bias
                if act is not None:
                    x = act(x)
            return x

        return forward


# ------------------------------------------------------------------------------ off-policy nets
class MixedPrecision(nn.Module):
    """A network whose matrix products may run in a lower precision (``compute_dtype``,
    e.g. ``torch.bfloat16`` under autocast) while its parameters and outputs stay float32.

    Only the hidden layers are autocast: the output layers (a Q-value, a mean, a log-std)
    run in float32 on the float32 cast of the last hidden activation, because bfloat16's 8
    significant bits would round a Q-value of 300 to a multiple of 2 (the size of a reward),
    and everything computed from the outputs (log-densities, losses, targets) is float32, as
    are the gradients and the optimizer's state."""

    compute_dtype: torch.dtype | None = None

    def autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """Autocast to ``compute_dtype`` on ``x``'s device, or nothing when it is None."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.compute_dtype)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's and the original MDPO's clip of the actor's log-std
SQUASH_EPS = 1e-6  # inside log(1 − tanh(u)² + ε), as SB3 and the original MDPO


def squashed_gaussian_log_prob(
    u: torch.Tensor, action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Per-dimension log-density of ``action = tanh(u)``, ``u ~ N(mean, exp(log_std)²)``.

    ``log N(u) − log(1 − tanh(u)² + ε)``, shape ``[B, d]`` (sum over the last dimension for the
    joint log-density). Computed at ``u`` so that the change of variables needs no ``atanh``.
    """
    z = (u - mean) * torch.exp(-log_std)
    gaussian = -0.5 * z * z - log_std - 0.5 * LOG_2PI
    return gaussian - torch.log(1.0 - action * action + SQUASH_EPS)


class SquashedGaussianActor(MixedPrecision):
    """Gaussian with a state-dependent log-std, squashed by ``tanh`` into ``[-1, 1]``.

    SAC's actor (module names as SB3's ``Actor``: ``latent_pi``, ``mu``, ``log_std``) and the
    original MDPO's; the log-std is clipped to ``[-20, 2]``.

    Args:
        obs_dim: flat observation size.
        action_dim: action size.
        net_arch: hidden sizes (default ``[256, 256]``).
        activation: activation name.
    """

    def __init__(self, obs_dim: int, action_dim: int, net_arch: list[int], activation: str):
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.latent_pi = mlp(obs_dim, net_arch, activation)
        latent = net_arch[-1] if net_arch else obs_dim
        self.mu = nn.Linear(latent, action_dim)
        self.log_std = nn.Linear(latent, action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_std)`` of the pre-squash Gaussian for flat observations."""
        with self.autocast(obs):
            latent = self.latent_pi(obs)
        latent = latent.float()  # the heads in float32 (see MixedPrecision)
        return self.mu(latent), self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(
        self, obs: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterized sample ``a = tanh(mean + std·noise)``.

        Returns:
            ``(action, u, per-dimension log-prob [B, d], mean, log_std)``.
        """
        mean, log_std = self(obs)
        u = mean + torch.exp(log_std) * noise
        action = torch.tanh(u)
        return action, u, squashed_gaussian_log_prob(u, action, mean, log_std), mean, log_std

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None) -> torch.Tensor:
        """Squashed actions in ``[-1, 1]``: ``tanh(mean)``, or a sample."""
        mean, log_std = self(obs)
        if deterministic:
            return torch.tanh(mean)
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
        return torch.tanh(mean + torch.exp(log_std) * noise)


class CriticEnsemble(MixedPrecision):
    """``n`` MLP critics on the same input, evaluated as one batched computation.

    Every layer of all critics is one batched product (``baddbmm``; the shared input is
    broadcast, not copied), so twin Q-networks cost one pass of kernels instead of two, and
    autograd one backward pass. Each critic is initialised as an ``nn.Linear`` stack would be
    (PyTorch's default, as SB3's critics).

    Args:
        in_dim: input size (observation, plus action for Q-functions).
        net_arch: hidden sizes.
        activation: activation name.
        n_critics: number of critics.
    """

    def __init__(self, in_dim: int, net_arch: list[int], activation: str, n_critics: int = 2):
        super().__init__()
        self.n_critics = n_critics
        sizes = [in_dim, *net_arch, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(n_critics)]
            self.weights.append(
                nn.Parameter(torch.stack([lin.weight.detach().T for lin in layers]))
            )
            self.biases.append(
                nn.Parameter(torch.stack([lin.bias.detach()[None] for lin in layers]))
            )
        # in place where possible: baddbmm does not keep its output for the backward pass
        self.activation = (
            nn.ReLU(inplace=True) if activation == "relu" else ACTIVATIONS[activation]()
        )

    def _layers(self, frozen: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight, bias)`` per layer; detached when ``frozen``."""
        if frozen:
            return [(w.detach(), b.detach()) for w, b in zip(self.weights, self.biases)]
        return list(zip(self.weights, self.biases))

    def forward_member(
        self, index: int, *inputs: torch.Tensor, frozen: bool = False
    ) -> torch.Tensor:
        """Values ``[B]`` of critic ``index`` alone (when only one member needs gradients);
        ``frozen``: no gradient to the parameters, only to the inputs (an actor's loss)."""
        x = torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0]
        *hidden, (weight, bias) = self._layers(frozen)
        with self.autocast(x):
            for w, b in hidden:
                x = self.activation(torch.addmm(b[index], x, w[index]))
        # the output layer in float32 (see MixedPrecision)
        return torch.addmm(bias[index], x.float(), weight[index]).squeeze(-1)

    def forward(self, *inputs: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Values ``[n_critics, B]`` of the concatenated inputs (e.g. ``obs, action``);
        ``frozen``: no gradient to the parameters, only to the inputs (an actor's loss)."""
        x = torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0]
        *hidden, (out_weight, out_bias) = self._layers(frozen)
        h = x.expand(self.n_critics, *x.shape)
        with self.autocast(x):
            for weight, bias in hidden:
                h = self.activation(torch.baddbmm(bias, h, weight))
        # the output layer in float32 (see MixedPrecision)
        return torch.baddbmm(out_bias, h.float(), out_weight).squeeze(-1)
