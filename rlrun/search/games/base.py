"""The contract of a two-player tensor board game (DESIGN.md, "Game envs").

A batch of games is one int8 tensor ``state`` [N, state_size]; each game lays out its cells and counters in that
row. The rules are pure batched functions of it, so a search copies a position by indexing and advances many at
once. Players are 0 (moves first) and 1; values are from the side to move.

* ``initial(n, device) -> state``               n empty boards, player 0 to move
* ``step(state, action) -> state``              a new tensor; a finished game is left as it is
* ``legal(state) -> bool [N, num_actions]``     all False once the game is over
* ``terminal(state) -> bool [N]``
* ``terminal_value(state) -> float [N]``        -1 where the side to move has lost (the last mover won), else 0
* ``to_play(state) -> int64 [N]``               0 or 1
* ``observation(state) -> float [N, 2, H, W]``  the side to move's stones, then the opponent's
* ``parse(position) -> state [1, D]``           a position string (the moves played, 1-indexed)
* ``show(state_row) -> str``                    the board as text
"""

from __future__ import annotations

import abc

import torch


class TensorGame(abc.ABC):
    """A two-player, zero-sum, perfect-information board game whose batch of states is one int8 tensor."""

    name: str
    num_actions: int
    rows: int
    cols: int
    state_size: int

    @abc.abstractmethod
    def initial(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor: ...

    @abc.abstractmethod
    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def legal(self, state: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def terminal(self, state: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def terminal_value(self, state: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def to_play(self, state: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def observation(self, state: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def parse(self, position: str, device: torch.device | str = "cpu") -> torch.Tensor: ...

    @abc.abstractmethod
    def show(self, state: torch.Tensor) -> str: ...

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (2, self.rows, self.cols)

    def moves_played(self, state: torch.Tensor) -> torch.Tensor:
        """Stones on the board [N] (int64)."""
        return (self.board(state) != 0).sum(dim=(1, 2))

    def mirror(self, state: torch.Tensor, policy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The left-right mirror image of positions [N, D] and of move distributions over them [N, A] (both games
        are symmetric under it). The cells come first in a state row; a move is a cell (rows * cols actions) or a
        column (cols actions)."""
        cells = self.rows * self.cols
        flipped = torch.arange(cells, device=state.device).view(self.rows, self.cols).flip(1).flatten()
        order = torch.cat([flipped, torch.arange(cells, state.shape[1], device=state.device)])
        moves = flipped if self.num_actions == cells else torch.arange(self.cols - 1, -1, -1, device=state.device)
        return state[:, order], policy[:, moves]

    @abc.abstractmethod
    def board(self, state: torch.Tensor) -> torch.Tensor:
        """The board [N, rows, cols] int8: 1 for player 0's stones, -1 for player 1's, 0 empty."""
