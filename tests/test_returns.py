"""rlrun.returns.gae and q_lambda_return against hand-computed values and their two limits (lam=1, lam=0)."""

from __future__ import annotations

import torch

from rlrun.returns import gae, q_lambda_return, reward_to_go

F64 = torch.float64


def _t(rows: list[list[float]], dtype=F64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def test_gae_hand_computed_termination_and_truncation():
    # T=3 steps, N=2 envs, gamma=0.9, lam=0.5 (so gamma*lam = 0.45).
    # env 0 terminates at t=1 (no bootstrap there), env 1 is truncated at t=1 (bootstraps from
    # V(final obs) = next_values[1, 1] = 5.0, but the recursion A_{t+1} does not cross the cut).
    gamma, lam = 0.9, 0.5
    rewards = _t([[1.0, 0.0], [2.0, 1.0], [3.0, -1.0]])  # [T, N]
    values = _t([[0.5, 2.0], [1.0, 1.0], [1.5, 0.0]])  # V(s_t)
    next_values = _t([[1.0, 1.0], [4.0, 5.0], [2.0, 0.5]])  # V(s_{t+1}); final obs where the episode ended
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, True], [False, False]])

    # env 0 (terminated at t=1):
    #   delta_2 = 3 + 0.9 * 2.0 - 1.5            = 3.3
    #   delta_1 = 2 + 0.9 * 0 * 4.0 - 1.0        = 1.0     (terminal: V(final obs)=4.0 is ignored)
    #   delta_0 = 1 + 0.9 * 1.0 - 0.5            = 1.4
    #   A_2 = 3.3
    #   A_1 = 1.0                                (episode ended: no + 0.45 * A_2)
    #   A_0 = 1.4 + 0.45 * 1.0                   = 1.85
    # env 1 (truncated at t=1):
    #   delta_2 = -1 + 0.9 * 0.5 - 0.0           = -0.55
    #   delta_1 = 1 + 0.9 * 5.0 - 1.0            = 4.5     (time limit: bootstrap from V(final obs)=5.0)
    #   delta_0 = 0 + 0.9 * 1.0 - 2.0            = -1.1
    #   A_2 = -0.55
    #   A_1 = 4.5                                (episode ended: no + 0.45 * A_2)
    #   A_0 = -1.1 + 0.45 * 4.5                  = 0.925
    expected = _t([[1.85, 0.925], [1.0, 4.5], [3.3, -0.55]])

    adv = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    assert adv.shape == (3, 2) and adv.dtype == F64
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)

    # Treating the truncation as a termination would drop the 0.9 * 5.0 bootstrap: A_1 = 0.0.
    as_terminal = gae(rewards, values, next_values, terminated | truncated, torch.zeros_like(truncated), gamma, lam)
    assert as_terminal[1, 1].item() == 0.0
    assert as_terminal[0, 1].item() != adv[0, 1].item()


def test_gae_terminated_and_truncated_on_the_same_step_is_terminal():
    # The tensor CartPole reports both flags when the last allowed step also falls over:
    # termination wins, nothing is bootstrapped. A = r - V = 1 - 0.25.
    adv = gae(_t([[1.0]]), _t([[0.25]]), _t([[100.0]]), torch.tensor([[True]]), torch.tensor([[True]]), 0.99, 0.95)
    assert adv.item() == 0.75


def _random_rollout(T: int = 7, N: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=F64)
    values = torch.randn(T, N, generator=g, dtype=F64)
    next_values = torch.randn(T, N, generator=g, dtype=F64)
    terminated = torch.rand(T, N, generator=g) < 0.2
    truncated = (torch.rand(T, N, generator=g) < 0.2) & ~terminated
    # As in a real rollout: where the episode goes on, s_{t+1} is the next row's state, so
    # next_values[t] = values[t + 1]; only episode ends (final obs) and the last row differ.
    going_on = ~(terminated | truncated)[:-1]
    next_values[:-1] = torch.where(going_on, values[1:], next_values[:-1])
    return rewards, values, next_values, terminated, truncated


