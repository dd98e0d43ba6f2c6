"""rlrun.trust_region: conjugate gradient, Fisher-vector products against the explicit Fisher matrix,
the natural step size, the KL functions and the line search."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos.npg import NPG, NPGConfig
from rlrun.trust_region import (
    backtracking_line_search,
    categorical_kl,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    gaussian_kl,
    natural_step_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def test_conjugate_gradient_solves_a_random_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=F64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=F64)  # symmetric positive definite
    b = torch.randn(12, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=50, residual_tol=1e-20)
    assert torch.linalg.norm(a @ x - b) < 1e-8
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def test_conjugate_gradient_stops_at_the_residual_tolerance_and_after_n_iterations():
    calls = []

    def identity(v):
        calls.append(1)
        return v

    b = torch.tensor([3.0, -4.0], dtype=F64)
    x = conjugate_gradient(identity, b, iters=10, residual_tol=1e-12)
    assert len(calls) == 1 and torch.equal(x, b)  # A = I: exact after one product, then the residual is 0
    calls.clear()
    conjugate_gradient(lambda v: (calls.append(1), torch.diag(torch.arange(1.0, 6.0, dtype=F64)) @ v)[1],
                       torch.ones(5, dtype=F64), iters=3, residual_tol=1e-30)
    assert len(calls) == 3


def test_conjugate_gradient_solves_the_rows_of_a_batch_apart():
    """[P, D] right-hand sides with a block-diagonal matvec: each row is the solution of its own system (one row
    converging after a step, the other after several), as if solved alone."""
    g = torch.Generator().manual_seed(1)
    m = torch.randn(6, 6, generator=g, dtype=F64)
    a = torch.stack([torch.eye(6, dtype=F64), m @ m.T + 0.5 * torch.eye(6, dtype=F64)])  # [2, 6, 6]
    b = torch.randn(2, 6, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: (a @ v.unsqueeze(-1)).squeeze(-1), b, iters=30, residual_tol=1e-20)
    for row in range(2):
        alone = conjugate_gradient(lambda v, row=row: a[row] @ v, b[row], iters=30, residual_tol=1e-20)
        torch.testing.assert_close(x[row], alone)
        torch.testing.assert_close(x[row], torch.linalg.solve(a[row], b[row]))


def _tiny_npg(action_space: gym.Space) -> NPG:
    torch.manual_seed(0)
    cfg = NPGConfig(hidden_sizes=[5], ortho_init=False, damping=0.0, log_std_init=-0.3)
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    return NPG(cfg, obs_space, action_space, torch.device("cpu"))


def _explicit_fisher_categorical(agent: NPG, obs: torch.Tensor) -> torch.Tensor:
    """F = 1/B sum_s sum_a p(a|s) grad log p(a|s) grad log p(a|s)^T, the exact expectation over actions."""
    params = agent.actor_params
    fisher = 0.0
    for s in obs:
        logp = agent.policy.policy_params_autograd(s[None]).log_softmax(-1)[0]  # [A]
        for a in range(logp.shape[0]):
            g = flat_grad(logp[a], params, retain_graph=True)
            fisher = fisher + logp[a].exp().detach() * torch.outer(g, g)
    return fisher / obs.shape[0]


def _explicit_fisher_gaussian(agent: NPG, obs: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian N(mu(s), sigma^2): F = 1/B sum_s J_mu^T diag(1/sigma^2) J_mu, plus 2 I for log sigma."""
    params = agent.actor_params
    n_log_std = agent.policy.log_std.numel()
    fisher = 0.0
    inv_var = (-2.0 * agent.policy.log_std.detach()).exp()
    for s in obs:
        mean = agent.policy.policy_params_autograd(s[None])[0]  # [A]
        jac = torch.stack([flat_grad(mean[i], params, retain_graph=True) for i in range(mean.shape[0])])  # [A, P]
        fisher = fisher + jac.T @ torch.diag(inv_var) @ jac
    fisher = fisher / obs.shape[0]
    log_std_slice = [i for i, p in enumerate(params) if p is agent.policy.log_std][0]
    start = sum(p.numel() for p in params[:log_std_slice])
    idx = torch.arange(start, start + n_log_std)
    fisher[idx, idx] += 2.0
    return fisher


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_fisher_vector_product_equals_the_explicit_fisher_matrix_times_v(kind):
    space = gym.spaces.Discrete(3) if kind == "discrete" else gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent = _tiny_npg(space)
    obs = torch.randn(6, 3)
    explicit = (_explicit_fisher_categorical if kind == "discrete" else _explicit_fisher_gaussian)(agent, obs)
    old = agent.snapshot(obs)
    fvp = fisher_vector_product(lambda: agent.mean_kl(old, agent.policy.policy_params_autograd(obs)),
                                agent.actor_params, damping=0.0)
    for seed in range(3):
        v = torch.randn(explicit.shape[0], generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), explicit @ v, rtol=1e-4, atol=1e-5)
    damped = fisher_vector_product(lambda: agent.mean_kl(old, agent.policy.policy_params_autograd(obs)),
                                   agent.actor_params, damping=0.1)
    torch.testing.assert_close(damped(v), explicit @ v + 0.1 * v, rtol=1e-4, atol=1e-5)


