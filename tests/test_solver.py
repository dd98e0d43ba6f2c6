"""rlrun.search.solver against a brute-force minimax, Pascal Pons' published labels and hand-built positions; the
packaged test set re-checked by the solver; rlrun.search.mistakes.mistake_rate on a hand-computed example."""

from __future__ import annotations

import itertools
import random
from functools import cache

import pytest
import torch

from rlrun.search.games import ConnectFour
from rlrun.search.mistakes import BUCKETS, format_values, load_positions, parse_values
from rlrun.search.positions import LabelledPositions, connect_four_positions, mistakes
from rlrun.search.solver import MAX_SCORE, MIN_SCORE, best_moves, is_over, move_values, outcome, parse, solve

# ---------------------------------------------------------------------------------------------------------------
# Brute force: plain minimax over every move order, no pruning, no bitboards (a board is 7 column tuples of
# players 0/1, bottom first). Memoised on the board, which changes the cost, not the result.


def _wins(cols: tuple[tuple[int, ...], ...], c: int) -> bool:
    """Whether the stone on top of column c makes four in a row."""
    r = len(cols[c]) - 1
    me = cols[c][r]

    def at(cc: int, rr: int) -> int | None:
        return cols[cc][rr] if 0 <= cc < 7 and 0 <= rr < len(cols[cc]) else None

    for dc, dr in ((1, 0), (0, 1), (1, 1), (1, -1)):
        run = 1
        for sign in (1, -1):
            k = 1
            while at(c + sign * k * dc, r + sign * k * dr) == me:
                run, k = run + 1, k + 1
        if run >= 4:
            return True
    return False


def _play(cols: tuple[tuple[int, ...], ...], c: int, player: int) -> tuple[tuple[int, ...], ...]:
    return cols[:c] + (cols[c] + (player,),) + cols[c + 1:]


