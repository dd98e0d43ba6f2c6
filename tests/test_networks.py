"""The fused MLP path of rlrun/fused.py (sigmoid-based tanh, one autograd node with a written-out backward,
flat parameters) computes what plain PyTorch computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlrun.fused import FusedMLP, _MLPFunction, flatten_parameters, tanh
from rlrun.networks import mlp


def test_tanh_matches_torch_tanh_and_its_gradient():
    torch.manual_seed(0)
    x = torch.linspace(-20, 20, 10001, requires_grad=True)
    assert (tanh(x) - torch.tanh(x)).abs().max() < 1e-6
    g = torch.randn(10001)
    (ours,) = torch.autograd.grad(tanh(x), x, g)
    (ref,) = torch.autograd.grad(torch.tanh(x), x, g)
    # d/dx = g (1 - y^2): an error e in y moves it by at most |g| * 2e, with e < 2.5e-7
    assert ((ours - ref).abs() <= 5e-7 * g.abs() + 1e-7).all()


def _reference(net: FusedMLP, activation: str) -> nn.Sequential:
    """The same modules run one by one with PyTorch's own activations and autograd."""
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    return nn.Sequential(*[m if isinstance(m, nn.Linear) else act() for m in net])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_output_and_gradients_equal_plain_autograd(activation):
    torch.manual_seed(0)
    net = mlp(4, [64, 32], 3, activation, fused=True)
    ref = _reference(net, activation)
    x = torch.randn(50, 4, requires_grad=True)
    y, y_ref = net(x), ref(x)
    assert (y - y_ref).abs().max() < 1e-5
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, [x, *net.parameters()], g)
    theirs = torch.autograd.grad(y_ref, [x, *ref.parameters()], g)
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-5 * max(1.0, b.abs().max().item())
    with torch.no_grad():  # the no-grad path gives the same numbers
        assert torch.allclose(net(x), y)
    assert net(torch.randn(2, 5, 4)).shape == (2, 5, 3)  # leading dims are kept


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_written_out_backward_passes_gradcheck(activation):
    torch.manual_seed(0)

    def mk(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    x = mk(6, 4)
    params = [mk(5, 4), mk(5), mk(3, 5), mk(3), mk(5, 4), mk(5), mk(2, 5), mk(2)]  # two MLPs on one input
    assert torch.autograd.gradcheck(lambda x, *p: _MLPFunction.apply(activation, (4, 4), x, *p), (x, *params))


def test_parallel_mlps_equal_separate_calls():
    torch.manual_seed(0)
    a, b = mlp(4, [16], 2, fused=True), mlp(4, [16], 1, fused=True)
    x = torch.randn(7, 4)
    ya, yb = FusedMLP.parallel(x, a, b)
    assert torch.allclose(ya, a(x)) and torch.allclose(yb, b(x))


def test_flatten_parameters_keeps_values_and_makes_views():
    torch.manual_seed(0)
    net = mlp(3, [8], 2)
    before = [p.detach().clone() for p in net.parameters()]
    flat = flatten_parameters(net)
    assert flat.numel() == sum(p.numel() for p in before)
    for p, old in zip(net.parameters(), before):
        assert torch.equal(p, old)
    net(torch.randn(5, 3)).sum().backward()  # gradients land in the flat gradient
    assert flat.grad.abs().sum() > 0
    with torch.no_grad():
        flat.zero_()
    assert all(p.abs().sum() == 0 for p in net.parameters())  # the parameters are views into it
