"""The losses and estimators that several policy-gradient algorithms share, one short function each with its
equation: advantage normalisation, the critic's value losses, the approximate KL, explained variance.

PPO's clipped surrogate stays in :mod:`rlrun.algos.ppo`, the trust-region machinery in :mod:`rlrun.trust_region`,
the return estimators (GAE, reward-to-go, n-step) in :mod:`rlrun.returns`.

Expectations E[.] are means over the last dimension: a batch [B] gives a 0-d tensor, and the stacked batches
[P, B] of a population (:mod:`rlrun.population`) give one value per member [P].
"""

from __future__ import annotations

import torch


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """(A - mean(A)) / (std(A) + 1e-8): advantages with mean 0 and standard deviation 1.

    A single sample has no spread: it normalises to 0 (its std would be NaN and poison every parameter).
    """
    mean = advantages.mean(-1, keepdim=True)
    if advantages.shape[-1] < 2:
        return advantages - mean
    return (advantages - mean) / (advantages.std(-1, keepdim=True) + 1e-8)


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """The critic's regression loss, the mean squared error

        L_V = E[ (V(s_t) - R_t)^2 ]

    as openai/baselines' a2c and trpo_mpi, Stable-Baselines3 and Spinning Up write it (no 1/2: with
    ``vf_coef`` 0.5 A2C's critic term is 0.5 E[(V - R)^2]; PPO's :func:`clipped_value_loss` has the 1/2).
    """
    return (values - returns).pow(2).mean(-1)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float | torch.Tensor | None) -> torch.Tensor:
    """PPO's value loss, optionally clipped around the values at collection time:

        L_V = 1/2 E[ max( (V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2 ) ]

    With ``clip=None`` it is the plain 1/2 E[(V - R)^2]. The 1/2 is openai/baselines ppo2's and CleanRL's;
    Stable-Baselines3's PPO has no 1/2, so its ``vf_coef`` 0.5 is rlrun's 1.0.
    """
    loss = (values - returns).pow(2)  # [B]
    if clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (v_clipped - returns).pow(2))
    return 0.5 * loss.mean(-1)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) estimated from samples of pi_old: E[(r - 1) - log r] (Schulman's k3, always >= 0)."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean(-1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - pred] / Var[target]: 1 is a perfect critic, 0 no better than a constant."""
    var = target.var(-1)
    return torch.where(var > 0, 1.0 - (target - pred).var(-1) / var, torch.full_like(var, float("nan")))