def _monte_carlo_returns(rewards, next_values, terminated, truncated, gamma):
    """G_t = sum_k gamma^k r_{t+k} until the episode ends (+ gamma^K V(s_{t+K}) unless it terminated).

    Written forwards, one (t, env) at a time, independently of gae()'s backward recursion.
    """
    T, N = rewards.shape
    out = torch.zeros_like(rewards)
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * rewards[k, n].item()
                discount *= gamma
                if terminated[k, n]:
                    break
                if truncated[k, n] or k == T - 1:  # time limit or end of rollout: bootstrap
                    total += discount * next_values[k, n].item()
                    break
            out[t, n] = total
    return out


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    rewards, values, next_values, terminated, truncated = _random_rollout()
    assert terminated.any() and truncated.any()
    gamma = 0.9
    adv = gae(rewards, values, next_values, terminated, truncated, gamma, 1.0)
    expected = _monte_carlo_returns(rewards, next_values, terminated, truncated, gamma) - values
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-10)


def test_gae_lambda_zero_is_one_step_td_error():
    rewards, values, next_values, terminated, truncated = _random_rollout(seed=1)
    gamma = 0.97
    adv = gae(rewards, values, next_values, terminated, truncated, gamma, 0.0)
    td = rewards + gamma * (~terminated).to(F64) * next_values - values
    torch.testing.assert_close(adv, td, rtol=0, atol=1e-12)


def test_gae_float32_inputs_stay_float32():
    rewards, values, next_values, terminated, truncated = (x.float() if x.is_floating_point() else x
                                                           for x in _random_rollout(seed=2))
    adv = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    assert adv.dtype == torch.float32 and adv.shape == rewards.shape


# ----------------------------------------------------------------- Q(lambda) (PQN)
def test_q_lambda_hand_computed_termination_and_truncation():
    # T=4 steps, N=2 envs, gamma=0.9, lam=0.5. next_values[t] = max_a Q(s_{t+1}, a), from the final
    # observation where the episode ended. env 0 terminates at t=1, env 1 is truncated at t=2.
    gamma, lam = 0.9, 0.5
    rewards = _t([[1.0, 0.0], [2.0, 1.0], [0.0, 2.0], [1.0, 1.0]])  # [T, N]
    next_values = _t([[2.0, 4.0], [10.0, 6.0], [3.0, 8.0], [4.0, 2.0]])  # [T, N]
    terminated = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, False], [False, True], [False, False]])

    # env 0 (terminated at t=1):
    #   G_3 = 1 + 0.9 * 4.0                         = 4.6    (window end: bootstrap max Q(s_4))
    #   G_2 = 0 + 0.9 * (0.5 * 3.0 + 0.5 * 4.6)     = 3.42
    #   G_1 = 2                                              (terminal: max Q = 10 is ignored, G_2 is not carried)
    #   G_0 = 1 + 0.9 * (0.5 * 2.0 + 0.5 * 2.0)     = 2.8
    # env 1 (truncated at t=2):
    #   G_3 = 1 + 0.9 * 2.0                         = 2.8
    #   G_2 = 2 + 0.9 * 8.0                         = 9.2    (time limit: bootstrap from the final obs, no G_3)
    #   G_1 = 1 + 0.9 * (0.5 * 6.0 + 0.5 * 9.2)     = 7.84
    #   G_0 = 0 + 0.9 * (0.5 * 4.0 + 0.5 * 7.84)    = 5.328
    expected = _t([[2.8, 5.328], [2.0, 7.84], [3.42, 9.2], [4.6, 2.8]])

    g = q_lambda_return(rewards, next_values, terminated, truncated, gamma, lam)
    assert g.shape == (4, 2) and g.dtype == F64
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)

    # Treating the truncation as a termination would drop the 0.9 * 8.0 bootstrap: G_2 = 2.
    as_terminal = q_lambda_return(rewards, next_values, terminated | truncated, torch.zeros_like(truncated),
                                  gamma, lam)
    assert as_terminal[2, 1].item() == 2.0


def test_q_lambda_zero_is_the_one_step_q_learning_target():
    rewards, _, next_values, terminated, truncated = _random_rollout(seed=3)
    gamma = 0.95
    g = q_lambda_return(rewards, next_values, terminated, truncated, gamma, 0.0)
    torch.testing.assert_close(g, rewards + gamma * (~terminated).to(F64) * next_values, rtol=0, atol=1e-12)


def test_q_lambda_one_is_the_bootstrapped_reward_to_go():
    rewards, _, next_values, terminated, truncated = _random_rollout(seed=4)
    assert terminated.any() and truncated.any()
    g = q_lambda_return(rewards, next_values, terminated, truncated, 0.9, 1.0)
    torch.testing.assert_close(g, reward_to_go(rewards, next_values, terminated, truncated, 0.9), rtol=0, atol=1e-12)
    torch.testing.assert_close(g, _monte_carlo_returns(rewards, next_values, terminated, truncated, 0.9),
                               rtol=0, atol=1e-10)
