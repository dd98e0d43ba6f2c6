"""The tensor board games (rlrun.search.games) against plain-Python reference rules.

Parity: 500 random games per game, stepped together as one batch with random legal moves, compared with the
reference after every move (board, legal mask, terminal, terminal value, side to move, winner, observation). Then
hand-written positions: a win along every kind of line, a full-board draw, illegal moves, finished games left
unchanged, and position strings parsed, shown and refused.
"""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from rlrun.search.games import GAMES, ConnectFour, TensorGame, TicTacToe, connect_four, tictactoe

# ---------------------------------------------------------------------------------------------------------------
# Reference rules: one game as lists of lists, every line of the board checked by brute force.


def _lines(rows: int, cols: int, length: int) -> list[list[tuple[int, int]]]:
    """Every run of ``length`` cells in a row, a column or a diagonal of a rows x cols board."""
    out = []
    for r, c in itertools.product(range(rows), range(cols)):
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            cells = [(r + k * dr, c + k * dc) for k in range(length)]
            if all(0 <= rr < rows and 0 <= cc < cols for rr, cc in cells):
                out.append(cells)
    return out


class Reference:
    """One game: ``board[r][c]`` (1 for player 0, -1 for player 1, 0 empty), ``to_play``, ``winner``."""

    rows: int
    cols: int
    length: int  # stones in a row that win
    gravity: bool  # actions are columns (Connect Four) or cells (tic-tac-toe)

    def __init__(self) -> None:
        self.board = [[0] * self.cols for _ in range(self.rows)]
        self.to_play = 0
        self.winner = 0
        self.lines = _lines(self.rows, self.cols, self.length)

    def over(self) -> bool:
        return self.winner != 0 or all(v != 0 for row in self.board for v in row)

    def target(self, action: int) -> tuple[int, int] | None:
        """The cell the action fills, None if it is not playable."""
        if self.gravity:
            empty = [r for r in range(self.rows) if self.board[r][action] == 0]
            return (max(empty), action) if empty else None  # the lowest empty row; row 0 is the top
        r, c = divmod(action, self.cols)
        return (r, c) if self.board[r][c] == 0 else None

    def legal(self) -> list[bool]:
        n = self.cols if self.gravity else self.rows * self.cols
        return [not self.over() and self.target(a) is not None for a in range(n)]

    def play(self, action: int) -> None:
        """Play ``action``; nothing happens once the game is over."""
        if self.over():
            return
        r, c = self.target(action)
        stone = 1 if self.to_play == 0 else -1
        self.board[r][c] = stone
        if any(all(self.board[rr][cc] == stone for rr, cc in line) for line in self.lines):
            self.winner = stone
        self.to_play = 1 - self.to_play

    def observation(self) -> list[list[list[float]]]:
        own = 1 if self.to_play == 0 else -1
        return [[[float(v == s) for v in row] for row in self.board] for s in (own, -own)]


class RefConnectFour(Reference):
    rows, cols, length, gravity = 6, 7, 4, True


class RefTicTacToe(Reference):
    rows, cols, length, gravity = 3, 3, 3, False


CASES = [(ConnectFour, RefConnectFour, connect_four.WINNER), (TicTacToe, RefTicTacToe, tictactoe.WINNER)]


def _check(game: TensorGame, state: torch.Tensor, refs: list[Reference], winner_col: int) -> None:
    assert state.dtype == torch.int8 and state.shape == (len(refs), game.state_size)
    assert game.board(state).tolist() == [ref.board for ref in refs]
    assert game.legal(state).tolist() == [ref.legal() for ref in refs]
    assert game.terminal(state).tolist() == [ref.over() for ref in refs]
    assert game.terminal_value(state).tolist() == [-1.0 if ref.winner else 0.0 for ref in refs]
    assert game.to_play(state).tolist() == [ref.to_play for ref in refs]
    assert state[:, winner_col].tolist() == [ref.winner for ref in refs]
    assert game.moves_played(state).tolist() == [sum(v != 0 for row in ref.board for v in row) for ref in refs]
    obs = game.observation(state)
    assert obs.dtype == torch.float32 and obs.shape == (len(refs), *game.obs_shape)
    assert obs.tolist() == [ref.observation() for ref in refs]


