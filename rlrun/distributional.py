"""Distributional RL: the categorical (C51) projection of Bellemare et al. 2017."""

from __future__ import annotations

import torch


def categorical_projection(
    next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Project the distribution of r + gamma_n Z(s', a*) back onto the fixed support z_0..z_{K-1}.

        Tz_j   = clip(r + gamma_n z_j, v_min, v_max)          (gamma_n = 0 where the episode terminated)
        b_j    = (Tz_j - v_min) / dz,   l = floor(b_j),  u = ceil(b_j)
        m_l   += p_j (u - b_j),   m_u += p_j (b_j - l)          (all of p_j to l when b_j is an integer)

    next_probs [B, K] (rows sum to 1), rewards [B], discounts [B] (gamma^n, or 0 at a terminal
    state), support [K] evenly spaced; returns the target probabilities m [B, K].
    """
    batch, atoms = next_probs.shape
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (atoms - 1)
    tz = (rewards.unsqueeze(1) + discounts.unsqueeze(1) * support.unsqueeze(0)).clamp(v_min, v_max)  # [B, K]
    # [B, K] in [0, K-1]; the clamp keeps rounding from putting b a hair past K-1 (seen on CUDA:
    # ceil(b) = K, an index past the support).
    b = ((tz - v_min) / dz).clamp(0, atoms - 1)
    lower, upper = b.floor(), b.ceil()
    on_atom = (upper == lower).to(next_probs.dtype)  # b is an atom: its whole mass goes to l
    offset = (torch.arange(batch, device=next_probs.device) * atoms).unsqueeze(1)  # [B, 1]
    target = torch.zeros(batch * atoms, dtype=next_probs.dtype, device=next_probs.device)
    target.index_add_(0, (lower.long() + offset).view(-1), (next_probs * (upper - b + on_atom)).view(-1))
    target.index_add_(0, (upper.long() + offset).view(-1), (next_probs * (b - lower)).view(-1))
    return target.view(batch, atoms)


def categorical_projection_dense(
    next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """:func:`categorical_projection` as Bellemare et al. 2017 write it (their Eq. 7), one dense product:

        m_i = sum_j [ 1 - |clip(r + gamma_n z_j, v_min, v_max) - z_i| / dz ]_0^1  p_j

    Each target atom i gathers from every j, so no index is written twice: the result is the same on every
    run and device (``deterministic=true`` uses it; scattered ``index_add_`` sums in whatever order CUDA's
    atomics land). O(B K^2) work instead of O(B K): ~1.2x the scatter's time at batch 32 and 51 atoms on a CPU,
    ~8x at batch 512. Same shapes and result as :func:`categorical_projection` (up to float rounding).
    """
    atoms = next_probs.shape[1]
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (atoms - 1)
    tz = (rewards.unsqueeze(1) + discounts.unsqueeze(1) * support.unsqueeze(0)).clamp(v_min, v_max)  # [B, K]
    b = (tz - v_min) / dz  # [B, K] Tz_j in atom units
    distance = (b.unsqueeze(2) - torch.arange(atoms, device=b.device, dtype=b.dtype)).abs()  # [B, K_j, K_i]
    weights = (1.0 - distance).clamp(min=0.0)  # [B, K_j, K_i] the share of p_j that goes to atom i
    return torch.bmm(next_probs.unsqueeze(1), weights).squeeze(1)  # [B, K]
