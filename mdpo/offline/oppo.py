"""OPPO — offline preference-guided policy optimization (Kang et al., ICML 2023).

An encoder ``I(τ) → z`` summarizes a segment of ``K`` steps; a contextual policy
``π(a | s, z)`` learns to reproduce each segment's actions from its own ``z`` (hindsight
information matching); the preference labels shape the ``z`` space with a triplet loss around
a free vector ``z*`` that is moved towards the encodings of preferred segments and away from
the others. At test time the policy acts with ``z*``. Per gradient step (the paper's Algorithm
1 and the authors' ``pdt_trainer.py``)::

    L_HIM  = MSE(π(s_t, I(τ)), a_t)                          over the segments' real steps
    L_PM   = max(‖z* − z⁺‖ − ‖z* − z⁻‖ + margin, 0)           (z* detached; TripletMarginLoss)
    L_norm = (‖I(τ)‖ − 1)²
    encoder + policy:  L_HIM + 0.1 L_PM + 0.1 L_norm           (grad norm clipped to 0.25)
    z*:                L_PM with the segments re-encoded by the updated encoder (detached)

Departures from the authors' code, each a bug fix: the context is given at every step when
acting (their evaluation placed ``z*`` on the current step only, while training repeats ``z``
at every step); the encoder's sum over tokens skips padding; a segment's label compares the
returns of the segment itself (theirs looked 200 steps ahead of a 20-step segment: offered as
``labels="scripted:K=20,foresee=200"``); segments
start where a whole segment fits (see :mod:`mdpo.offline.preferences`).

The policy sees the context's direction ``z / ‖z‖`` (``normalize_context=True``, the default;
``False`` gives it ``z`` as the paper): ``L_norm`` keeps the encodings near the unit sphere, but
nothing holds ``z*`` there, and the triplet loss pushes it outwards along the preferred
direction (the measurement behind this choice is in ``results/oppo_pendulum``). The authors'
evaluation has this normalization written and commented out.

Label values other than 0 and 1 (ties labelled 0.5, soft or human labels) weigh their triplet
term by ``|2 label − 1|``, the preferred side being the one the label leans to: a tie moves
nothing, as the authors' code that drops ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mdpo.core.registry import register_algorithm
from mdpo.core.utils import Schedule, check_int, check_number, check_sizes, mlp
from mdpo.offline.dataset import OfflineDataset
from mdpo.offline.learner import DatasetScaler, OfflineAgent
from mdpo.offline.preferences import (
    Preferences,
    Segments,
    SegmentSampler,
    make_preferences,
    parse_labels,
)


def weighted_triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    weight: torch.Tensor | None = None,
    margin: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``Σ w max(‖a − p‖ − ‖a − n‖ + margin, 0) / Σ w``; with unit weights it is
    ``torch.nn.TripletMarginLoss(margin, p=2, eps)`` (the distance ``‖x − y + eps‖`` as
    ``pairwise_distance``). Zero when there is no weight."""
    d_pos = torch.linalg.vector_norm(anchor - positive + eps, dim=-1)
    d_neg = torch.linalg.vector_norm(anchor - negative + eps, dim=-1)
    hinge = torch.clamp_min(d_pos - d_neg + margin, 0.0)
    if weight is None:
        return hinge.mean() if hinge.numel() else hinge.sum()
    total = weight.sum()
    return (weight * hinge).sum() / total.clamp_min(1e-12)


