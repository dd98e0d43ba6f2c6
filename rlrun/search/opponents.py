"""Fixed opponents for evaluating an AlphaZero agent: each picks one legal move for every position of a batch.

``make_opponent(spec, game, device, seed)`` builds one from a spec string:

* ``random``           uniform over the legal moves
* ``alphabeta:<D>``    depth-limited negamax with alpha-beta pruning, D plies, a heuristic at the leaves
* ``perfect``          tic-tac-toe only: the solved game, the fastest win (or the slowest loss) among optimal moves
* ``mcts:<N>``         plain MCTS: N simulations of :func:`rlrun.search.mcts.search` with uniform priors and one
                       random playout per leaf (UCT-style; torch's global generator draws the playouts)

The searches are baselines, not the hot path: they loop over the positions of the batch in Python and search each
on a bitboard of plain ints (``cur``: the side to move's stones, ``mask``: all stones), which is far faster per node
than torch. Ties between equally good moves are broken at random (seeded), so games against them vary.
"""

from __future__ import annotations

import abc
import functools
import random

import torch

from rlrun.search.games.base import TensorGame

SPECS = "random, alphabeta:<depth>, perfect (TicTacToe), mcts:<simulations>"
WIN = 1_000_000
"""The score of a won position; the plies left to search are added, so a faster win scores higher. Heuristic scores
stay far below it."""


# ---------------------------------------------------------------------------------------------------------------
# Bitboard rules: a position is (cur, mask), both ints; the opponent's stones are cur ^ mask.


class _Bits(abc.ABC):
    """One game's rules on bitboards, for the Python searches."""

    order: tuple[int, ...]
    """The moves in search order (centre first, which makes alpha-beta prune more)."""

    @abc.abstractmethod
    def encode(self, board: list[list[int]], own: int) -> tuple[int, int]:
        """(cur, mask) from a board as ``TensorGame.board`` gives it (one game, as lists) and the mover's stone."""

    @abc.abstractmethod
    def move_bit(self, mask: int, move: int) -> int:
        """The bit the move would fill, 0 where it is not playable."""

    @abc.abstractmethod
    def wins(self, stones: int) -> bool:
        """Whether one player's stones hold a winning line."""

    def heuristic(self, cur: int, opp: int) -> int:
        """A score of a non-terminal leaf for the side to move (``cur``); 0 unless the game has one."""
        return 0


class _ConnectFourBits(_Bits):
    """Column c, row r (0 = bottom) is bit 7c + r; bit 7c + 6 is an always-empty sentinel that stops lines from
    wrapping across columns (Pons' layout, http://blog.gamesolver.org/solving-connect-four/06-bitboard/)."""

    order = (3, 2, 4, 1, 5, 0, 6)
    SHIFTS = (1, 7, 6, 8)  # vertical, horizontal, "\" (column + 1, row - 1), "/" (column + 1, row + 1)
    CENTRE = 0b111111 << 21  # column 3

    def __init__(self) -> None:
        def cells(cols: range, rows: range) -> int:
            return sum(1 << (7 * c + r) for c in cols for r in rows)

        # The first cell of every window of four in each direction: 21 + 24 + 12 + 12 = 69 windows.
        self.windows = (
            (1, cells(range(7), range(3))),
            (7, cells(range(4), range(6))),
            (6, cells(range(4), range(3, 6))),
            (8, cells(range(4), range(3))),
        )

    def encode(self, board: list[list[int]], own: int) -> tuple[int, int]:
        cur = mask = 0
        for r, row in enumerate(board):  # row 0 is the top of the tensor board, bitboard row 5
            for c, v in enumerate(row):
                if v:
                    bit = 1 << (7 * c + 5 - r)
                    mask |= bit
                    if v == own:
                        cur |= bit
        return cur, mask

    def move_bit(self, mask: int, move: int) -> int:
        if mask & (1 << (7 * move + 5)):  # the top cell is taken
            return 0
        return (mask + (1 << 7 * move)) & (0b111111 << 7 * move)  # the carry stops at the lowest empty cell

    def wins(self, stones: int) -> bool:
        for s in self.SHIFTS:
            pairs = stones & (stones >> s)
            if pairs & (pairs >> 2 * s):
                return True
        return False

    def heuristic(self, cur: int, opp: int) -> int:
        """5 per open window of four (no enemy stone) holding three own stones, 2 per one holding two, 3 per stone
        in the centre column; the opponent's count subtracted.

        All windows of one direction are counted at once: plane k holds, at each window's first cell, whether its
        k-th cell is taken, and the counts of the four planes are added with bitwise logic.
        """
        score = 3 * ((cur & self.CENTRE).bit_count() - (opp & self.CENTRE).bit_count())
        for s, first in self.windows:
            a, b, c, d = cur, cur >> s, cur >> 2 * s, cur >> 3 * s
            e, f, g, h = opp, opp >> s, opp >> 2 * s, opp >> 3 * s
            mine_open = first & ~(e | f | g | h)
            theirs_open = first & ~(a | b | c | d)
            score += 5 * ((_three(a, b, c, d) & mine_open).bit_count() - (_three(e, f, g, h) & theirs_open).bit_count())
            score += 2 * ((_two(a, b, c, d) & mine_open).bit_count() - (_two(e, f, g, h) & theirs_open).bit_count())
        return score


