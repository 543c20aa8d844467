"""TS-DDR's gradient through a rule against central finite differences of the optimal costs
(shared by the DC and AC tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdpo.rules.tsddr import target_cost


def check_rule_gradient(
    agent, scenarios: int, per_parameter: int, eps: float, rel: float, abs: float
) -> int:
    """Move ``agent``'s rule off its (flat) start, in float64; compare the gradient of the mean
    cost over ``scenarios`` sampled scenarios (from the target duals) with central finite
    differences at ``per_parameter`` random entries of every parameter. Returns how many were
    checked."""
    agent.policy.double()
    with torch.no_grad():
        for param in agent.policy.parameters():
            step = torch.randn(
                param.shape, generator=torch.Generator().manual_seed(0), dtype=param.dtype
            )
            param.add_(0.3 * step)
    noise = agent.problem.sample_noise(scenarios, np.random.default_rng(5))
    noise_t = torch.as_tensor(noise)
    initial = torch.as_tensor(agent.problem.initial_state)

    def mean_cost() -> float:
        with torch.no_grad():
            targets = agent.policy.targets(noise_t, initial).numpy()
        return float(agent.solve(noise, targets).cost.mean())

    cost, _ = target_cost(agent.policy.targets(noise_t, initial), lambda x: agent.solve(noise, x))
    agent.policy.zero_grad()
    cost.mean().backward()
    checked = 0
    rng = np.random.default_rng(0)
    for param in agent.policy.parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1)
        for index in rng.choice(flat.numel(), size=min(per_parameter, flat.numel()), replace=False):
            old = flat[index].item()
            flat[index] = old + eps
            right = mean_cost()
            flat[index] = old - eps
            left = mean_cost()
            flat[index] = old
            assert grad[index].item() == pytest.approx(
                (right - left) / (2 * eps), rel=rel, abs=abs
            ), (param.shape, index)
            checked += 1
    agent.close()
    return checked