def norm_loss(z: torch.Tensor) -> torch.Tensor:
    """``mean (‖z‖ − 1)²``: keeps the encodings near the unit sphere."""
    return (torch.linalg.vector_norm(z, dim=-1) - 1.0).square().mean()


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real steps (``mask`` ``[B, K]``) and action dimensions."""
    m = mask[..., None].to(predicted.dtype)
    count = m.sum() * predicted.shape[-1]
    return ((predicted - target).square() * m).sum() / count.clamp_min(1.0)


class FastDropout(nn.Module):
    """Dropout drawing its masks as 16-bit random integers, four from each 64-bit draw: torch's
    CPU dropout draws a float per element, which took 40% of an OPPO step at the paper's sizes.
    An element is dropped with probability ``round(p·65536) / 65536`` (p = 0.1: 0.100006) and
    the others are scaled by the inverse of the keep probability, as :class:`torch.nn.Dropout`.
    """

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0 or round(p * 65536) >= 65536:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 65536) - 32768  # draws below it are dropped
        self.scale = 1.0 / (1.0 - round(p * 65536) / 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        draws = words.random_(-(2**63), 2**63 - 1).view(torch.int16)[:n].view(x.shape)
        return x * ((draws >= self.threshold).to(x.dtype) * self.scale)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the parameters (and names) of
    :class:`torch.nn.MultiheadAttention` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``),
    written out: for OPPO's short sequences (40-60 tokens) torch's fused kernel cost twice
    this on CPU, and the attention weights' dropout is a :class:`FastDropout`."""

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden {hidden} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden, hidden))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * hidden))
        self.out_proj = nn.Linear(hidden, hidden)
        self.dropout = FastDropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as torch's MultiheadAttention
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, hidden]``; ``blocked`` True where a query may not see a key,
        ``[B, 1, T]`` (padding) or ``[B, T, T]``."""
        batch, length, hidden = x.shape
        heads, width = self.n_heads, hidden // self.n_heads
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, width).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)).float() * width**-0.5
        scores = scores.masked_fill(blocked[:, None], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1).to(v.dtype))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, hidden)
        return self.out_proj(out)


class TransformerLayer(nn.Module):
    """A transformer layer with the parameters (and names) of
    :class:`torch.nn.TransformerEncoderLayer`: self-attention and a feed-forward block, each
    with a residual connection, layer norm after (``norm_first=False``, the authors' BERT
    encoder) or before (``norm_first=True``, their GPT policy); checked equal to torch's."""

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        ff: int,
        dropout: float,
        activation: str = "relu",
        norm_first: bool = False,
    ):
        super().__init__()
        self.self_attn = SelfAttention(hidden, n_heads, dropout)
        self.linear1 = nn.Linear(hidden, ff)
        self.linear2 = nn.Linear(ff, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = FastDropout(dropout)
        self.dropout1 = FastDropout(dropout)
        self.dropout2 = FastDropout(dropout)
        self.activation = {"relu": nn.functional.relu, "gelu": nn.functional.gelu}[activation]
        self.norm_first = norm_first

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout1(self.self_attn(self.norm1(x), blocked))
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self.dropout1(self.self_attn(x, blocked)))
        return self.norm2(x + self._feed_forward(x))


class Transformer(nn.Module):
    """``n_layers`` :class:`TransformerLayer` (``layers.i.*``: the parameter names of
    :class:`torch.nn.TransformerEncoder`, so that saved models keep loading)."""

    def __init__(self, n_layers: int, **layer: Any):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(**layer) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, blocked)
        return x


