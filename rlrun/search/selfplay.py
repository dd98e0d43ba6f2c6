"""Self-play data: the positions of the games in progress, and a replay of finished games' positions with their
search policies and outcomes (AlphaZero's training targets)."""

from __future__ import annotations

from typing import Any

import torch

from rlrun.search.games import TensorGame


def outcome_targets(players: torch.Tensor, winner: torch.Tensor) -> torch.Tensor:
    """The value target z of each stored position: the game's result for the side that was to move there,

        z = +1 if player == winner, -1 if the other player won, 0 for a draw (winner = -1).

    ``players`` [P] (0 or 1), ``winner`` [P] (0, 1, or -1 for a draw).
    """
    return torch.where(winner < 0, 0.0, torch.where(players == winner, 1.0, -1.0))


def value_targets(z: torch.Tensor, q: torch.Tensor, q_share: float) -> torch.Tensor:
    """The value target of each stored position: the outcome z mixed with the search's root value q,

        target = (1 - w) z + w q,   w = ``q_share``.

    w = 0 is AlphaZero's target (the game's result only); w > 0 lowers the noise of a single game's result with
    the search's own estimate (at the cost of its bias), e.g. w = 0.5 averages the two.
    """
    return z if q_share == 0 else (1.0 - q_share) * z + q_share * q


class GameHistory:
    """The positions, search policies and root values of each env's game so far ([N, max_moves, ...] on the
    device)."""

    def __init__(self, game: TensorGame, num_envs: int, device: torch.device):
        moves = game.rows * game.cols
        self.game = game
        self.states = torch.zeros(num_envs, moves, game.state_size, dtype=torch.int8, device=device)
        self.policies = torch.zeros(num_envs, moves, game.num_actions, device=device)
        self.values = torch.zeros(num_envs, moves, device=device)
        self.length = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.rows = torch.arange(num_envs, device=device)

    def add(self, states: torch.Tensor, policies: torch.Tensor, values: torch.Tensor) -> None:
        """One move of every game: the position searched, the search's policy and its root value (side to move)."""
        self.states[self.rows, self.length] = states
        self.policies[self.rows, self.length] = policies
        self.values[self.rows, self.length] = values
        self.length += 1

    def finish(self, done: torch.Tensor, final: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The positions, policies, outcomes z and root values q of the games that ended (``done`` [N], ``final``
        their last states), flattened; those games' histories are cleared."""
        if not bool(done.any()):
            return self.states[:0, 0], self.policies[:0, 0], self.values[:0, 0], self.values[:0, 0]
        lost = self.game.terminal_value(final[done]) < 0  # the side to move at the end lost: the other one won
        winner = torch.where(lost, 1 - self.game.to_play(final[done]), -1)
        length = self.length[done]
        kept = torch.arange(self.states.shape[1], device=length.device)[None] < length[:, None]  # [G, moves]
        states = self.states[done][kept]
        policies = self.policies[done][kept]
        z = outcome_targets(self.game.to_play(states), winner[:, None].expand_as(kept)[kept])
        self.length[done] = 0
        return states, policies, z, self.values[done][kept]


class PositionReplay:
    """A ring buffer of (state, search policy, value target ``z``) on the device; uniform sampling."""

    def __init__(self, capacity: int, game: TensorGame, device: torch.device):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.states = torch.zeros(capacity, game.state_size, dtype=torch.int8, device=device)
        self.policies = torch.zeros(capacity, game.num_actions, device=device)
        self.z = torch.zeros(capacity, device=device)

    def __len__(self) -> int:
        return self.size

    def add(self, states: torch.Tensor, policies: torch.Tensor, z: torch.Tensor) -> None:
        n = states.shape[0]
        if n == 0:
            return
        if n > self.capacity:
            states, policies, z, n = states[-self.capacity:], policies[-self.capacity:], z[-self.capacity:], self.capacity
        idx = (self.pos + torch.arange(n, device=states.device)) % self.capacity
        self.states[idx], self.policies[idx], self.z[idx] = states, policies, z
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.states.device)
        return {"states": self.states[idx], "policies": self.policies[idx], "z": self.z[idx]}

    def state_dict(self) -> dict[str, Any]:
        return {"states": self.states[: self.size].clone(), "policies": self.policies[: self.size].clone(),
                "z": self.z[: self.size].clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["states"].shape[0]
        self.states[:n], self.policies[:n], self.z[:n] = state["states"], state["policies"], state["z"]
        self.size, self.pos = n, state["pos"]
