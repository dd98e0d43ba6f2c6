"""The fixed opponents (rlrun.search.opponents): legal moves, strength, tactics by hand, the search against plain
minimax and the solved game, refusals."""

from __future__ import annotations

import re

import pytest
import torch

from rlrun.search.games import ConnectFour, TensorGame, TicTacToe, connect_four, tictactoe
from rlrun.search.opponents import (
    BITS,
    WIN,
    AlphaBetaOpponent,
    Opponent,
    PerfectOpponent,
    RandomOpponent,
    make_opponent,
    negamax,
    playable,
    solved_value,
)

WINNER = {"ConnectFour": connect_four.WINNER, "TicTacToe": tictactoe.WINNER}


def play(game: TensorGame, first: Opponent, second: Opponent, n: int) -> list[int]:
    """``n`` games, ``first`` as player 0 (X) and ``second`` as player 1 (O) -> the winners: 1 X, -1 O, 0 a draw.
    Each opponent is asked only about the live positions where it is to move."""
    state = game.initial(n)
    while not bool(game.terminal(state).all()):
        action = torch.zeros(n, dtype=torch.int64)
        live = ~game.terminal(state)
        for player, opponent in enumerate((first, second)):
            idx = (live & (game.to_play(state) == player)).nonzero().squeeze(1)
            action[idx] = opponent.act(state[idx])
        state = game.step(state, action)
    return state[:, WINNER[game.name]].tolist()


def random_positions(game: TensorGame, n: int, seed: int) -> torch.Tensor:
    """``n`` positions after 0 to rows * cols random moves each, some of them finished."""
    generator = torch.Generator().manual_seed(seed)
    state = game.initial(n)
    stop = torch.randint(0, game.rows * game.cols + 1, (n,), generator=generator)
    for t in range(game.rows * game.cols):
        weights = game.legal(state).float()
        weights[:, 0] += weights.sum(dim=1) == 0
        action = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        moved = game.step(state, action)
        state = torch.where((t < stop)[:, None], moved, state)
    return state


SPECS = [("ConnectFour", "random"), ("ConnectFour", "alphabeta:1"), ("ConnectFour", "alphabeta:3"),
         ("TicTacToe", "random"), ("TicTacToe", "alphabeta:2"), ("TicTacToe", "perfect")]


@pytest.mark.parametrize(("game_name", "spec"), SPECS)
def test_moves_are_legal(game_name, spec):
    game = ConnectFour() if game_name == "ConnectFour" else TicTacToe()
    opponent = make_opponent(spec, game, "cpu", seed=0)
    assert opponent.spec == spec
    state = random_positions(game, 300, seed=1)
    over = game.terminal(state)
    assert 0 < int(over.sum()) < 300  # some finished positions in the batch, most live
    action = opponent.act(state)
    assert action.dtype == torch.int64 and action.shape == (300,)
    legal = game.legal(state)
    assert legal[torch.arange(300), action][~over].all()
    assert (action[over] == 0).all()  # nothing is legal in a finished game: action 0, which step ignores
    assert opponent.act(state[:0]).shape == (0,)


def test_perfect_never_loses_to_random():
    game = TicTacToe()
    perfect, rand = make_opponent("perfect", game, "cpu", seed=0), make_opponent("random", game, "cpu", seed=1)
    as_x = play(game, perfect, rand, 200)
    as_o = play(game, rand, perfect, 200)
    assert -1 not in as_x and 1 not in as_o
    # And it wins most of them (193 and 154 of 200 with these seeds): as O it is a move behind.
    assert as_x.count(1) > 170 and as_o.count(-1) > 120


def test_perfect_draws_against_itself():
    game = TicTacToe()
    winners = play(game, make_opponent("perfect", game, "cpu", 0), make_opponent("perfect", game, "cpu", 1), 50)
    assert winners == [0] * 50


def test_perfect_varies_and_is_seeded():
    game = TicTacToe()
    empty = game.initial(200)
    first = make_opponent("perfect", game, "cpu", seed=3).act(empty)
    assert len(set(first.tolist())) == 9  # every opening draws, so every cell is an optimal first move
    assert torch.equal(first, make_opponent("perfect", game, "cpu", seed=3).act(empty))