class SegmentEncoder(nn.Module):
    """``I(τ) → z``: a bidirectional transformer over the ``(s_t, a_t)`` tokens of a segment
    with timestep embeddings (the authors' BERT encoder: post-norm layers), token outputs
    summed over the real steps, then a linear map to ``z``.

    Args:
        obs_dim, act_dim: sizes of an observation and an action.
        z_dim: size of ``z`` (8).
        hidden: token width (128).
        n_layers: transformer layers (3).
        n_heads: attention heads (2).
        ff: feed-forward width (512).
        dropout: dropout (0.1).
        max_timestep: number of timestep embeddings (the env's episode limit).
        activation: ``"relu"`` or ``"gelu"``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        z_dim: int = 8,
        hidden: int = 128,
        n_layers: int = 3,
        n_heads: int = 2,
        ff: int = 512,
        dropout: float = 0.1,
        max_timestep: int = 1000,
        activation: str = "relu",
    ):
        super().__init__()
        self.embed_state = nn.Linear(obs_dim, hidden)
        self.embed_action = nn.Linear(act_dim, hidden)
        self.embed_timestep = nn.Embedding(max_timestep, hidden)
        self.embed_norm = nn.LayerNorm(hidden)
        self.embed_dropout = FastDropout(dropout)
        self.transformer = Transformer(
            n_layers, hidden=hidden, n_heads=n_heads, ff=ff, dropout=dropout, activation=activation
        )
        self.to_z = nn.Linear(hidden, z_dim)
        self.max_timestep = max_timestep

    def forward(self, segments: Segments) -> torch.Tensor:
        """``[B, z_dim]`` encodings of a batch of segments."""
        obs, act, mask = segments.observations, segments.actions, segments.mask
        batch, k = mask.shape
        time = self.embed_timestep(segments.timesteps.clamp(0, self.max_timestep - 1))
        tokens = torch.stack((self.embed_state(obs) + time, self.embed_action(act) + time), dim=2)
        tokens = self.embed_dropout(self.embed_norm(tokens.reshape(batch, 2 * k, -1)))
        real = mask.repeat_interleave(2, dim=1)
        hidden = self.transformer(tokens, ~real[:, None, :])  # padded keys are not seen
        return self.to_z((hidden * real[..., None]).sum(dim=1))


class ContextMlpPolicy(nn.Module):
    """``π(a | s, z)``: an MLP on ``[s, z]`` with a tanh output in [-1, 1] (the cheaper
    variant; it needs no history). ``context_length`` is 1.

    Args:
        obs_dim, act_dim, z_dim: sizes.
        net_arch: hidden layer sizes (``[256, 256]``).
        activation_fn: ``"relu"`` (default) or another activation name.
    """

    context_length = 1
    uses_history = False

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        z_dim: int,
        segment_length: int,
        max_timestep: int,
        net_arch: list[int] | None = None,
        activation_fn: str = "relu",
    ):
        super().__init__()
        sizes = check_sizes(list([256, 256] if net_arch is None else net_arch))
        self.body = mlp(obs_dim + z_dim, sizes, activation_fn)
        self.head = nn.Linear(sizes[-1] if sizes else obs_dim + z_dim, act_dim)

    def forward(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
        z: torch.Tensor,
    ) -> torch.Tensor:
        """Actions ``[B, L, act_dim]`` for every step of ``[B, L, obs_dim]`` (the same ``z``
        ``[B, z_dim]`` at every step; ``actions``, ``timesteps``, ``mask`` are unused)."""
        z = z[:, None, :].expand(-1, observations.shape[1], -1)
        return torch.tanh(self.head(self.body(torch.cat((observations, z), dim=-1))))


class ContextTransformerPolicy(nn.Module):
    """``π(a | s, z)`` as the paper: a causal (GPT-style, pre-norm) transformer over
    ``(z, s_t, a_t)`` tokens of the last ``K`` steps with timestep embeddings; the action of
    step ``t`` is read at the token of ``s_t``, linear + tanh. The same ``z`` is given at every
    step, in training and when acting. ``context_length`` is ``K``.

    Args:
        obs_dim, act_dim, z_dim: sizes.
        segment_length: ``K``.
        max_timestep: number of timestep embeddings.
        hidden, n_layers, n_heads, ff, dropout, activation: the transformer (128, 3, 1, 512,
            0.1, relu: the authors' defaults).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        z_dim: int,
        segment_length: int,
        max_timestep: int,
        hidden: int = 128,
        n_layers: int = 3,
        n_heads: int = 1,
        ff: int = 512,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        self.context_length = segment_length
        self.uses_history = True
        self.n_heads = n_heads
        self.embed_z = nn.Linear(z_dim, hidden)
        self.embed_state = nn.Linear(obs_dim, hidden)
        self.embed_action = nn.Linear(act_dim, hidden)
        self.embed_timestep = nn.Embedding(max_timestep, hidden)
        self.embed_norm = nn.LayerNorm(hidden)
        self.embed_dropout = FastDropout(dropout)
        self.transformer = Transformer(
            n_layers,
            hidden=hidden,
            n_heads=n_heads,
            ff=ff,
            dropout=dropout,
            activation=activation,
            norm_first=True,
        )
        self.final_norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, act_dim)
        self.max_timestep = max_timestep

    def forward(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
        z: torch.Tensor,
    ) -> torch.Tensor:
        """Actions ``[B, L, act_dim]``; the one at step ``t`` sees ``z``, ``s_≤t``, ``a_<t``."""
        batch, length = mask.shape
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        z_token = self.embed_z(z)[:, None, :].expand(-1, length, -1)
        tokens = torch.stack(
            (
                z_token + time,
                self.embed_state(observations) + time,
                self.embed_action(actions) + time,
            ),
            dim=2,
        )
        tokens = self.embed_dropout(self.embed_norm(tokens.reshape(batch, 3 * length, -1)))
        real = mask.repeat_interleave(3, dim=1)
        n = 3 * length
        position = torch.arange(n, device=mask.device)
        causal = position[None, :] <= position[:, None]  # [query, key]
        # padded keys are hidden; a padded query still sees itself (no empty softmax row)
        allowed = causal[None] & (
            real[:, None, :] | torch.eye(n, dtype=torch.bool, device=mask.device)[None]
        )
        hidden = self.final_norm(self.transformer(tokens, ~allowed))
        state_tokens = hidden.reshape(batch, length, 3, -1)[:, :, 1]
        return torch.tanh(self.head(state_tokens))


