"""Positions labelled with their game-theoretic values, to count an agent's mistakes.

A move is a mistake when it loses value: its outcome under perfect play (+1 win, 0 draw, -1 loss for the mover)
is below the best move's. Tic-tac-toe's labels come from the solved game (:func:`rlrun.search.opponents.
solved_value`), Connect Four's from the exact solver's test set (:mod:`rlrun.search.solver`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from rlrun.search.games import TensorGame

ILLEGAL = -2
"""The label of a move that cannot be played."""


@dataclass
class LabelledPositions:
    states: torch.Tensor
    """[P, D] int8 game states (none finished)."""
    move_outcomes: torch.Tensor
    """[P, A] int8: each move's outcome for the side to move under perfect play (+1, 0, -1; ILLEGAL)."""
    buckets: list[tuple[int, int]]
    """Stone-count ranges (inclusive) that mistakes are also reported by."""

    def to(self, device: torch.device) -> LabelledPositions:
        return LabelledPositions(self.states.to(device), self.move_outcomes.to(device), self.buckets)


def mistakes(game: TensorGame, positions: LabelledPositions, actions: torch.Tensor) -> dict[str, float]:
    """The share of positions where ``actions`` [P] lose value, overall (``mistake_rate``) and for each stone
    bucket (``mistake_rate_<lo>_<hi>``): mistake = outcome(chosen move) < max over moves of outcome(move)."""
    outcomes = positions.move_outcomes.long()
    chosen = outcomes.gather(1, actions.long()[:, None]).squeeze(1)
    wrong = (chosen < outcomes.amax(1)).float()
    stones = game.moves_played(positions.states)
    out = {"mistake_rate": float(wrong.mean())}
    for lo, hi in positions.buckets:
        inside = (stones >= lo) & (stones <= hi)
        if bool(inside.any()):
            out[f"mistake_rate_{lo}_{hi}"] = float(wrong[inside].mean())
    return out


def labelled_positions(game: TensorGame) -> LabelledPositions | None:
    """The labelled positions of ``game`` (None for a game without them)."""
    if game.name == "TicTacToe":
        return tictactoe_positions()
    if game.name == "ConnectFour":
        return connect_four_positions()
    return None


@functools.cache
def connect_four_positions() -> LabelledPositions:
    """The exact solver's 315 Connect Four positions (14 to 34 stones; each has a move that loses value), with
    each column's outcome (:mod:`rlrun.search.mistakes`)."""
    from rlrun.search.games import ConnectFour
    from rlrun.search.mistakes import BUCKETS, load_positions
    from rlrun.search.solver import outcome

    game, rows = ConnectFour(), load_positions()
    states = torch.cat([game.parse(row.position) for row in rows])
    outcomes = torch.tensor([[ILLEGAL if v is None else outcome(v) for v in row.values] for row in rows],
                            dtype=torch.int8)
    return LabelledPositions(states, outcomes, list(BUCKETS))


@functools.cache
def tictactoe_positions() -> LabelledPositions:
    """Every tic-tac-toe position that can arise and is not over (4,520), with each move's solved outcome."""
    from rlrun.search.games import TicTacToe
    from rlrun.search.opponents import BITS, playable, solved_move_value

    game, rules = TicTacToe(), BITS["TicTacToe"]
    seen: dict[bytes, torch.Tensor] = {}
    frontier = game.initial(1)
    while frontier.shape[0]:
        live = frontier[~game.terminal(frontier)]
        for row in live:
            seen.setdefault(row.numpy().tobytes(), row)
        legal = game.legal(live)
        parent, move = legal.nonzero(as_tuple=True)
        children = game.step(live[parent], move)
        frontier = torch.unique(children, dim=0)
    states = torch.stack(list(seen.values()))
    outcomes = torch.full((states.shape[0], 9), ILLEGAL, dtype=torch.int8)
    boards = game.board(states).tolist()
    own = (1 - 2 * game.to_play(states)).tolist()
    for i, (board, stone) in enumerate(zip(boards, own)):
        cur, mask = rules.encode(board, stone)
        for m, bit in playable(rules, mask):
            value = solved_move_value(cur, mask, bit)
            outcomes[i, m] = (value > 0) - (value < 0)
    return LabelledPositions(states, outcomes, [(0, 2), (3, 5), (6, 8)])