@pytest.mark.parametrize(("game_cls", "ref_cls", "winner_col"), CASES, ids=["ConnectFour", "TicTacToe"])
def test_random_games_match_the_reference(game_cls, ref_cls, winner_col):
    n = 500
    game = game_cls()
    generator = torch.Generator().manual_seed(0)
    state = game.initial(n)
    refs = [ref_cls() for _ in range(n)]
    _check(game, state, refs, winner_col)
    for _ in range(game.rows * game.cols + 1):  # one more step than a game can last: all are over by then
        legal = game.legal(state)  # [N, A]
        # Live games draw a legal move; finished ones any action at all (even a full column), which step ignores.
        weights = torch.where(legal.any(dim=1, keepdim=True), legal.float(), torch.ones_like(legal.float()))
        action = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # [N]
        before, kept = state, state.clone()
        state = game.step(before, action)
        assert torch.equal(before, kept)  # step returns a new tensor
        for ref, a in zip(refs, action.tolist()):
            ref.play(a)
        _check(game, state, refs, winner_col)
    assert all(ref.over() for ref in refs)
    # Both sides win (all four directions of line, too: 285 X and 213 O wins, 2 draws for Connect Four with this
    # seed); random Connect Four rarely draws, so only tic-tac-toe must have drawn.
    outcomes = {ref.winner for ref in refs}
    assert {1, -1} <= outcomes and (0 in outcomes or game_cls is ConnectFour)


@pytest.mark.parametrize("game_cls", [ConnectFour, TicTacToe])
def test_step_returns_a_new_tensor(game_cls):
    game = game_cls()
    state = game.initial(3)
    kept = state.clone()
    out = game.step(state, torch.tensor([0, 1, 2]))
    assert torch.equal(state, kept) and not torch.equal(out, state)


def test_registry():
    assert GAMES["ConnectFour"] is ConnectFour and GAMES["TicTacToe"] is TicTacToe
    assert ConnectFour().obs_shape == (2, 6, 7) and ConnectFour().num_actions == 7


# ---------------------------------------------------------------------------------------------------------------
# Connect Four by hand. Positions list the columns played, 1-7; pictures are show() with row 0 on top.

C4_WINS = {
    # name: (position, winner, the board when it ends)
    "horizontal, filled in the middle": ("1727473", 1, """\
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . O
. . . . . . O
X X X X . . O"""),
    "vertical": ("1212121", 1, """\
. . . . . . .
. . . . . . .
X . . . . . .
X O . . . . .
X O . . . . .
X O . . . . ."""),
    "vertical, O wins": ("12123232", -1, """\
. . . . . . .
. . . . . . .
. O . . . . .
. O . . . . .
X O X . . . .
X O X . . . ."""),
    "diagonal /": ("12234334544", 1, """\
. . . . . . .
. . . . . . .
. . . X . . .
. . X O . . .
. X O O . . .
X O O X X . ."""),
    "diagonal \\": ("76654554344", 1, """\
. . . . . . .
. . . . . . .
. . . X . . .
. . . O X . .
. . . O O X .
. . X X O O X"""),
    "horizontal, second row, O wins": ("1122436374", -1, """\
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . .
O O O O . . .
X X O X . X X"""),
}


@pytest.mark.parametrize("name", list(C4_WINS))
def test_connect_four_wins(name):
    position, winner, picture = C4_WINS[name]
    game = ConnectFour()
    before = game.parse(position[:-1])
    assert not bool(game.terminal(before)[0])
    state = game.parse(position)
    assert game.show(state) == picture + "\n1 2 3 4 5 6 7"
    assert int(state[0, connect_four.WINNER]) == winner
    assert game.terminal(state).tolist() == [True]
    assert game.terminal_value(state).tolist() == [-1.0]
    assert game.legal(state).tolist() == [[False] * 7]


C4_DRAW = "562544631751167467766154327371213353254242"


def test_connect_four_full_board_draw():
    game = ConnectFour()
    assert not bool(game.terminal(game.parse(C4_DRAW[:-1]))[0])
    state = game.parse(C4_DRAW)
    assert game.terminal(state).tolist() == [True]
    assert int(state[0, connect_four.WINNER]) == 0
    assert game.terminal_value(state).tolist() == [0.0]
    assert game.moves_played(state).tolist() == [42]
    assert "." not in game.show(state)


def test_connect_four_full_column_raises():
    game = ConnectFour()
    state = game.parse("111111").repeat(3, 1)  # column 1 full, no four in it
    with pytest.raises(ValueError, match="column 0 is full"):
        game.step(state, torch.tensor([1, 0, 2]))
    with pytest.raises(ValueError, match="not a column 0-6"):
        game.step(state, torch.tensor([7, 1, 2]))


@pytest.mark.parametrize(("game_cls", "position"), [(ConnectFour, "1212121"), (ConnectFour, C4_DRAW),
                                                     (TicTacToe, "14253"), (TicTacToe, "519328467")])
def test_finished_games_are_unchanged_by_step(game_cls, position):
    game = game_cls()
    state = game.parse(position).repeat(game.num_actions, 1)
    assert game.terminal(state).all()
    out = game.step(state, torch.arange(game.num_actions))  # every action, legal or not
    assert torch.equal(out, state)
    # A finished game beside a live one: the live one moves, the finished one stays.
    mixed = torch.cat([game.parse(position), game.initial(1)])
    out = game.step(mixed, torch.tensor([0, 0]))
    assert torch.equal(out[0], mixed[0]) and game.moves_played(out).tolist()[1] == 1