class OPPOModel(nn.Module):
    """The encoder, the contextual policy, ``z*`` and the dataset's scaling, saved together."""

    def __init__(
        self,
        scaler: DatasetScaler,
        encoder: SegmentEncoder,
        policy: nn.Module,
        z_star: torch.Tensor,
    ):
        super().__init__()
        self.scaler = scaler
        self.encoder = encoder
        self.policy = policy
        self.z_star = nn.Parameter(z_star)


@register_algorithm
class OPPO(OfflineAgent):
    """Offline preference-guided policy optimization.

    A "timestep" of :meth:`learn` is one gradient step (the paper: 100k, with 10k warm-up).

    Args:
        policy: ``"MlpPolicy"`` (``π(a | s, z)`` as an MLP) or ``"TransformerPolicy"`` (the
            paper's causal transformer over the last ``K`` steps).
        dataset: an :class:`~mdpo.offline.dataset.OfflineDataset` or a Minari dataset id / folder.
        labels: where the preferences come from: ``"scripted"`` (the scripted teacher, fresh
            pairs every step), ``"scripted:K=20,queries=N[,ties=drop|half][,seed=S]"`` (``N``
            pairs labelled once), ``foresee=200`` added to either (labelled by the returns of
            the 200 steps from the segments' starts, as the authors' code),
            ``"file:labels.csv"`` (given labels), or a
            :class:`~mdpo.offline.preferences.Preferences`.
        learning_rate: the policy's AdamW learning rate (1e-4), reached after ``warmup_steps``.
        encoder_learning_rate: the encoder's AdamW learning rate (1e-4, no warm-up, as the code).
        z_learning_rate: ``z*``'s AdamW learning rate (1e-3).
        weight_decay: AdamW weight decay of all three (1e-4).
        warmup_steps: linear warm-up of the policy's learning rate (10 000).
        batch_size: labelled pairs per step (64; each pair is two segments).
        segment_length: ``K`` (20).
        z_dim: size of ``z`` (8).
        preference_coef: weight of the triplet loss for the encoder (0.1).
        norm_coef: weight of the norm loss (0.1).
        triplet_margin: the triplet loss's margin (1).
        max_grad_norm: gradient norm clip of the encoder and of the policy, each (0.25).
        z_init_std: ``z*`` starts as ``N(0, z_init_std²)`` (2).
        encoder_kwargs: :class:`SegmentEncoder` sizes (hidden 128, 3 layers, 2 heads, FF 512,
            dropout 0.1).
        max_timestep: timestep embeddings (the dataset env's episode limit when ``None``).
        precision: ``"fp32"``, or ``"bf16"``: the encoder's and the policy's forward passes in
            training (and :meth:`embed`) run in bfloat16 (autocast; weights, optimizers and
            losses stay float32).
            On CPUs with AVX-512 BF16 a matrix product runs about 10x faster in bfloat16
            (``results/oppo_speed``); acting stays float32.
        normalize_context: give the policy ``z / ‖z‖`` (see the module docstring); ``False``:
            ``z`` as the paper.
        env_id, env_kwargs, ref_min_score, ref_max_score, data_root, policy_kwargs,
            tensorboard_log, verbose, seed, device: see :class:`OfflineAgent`.
    """

    algo_name = "OPPO"
    policy_aliases = {"MlpPolicy": ContextMlpPolicy, "TransformerPolicy": ContextTransformerPolicy}

    def __init__(
        self,
        policy: str | type[nn.Module],
        dataset: OfflineDataset | str | None,
        labels: str | Preferences = "scripted",
        learning_rate: float | Schedule = 1e-4,
        encoder_learning_rate: float = 1e-4,
        z_learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 10_000,
        batch_size: int = 64,
        segment_length: int = 20,
        z_dim: int = 8,
        preference_coef: float = 0.1,
        norm_coef: float = 0.1,
        triplet_margin: float = 1.0,
        max_grad_norm: float | None = 0.25,
        z_init_std: float = 2.0,
        encoder_kwargs: dict[str, Any] | None = None,
        max_timestep: int | None = None,
        normalize_context: bool = True,
        precision: str = "fp32",
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        data_root: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str | torch.device = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            dataset,
            learning_rate,
            env_id,
            env_kwargs,
            ref_min_score,
            ref_max_score,
            data_root,
            policy_kwargs,
            tensorboard_log,
            verbose,
            seed,
            device,
        )
        for name, value in (
            ("encoder_learning_rate", encoder_learning_rate),
            ("z_learning_rate", z_learning_rate),
            ("triplet_margin", triplet_margin),
            ("z_init_std", z_init_std),
        ):
            check_number(value, name, positive=True)
        for name, value in (
            ("weight_decay", weight_decay),
            ("preference_coef", preference_coef),
            ("norm_coef", norm_coef),
        ):
            check_number(value, name, non_negative=True)
        if max_grad_norm is not None:
            check_number(max_grad_norm, "max_grad_norm", positive=True)
        self.encoder_learning_rate = encoder_learning_rate
        self.z_learning_rate = z_learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
        self.batch_size = check_int(batch_size, "batch_size")
        self.segment_length = check_int(segment_length, "segment_length")
        self.z_dim = check_int(z_dim, "z_dim")
        self.preference_coef = preference_coef
        self.norm_coef = norm_coef
        self.triplet_margin = triplet_margin
        self.max_grad_norm = max_grad_norm
        self.z_init_std = z_init_std
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.max_timestep = (
            None if max_timestep is None else check_int(max_timestep, "max_timestep")
        )
        self.normalize_context = bool(normalize_context)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
        self.precision = precision
        self._preferences: Preferences | None = None
        if isinstance(labels, Preferences):
            if labels.sampler.segment_length != self.segment_length:
                raise ValueError(
                    f"the labels are over segments of "
                    f"{labels.sampler.segment_length} steps but "
                    f"segment_length={self.segment_length}"
                )
            self._preferences = labels
            # saved as information only: a loaded model is given its labels again to learn
            self.labels = "given: " + (labels.description or "a Preferences object")
        elif isinstance(labels, str):
            if labels != "scripted" and not labels.startswith("given"):
                spec = parse_labels(labels)
                if spec["K"] != self.segment_length:
                    raise ValueError(
                        f"labels {labels!r} are over segments of {spec['K']} steps "
                        f"but segment_length={self.segment_length}"
                    )
            self.labels = labels
        else:
            raise ValueError(f"labels must be a spec string or a Preferences, got {labels!r}")
        self.sampler: SegmentSampler | None = None
        self._finish_init(_init_setup_model)

    # ----------------------------------------------------------------------------- set-up
    def _check_dataset(self, dataset: OfflineDataset) -> None:
        if self.max_timestep is None:
            self.max_timestep = dataset.max_episode_steps

    def _setup_model(self) -> None:
        if self.max_timestep is None:
            raise ValueError("OPPO needs a dataset or max_timestep to build its networks")
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        scaler = DatasetScaler(obs_dim, self.action_space)
        encoder = SegmentEncoder(
            obs_dim, act_dim, self.z_dim, max_timestep=self.max_timestep, **self.encoder_kwargs
        )
        policy = self.policy_class(
            obs_dim,
            act_dim,
            self.z_dim,
            self.segment_length,
            self.max_timestep,
            **self.policy_kwargs,
        )
        z_star = torch.randn(self.z_dim) * self.z_init_std
        self.model = OPPOModel(scaler, encoder, policy, z_star).to(self.device)
        self.scaler = self.model.scaler
        self.policy = self.model.policy
        adamw = torch.optim.AdamW
        self.policy_optimizer = adamw(
            self.model.policy.parameters(), lr=self._policy_lr(), weight_decay=self.weight_decay
        )
        self.encoder_optimizer = adamw(
            self.model.encoder.parameters(),
            lr=self.encoder_learning_rate,
            weight_decay=self.weight_decay,
        )
        self.z_optimizer = adamw(
            [self.model.z_star], lr=self.z_learning_rate, weight_decay=self.weight_decay
        )

    def _state_modules(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "policy.optimizer": self.policy_optimizer,
            "encoder.optimizer": self.encoder_optimizer,
            "z.optimizer": self.z_optimizer,
        }

    def _dataset_changed(self) -> None:
        scaler = self.scaler
        self.sampler = SegmentSampler(
            self.data,
            self.segment_length,
            self.device,
            observation_transform=lambda obs: scaler.observations(obs),
            action_transform=scaler.actions_to_unit,
        )
        if self._preferences is not None and self._preferences.sampler.dataset is self.data:
            if self._preferences.pairs is not None:  # the pairs must name segments of this sampler
                pairs = self._preferences.pairs
                self.sampler.check(pairs.episode_a.numpy(), pairs.start_a.numpy(), "pair")
                self.sampler.check(pairs.episode_b.numpy(), pairs.start_b.numpy(), "pair")
            self._preferences.sampler = self.sampler
        elif self.labels.startswith("given"):
            self._preferences = None  # set_preferences() before learning
        else:
            spec = self.labels if self.labels != "scripted" else f"scripted:K={self.segment_length}"
            self._preferences = make_preferences(spec, self.sampler)

    def set_preferences(self, labels: str | Preferences) -> None:
        """Train on these labels from now on (a spec string or a
        :class:`~mdpo.offline.preferences.Preferences` over this agent's dataset)."""
        if self.data is None:
            raise ValueError("set the dataset first (set_dataset)")
        if isinstance(labels, Preferences):
            if labels.sampler.dataset is not self.data:
                raise ValueError("the Preferences are over another dataset than the agent's")
            self._preferences = labels
            self.labels = "given: " + (labels.description or "a Preferences object")
            self._dataset_changed()
        else:
            self.labels = labels
            self._preferences = None
            self._dataset_changed()

    @property
    def preferences(self) -> Preferences | None:
        """The label source training draws from."""
        return self._preferences

    @property
    def z_star(self) -> torch.Tensor:
        """The optimal context ``z*`` (a copy)."""
        return self.model.z_star.detach().clone()

    def _policy_lr(self) -> float:
        """The policy's learning rate now: the schedule, times the linear warm-up
        ``min((step + 1) / warmup_steps, 1)`` (the authors' LambdaLR)."""
        base = self.lr_schedule(self._current_progress_remaining)
        if self.warmup_steps:
            return base * min((self.num_timesteps + 1) / self.warmup_steps, 1.0)
        return base

    # ----------------------------------------------------------------------------- training
    def _forward_precision(self):
        """Autocast to bfloat16 for ``precision="bf16"`` (a no-op for ``"fp32"``)."""
        enabled = self.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def encode(self, segments: Segments) -> torch.Tensor:
        """``I(τ)`` of a batch of segments (float32, whatever the forward pass ran in)."""
        with self._forward_precision():
            return self.model.encoder(segments).float()

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """What the policy is given for ``z``: ``z / ‖z‖`` (``normalize_context``) or ``z``."""
        if self.normalize_context:
            return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1e-6)
        return z

    def policy_actions(self, segments: Segments, z: torch.Tensor) -> torch.Tensor:
        """``π(· | s_t, z)`` at every step of the segments (unit actions)."""
        z = self.context(z)
        with self._forward_precision():
            actions = self.model.policy(
                segments.observations, segments.actions, segments.timesteps, segments.mask, z
            )
        return actions.float()

    def losses(
        self,
        seg_a: Segments,
        seg_b: Segments,
        label: torch.Tensor,
        him_a: Segments | None = None,
        him_b: Segments | None = None,
    ):
        """The encoder-and-policy losses of one step.

        Args:
            seg_a, seg_b: the two segments of each labelled pair.
            label: ``[N]`` 1 when ``a`` is preferred, 0 when ``b`` is, in between for ties or
                soft labels.
            him_a, him_b: segments the policy imitates (default the pairs' own segments).

        Returns:
            ``(total, parts)`` with parts ``him``, ``preference``, ``norm``.
        """
        n = len(label)
        pairs = Segments.cat(seg_a, seg_b)  # both sides in one pass through each network
        z = self.encode(pairs)
        z_a, z_b = z[:n], z[n:]
        if him_a is None:
            imitated, z_him = pairs, z
        else:
            imitated = Segments.cat(him_a, him_b)
            z_him = self.encode(imitated)
        actions = self.policy_actions(imitated, z_him)
        half = len(z_him) // 2
        # the original sums the two halves' mean errors (and the two norm terms)
        him = sum(
            masked_mse(actions[part], imitated.actions[part], imitated.mask[part])
            for part in (slice(0, half), slice(half, None))
        )
        norm = norm_loss(z_a) + norm_loss(z_b)
        positive, negative, weight = self._triplet_sides(z_a, z_b, label)
        anchor = self.model.z_star.detach().expand_as(positive)
        preference = weighted_triplet_loss(anchor, positive, negative, weight, self.triplet_margin)
        total = him + self.preference_coef * preference + self.norm_coef * norm
        return total, {"him": him, "preference": preference, "norm": norm}

    @staticmethod
    def _triplet_sides(z_a: torch.Tensor, z_b: torch.Tensor, label: torch.Tensor):
        """Preferred and other encodings of each pair, and the pair's weight ``|2 label − 1|``."""
        a_wins = (label >= 0.5)[:, None]
        positive = torch.where(a_wins, z_a, z_b)
        negative = torch.where(a_wins, z_b, z_a)
        return positive, negative, (2.0 * label - 1.0).abs()

    def z_star_loss(self, z_a: torch.Tensor, z_b: torch.Tensor, label: torch.Tensor):
        """The triplet loss of ``z*`` against fixed encodings of the pairs."""
        positive, negative, weight = self._triplet_sides(z_a, z_b, label)
        anchor = self.model.z_star.expand_as(positive)
        return weighted_triplet_loss(anchor, positive, negative, weight, self.triplet_margin)

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 100,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> OPPO:
        """``total_timesteps`` gradient steps (see :meth:`OfflineAgent.learn`)."""
        if self.data is not None and self._preferences is None:
            raise ValueError(f"OPPO has no labels ({self.labels!r}): call set_preferences()")
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    def train_step(self) -> dict[str, torch.Tensor]:
        """One step: encoder + policy on ``L_HIM + c_p L_PM + c_n L_norm``, then ``z*``."""
        self.model.train()
        lr = self._update_learning_rate(self.policy_optimizer, lr=self._policy_lr())
        pairs = self._preferences.batch(self.batch_size, self.rng)
        label = pairs.label.to(self.device)
        seg_a = self.sampler.gather(pairs.episode_a, pairs.start_a)
        seg_b = self.sampler.gather(pairs.episode_b, pairs.start_b)
        him_a = him_b = None
        if not self._preferences.fresh:
            # a fixed set of labelled pairs: the policy imitates fresh segments of the whole
            # dataset (imitation needs no labels), the labels shape z
            him_a = self.sampler.gather(*self.sampler.sample(self.batch_size, self.rng))
            him_b = self.sampler.gather(*self.sampler.sample(self.batch_size, self.rng))
        # one autocast region for the whole forward pass: torch keeps the weights' bfloat16
        # copies until its outermost region ends (a region per network call cast them anew)
        with self._forward_precision():
            total, parts = self.losses(seg_a, seg_b, label, him_a, him_b)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        self.policy_optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.encoder.parameters(), self.max_grad_norm)
            nn.utils.clip_grad_norm_(self.model.policy.parameters(), self.max_grad_norm)
        self.encoder_optimizer.step()
        self.policy_optimizer.step()

        with torch.no_grad():
            z = self.encode(Segments.cat(seg_a, seg_b))
        z_loss = self.z_star_loss(z[: len(label)], z[len(label) :], label)
        self.z_optimizer.zero_grad(set_to_none=True)
        z_loss.backward()
        self.z_optimizer.step()
        return {
            "loss": total.detach(),
            "him_loss": parts["him"].detach(),
            "preference_loss": parts["preference"].detach(),
            "norm_loss": parts["norm"].detach(),
            "z_star_loss": z_loss.detach(),
            "z_star_norm": torch.linalg.vector_norm(self.model.z_star.detach()),
            "pairs": torch.tensor(float(len(label))),
            "learning_rate": torch.tensor(lr),
        }

    # ----------------------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Act with ``z*`` at every step. ``state`` carries the last ``K`` steps of each episode
        for the transformer policy: ``(observations, actions, timesteps, mask)`` arrays."""
        policy = self.model.policy
        z = self.context(self.model.z_star.detach()).expand(obs.shape[0], -1)
        length = policy.context_length
        if not getattr(policy, "uses_history", True):
            actions = policy(obs[:, None], None, None, None, z)[:, 0]
            return actions, state
        batch, act_dim = obs.shape[0], int(np.prod(self.action_space.shape))
        if state is None:
            state = (
                np.zeros((batch, length, obs.shape[1]), np.float32),
                np.zeros((batch, length, act_dim), np.float32),
                np.full((batch, length), -1, np.int64),
                np.zeros((batch, length), bool),
            )
        if len(state) != 4 or np.shape(state[0])[:2] != (batch, length):
            raise ValueError(
                f"the state passed to predict is not this policy's history of "
                f"{batch} episodes (a window of {length} steps)"
            )
        hist_obs, hist_act, hist_time, hist_mask = (np.array(s, copy=True) for s in state)
        previous = np.where(hist_mask[:, -1], hist_time[:, -1], -1)  # the last step's time
        # shift the window left by one and put the new observation last
        hist_obs = np.roll(hist_obs, -1, axis=1)
        hist_act = np.roll(hist_act, -1, axis=1)
        hist_time = np.roll(hist_time, -1, axis=1)
        hist_mask = np.roll(hist_mask, -1, axis=1)
        hist_obs[:, -1] = obs.cpu().numpy()
        hist_act[:, -1] = 0.0
        hist_time[:, -1] = previous + 1
        hist_mask[:, -1] = True
        device = self.device
        actions = policy(
            torch.as_tensor(hist_obs, device=device),
            torch.as_tensor(hist_act, device=device),
            torch.as_tensor(np.maximum(hist_time, 0), device=device),
            torch.as_tensor(hist_mask, device=device),
            z,
        )[:, -1]
        hist_act[:, -1] = actions.clamp(-1.0, 1.0).cpu().numpy()
        return actions, (hist_obs, hist_act, hist_time, hist_mask)

    def _reset_state(self, state: Any, starts: np.ndarray) -> Any:
        if state is None or not starts.any():
            return state
        hist_obs, hist_act, hist_time, hist_mask = (np.array(s, copy=True) for s in state)
        hist_mask[starts] = False
        hist_time[starts] = -1
        hist_obs[starts] = 0.0
        hist_act[starts] = 0.0
        return hist_obs, hist_act, hist_time, hist_mask

    def embed(self, episode: int, start: int) -> np.ndarray:
        """``I(τ)`` of the dataset's segment ``(episode, start)`` (evaluation mode)."""
        self.model.eval()
        with torch.no_grad():
            segment = self.sampler.gather(torch.tensor([episode]), torch.tensor([start]))
            return self.encode(segment)[0].cpu().numpy()


__all__ = [
    "OPPO",
    "SegmentEncoder",
    "ContextMlpPolicy",
    "ContextTransformerPolicy",
    "weighted_triplet_loss",
    "norm_loss",
    "masked_mse",
]