def _two(a: int, b: int, c: int, d: int) -> int:
    """The bits set in exactly two of the four planes."""
    return (a & b & ~(c | d)) | (c & d & ~(a | b)) | ((a ^ b) & (c ^ d))


def _three(a: int, b: int, c: int, d: int) -> int:
    """The bits set in exactly three of the four planes."""
    return (a & b & (c ^ d)) | (c & d & (a ^ b))


class _TicTacToeBits(_Bits):
    """Cell i (row-major, as in the tensor board) is bit i."""

    order = (4, 0, 2, 6, 8, 1, 3, 5, 7)
    LINES = tuple(sum(1 << i for i in line) for line in
                  ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)))

    def encode(self, board: list[list[int]], own: int) -> tuple[int, int]:
        cur = mask = 0
        for i, v in enumerate(v for row in board for v in row):
            if v:
                mask |= 1 << i
                if v == own:
                    cur |= 1 << i
        return cur, mask

    def move_bit(self, mask: int, move: int) -> int:
        return 0 if mask & (1 << move) else 1 << move

    def wins(self, stones: int) -> bool:
        return any(stones & line == line for line in self.LINES)


BITS: dict[str, _Bits] = {"ConnectFour": _ConnectFourBits(), "TicTacToe": _TicTacToeBits()}
"""game.name -> its bitboard rules: the games the searching opponents can play."""


def playable(rules: _Bits, mask: int) -> list[tuple[int, int]]:
    """(move, bit) for each playable move, in search order."""
    return [(m, b) for m in rules.order if (b := rules.move_bit(mask, m))]


def negamax(rules: _Bits, cur: int, mask: int, depth: int, alpha: float, beta: float) -> float:
    """The value for the side to move, searched ``depth`` plies with alpha-beta pruning (fail-soft).

    A move that wins now scores WIN + depth (plies left), so faster wins score higher and slower losses lower; a
    full board is a draw (0); at depth 0 the leaf heuristic. Within (alpha, beta) the value is exact; at or below
    alpha it is an upper bound, at or above beta a lower bound.
    """
    moves = [b for _, b in playable(rules, mask)]
    if not moves:
        return 0
    if depth == 0:
        return rules.heuristic(cur, cur ^ mask)
    if any(rules.wins(cur | b) for b in moves):
        return WIN + depth
    best = -float("inf")
    for b in moves:
        value = -negamax(rules, cur ^ mask, mask | b, depth - 1, -beta, -max(alpha, best))
        if value > best:
            best = value
            if best >= beta:
                break
    return best


@functools.cache
def solved_value(cur: int, mask: int) -> int:
    """The tic-tac-toe value for the side to move under perfect play: 0 a draw, otherwise +-(1 + the cells still
    empty after the winning move), so a faster win is worth more and a slower loss costs less. Memoised: 4,536
    entries, the positions of the 5,478 legal ones in which the game is not yet won."""
    return max((solved_move_value(cur, mask, b) for _, b in playable(BITS["TicTacToe"], mask)), default=0)


def solved_move_value(cur: int, mask: int, bit: int) -> int:
    if BITS["TicTacToe"].wins(cur | bit):
        return 1 + 9 - (mask | bit).bit_count()
    return -solved_value(cur ^ mask, mask | bit)


# ---------------------------------------------------------------------------------------------------------------
# Opponents.


class Opponent(abc.ABC):
    """A fixed player: one legal move for every live position of a batch (action 0 for a finished game, which
    ``step`` ignores)."""

    spec: str

    @abc.abstractmethod
    def act(self, state: torch.Tensor) -> torch.Tensor:
        """The moves for ``state`` [N, state_size] -> int64 [N], on the state's device."""


class RandomOpponent(Opponent):
    """Uniform over the legal moves."""

    spec = "random"

    def __init__(self, game: TensorGame, device: torch.device | str, seed: int) -> None:
        self.game = game
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def act(self, state: torch.Tensor) -> torch.Tensor:
        """A uniformly random legal move for each position -> int64 [N]."""
        weights = self.game.legal(state).float()  # [N, A]
        weights[:, 0] += weights.sum(dim=1) == 0  # a finished game: action 0
        return torch.multinomial(weights, 1, generator=self.generator).squeeze(1)