@cache
def _brute_values(cols: tuple[tuple[int, ...], ...]) -> tuple[int | None, ...]:
    """Pons' score of each column for the side to move: (43 - n) // 2 for a win now, 0 for filling the board,
    else minus the best child value."""
    n = sum(len(col) for col in cols)
    values: list[int | None] = []
    for c in range(7):
        if len(cols[c]) == 6:
            values.append(None)
            continue
        child = _play(cols, c, n % 2)
        if _wins(child, c):
            values.append((43 - n) // 2)
        elif n + 1 == 42:
            values.append(0)
        else:
            values.append(-max(v for v in _brute_values(child) if v is not None))
    return tuple(values)


def _cols(position: str) -> tuple[tuple[int, ...], ...]:
    cols: tuple[tuple[int, ...], ...] = ((),) * 7
    for i, ch in enumerate(position):
        cols = _play(cols, int(ch) - 1, i % 2)
    return cols


def _random_positions(count: int, min_stones: int, seed: int) -> list[str]:
    """Positions from uniformly random games, cut at a random length >= min_stones, not over."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        board, position = parse(""), ""
        stop = rng.randint(min_stones, 41)
        while board.moves < stop and not is_over(board):
            column = rng.choice([c for c in range(7) if board.playable(c)])
            board, position = board.play(column), position + str(column + 1)
        if not is_over(board):
            out.append(position)
    return out


def test_solver_matches_brute_force_on_late_positions():
    positions = _random_positions(200, 30, seed=0) + _random_positions(50, 26, seed=1)
    outcomes = set()
    for position in positions:
        expected = _brute_values(_cols(position))
        assert move_values(position) == list(expected), position
        best = max(v for v in expected if v is not None)
        assert solve(position) == best, position
        assert solve(position, weak=True) == outcome(best), position
        assert move_values(position, weak=True) == [None if v is None else outcome(v) for v in expected], position
        outcomes.add(outcome(best))
    assert outcomes == {-1, 0, 1}  # the sample holds wins, draws and losses


# Pascal Pons' test sets (blog.gamesolver.org, part 2: "Test_L3_R1", "Test_L2_R1" and "Test_L2_R2"), scored by
# his C++ solver, in the same convention.
PONS = [
    ("2252576253462244111563365343671351441", -1), ("7422341735647741166133573473242566", 1),
    ("23163416124767223154467471272416755633", 0), ("71255763773133525731261364622167124446454", 0),
    ("65214673556155731566316327373221417", -1), ("52677675164321472411331752454", 0),
    ("3135151421347443544172316522225776773566", 0), ("562154564361751726662253737734213275114", 0),
    ("233377345754465174223731671122611552", 1), ("6763525635134453444361412671365712", -1),
    ("211376455663355325112113664364524722", 0), ("3146762114467714356347741621375222", -1),
    ("67152117737262713366376314254", 6), ("2762751722231276466633475674533", 5),
    ("3642756176227637211322113551637574556", 2), ("22647455554314246733661634615122372377511", 0),
    ("427566236745127177115664464254", 2), ("7172212567451542223676134464437761515", 0),
    ("641154574541323641152467137655232232366", 0), ("5775265212657176476365522624313714333", 2),
    ("3575316255751336464276636772271112", -3), ("5554224333234511764415115", 4),
    ("2737772244262123677516643354", 0), ("274552224131661", 0), ("555317266147361", -1),
]


@pytest.mark.parametrize("position,score", PONS, ids=[p for p, _ in PONS])
def test_solver_matches_pons_labels(position, score):
    assert solve(position) == score


# ---------------------------------------------------------------------------------------------------------------
# Hand-built positions. Boards are drawn top row first; X is player 0 (moved first), O player 1.


def test_immediate_win():
    # "121212": X has three in column 1, O three in column 2; X to move (6 stones) wins at once in column 1,
    # with its 4th stone: 22 - 4 = 18 = (43 - 6) // 2. (Its move_values would solve 7-stone children: too slow.)
    #   X O . . . . .
    #   X O . . . . .
    #   X O . . . . .
    board = parse("121212")
    assert [board.wins(c) for c in range(7)] == [True] + [False] * 6
    assert solve("121212") == MAX_SCORE == 18
    assert solve("121212", weak=True) == 1
    # Late in a game: 33 stones, O to move. Row 4 holds X X X . O O O and column 4's next stone lands there:
    # O wins at once with its 17th stone, (43 - 33) // 2 = 22 - 17 = 5; any other O move lets X win there with
    # its 18th stone: -(22 - 18) = -4.
    #   . . . . . O .
    #   . O X . X X O
    #   X X X . O O O
    #   X O O O X X X
    #   O X X X O X O
    #   O X O O X O X
    position = "745325275133466132247712653716665"
    values = move_values(position)
    assert values == [-4, -4, -4, 5, -4, None, -4]
    assert solve(position) == (43 - 33) // 2 == 5
    assert best_moves(values) == [3]


def test_forced_loss_in_one():
    # "27374": X holds columns 2-4 of the bottom row, open at both ends; O (to move, 5 stones) has two stones in
    # column 7 and no threat of its own. Whatever O plays, X completes the row with its 4th stone: -(22 - 4).
    #   . . . . . . .
    #   . . . . . . O
    #   . X X X . . O
    values = move_values("27374")
    assert values == [MIN_SCORE] * 7 == [-18] * 7
    assert solve("27374") == -18 == -((42 - 5) // 2)
    assert outcome(solve("27374")) == -1


def test_every_move_draws():
    # 38 stones, the top cell of columns 1, 2, 6 and 7 empty, X to move. The board holds no four, and every line
    # of four through an empty cell already holds an X and an O (row 6: "? ? X O", "? X O X", "X O X ?", "O X ? ?";
    # the diagonals and columns below each empty cell likewise), so however the 4 cells are filled nobody makes
    # four: every move draws.
    #   . . X O X . .
    #   O X O O O X X
    #   X O O X X O O
    #   X O X O O X X
    #   X O O X O O X
    #   O X O O X X X
    position = "21121211522363337334444475755556666774"
    cols = _cols(position)
    assert [len(col) for col in cols] == [5, 5, 6, 6, 6, 5, 5]
    for fill in itertools.product((0, 1), repeat=4):  # every colouring of the 4 empty cells: no four anywhere
        full = cols
        for c, player in zip((0, 1, 5, 6), fill):
            full = _play(full, c, player)
        assert not any(_wins(full[:c] + (full[c][:r + 1],) + full[c + 1:], c) for c in range(7) for r in range(6))
    assert move_values(position) == [0, 0, None, None, None, 0, 0]
    assert solve(position) == 0 and solve(position, weak=True) == 0


def test_parse_refuses_bad_positions():
    with pytest.raises(ValueError, match="not a column"):
        parse("48")
    with pytest.raises(ValueError, match="full column"):
        parse("1111111")
    with pytest.raises(ValueError, match="already over"):
        parse("12121212")  # X wins in column 1 with move 7; move 8 comes after the end
    with pytest.raises(ValueError, match="is over"):
        solve("1212121")  # the game has just ended: nothing to solve


# ---------------------------------------------------------------------------------------------------------------
# The packaged test set.


def test_test_set_is_balanced_and_well_formed():
    positions = load_positions()
    per_stone = {}
    for p in positions:
        assert p.stones == len(p.position) and not is_over(parse(p.position))
        legal = [v for v in p.values if v is not None]
        assert [v is None for v in p.values] == [not parse(p.position).playable(c) for c in range(7)]
        assert p.best_outcome == outcome(max(legal))
        assert min(outcome(v) for v in legal) < p.best_outcome  # a mistake is possible in every position
        per_stone[p.stones] = per_stone.get(p.stones, 0) + 1
    assert sorted(per_stone) == list(range(14, 35))
    assert len(set(per_stone.values())) == 1  # the same number of positions per stone count
    assert len({p.position for p in positions}) == len(positions)


def test_test_set_labels_rechecked():
    # Every row with 20 stones or more by the solver (a few seconds; the rows below 20 stones would take a minute),
    # the rows with 30 or more by brute force too, independently of the bitboard code.
    rechecked = 0
    for p in load_positions():
        if p.stones >= 20:
            assert move_values(p.position) == list(p.values), p.position
            rechecked += 1
        if p.stones >= 30:
            assert _brute_values(_cols(p.position)) == p.values, p.position
    assert rechecked >= 200


# ---------------------------------------------------------------------------------------------------------------
# mistake_rate


def test_values_field_round_trip():
    values = (2, None, -3, 1, 1, -1, -4)
    assert format_values(values) == "2  -3 1 1 -1 -4"
    assert parse_values(format_values(values)) == values


def test_mistake_rate_hand_computed():
    # Only the stone counts of the states and the move outcomes matter; the states are test-set positions with
    # 15, 18, 22 and 30 stones, the outcomes written by hand (-2: a full column).
    rows = {p.stones: p for p in reversed(load_positions())}
    game = ConnectFour()
    states = torch.cat([game.parse(rows[n].position) for n in (15, 18, 22, 30)])
    outcomes = torch.tensor([
        [1, -1, 0, 1, -1, -2, -1],   # best a win (columns 0, 3); column 3 wins too: not a mistake
        [0, 0, -1, 0, -1, -1, -1],   # best a draw; column 2 turns it into a loss: a mistake
        [-1, -1, -1, -1, 1, -1, 0],  # best a win (column 4 only)
        [-2, 0, -1, -2, 0, -1, -1],  # best a draw (columns 1, 4)
    ], dtype=torch.int8)
    labelled = LabelledPositions(states, outcomes, list(BUCKETS))
    # overall: 1 mistake in 4; 14-20: 1 in 2 (15 and 18 stones); 21-27: 0 in 1; 28-34: 0 in 1.
    assert mistakes(game, labelled, torch.tensor([3, 2, 4, 1])) == {
        "mistake_rate": 0.25, "mistake_rate_14_20": 0.5, "mistake_rate_21_27": 0.0, "mistake_rate_28_34": 0.0}
    assert set(mistakes(game, labelled, torch.tensor([0, 0, 4, 4])).values()) == {0.0}
    # Wins turned into draws (column 2 of the first, column 6 of the third) are mistakes too.
    assert mistakes(game, labelled, torch.tensor([2, 0, 6, 1])) == {
        "mistake_rate": 0.5, "mistake_rate_14_20": 0.5, "mistake_rate_21_27": 1.0, "mistake_rate_28_34": 0.0}


def test_mistake_rate_of_best_and_worst_play_on_the_test_set():
    game, labelled = ConnectFour(), connect_four_positions()
    assert labelled.states.shape[0] == len(load_positions()) == 315
    best = torch.tensor([best_moves(list(p.values))[0] for p in load_positions()])
    worst = torch.tensor([min((v, c) for c, v in enumerate(p.values) if v is not None)[1] for p in load_positions()])
    assert set(mistakes(game, labelled, best).values()) == {0.0}
    assert set(mistakes(game, labelled, worst).values()) == {1.0}