def test_solved_game():
    rules = BITS["TicTacToe"]
    assert solved_value(0, 0) == 0  # tic-tac-toe is a draw
    # X to move after X 1, O 4, X 2, O 5: X wins at once with cell 3 (1 + 4 cells left empty)
    cur, mask = rules.encode([[1, 1, 0], [-1, -1, 0], [0, 0, 0]], own=1)
    assert solved_value(cur, mask) == 5
    game = TicTacToe()
    perfect = PerfectOpponent(game, seed=0)
    assert perfect.act(game.parse("1425").repeat(20, 1)).tolist() == [2] * 20  # the fastest win, not a slower one


def test_alphabeta_full_depth_plays_the_solved_game():
    """alphabeta:9 searches tic-tac-toe to the end, so each move it picks must have the solved value."""
    game = TicTacToe()
    rules = BITS["TicTacToe"]
    state = random_positions(game, 200, seed=2)
    state = state[~game.terminal(state)]
    actions = AlphaBetaOpponent(game, depth=9, seed=0).act(state).tolist()
    own = (1 - 2 * game.to_play(state)).tolist()
    for board, o, action in zip(game.board(state).tolist(), own, actions):
        cur, mask = rules.encode(board, o)
        bit = dict(playable(rules, mask))[action]
        value = 1 + 9 - (mask | bit).bit_count() if rules.wins(cur | bit) else -solved_value(cur ^ mask, mask | bit)
        assert value == solved_value(cur, mask)


def _minimax(rules, cur: int, mask: int, depth: int) -> float:
    """negamax without pruning, the definition alpha-beta must agree with."""
    moves = [b for _, b in playable(rules, mask)]
    if not moves:
        return 0
    if depth == 0:
        return rules.heuristic(cur, cur ^ mask)
    if any(rules.wins(cur | b) for b in moves):
        return WIN + depth
    return max(-_minimax(rules, cur ^ mask, mask | b, depth - 1) for b in moves)


def test_alphabeta_agrees_with_minimax():
    game = ConnectFour()
    rules = BITS["ConnectFour"]
    state = random_positions(game, 60, seed=3)
    state = state[~game.terminal(state)]
    own = (1 - 2 * game.to_play(state)).tolist()
    for board, o in zip(game.board(state).tolist(), own):
        cur, mask = rules.encode(board, o)
        exact = _minimax(rules, cur, mask, 3)
        assert negamax(rules, cur, mask, 3, -float("inf"), float("inf")) == exact
        # With a window (alpha, beta): exact inside it; outside, a bound between the value and the window (fail-soft).
        assert negamax(rules, cur, mask, 3, exact - 3, exact + 3) == exact
        assert exact <= negamax(rules, cur, mask, 3, exact + 1, exact + 5) <= exact + 1  # fails low
        assert exact - 1 <= negamax(rules, cur, mask, 3, exact - 5, exact - 1) <= exact  # fails high


def test_connect_four_heuristic_by_hand():
    rules = BITS["ConnectFour"]
    game = ConnectFour()
    # X in columns 3 and 4 of the bottom row, O on top of X in column 4; O to move.
    state = game.parse("443")
    cur, mask = rules.encode(game.board(state)[0].tolist(), own=-1)
    # X: three open windows with two stones (bottom row, columns 1-4, 2-5, 3-6) -> 3 x 2 = 6. O: none.
    # Centre column: one stone each -> 3 - 3. From O's side: 0 - 6.
    assert rules.heuristic(cur, cur ^ mask) == -6


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_alphabeta_takes_an_immediate_win(depth):
    c4, ttt = ConnectFour(), TicTacToe()
    # X has three in column 1 and O three in column 2: X wins in column 1 rather than blocking column 2.
    assert AlphaBetaOpponent(c4, depth, seed=0).act(c4.parse("121212").repeat(20, 1)).tolist() == [0] * 20
    # X 1, 2 against O 4, 5: X completes the top row at cell 3 rather than blocking cell 6.
    assert AlphaBetaOpponent(ttt, depth, seed=0).act(ttt.parse("1425").repeat(20, 1)).tolist() == [2] * 20


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_alphabeta_blocks_an_immediate_loss(depth):
    c4, ttt = ConnectFour(), TicTacToe()
    opponent = AlphaBetaOpponent(c4, depth, seed=0)
    assert opponent.act(c4.parse("12131").repeat(20, 1)).tolist() == [0] * 20  # X three high in column 1
    assert opponent.act(c4.parse("11223").repeat(20, 1)).tolist() == [3] * 20  # X 1-2-3 on the bottom row
    # X 1, 2 against O 5: O blocks the top row at cell 3.
    assert AlphaBetaOpponent(ttt, depth, seed=0).act(ttt.parse("152").repeat(20, 1)).tolist() == [2] * 20


