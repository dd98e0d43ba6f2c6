"""The C51 categorical projection on a 5-atom support, against hand-computed targets."""

from __future__ import annotations

import torch

from rlrun.distributional import categorical_projection

SUPPORT = torch.linspace(-2.0, 2.0, 5)  # z = [-2, -1, 0, 1, 2], dz = 1
P = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])


def test_mass_between_atoms_is_split_by_distance():
    # r = 0.5, gamma = 1: Tz = [-1.5, -0.5, 0.5, 1.5, 2.5 -> 2 (clipped)], b = [0.5, 1.5, 2.5, 3.5, 4]
    # atom 0: 0.1 * 0.5                    = 0.05
    # atom 1: 0.1 * 0.5 + 0.2 * 0.5        = 0.15
    # atom 2: 0.2 * 0.5 + 0.3 * 0.5        = 0.25
    # atom 3: 0.3 * 0.5 + 0.2 * 0.5        = 0.25
    # atom 4: 0.2 * 0.5 + 0.2 (lands on 2) = 0.30
    m = categorical_projection(P, torch.tensor([0.5]), torch.tensor([1.0]), SUPPORT)
    assert torch.allclose(m, torch.tensor([[0.05, 0.15, 0.25, 0.25, 0.30]]))


def test_mass_landing_exactly_on_atoms_stays_whole():
    # r = 1, gamma = 1: Tz = [-1, 0, 1, 2, 3 -> 2]; every b is an integer: shift by one atom, top two merge.
    m = categorical_projection(P, torch.tensor([1.0]), torch.tensor([1.0]), SUPPORT)
    assert torch.allclose(m, torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4]]))


def test_terminal_state_puts_everything_at_the_reward():
    # gamma_n = 0 (terminated): Tz = r = 1 for every atom -> all mass on z = 1.
    m = categorical_projection(P, torch.tensor([1.0]), torch.tensor([0.0]), SUPPORT)
    assert torch.allclose(m, torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]]))


def test_mass_beyond_the_support_edges_is_clipped_to_them():
    # r = 5 and r = -5: everything past v_max / v_min lands on the edge atom.
    m = categorical_projection(P.repeat(2, 1), torch.tensor([5.0, -5.0]), torch.tensor([0.9, 0.9]), SUPPORT)
    assert torch.allclose(m, torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]]))


def test_projection_keeps_total_probability():
    torch.manual_seed(0)
    support = torch.linspace(-10, 10, 51)
    probs = torch.softmax(torch.randn(64, 51), -1)
    m = categorical_projection(probs, torch.randn(64) * 3, torch.rand(64) * 0.99, support)
    assert torch.allclose(m.sum(-1), torch.ones(64), atol=1e-5)
    assert (m >= 0).all()


def test_projection_stays_on_the_support_when_the_top_edge_rounds_up(monkeypatch):
    # On CUDA, (v_max - v_min) / dz came out a hair above K - 1 for a clipped target (a Rainbow run
    # on Breakout died of an index past the support). Make tensor-by-tensor division (the one that
    # computes b) round up here and check that all mass still lands on the K atoms, at the top edge.
    support = torch.linspace(-10.0, 10.0, 51)
    real_div = torch.Tensor.__truediv__
    monkeypatch.setattr(torch.Tensor, "__truediv__", 
                        lambda a, b: real_div(a, b) * (1 + 1e-5) if isinstance(b, torch.Tensor) else real_div(a, b))
    target = categorical_projection(torch.full((1, 51), 1 / 51), torch.tensor([15.0]), torch.tensor([0.0]), support)
    assert target.shape == (1, 51)
    assert torch.allclose(target[0, -1], torch.tensor(1.0))


def test_dense_projection_equals_the_scatter_form():
    from rlrun.distributional import categorical_projection_dense

    g = torch.Generator().manual_seed(0)
    support = torch.linspace(-10.0, 10.0, 51)
    probs = torch.softmax(torch.randn(64, 51, generator=g), -1)
    rewards = torch.randn(64, generator=g) * 5  # some beyond the support edges once discounted
    discounts = torch.rand(64, generator=g)
    discounts[:4] = 0.0  # terminal: all mass on the reward
    rewards[4] = 1.2  # gamma z_j + r lands exactly on atoms when gamma = 1
    discounts[4] = 1.0
    dense = categorical_projection_dense(probs, rewards, discounts, support)
    torch.testing.assert_close(dense, categorical_projection(probs, rewards, discounts, support))
    torch.testing.assert_close(dense.sum(-1), torch.ones(64))


def test_dense_projection_hand_computed():
    from rlrun.distributional import categorical_projection_dense

    # atoms 0, 1, 2; all mass on z_1 = 1; r = 0.25, gamma = 1 -> Tz = 1.25: 0.75 to atom 1, 0.25 to atom 2
    out = categorical_projection_dense(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0.25]), torch.tensor([1.0]),
                                       torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.75, 0.25]]))
