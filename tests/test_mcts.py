"""Batched MCTS: each formula on a hand-computed case, the search's mechanics (one node per simulation, visits,
alternating signs, Sequential Halving's schedule), and self-play's targets."""

from __future__ import annotations

import math

import pytest
import torch

from rlrun.search.games import TicTacToe
from rlrun.search.mcts import (
    SearchConfig,
    completed_q,
    considered_visits,
    improved_policy,
    puct_scores,
    random_rollouts,
    search,
    sigma,
)
from rlrun.search.selfplay import GameHistory, PositionReplay, outcome_targets, value_targets

GAME = TicTacToe()


def uniform(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An untrained evaluator: equal priors, value 0."""
    return torch.zeros(states.shape[0], GAME.num_actions), torch.zeros(states.shape[0])


# ----------------------------------------------------------------- formulas by hand
def test_puct_scores_by_hand():
    # N(s) = 4: U = Q + 1.25 * P * 2 / (1 + N(s, a))
    got = puct_scores(torch.tensor([0.0, 0.5]), torch.tensor([0.6, 0.4]), torch.tensor(4.0),
                      torch.tensor([0.0, 3.0]), 1.25)
    assert got.tolist() == pytest.approx([0 + 1.25 * 0.6 * 2 / 1, 0.5 + 1.25 * 0.4 * 2 / 4])  # 1.5, 0.75


def test_sequential_halving_budget_by_hand():
    # k=4, n=8: ceil(log2 4) = 2 phases; phase 1: 8 // (2 * 4) = 1 visit each of 4; phase 2: 8 // (2 * 2) = 2 more
    # visits each of the best 2.
    assert considered_visits(4, 8) == [0, 0, 0, 0, 1, 1, 2, 2]
    # k=2, n=5: one phase of 5 // 2 = 2 rounds, repeated until the budget is spent, cut at 5.
    assert considered_visits(2, 5) == [0, 0, 1, 1, 2]
    assert considered_visits(1, 3) == [0, 1, 2]
    for k, n in ((9, 32), (16, 50), (3, 7)):
        assert len(considered_visits(k, n)) == n


def test_sigma_by_hand():
    # (c_visit + max N) * c_scale * q = (50 + 3) * 0.1 * q
    got = sigma(torch.tensor([0.0, 0.5, 1.0]), torch.tensor(3.0), 50.0, 0.1)
    assert got.tolist() == pytest.approx([0.0, 2.65, 5.3])


def test_completed_q_by_hand():
    # visited: q = 0.5 (N=2, pi=0.5), q = -0.2 (N=1, pi=0.3); unvisited (pi=0.2) gets v_mix with v = 0.1:
    # sum pi q over visited / sum pi over visited = (0.25 - 0.06) / 0.8 = 0.2375; v_mix = (0.1 + 3 * 0.2375) / 4
    got = completed_q(torch.tensor([0.5, -0.2, 0.0]), torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.5, 0.3, 0.2]),
                      torch.tensor(0.1))
    assert got.tolist() == pytest.approx([0.5, -0.2, 0.203125])
    # nothing visited: every action gets the network's value
    none = completed_q(torch.zeros(3), torch.zeros(3), torch.tensor([0.5, 0.3, 0.2]), torch.tensor(-0.4))
    assert none.tolist() == pytest.approx([-0.4] * 3)


def test_improved_policy_by_hand():
    # q [1, -1] -> [1, 0] on [0, 1]; sigma factor (50 + max N = 1) * 0.1 = 5.1; the illegal action keeps 0
    got = improved_policy(torch.tensor([0.0, 0.0, -math.inf]), torch.tensor([1.0, -1.0, 0.0]),
                          torch.tensor([1.0, 1.0, 0.0]), 50.0, 0.1)
    e = math.exp(5.1)
    assert got.tolist() == pytest.approx([e / (e + 1), 1 / (e + 1), 0.0])


def test_outcome_targets_by_hand():
    # the side to move at each position against the winner (-1: a draw)
    got = outcome_targets(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, -1, 1]))
    assert got.tolist() == [1.0, -1.0, 0.0, 1.0]


# ----------------------------------------------------------------- the search
@pytest.mark.parametrize("rule", ["puct", "gumbel"])
def test_search_takes_an_immediate_win_and_spends_every_simulation(rule):
    roots = GAME.parse("1425").repeat(4, 1)  # X to move: X on 1, 2; cell 3 (action 2) wins
    result = search(GAME, uniform, roots, SearchConfig(num_simulations=24, rule=rule), explore=False)
    assert result.action.tolist() == [2] * 4
    assert result.visits.sum(-1).tolist() == [24] * 4
    assert (result.visits[:, [0, 1, 3, 4]] == 0).all()  # occupied cells are never searched
    assert torch.allclose(result.policy.sum(-1), torch.ones(4))
    assert result.policy.argmax(-1).tolist() == [2] * 4


@pytest.mark.parametrize("rule", ["puct", "gumbel"])
def test_search_blocks_with_random_rollouts(rule):
    torch.manual_seed(0)
    roots = GAME.parse("152").repeat(8, 1)  # O to move: X on 1, 2 threatens 3
    result = search(GAME, random_rollouts(GAME), roots, SearchConfig(num_simulations=100, rule=rule), explore=False)
    assert result.action.tolist() == [2] * 8
    assert result.policy.argmax(-1).tolist() == [2] * 8


def test_backup_alternates_signs():
    # X to move with one empty cell left, and playing it wins: every simulation reaches the same finished game,
    # whose value is -1 for O (to move there), so +1 for X at the root: root value = (0 + n * 1) / (n + 1).
    root = GAME.parse("12345687")
    assert GAME.legal(root).sum() == 1
    for rule in ("puct", "gumbel"):
        result = search(GAME, uniform, root, SearchConfig(num_simulations=5, rule=rule), explore=False)
        assert result.value.item() == pytest.approx(5 / 6)
        assert result.visits[0, 8].item() == 5


def test_gumbel_root_visits_follow_sequential_halving():
    torch.manual_seed(1)
    roots = GAME.initial(3)
    result = search(GAME, uniform, roots, SearchConfig(num_simulations=16, rule="gumbel", max_considered=4))
    # considered_visits(4, 16): 2 visits to each of 4 actions, then 4 more to each of the best 2
    for row in result.visits:
        assert sorted(v for v in row.tolist() if v > 0) == [2, 2, 6, 6]


def test_search_refuses_finished_games():
    with pytest.raises(ValueError, match="not over"):
        search(GAME, uniform, GAME.parse("15293"), SearchConfig(num_simulations=2))


# ----------------------------------------------------------------- self-play data
def test_game_history_gives_each_position_its_outcome():
    history = GameHistory(GAME, 2, torch.device("cpu"))
    state = GAME.initial(2)
    for move, cell in enumerate((0, 3, 1, 4, 2)):  # X wins on move 5 in both envs
        history.add(state, torch.full((2, 9), 1 / 9), torch.tensor([0.1 * move, -1.0]))
        state = GAME.step(state, torch.tensor([cell, cell]))
    assert GAME.terminal(state).all()
    states, policies, z, q = history.finish(torch.tensor([True, False]), state)
    assert states.shape == (5, GAME.state_size) and policies.shape == (5, 9)
    assert z.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]  # X to move at positions 0, 2, 4
    torch.testing.assert_close(q, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4]))
    assert history.length.tolist() == [0, 5]


def test_value_targets_by_hand():
    z, q = torch.tensor([1.0, -1.0, 0.0]), torch.tensor([0.6, 0.2, -0.4])
    assert value_targets(z, q, 0.0) is z  # AlphaZero: the outcome only
    # w = 0.25: 0.75 * 1 + 0.25 * 0.6 = 0.9; 0.75 * -1 + 0.25 * 0.2 = -0.7; 0 + 0.25 * -0.4 = -0.1
    torch.testing.assert_close(value_targets(z, q, 0.25), torch.tensor([0.9, -0.7, -0.1]))
    torch.testing.assert_close(value_targets(z, q, 1.0), q)


def test_position_replay_keeps_the_newest():
    replay = PositionReplay(4, GAME, torch.device("cpu"))
    for i in range(3):
        replay.add(GAME.initial(2), torch.zeros(2, 9), torch.tensor([float(2 * i), float(2 * i + 1)]))
    assert len(replay) == 4 and sorted(replay.z.tolist()) == [2.0, 3.0, 4.0, 5.0]
    again = PositionReplay(4, GAME, torch.device("cpu"))
    again.load_state_dict(replay.state_dict())
    assert again.z.tolist() == replay.z.tolist() and again.pos == replay.pos
