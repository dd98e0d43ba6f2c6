"""Return and advantage estimators: pure tensor functions over rollouts shaped [T, N].

Every function takes ``terminated`` and ``truncated`` apart. A time-limit truncation is not a
terminal state of the MDP: the value of the state the episode was cut at, V(s_{t+1}) computed
from the env's final observation, is still bootstrapped; only the recursion across the episode
boundary is stopped.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
    terminated: torch.Tensor, truncated: torch.Tensor, gamma: float, lam: float,
) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al. 2016).

        delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done_t = terminated_t or truncated_t

    ``next_values[t]`` is V of the state reached by step t: the env's final observation where the
    episode ended at t (so a truncated step still bootstraps), the next rollout observation otherwise.
    All inputs are [T, N]; returns the advantages [T, N]. lam=1 gives Monte Carlo minus V(s_t),
    lam=0 the one-step TD error.
    """
    not_term = 1.0 - terminated.to(rewards.dtype)  # [T, N]
    not_done = 1.0 - (terminated | truncated).to(rewards.dtype)  # [T, N]
    deltas = rewards + gamma * not_term * next_values - values  # [T, N]
    decay = gamma * lam * not_done  # [T, N]
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])  # [N]
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages
