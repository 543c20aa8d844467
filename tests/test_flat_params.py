"""Flat parameters, gradient clipping and Adam against torch's own implementations."""

import copy

import pytest
import torch
from torch import nn

from mdpo.core import flat_params
from mdpo.core.flat_params import FlatAdam, FlatParams


def make_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_gradients_land_in_the_flat_vector():
    net = make_net()
    flat = FlatParams(net.parameters())
    x = torch.randn(4, 5)
    net(x).pow(2).sum().backward()
    reference = torch.autograd.grad(net(x).pow(2).sum(), list(net.parameters()))
    torch.testing.assert_close(flat.grad, torch.cat([g.reshape(-1) for g in reference]))
    flat.zero_grad()
    assert flat.grad.abs().sum() == 0 and all(p.grad.abs().sum() == 0 for p in net.parameters())


@pytest.mark.parametrize("fused", [True, False])
def test_adam_and_clipping_equal_torch(fused, monkeypatch):
    """Both paths: torch's fused kernel and the unfused tensor ops (where it is missing)."""
    if not fused:
        monkeypatch.setattr(flat_params.FlatAdam, "fused", False)
    net_ref = make_net()
    net = copy.deepcopy(net_ref)
    flat = FlatParams(net.parameters())
    opt = FlatAdam(flat, lr=1e-2, eps=1e-5)
    opt_ref = torch.optim.Adam(net_ref.parameters(), lr=1e-2, eps=1e-5)
    for step in range(20):
        x = torch.randn(16, 5, generator=torch.Generator().manual_seed(step))
        flat.zero_grad()
        (net(x).pow(3).sum()).backward()
        norm = flat.clip_grad_norm_(0.5)
        opt_ref.zero_grad()
        (net_ref(x).pow(3).sum()).backward()
        norm_ref = nn.utils.clip_grad_norm_(net_ref.parameters(), 0.5)
        torch.testing.assert_close(norm, norm_ref)
        opt.step()
        opt_ref.step()
    for p, q in zip(net.parameters(), net_ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_optimizer_state_round_trip_and_size_check():
    flat = FlatParams(make_net().parameters())
    opt = FlatAdam(flat, lr=1e-3)
    flat.grad.fill_(0.1)
    opt.step()
    other = FlatAdam(FlatParams(make_net().parameters()), lr=5.0)
    other.load_state_dict(opt.state_dict())
    assert other.steps == 1 and other.param_groups[0]["lr"] == 1e-3
    torch.testing.assert_close(other.exp_avg, opt.exp_avg)
    small = FlatAdam(FlatParams(nn.Linear(2, 2).parameters()))
    try:
        small.load_state_dict(opt.state_dict())
    except ValueError as err:
        assert "entries" in str(err)
    else:
        raise AssertionError("a state of the wrong size must be refused")