def test_connect_four_parse_and_show():
    game = ConnectFour()
    state = game.parse("4453")
    assert game.show(state) == """\
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . .
. . . O . . .
. . O X X . .
1 2 3 4 5 6 7"""
    assert game.show(state[0]) == game.show(state)
    stepped = game.initial(1)
    for column in (3, 3, 4, 2):
        stepped = game.step(stepped, torch.tensor([column]))
    assert torch.equal(state, stepped)
    assert torch.equal(game.parse(""), game.initial(1))
    # show -> board -> the same show: the picture holds the whole board.
    for position in ("", "4453", "1727473", C4_DRAW):
        shown = game.show(game.parse(position))
        board = [[{"X": 1, "O": -1, ".": 0}[ch] for ch in line.split()] for line in shown.splitlines()[:6]]
        assert board == game.board(game.parse(position))[0].tolist()


@pytest.mark.parametrize(("position", "where"), [
    ("44a3", "character 3 ('a') is not a column 1-7"),
    ("4480", "character 3 ('8') is not a column 1-7"),
    ("0", "character 1 ('0') is not a column 1-7"),
    ("1111111", "character 7 ('1') plays into a full column"),
    ("12121213", "character 8 ('3') is a move after the game has ended"),
])
def test_connect_four_parse_refusals(position, where):
    with pytest.raises(ValueError, match=re.escape(f"position {position!r}: {where}")):
        ConnectFour().parse(position)


# ---------------------------------------------------------------------------------------------------------------
# Tic-tac-toe by hand: cells 1-9, row-major.


def _ttt_win(line: tuple[int, int, int], winner: int) -> str:
    """A position in which ``winner`` (1 X, -1 O) completes ``line`` with its last stone and the loser has no line."""
    others = [c for c in range(9) if c not in line]
    loser = next(cells for cells in itertools.combinations(others, 3) if cells not in tictactoe.LINES)
    x, o = (line, loser) if winner == 1 else (loser, line)
    moves = [m for pair in zip(x, o) for m in pair] if winner == -1 else [x[0], o[0], x[1], o[1], x[2]]
    return "".join(str(m + 1) for m in moves)


@pytest.mark.parametrize("line", tictactoe.LINES)
@pytest.mark.parametrize("winner", [1, -1])
def test_tictactoe_wins_on_every_line(line, winner):
    game = TicTacToe()
    position = _ttt_win(line, winner)
    assert not bool(game.terminal(game.parse(position[:-1]))[0])
    state = game.parse(position)
    assert int(state[0, tictactoe.WINNER]) == winner
    assert game.terminal(state).tolist() == [True] and game.terminal_value(state).tolist() == [-1.0]
    assert all(int(state[0, c]) == winner for c in line)


def test_tictactoe_full_board_draw():
    game = TicTacToe()
    state = game.parse("519328467")
    assert game.show(state) == "O X O\nX X O\nX O X"
    assert game.terminal(state).tolist() == [True]
    assert int(state[0, tictactoe.WINNER]) == 0 and game.terminal_value(state).tolist() == [0.0]


def test_tictactoe_occupied_cell_raises():
    game = TicTacToe()
    with pytest.raises(ValueError, match="occupied"):
        game.step(game.parse("5"), torch.tensor([4]))


@pytest.mark.parametrize(("position", "where"), [
    ("5x", "character 2 ('x') is not a cell 1-9"),
    ("50", "character 2 ('0') is not a cell 1-9"),
    ("55", "cell 5 is played twice"),
    ("142536", "the game is already over before move 6"),
])
def test_tictactoe_parse_refusals(position, where):
    with pytest.raises(ValueError, match=re.escape(f"position {position!r}: {where}")):
        TicTacToe().parse(position)


def test_mirror_is_the_position_played_in_mirrored_moves():
    import torch

    from rlrun.search.games import ConnectFour, TicTacToe

    c4, ttt = ConnectFour(), TicTacToe()
    state, policy = c4.mirror(c4.parse("4453217"), torch.arange(7.0)[None])
    assert torch.equal(state, c4.parse("4435671")) and policy.tolist() == [[6, 5, 4, 3, 2, 1, 0]]
    cell = {1: 3, 2: 2, 3: 1, 4: 6, 5: 5, 6: 4, 7: 9, 8: 8, 9: 7}  # columns of the 3x3 board reversed
    state, policy = ttt.mirror(ttt.parse("1524"), torch.arange(9.0)[None])
    assert torch.equal(state, ttt.parse("".join(str(cell[int(c)]) for c in "1524")))
    assert policy.tolist() == [[2, 1, 0, 5, 4, 3, 8, 7, 6]]