class _SearchOpponent(Opponent):
    """Searches each live position of the batch in turn on its bitboard."""

    games: tuple[str, ...] = tuple(BITS)
    """The games it plays (game.name)."""

    def __init__(self, game: TensorGame, seed: int) -> None:
        if game.name not in self.games:
            raise ValueError(f"opponent {self.spec!r} plays only {', '.join(self.games)}, not {game.name}")
        self.game = game
        self.rules = BITS[game.name]
        self.rng = random.Random(seed)

    def act(self, state: torch.Tensor) -> torch.Tensor:
        """The searched move for each position -> int64 [N]."""
        boards = self.game.board(state).tolist()
        own = (1 - 2 * self.game.to_play(state)).tolist()  # the mover's stone: 1 or -1
        over = self.game.terminal(state).tolist()
        actions = [0 if done else self.choose(*self.rules.encode(b, o)) for b, o, done in zip(boards, own, over)]
        return torch.tensor(actions, dtype=torch.int64, device=state.device)

    @abc.abstractmethod
    def choose(self, cur: int, mask: int) -> int:
        """The move for one live position."""


class AlphaBetaOpponent(_SearchOpponent):
    """Depth-limited negamax with alpha-beta pruning: takes an immediate win (any depth), blocks an immediate loss
    (depth >= 2), otherwise the best move by the leaf heuristic ``depth`` plies down."""

    def __init__(self, game: TensorGame, depth: int, seed: int) -> None:
        if depth < 1:
            raise ValueError(f"alphabeta: the depth must be >= 1 ply, got {depth}")
        self.depth = depth
        self.spec = f"alphabeta:{depth}"
        super().__init__(game, seed)

    def choose(self, cur: int, mask: int) -> int:
        """A best move, chosen at random among equals."""
        moves = playable(self.rules, mask)
        wins = [m for m, b in moves if self.rules.wins(cur | b)]
        if wins:
            return self.rng.choice(wins)
        # Root moves in a random order, then the first strictly best: a later move of equal value fails low
        # (scores <= alpha) and is not taken, so the pick is uniform among the best moves.
        self.rng.shuffle(moves)
        alpha, choice = -float("inf"), moves[0][0]
        for m, b in moves:
            value = -negamax(self.rules, cur ^ mask, mask | b, self.depth - 1, -float("inf"), -alpha)
            if value > alpha:
                alpha, choice = value, m
        return choice


class PerfectOpponent(_SearchOpponent):
    """Tic-tac-toe solved: an optimal move, the fastest win or the slowest loss, chosen at random among equals."""

    spec = "perfect"
    games = ("TicTacToe",)

    def choose(self, cur: int, mask: int) -> int:
        """An optimal move, chosen at random among equals."""
        values = [(m, solved_move_value(cur, mask, b)) for m, b in playable(self.rules, mask)]
        best = max(v for _, v in values)
        return self.rng.choice([m for m, v in values if v == best])


class MCTSOpponent(Opponent):
    """Plain Monte Carlo tree search: PUCT with uniform priors, random-playout values, the most visited move."""

    def __init__(self, game: TensorGame, simulations: int) -> None:
        from rlrun.search.mcts import SearchConfig, random_rollouts

        self.game, self.spec = game, f"mcts:{simulations}"
        self.evaluate = random_rollouts(game)
        self.cfg = SearchConfig(num_simulations=simulations, rule="puct")

    def act(self, state: torch.Tensor) -> torch.Tensor:
        """The most visited root move of each live position -> int64 [N] (0 for finished games)."""
        from rlrun.search.mcts import search

        actions = torch.zeros(state.shape[0], dtype=torch.int64, device=state.device)
        live = ~self.game.terminal(state)
        if bool(live.any()):
            actions[live] = search(self.game, self.evaluate, state[live], self.cfg, explore=False).action
        return actions


def make_opponent(spec: str, game: TensorGame, device: torch.device | str, seed: int) -> Opponent:
    """The opponent ``spec`` names (``random``, ``alphabeta:<depth>``, ``perfect``, ``mcts:<N>``) for ``game``."""
    kind, _, arg = spec.partition(":")
    if spec == "random":
        return RandomOpponent(game, device, seed)
    if kind == "mcts":
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"opponent {spec!r}: the simulations must be a whole number >= 1, e.g. mcts:1000")
        return MCTSOpponent(game, int(arg))
    if kind == "alphabeta" and arg:
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"opponent {spec!r}: the depth must be a whole number of plies >= 1, e.g. alphabeta:4")
        return AlphaBetaOpponent(game, int(arg), seed)
    if spec == "perfect":
        return PerfectOpponent(game, seed)
    raise ValueError(f"unknown opponent {spec!r}; accepted: {SPECS}")