def test_alphabeta_breaks_ties_at_random():
    game = TicTacToe()
    empty = game.initial(200)
    first = AlphaBetaOpponent(game, depth=1, seed=0).act(empty)  # every leaf scores 0: all nine moves tie
    assert len(set(first.tolist())) == 9
    assert torch.equal(first, AlphaBetaOpponent(game, depth=1, seed=0).act(empty))
    assert not torch.equal(first, AlphaBetaOpponent(game, depth=1, seed=1).act(empty))


def test_alphabeta_beats_random_at_connect_four():
    game = ConnectFour()
    alphabeta, rand = make_opponent("alphabeta:4", game, "cpu", 0), make_opponent("random", game, "cpu", 1)
    as_x = play(game, alphabeta, rand, 20)
    as_o = play(game, rand, alphabeta, 20)
    assert as_x.count(1) + as_o.count(-1) >= 36  # >= 90% of 40 games


def test_random_is_uniform_and_seeded():
    game = ConnectFour()
    state = game.parse("111111").repeat(6000, 1)  # column 1 full
    action = RandomOpponent(game, "cpu", seed=0).act(state)
    counts = torch.bincount(action, minlength=7).tolist()
    assert counts[0] == 0 and all(850 < c < 1150 for c in counts[1:])
    assert torch.equal(action, RandomOpponent(game, "cpu", seed=0).act(state))


def test_refusals():
    c4, ttt = ConnectFour(), TicTacToe()
    with pytest.raises(ValueError, match=re.escape("unknown opponent 'minimax'; accepted: random, alphabeta:<depth>, "
                                                   "perfect (TicTacToe), mcts:<simulations>")):
        make_opponent("minimax", c4, "cpu", 0)
    for spec in ("alphabeta", "alphabeta:", "Random", "perfect:1"):
        with pytest.raises(ValueError, match=re.escape(f"unknown opponent {spec!r}")):
            make_opponent(spec, ttt, "cpu", 0)
    for spec in ("alphabeta:0", "alphabeta:x", "alphabeta:-2"):
        with pytest.raises(ValueError, match=re.escape(f"opponent {spec!r}: the depth must be")):
            make_opponent(spec, c4, "cpu", 0)
    with pytest.raises(ValueError, match=re.escape("opponent 'perfect' plays only TicTacToe, not ConnectFour")):
        make_opponent("perfect", c4, "cpu", 0)

    class Go(TicTacToe):
        name = "Go"

    with pytest.raises(ValueError, match=re.escape("opponent 'alphabeta:2' plays only ConnectFour, TicTacToe, not Go")):
        make_opponent("alphabeta:2", Go(), "cpu", 0)
    for spec in ("mcts:0", "mcts:x", "mcts:"):
        with pytest.raises(ValueError, match=re.escape(f"opponent {spec!r}: the simulations must be")):
            make_opponent(spec, c4, "cpu", 0)


def test_mcts_opponent_plays_legal_moves_and_beats_random():
    torch.manual_seed(0)
    game = TicTacToe()
    mcts, rand = make_opponent("mcts:50", game, "cpu", 0), make_opponent("random", game, "cpu", 1)
    state = game.initial(20)
    mcts_is_x = torch.arange(20) % 2 == 0
    while not bool(game.terminal(state).all()):
        x_to_move = game.to_play(state) == 0
        moves = torch.where(x_to_move == mcts_is_x, mcts.act(state), rand.act(state))
        live = ~game.terminal(state)
        assert game.legal(state)[live, moves[live]].all()
        state = game.step(state, moves)
    winner_is_x = game.to_play(state) == 1  # the side to move at the end lost, where someone won
    won = game.terminal_value(state) < 0
    mcts_lost = won & (winner_is_x != mcts_is_x)
    assert int(mcts_lost.sum()) <= 1 and int((won & ~mcts_lost).sum()) >= 12