def test_natural_step_size_puts_the_quadratic_kl_on_the_boundary():
    f = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    g = torch.tensor([1.0, -2.0], dtype=F64)
    x = torch.linalg.solve(f, g)
    beta = natural_step_size(x, f @ x, max_kl=0.01)
    step = beta * x
    torch.testing.assert_close(0.5 * step @ f @ step, torch.tensor(0.01, dtype=F64))
    torch.testing.assert_close(beta, torch.sqrt(2 * 0.01 / (g @ x)))  # sqrt(2 delta / g^T F^-1 g)


def test_kl_functions_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    old_logits, logits = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=old_logits),
                                                 torch.distributions.Categorical(logits=logits))
    torch.testing.assert_close(categorical_kl(old_logits, logits), expected)
    assert torch.allclose(categorical_kl(logits, logits), torch.zeros(4), atol=1e-7)
    m0, m1 = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    s0, s1 = torch.tensor([0.1, -0.5]), torch.tensor([-0.2, 0.3])
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(m0, s0.exp()),
                                                 torch.distributions.Normal(m1, s1.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(m0, s0, m1, s1), expected)


def _quadratic(candidate: torch.Tensor) -> tuple[float, float]:
    """A toy surrogate: improvement = sum(theta), KL = |theta|^2 (from theta_old = 0)."""
    return float(candidate.sum()), float(candidate @ candidate)


def test_line_search_rejects_a_step_that_breaks_the_kl_limit():
    start, full = torch.zeros(2), torch.tensor([1.0, 1.0])  # full step: improvement 2, KL 2 > 0.5
    result = backtracking_line_search(_quadratic, start, full, max_kl=0.5, shrink=0.5, max_backtracks=10)
    # 1.0 * full: KL 2 (rejected); 0.5 * full: KL 0.5 (accepted, <= max_kl)
    assert result.accepted and result.steps == 2
    torch.testing.assert_close(result.params, torch.tensor([0.5, 0.5]))
    assert result.kl <= 0.5 and result.improvement == pytest.approx(1.0)


def test_line_search_rejects_steps_that_do_not_improve_and_then_keeps_the_parameters():
    start, full = torch.tensor([0.1, 0.0]), torch.tensor([-1.0, 0.0])  # every candidate lowers the surrogate
    evaluate = lambda c: (float(c.sum() - start.sum()), float(((c - start) ** 2).sum()))
    result = backtracking_line_search(evaluate, start, full, max_kl=10.0, shrink=0.5, max_backtracks=4)
    assert not result.accepted and result.steps == 4 and torch.equal(result.params, start)
    # a KL limit nothing satisfies
    result = backtracking_line_search(_quadratic, torch.zeros(2), torch.ones(2), max_kl=1e-9, max_backtracks=3)
    assert not result.accepted and torch.equal(result.params, torch.zeros(2))
