"""An exact Connect Four solver in plain Python, to label test positions for AlphaZero (:mod:`rlrun.search.mistakes`).

The board is 7 columns x 6 rows. A position is the string of columns played, 1-indexed, the way Connect Four
solvers write it (``"4453"``: player 0 in the centre, player 1 on top of it, player 0 in the centre again, player 1
in column 3). Player 0 moves first.

Scores follow Pascal Pons' solver (blog.gamesolver.org), from the side to move's view::

    score = 22 - (stones the winner has on the board once it has won)   if the side to move wins
          = 0                                                           if perfect play draws
          = -(22 - stones the winner has once it has won)               if the side to move loses

so a win is positive and larger the sooner it comes, a loss negative and larger in magnitude the sooner it comes.
With n stones on the board, winning with the next stone scores ``(43 - n) // 2`` and losing to the opponent's next
stone ``-((42 - n) // 2)``; scores lie in [-18, 18]. :func:`outcome` maps a score to +1 / 0 / -1.

The search (:func:`negamax`) is Pons' design written for Python ints: two bitboards in the 7 x (6 + 1)-bit layout,
negamax with alpha-beta and null windows (binary search on the score in :func:`solve`), no move that hands the
opponent an immediate win, moves ordered by the threats they create and then centre first, and a transposition
table of lower and upper bounds.

In pure Python near-empty boards are out of reach; from 14 stones on it is fast enough. Seconds per position on one core of the development machine, over the 15 positions of each
stone count in the packaged test set (``data/connect_four_positions.csv``: random-ish games, positions where a
mistake is possible), each call with a fresh table::

    stones   solve: mean  median   max    solve(weak=True): mean   max    move_values: mean  median   max
      34          0.000   0.000   0.000                    0.000  0.000                0.000   0.000   0.001
      30          0.001   0.001   0.002                    0.000  0.002                0.001   0.001   0.007
      26          0.002   0.001   0.016                    0.001  0.006                0.006   0.002   0.04
      22          0.014   0.000   0.07                     0.004  0.03                 0.05    0.01    0.4
      20          0.025   0.010   0.13                     0.013  0.09                 0.04    0.01    0.2
      18          0.04    0.004   0.19                     0.018  0.09                 0.12    0.07    0.5
      16          0.07    0.000   0.34                     0.023  0.15                 0.3     0.14    1.7
      14          0.6     0.3     4.2                      0.4    3.6                  1.2     0.8     5.0

The time depends on how open the position is as much as on the stone count: random play soon decides a game, and a
decided position is quick. Pons' two 15-stone "Test_L2_R2" positions (balanced ones, scores 0 and -1) take 1.4 s and
2.7 s to ``solve``; random-ish 12-stone positions took 0-5 s (10 of them) and 10-stone ones 0-6 s (5 of them).
Balanced positions with fewer stones were not measured: the search grows roughly exponentially with the empty
cells. Hence the test set starts at 14 stones, where labelling one position (``move_values``) stays within seconds.
"""

from __future__ import annotations

from typing import NamedTuple

