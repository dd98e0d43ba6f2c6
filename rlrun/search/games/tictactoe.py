"""Tic-tac-toe as a batch of int8 rows: 9 cells (row-major; 1 = X, who moves first; -1 = O; 0 empty), then the
side to move (0 or 1), then the winner (0 none, 1 X, -1 O). Actions are cells 0..8; a position string lists the
cells played, 1-9 (``"513"``: X in the centre, O top-left, X top-right)."""

from __future__ import annotations

import torch

from rlrun.search.games.base import TensorGame

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
TO_PLAY, WINNER = 9, 10


class TicTacToe(TensorGame):
    name = "TicTacToe"
    num_actions = 9
    rows = cols = 3
    state_size = 11

    def initial(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(n, self.state_size, dtype=torch.int8, device=device)

    def board(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, :9].view(-1, 3, 3)

    def to_play(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, TO_PLAY].long()

    def terminal(self, state: torch.Tensor) -> torch.Tensor:
        return (state[:, WINNER] != 0) | (state[:, :9] != 0).all(dim=1)

    def terminal_value(self, state: torch.Tensor) -> torch.Tensor:
        return -(state[:, WINNER] != 0).float()

    def legal(self, state: torch.Tensor) -> torch.Tensor:
        return (state[:, :9] == 0) & ~self.terminal(state)[:, None]

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        n = torch.arange(state.shape[0], device=state.device)
        live = ~self.terminal(state)
        if not bool(self.legal(state)[n, action][live].all()):
            raise ValueError("an action was played on an occupied cell")
        stone = (1 - 2 * state[:, TO_PLAY]).to(torch.int8)  # X = 1 for player 0, O = -1
        out = state.clone()
        out[n, action] = torch.where(live, stone, state[n, action])
        lines = out[:, list(LINES)].sum(dim=2, dtype=torch.int8)  # [N, 8]
        won = (lines == 3 * stone[:, None]).any(dim=1) & live
        out[:, WINNER] = torch.where(won, stone, out[:, WINNER])
        out[:, TO_PLAY] = torch.where(live, 1 - state[:, TO_PLAY], state[:, TO_PLAY])
        return out

    def observation(self, state: torch.Tensor) -> torch.Tensor:
        board = self.board(state).float()
        own = (1 - 2 * state[:, TO_PLAY]).float().view(-1, 1, 1)  # the mover's stone: 1 or -1
        return torch.stack([(board == own).float(), (board == -own).float()], dim=1)

    def parse(self, position: str, device: torch.device | str = "cpu") -> torch.Tensor:
        state = self.initial(1, device)
        for i, ch in enumerate(position.strip()):
            if ch not in "123456789":
                raise ValueError(f"position {position!r}: character {i + 1} ({ch!r}) is not a cell 1-9")
            if bool(self.terminal(state)[0]):
                raise ValueError(f"position {position!r}: the game is already over before move {i + 1}")
            action = torch.tensor([int(ch) - 1], device=state.device)
            if not bool(self.legal(state)[0, action]):
                raise ValueError(f"position {position!r}: cell {ch} is played twice")
            state = self.step(state, action)
        return state

    def show(self, state: torch.Tensor) -> str:
        marks = {1: "X", -1: "O", 0: "."}
        cells = [marks[int(v)] for v in state.reshape(-1)[:9]]
        return "\n".join(" ".join(cells[r * 3:(r + 1) * 3]) for r in range(3))
