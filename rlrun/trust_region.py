"""Trust-region math shared by NPG and TRPO: KL between policies, Fisher-vector products,
conjugate gradient, the natural step size and the backtracking line search.

Pure functions over flat parameter vectors and closures: nothing here knows about networks,
envs or configs, so each piece is tested against a hand-built example (tests/test_trust_region.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch


def categorical_kl(old_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) per state for categorical policies:

        KL = sum_a p_old(a) * (log p_old(a) - log p(a))

    ``old_logits``, ``logits`` [B, A] -> [B].
    """
    old_logp = old_logits.log_softmax(-1)  # [B, A]
    return (old_logp.exp() * (old_logp - logits.log_softmax(-1))).sum(-1)


def gaussian_kl(old_mean: torch.Tensor, old_log_std: torch.Tensor, mean: torch.Tensor,
                log_std: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) per state for diagonal Gaussian policies:

        KL = sum_i [ log(sigma_i / sigma_old_i) + (sigma_old_i^2 + (mu_old_i - mu_i)^2) / (2 sigma_i^2) - 1/2 ]

    means [B, A], log stds [A] or [B, A] -> [B].
    """
    var, old_var = (2.0 * log_std).exp(), (2.0 * old_log_std).exp()  # [A] or [B, A]
    kl = log_std - old_log_std + (old_var + (old_mean - mean).pow(2)) / (2.0 * var) - 0.5  # [B, A]
    return kl.sum(-1)


def flat_grad(output: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False,
              retain_graph: bool | None = None) -> torch.Tensor:
    """d output / d params as one flat vector [P] (zeros for parameters the output does not use)."""
    grads = torch.autograd.grad(output, params, create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def fisher_vector_product(mean_kl: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                          damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (F + damping I) v, the Fisher information matrix times v, by double backpropagation:

        F v = grad_theta( grad_theta( mean KL(pi_old || pi_theta) )^T v ),   evaluated at theta = theta_old

    At theta = theta_old the Hessian of the mean KL equals the (empirical) Fisher matrix
    E[grad log pi grad log pi^T], so F is never built. ``mean_kl()`` must compute the KL with
    plain autograd ops (twice differentiable) from the current ``params``; its first gradient
    is taken once and reused for every product. damping * I keeps F positive definite for CG.
    """
    grad_kl = flat_grad(mean_kl(), params, create_graph=True)  # [P], a graph for the second pass

    def product(v: torch.Tensor) -> torch.Tensor:
        return flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v  # [P]

    return product


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive definite A given only x -> A x (Hestenes and Stiefel 1952):

        r_0 = p_0 = b, x_0 = 0
        alpha_k = r_k^T r_k / p_k^T A p_k
        x_{k+1} = x_k + alpha_k p_k,   r_{k+1} = r_k - alpha_k A p_k
        p_{k+1} = r_{k+1} + (r_{k+1}^T r_{k+1} / r_k^T r_k) p_k

    Stops after ``iters`` products or once r^T r < ``residual_tol``. Exact in at most dim(b)
    iterations; TRPO uses ~10 to get F^-1 g without ever forming F.

    ``b`` [D], or [P, D]: P independent systems (a population's members, ``matvec`` block-diagonal), each with
    its own alpha and beta; a row whose residual is below the tolerance stays where it is.
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = (r * r).sum(-1)  # [] or [P]
    for _ in range(iters):
        active = rr >= residual_tol
        if not bool(active.any()):
            break
        ap = matvec(p)
        alpha = torch.where(active, rr / (p * ap).sum(-1), 0.0).unsqueeze(-1)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(-1)
        p = r + torch.where(active, rr_new / rr, 0.0).unsqueeze(-1) * p
        rr = torch.where(active, rr_new, rr)
    return x


def natural_step_size(direction: torch.Tensor, f_direction: torch.Tensor, max_kl: float | torch.Tensor) -> torch.Tensor:
    """The step length that puts the quadratic KL model on the trust-region boundary:

        beta = sqrt( 2 delta / (x^T F x) ),   x = F^-1 g,   so that 1/2 (beta x)^T F (beta x) = delta

    ``direction`` x [D] and ``f_direction`` F x [D]. Returns beta (0-d); 0 where x^T F x is not positive.
    Rows of [P, D] inputs are separate systems (beta [P], ``max_kl`` a float or [P]).
    """
    xfx = (direction * f_direction).sum(-1)
    return torch.where(xfx > 0, torch.sqrt(2.0 * max_kl / xfx.clamp(min=1e-12)), torch.zeros_like(xfx))


class LineSearchResult(NamedTuple):
    params: torch.Tensor
    """The accepted parameters, or the starting ones when no step was accepted."""
    steps: int
    """Candidates evaluated (1 = the full step was accepted)."""
    accepted: bool
    improvement: float
    """Surrogate improvement of the accepted step (0 when none)."""
    kl: float
    """Mean KL of the accepted step (0 when none)."""


def backtracking_line_search(evaluate: Callable[[torch.Tensor], tuple[float, float]], params: torch.Tensor,
                             full_step: torch.Tensor, max_kl: float, shrink: float = 0.5,
                             max_backtracks: int = 10) -> LineSearchResult:
    """TRPO's line search (Schulman et al. 2015, appendix C): try

        theta_i = theta + shrink^i * full_step,   i = 0, 1, ..., max_backtracks - 1

    and accept the first theta_i whose surrogate improves (L(theta_i) - L(theta) > 0) while the
    mean KL(pi_theta || pi_theta_i) <= max_kl. ``evaluate(theta_i) -> (improvement, kl)``.
    When no candidate qualifies the parameters stay where they are.
    """
    for i in range(max_backtracks):
        candidate = params + (shrink ** i) * full_step
        improvement, kl = evaluate(candidate)
        if math.isfinite(improvement) and math.isfinite(kl) and improvement > 0 and kl <= max_kl:
            return LineSearchResult(candidate, i + 1, True, improvement, kl)
    return LineSearchResult(params, max_backtracks, False, 0.0, 0.0)