WIDTH, HEIGHT = 7, 6
CELLS = WIDTH * HEIGHT
MIN_SCORE = -(CELLS // 2) + 3
"""-18: the side to move loses to the opponent's 4th stone."""
MAX_SCORE = (CELLS + 1) // 2 - 3
"""18: the side to move wins with its 4th stone."""

_H1 = HEIGHT + 1  # bits per column: 6 cells and a sentinel bit on top that stays 0
BOTTOM = sum(1 << (c * _H1) for c in range(WIDTH))
"""One bit at the bottom cell of each column."""
BOARD = BOTTOM * ((1 << HEIGHT) - 1)
"""All 42 cells (no sentinel bits)."""
COLUMN = tuple(((1 << HEIGHT) - 1) << (c * _H1) for c in range(WIDTH))
TOP = tuple(1 << (HEIGHT - 1 + c * _H1) for c in range(WIDTH))
ORDER = (3, 2, 4, 1, 5, 0, 6)
"""Columns tried centre first: a centre stone lies on more lines of four."""


class Board(NamedTuple):
    """A position as bitboards. Bit ``c * 7 + r`` is the cell of column c, row r (0 = bottom)."""

    position: int
    """The side to move's stones."""
    mask: int
    """All stones."""
    moves: int
    """Stones on the board."""

    def playable(self, column: int) -> bool:
        """Whether ``column`` (0..6) still has room."""
        return not self.mask & TOP[column]

    def wins(self, column: int) -> bool:
        """Whether playing ``column`` (0..6, playable) makes four in a row for the side to move."""
        return bool(winning_cells(self.position, self.mask) & (self.mask + BOTTOM) & COLUMN[column])

    def play(self, column: int) -> Board:
        """The board after the side to move plays ``column`` (0..6, playable); the other player is then to move."""
        move = (self.mask + BOTTOM) & COLUMN[column]
        return Board(self.position ^ self.mask, self.mask | move, self.moves + 1)


def parse(position: str) -> Board:
    """The board of a position string (columns 1-7). Raises ValueError on a bad character, a move in a full column
    or a move played after someone has already made four in a row."""
    board = Board(0, 0, 0)
    for i, ch in enumerate(position.strip()):
        if ch not in "1234567":
            raise ValueError(f"position {position!r}: character {i + 1} ({ch!r}) is not a column 1-7")
        column = int(ch) - 1
        if not board.playable(column):
            raise ValueError(f"position {position!r}: move {i + 1} is played in the full column {ch}")
        if i and _four(board.position ^ board.mask):  # the stones of the player who has just moved
            raise ValueError(f"position {position!r}: the game is already over before move {i + 1}")
        board = board.play(column)
    return board


def is_over(board: Board) -> bool:
    """Whether the game has ended: the player who has just moved has four in a row, or the board is full."""
    return board.moves == CELLS or _four(board.position ^ board.mask)


def _four(stones: int) -> bool:
    """Whether ``stones`` (one player's bitboard) hold four in a row."""
    for shift in (1, _H1, HEIGHT, HEIGHT + 2):  # vertical, horizontal, both diagonals
        pairs = stones & (stones >> shift)
        if pairs & (pairs >> 2 * shift):
            return True
    return False


def winning_cells(stones: int, mask: int) -> int:
    """The empty cells (playable or not) that would complete four in a row for ``stones``.

    For each direction d (a bit shift), an empty cell x wins if three stones lie at x-3d..x-d, x-2d..x+d,
    x-d..x+2d or x+d..x+3d. Python ints do not overflow, so bits shifted past the board are cut by BOARD.
    """
    r = (stones << 1) & (stones << 2) & (stones << 3)  # vertical: three stones right below
    for d in (_H1, HEIGHT, HEIGHT + 2):  # horizontal, diagonal /, diagonal \
        p = (stones << d) & (stones << 2 * d)
        r |= p & (stones << 3 * d)
        r |= p & (stones >> d)
        p = (stones >> d) & (stones >> 2 * d)
        r |= p & (stones << d)
        r |= p & (stones >> 3 * d)
    return r & (BOARD ^ mask)


class Table:
    """A transposition table: proven lower and upper bounds on a position's score, keyed by ``position + mask``.
    The key is unique: it is ``position + (mask + BOTTOM) - BOTTOM``, and ``mask + BOTTOM`` has one bit per column,
    just above its top stone, so the sum writes each column's height and the side to move's stones in it with no
    carry. Emptied when it holds more than ``max_entries`` positions, which keeps a long labelling run within a
    few hundred MB."""

    def __init__(self, max_entries: int = 2_000_000):
        self.lower: dict[int, int] = {}
        self.upper: dict[int, int] = {}
        self.max_entries = max_entries

    def trim(self) -> None:
        """Empty the table if it has grown past ``max_entries``."""
        if len(self.lower) + len(self.upper) > self.max_entries:
            self.lower.clear()
            self.upper.clear()


def negamax(board: Board, alpha: int, beta: int, table: Table) -> int:
    """The score of ``board`` (n stones) within the window (alpha, beta). The recurrence:

        V(s) = max over legal moves a of  (43 - n) // 2     if a makes four in a row
                                          -V(s + a)         otherwise
        V(s) = 0                                            if the board is full

    searched as negamax with alpha-beta: a child is searched in (-beta, -alpha); a child score >= beta cuts the
    search (V >= beta is all we need), otherwise alpha rises to the best score. The result r is exact when
    alpha < r < beta, an upper bound (V <= r) when r <= alpha and a lower bound (V >= r) when r >= beta.

    Precondition: the side to move cannot win with its next stone (:func:`solve` checks that first). Only moves
    that do not hand the opponent an immediate win are searched (with none left, V = -((42 - n) // 2)), and
    otherwise -((40 - n) // 2) <= V <= (41 - n) // 2.
    """
    return _negamax(board.position, board.mask, board.moves, alpha, beta, table.lower, table.upper)


def _negamax(pos: int, mask: int, moves: int, alpha: int, beta: int, lower: dict, upper: dict) -> int:
    possible = (mask + BOTTOM) & BOARD
    threats = winning_cells(pos ^ mask, mask)  # the opponent's winning cells
    forced = possible & threats
    if forced:
        if forced & (forced - 1):  # two playable threats: the opponent wins with its next stone
            return -((CELLS - moves) // 2)
        possible = forced  # one: block it
    possible &= ~(threats >> 1)  # never fill the cell right below an opponent's winning cell
    if not possible:
        return -((CELLS - moves) // 2)
    if moves >= CELLS - 2:  # we play a safe stone, the opponent the last one, which cannot win: a draw
        return 0

    lo = -((CELLS - 2 - moves) // 2)  # the opponent cannot win with its next stone
    hi = (CELLS - 1 - moves) // 2  # we cannot win with ours
    key = pos + mask
    bound = lower.get(key)
    if bound is not None and bound > lo:
        lo = bound
    bound = upper.get(key)
    if bound is not None and bound < hi:
        hi = bound
    if alpha < lo:
        alpha = lo
        if alpha >= beta:
            return alpha
    if beta > hi:
        beta = hi
        if alpha >= beta:
            return beta

    children = []  # (-threats created, rank in ORDER, move): most threats first, then centre first
    for rank, c in enumerate(ORDER):
        move = possible & COLUMN[c]
        if move:
            children.append((-winning_cells(pos | move, mask).bit_count(), rank, move))
    children.sort()
    opponent = pos ^ mask
    for _, _, move in children:
        score = -_negamax(opponent, mask | move, moves + 1, -beta, -alpha, lower, upper)
        if score >= beta:
            lower[key] = score
            return score
        alpha = max(alpha, score)
    upper[key] = alpha
    return alpha


def _solve(board: Board, weak: bool, table: Table) -> int:
    if board.moves == CELLS:
        return 0
    if winning_cells(board.position, board.mask) & (board.mask + BOTTOM) & BOARD:
        return 1 if weak else (CELLS + 1 - board.moves) // 2
    lo, hi = (-1, 1) if weak else (-((CELLS - board.moves) // 2), (CELLS + 1 - board.moves) // 2)
    while lo < hi:  # binary search on the score with null windows (med, med + 1): is V > med?
        med = lo + (hi - lo) // 2
        if med <= 0 and int(lo / 2) < med:  # probe near 0 first: most positions are close to a draw
            med = int(lo / 2)
        elif med >= 0 and int(hi / 2) > med:
            med = int(hi / 2)
        r = negamax(board, med, med + 1, table)
        if r <= med:
            hi = r
        else:
            lo = r
    table.trim()
    return outcome(lo) if weak else lo


def solve(position: str | Board, weak: bool = False, table: Table | None = None) -> int:
    """The score of ``position`` for the side to move (module docstring); with ``weak=True`` only its outcome
    (+1 / 0 / -1), about twice as fast. ``table`` lets calls share a transposition table."""
    board = parse(position) if isinstance(position, str) else position
    if is_over(board):
        raise ValueError(f"position {position!r} is over: there is no move to solve")
    return _solve(board, weak, table if table is not None else Table())


def move_values(position: str | Board, weak: bool = False, table: Table | None = None) -> list[int | None]:
    """For each column 0..6, the score for the side to move of playing it (None for a full column):
    ``(43 - n) // 2`` if it wins at once, else minus the child's score. Their max is :func:`solve`'s score;
    the best moves are the columns that reach it (:func:`best_moves`). ``weak=True`` gives outcomes only."""
    board = parse(position) if isinstance(position, str) else position
    if is_over(board):
        raise ValueError(f"position {position!r} is over: there is no move to value")
    table = table if table is not None else Table()
    values: list[int | None] = []
    for column in range(WIDTH):
        if not board.playable(column):
            values.append(None)
        elif board.wins(column):
            values.append(1 if weak else (CELLS + 1 - board.moves) // 2)
        else:
            values.append(-_solve(board.play(column), weak, table))
    return values


def best_moves(values: list[int | None]) -> list[int]:
    """The columns (0-indexed) whose value is the largest."""
    best = max(v for v in values if v is not None)
    return [c for c, v in enumerate(values) if v == best]


def outcome(score: int) -> int:
    """+1 if the score is a win for the side to move, 0 a draw, -1 a loss."""
    return (score > 0) - (score < 0)
