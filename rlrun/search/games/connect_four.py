"""Connect Four as a batch of int8 rows: 42 cells (6 rows x 7 columns, row-major, row 0 the TOP row as ``show``
prints it, so a stone dropped into an empty column lands in row 5; 1 = X, who moves first; -1 = O; 0 empty), then
the side to move (0 or 1), then the winner (0 none, 1 X, -1 O). Actions are columns 0..6; a position string lists
the columns played, 1-7, as the Connect Four solvers write positions (``"4453"``: X in the centre, O on top of it,
X in column 5, O in column 3).

No column heights are stored: ``step`` counts the stones of the chosen column (6 cells), which is as cheap as
reading a counter and leaves nothing to fall out of step with the board.
"""

from __future__ import annotations

import torch

from rlrun.search.games.base import TensorGame

ROWS, COLS = 6, 7
CELLS = ROWS * COLS
TO_PLAY, WINNER = CELLS, CELLS + 1


def four_in_a_row(stones: torch.Tensor) -> torch.Tensor:
    """Whether each board of ``stones`` [N, 6, 7] (bool, one player's stones) has four in a line -> bool [N].

    Each term ANDs the board with itself shifted by 0..3 cells along one direction, so a True entry marks the
    first cell of a window of four; the whole board is checked at once, not only the lines through the last stone.
    """
    s = stones
    horizontal = s[:, :, 0:4] & s[:, :, 1:5] & s[:, :, 2:6] & s[:, :, 3:7]  # [N, 6, 4]
    vertical = s[:, 0:3] & s[:, 1:4] & s[:, 2:5] & s[:, 3:6]  # [N, 3, 7]
    down_right = s[:, 0:3, 0:4] & s[:, 1:4, 1:5] & s[:, 2:5, 2:6] & s[:, 3:6, 3:7]  # [N, 3, 4], "\" diagonals
    up_right = s[:, 3:6, 0:4] & s[:, 2:5, 1:5] & s[:, 1:4, 2:6] & s[:, 0:3, 3:7]  # [N, 3, 4], "/" diagonals
    return (horizontal.flatten(1).any(1) | vertical.flatten(1).any(1)
            | down_right.flatten(1).any(1) | up_right.flatten(1).any(1))


class ConnectFour(TensorGame):
    name = "ConnectFour"
    num_actions = COLS
    rows = ROWS
    cols = COLS
    state_size = CELLS + 2

    def initial(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` empty boards, X (player 0) to move -> int8 [n, 44]."""
        return torch.zeros(n, self.state_size, dtype=torch.int8, device=device)

    def board(self, state: torch.Tensor) -> torch.Tensor:
        """The board [N, 6, 7] int8, row 0 at the top: 1 for X (player 0), -1 for O, 0 empty."""
        return state[:, :CELLS].view(-1, ROWS, COLS)

    def to_play(self, state: torch.Tensor) -> torch.Tensor:
        """The side to move [N] (int64): 0 or 1."""
        return state[:, TO_PLAY].long()

    def terminal(self, state: torch.Tensor) -> torch.Tensor:
        """Whether each game is over [N]: someone has four in a row, or the top row (so the board) is full."""
        return (state[:, WINNER] != 0) | (state[:, :COLS] != 0).all(dim=1)

    def terminal_value(self, state: torch.Tensor) -> torch.Tensor:
        """-1 where the side to move has lost (the last mover connected four), else 0 [N] (float)."""
        return -(state[:, WINNER] != 0).float()

    def legal(self, state: torch.Tensor) -> torch.Tensor:
        """The columns whose top cell is empty, none once the game is over -> bool [N, 7]."""
        return (state[:, :COLS] == 0) & ~self.terminal(state)[:, None]

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Drop the mover's stone into column ``action`` [N] of each live game -> a new state [N, 44].

        Finished games are returned unchanged whatever their action; a full column (or one outside 0-6) in a live
        game raises ValueError.
        """
        n = torch.arange(state.shape[0], device=state.device)
        action = action.long()
        live = ~self.terminal(state)  # [N]
        column = action.clamp(0, COLS - 1)  # [N]; finished games may carry any action
        height = (self.board(state)[n, :, column] != 0).sum(dim=1)  # [N] stones already in the column
        bad = live & ((action != column) | (height >= ROWS))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"game {i}: column {int(action[i])} is full or not a column 0-{COLS - 1}")
        row = (ROWS - 1 - height).clamp(min=0)  # [N] the lowest empty row (row 0 is the top)
        cell = row * COLS + column  # [N]
        stone = (1 - 2 * state[:, TO_PLAY]).to(torch.int8)  # [N] X = 1 for player 0, O = -1
        out = state.clone()
        out[n, cell] = torch.where(live, stone, state[n, cell])
        # Only the mover can have made four: the game was live, so the opponent had none before this stone.
        won = four_in_a_row(self.board(out) == stone.view(-1, 1, 1)) & live  # [N]
        out[:, WINNER] = torch.where(won, stone, out[:, WINNER])
        out[:, TO_PLAY] = torch.where(live, 1 - state[:, TO_PLAY], state[:, TO_PLAY])
        return out

    def observation(self, state: torch.Tensor) -> torch.Tensor:
        """The side to move's stones, then the opponent's -> float [N, 2, 6, 7]."""
        board = self.board(state).float()  # [N, 6, 7]
        own = (1 - 2 * state[:, TO_PLAY]).float().view(-1, 1, 1)  # the mover's stone: 1 or -1
        return torch.stack([(board == own).float(), (board == -own).float()], dim=1)

    def parse(self, position: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """The position after the columns listed in ``position`` (1-7, e.g. ``"4453"``) -> state [1, 44].

        Refuses, naming the position and the character (counted from 1), a character that is not a column 1-7, a
        move into a full column and a move after the game has ended.
        """
        state = self.initial(1, device)
        for i, ch in enumerate(position.strip()):
            if ch not in "1234567":
                raise ValueError(f"position {position!r}: character {i + 1} ({ch!r}) is not a column 1-7")
            if bool(self.terminal(state)[0]):
                raise ValueError(f"position {position!r}: character {i + 1} ({ch!r}) is a move after the game "
                                 "has ended")
            action = torch.tensor([int(ch) - 1], device=state.device)
            if not bool(self.legal(state)[0, action]):
                raise ValueError(f"position {position!r}: character {i + 1} ({ch!r}) plays into a full column")
            state = self.step(state, action)
        return state

    def show(self, state: torch.Tensor) -> str:
        """One board ([44] or [1, 44]) as text: X, O and . from the top row down, the column numbers below."""
        marks = {1: "X", -1: "O", 0: "."}
        cells = [marks[v] for v in state.reshape(-1)[:CELLS].tolist()]
        lines = [" ".join(cells[r * COLS:(r + 1) * COLS]) for r in range(ROWS)]
        return "\n".join([*lines, " ".join(str(c + 1) for c in range(COLS))])
