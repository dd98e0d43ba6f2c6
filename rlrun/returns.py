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


def q_lambda_return(
    rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
    gamma: float, lam: float,
) -> torch.Tensor:
    """Peng's Q(lambda) return as PQN uses it (Gallici et al. 2024), computed backwards over a rollout:

        G_t = r_t + gamma * (1 - terminated_t) * ( max_a Q(s_{t+1}, a)                              if done_t or t = T - 1
                                                   (1 - lam) max_a Q(s_{t+1}, a) + lam G_{t+1}       otherwise )

    ``next_values[t]`` is max_a Q(s_{t+1}, a) of the state reached by step t: the env's final
    observation where the episode ended at t (so a time-limit truncation bootstraps from it), the
    next rollout observation otherwise. done_t = terminated_t or truncated_t: the recursion never
    carries G_{t+1} across an episode boundary, and a terminated step never bootstraps (G_t = r_t).
    The last row bootstraps from max_a Q(s_T, a). All inputs are [T, N]; returns G [T, N].
    lam=0 gives the one-step Q-learning target r_t + gamma max_a Q(s_{t+1}, a); lam=1 the
    discounted reward-to-go bootstrapped at episode and rollout ends (:func:`reward_to_go`).
    """
    not_term = 1.0 - terminated.to(rewards.dtype)  # [T, N]
    done = terminated | truncated  # [T, N]
    out = torch.empty_like(rewards)
    running = next_values[-1]  # [N]: G after the last row is its bootstrap, max_a Q(s_T, a)
    for t in range(rewards.shape[0] - 1, -1, -1):
        mixed = torch.where(done[t], next_values[t], (1.0 - lam) * next_values[t] + lam * running)  # [N]
        running = rewards[t] + gamma * not_term[t] * mixed
        out[t] = running
    return out


def reward_to_go(
    rewards: torch.Tensor, bootstrap: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Discounted reward-to-go, the return from step t to the end of its episode:

        G_t = r_t + gamma * (1 - terminated_t) * ( bootstrap_t          if done_t or t = T - 1
                                                   G_{t+1}              otherwise )

    ``bootstrap[t]`` stands in for the rest of the return where the rollout cannot see it: at a
    time-limit truncation and at the last row of a rollout that cut an episode. Pass V(s_{t+1})
    (a critic) or zeros (plain REINFORCE, which then truncates the return there). A terminated
    step never bootstraps. All inputs are [T, N]; returns G [T, N].
    """
    not_term = 1.0 - terminated.to(rewards.dtype)  # [T, N]
    done = terminated | truncated  # [T, N]
    out = torch.empty_like(rewards)
    running = bootstrap[-1]  # [N]: the return after the last row
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = torch.where(done[t], bootstrap[t], running)
        running = rewards[t] + gamma * not_term[t] * running
        out[t] = running
    return out


def episode_return(returns_to_go: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
    """Whole-trajectory return R(tau) = G_0 of each step's episode, broadcast over its steps:

        R_t = G_t if episode_start_t else R_{t-1}

    ``returns_to_go`` [T, N] from :func:`reward_to_go`; ``episode_start`` [T, N] bool marks each
    episode's first step in the rollout (row 0 always counts as one). Returns [T, N].
    """
    out = torch.empty_like(returns_to_go)
    running = returns_to_go[0]  # [N]
    for t in range(returns_to_go.shape[0]):
        running = torch.where(episode_start[t], returns_to_go[t], running)
        out[t] = running
    return out


def episode_steps(done: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Step index k within the episode of every rollout step:

        k_0 = start,   k_{t+1} = 0 if done_t else k_t + 1

    ``done`` [T, N] bool (terminated or truncated); ``start`` [N] the index of row 0 (carried
    over from the previous rollout, 0 after a reset). Returns k [T, N] (int64).
    """
    out = torch.empty(done.shape, dtype=torch.int64, device=done.device)
    k = start.to(torch.int64)  # [N]
    for t in range(done.shape[0]):
        out[t] = k
        k = torch.where(done[t], torch.zeros_like(k), k + 1)
    return out


def discount_weights(steps: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """The gamma^k factor of the discounted policy gradient,

        grad J = E[ sum_k gamma^k * grad log pi(a_k|s_k) * G_k ],

    for steps k [T, N] of their episodes (:func:`episode_steps`). Most implementations drop it
    (it down-weights late states, so the estimator is then biased w.r.t. the discounted objective
    but learns faster); rlrun keeps it as a switch. Returns gamma^k [T, N] (float32).
    """
    return torch.pow(torch.as_tensor(gamma, dtype=torch.float64, device=steps.device), steps).to(torch.float32)


def n_step_return(
    rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The n-step return of the first step of a window of ``n`` steps, cut at the first episode end.

        m      = the first k in 0..n-1 with done_k (terminated or truncated), else n - 1
        G      = sum_{k=0}^{m} gamma^k r_k
        disc   = gamma^(m+1) * (1 - terminated_m)
        target = G + disc * Q(s_{m+1})          (s_{m+1}: the final observation where step m ended an episode)

    The return never runs across an episode end. A truncated window still bootstraps from the
    final observation (a time limit is not a terminal state); a terminated one does not.
    ``rewards``, ``terminated``, ``truncated`` are [n, N] (oldest step first); returns G [N],
    disc [N] and m [N] (int64: the step whose next observation to bootstrap from).
    """
    n = rewards.shape[0]
    done = (terminated | truncated).to(rewards.dtype)  # [n, N]
    # alive_k = prod_{j<k} (1 - done_j): 1 for k <= m, 0 after the first episode end
    alive = torch.cumprod(torch.cat([torch.ones_like(done[:1]), 1.0 - done[:-1]]), dim=0)  # [n, N]
    powers = gamma ** torch.arange(n, dtype=rewards.dtype, device=rewards.device)  # [n]
    returns = (powers.unsqueeze(1) * alive * rewards).sum(0)  # [N]
    last = alive.sum(0).long() - 1  # [N]
    term_last = terminated.gather(0, last.unsqueeze(0)).squeeze(0).to(rewards.dtype)  # [N]
    discounts = gamma ** (last + 1).to(rewards.dtype) * (1.0 - term_last)  # [N]
    return returns, discounts, last
