"""All parameters of a module in one flat tensor, and their gradients in another.

Small networks trained on small minibatches spend most of an update in per-tensor overhead:
zeroing, clipping and stepping a dozen tensors costs far more than the arithmetic. With the
parameters viewing one flat tensor (and their ``.grad`` viewing one flat gradient, which
autograd accumulates into in place), gradient clipping and Adam act on a single tensor. The
flat vector is also what TRPO's conjugate gradient works on.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class FlatParams:
    """Re-home parameters into one contiguous tensor.

    After construction, the parameters are views of :attr:`data` and their gradients views of
    :attr:`grad`. Move the module to its device *before* flattening, never call
    ``zero_grad(set_to_none=True)`` on it (that would detach the gradient views; use
    :meth:`zero_grad`), and give optimizers this object. A parameter belongs to one
    ``FlatParams`` at most.

    Args:
        params: the parameters to flatten (a module's ``parameters()`` or a subset).
    """

    def __init__(self, params: Iterable[nn.Parameter]):
        self.params = list(params)
        if not self.params:
            raise ValueError("there are no parameters to flatten")
        self.data = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.grad = torch.zeros_like(self.data)
        offset = 0
        for param in self.params:
            size = param.numel()
            param.data = self.data[offset : offset + size].view_as(param)
            param.grad = self.grad[offset : offset + size].view_as(param)
            offset += size
        self.data.grad = self.grad

    def zero_grad(self) -> None:
        """Zero all gradients (in place, keeping the views)."""
        self.grad.zero_()

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale gradients so that their global L2 norm is at most ``max_norm``.

        Same rule as ``torch.nn.utils.clip_grad_norm_``: multiply by
        ``min(1, max_norm / (norm + 1e-6))``. Returns the norm before clipping (a tensor, so
        that no host-device synchronisation is forced).
        """
        norm = torch.linalg.vector_norm(self.grad)
        self.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm

    def set_(self, vector: torch.Tensor) -> None:
        """Overwrite all parameters with the flat ``vector``."""
        with torch.no_grad():
            self.data.copy_(vector)


# torch's fused Adam kernel (CPU and CUDA): the same arithmetic as the unfused ops below (the
# tests compare both with torch.optim.Adam), in one pass over memory
_FUSED_ADAM = getattr(torch, "_fused_adam_", None)


class FlatAdam:
    """Adam on a :class:`FlatParams` vector: torch.optim.Adam's arithmetic in five tensor ops.

    ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
    ``θ ← θ − lr/(1−β₁ᵗ) · m / (sqrt(v)/sqrt(1−β₂ᵗ) + ε)`` — the same update as
    ``torch.optim.Adam`` (checked in the tests), without its per-call bookkeeping, which costs
    more than the update itself for a small network. ``param_groups[0]["lr"]`` sets the rate.

    Args:
        flat: the flattened parameters (their ``grad`` is read).
        lr: learning rate.
        betas: ``(β₁, β₂)``.
        eps: ε added to the denominator.
    """

    def __init__(
        self,
        flat: FlatParams,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.flat = flat
        self.param_groups = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.exp_avg = torch.zeros_like(flat.data)
        self.exp_avg_sq = torch.zeros_like(flat.data)
        self.steps = 0
        self._step_tensor = torch.zeros((), dtype=torch.float32, device=flat.data.device)

    #: whether torch's fused Adam kernel is there (else five unfused tensor ops)
    fused = _FUSED_ADAM is not None

    def _fused_step(self, *tensor_lists: list[torch.Tensor]) -> None:
        """torch's fused Adam kernel with this optimizer's hyperparameters on lists of
        ``(params, grads, exp_avgs, exp_avg_sqs, step_counts)``, one call for all."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        params, grads, exp_avgs, exp_avg_sqs, step_counts = tensor_lists
        _FUSED_ADAM(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            step_counts,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )

    @torch.no_grad()
    def step(self) -> None:
        """Apply one Adam update with the current gradients."""
        self.steps += 1
        grad = self.flat.grad
        if self.fused:  # one pass over memory instead of seven
            self._step_tensor.fill_(self.steps)
            self._fused_step(
                [self.flat.data], [grad], [self.exp_avg], [self.exp_avg_sq], [self._step_tensor]
            )
            return
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        self.exp_avg.lerp_(grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**self.steps
        bias_correction2_sqrt = (1.0 - beta2**self.steps) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        self.flat.data.addcdiv_(self.exp_avg, denom, value=-group["lr"] / bias_correction1)

    def state_dict(self) -> dict:
        """Moments, step count and hyperparameters."""
        group = self.param_groups[0]
        return {
            "steps": self.steps,
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "lr": group["lr"],
            "betas": list(group["betas"]),
            "eps": group["eps"],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; raises ``ValueError`` on a size mismatch."""
        if state["exp_avg"].shape != self.exp_avg.shape:
            raise ValueError(
                f"optimizer state has {state['exp_avg'].numel()} entries, the parameters "
                f"{self.exp_avg.numel()}"
            )
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
        self.param_groups[0].update(lr=state["lr"], betas=tuple(state["betas"]), eps=state["eps"])
