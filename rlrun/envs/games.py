"""Two-player tensor board games (:mod:`rlrun.search.games`) as VecEnvs.

The observation is the game's state row itself (int8 [N, state_size]): a search needs the position, not a
picture of it, and the network's input planes are ``game.observation(state)``.

* :class:`SelfPlayEnv` (training): both sides are the agent. A step plays the side to move's move; the reward is
  +1 to the player whose move won, else 0. ``episode_return`` reports the game's result for the first player
  (+1, 0 or -1), ``episode_length`` its number of moves.
* :class:`VersusEnv` (evaluation): the agent against a fixed opponent (``env.opponent``), env ``i`` giving the
  agent the first move when ``i`` is even and the second when odd; the opponent's replies happen inside
  ``step``. The reward, and so an evaluation's return, is +1 win, 0 draw, -1 loss for the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.checks import ConfigError
from rlrun.envs.base import EpisodeTracker, StepResult, VecEnv
from rlrun.search.games import TensorGame
from rlrun.search.opponents import RandomOpponent
from rlrun.search.positions import labelled_positions, mistakes


class GameSpace(gym.spaces.Box):
    """The observation space of a game env: int8 state rows of ``game``, which an algorithm that searches reads
    from the space."""

    def __init__(self, game: TensorGame):
        super().__init__(-128, 127, (game.state_size,), dtype=np.int8)
        self.game = game


def game_spaces(game: TensorGame) -> tuple[GameSpace, gym.spaces.Discrete]:
    return GameSpace(game), gym.spaces.Discrete(game.num_actions)


class SelfPlayEnv(VecEnv):
    """``num_envs`` games, each played by the agent from both sides."""

    def __init__(self, game: TensorGame, num_envs: int, device: torch.device):
        self.game, self.num_envs, self.device = game, num_envs, torch.device(device)
        self.single_observation_space, self.single_action_space = game_spaces(game)
        self.state = game.initial(num_envs, self.device)
        self.tracker = EpisodeTracker(num_envs, self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self.state = self.game.initial(self.num_envs, self.device)
        self.tracker.reset()
        return self.state

    def step(self, actions: torch.Tensor) -> StepResult:
        game = self.game
        mover = game.to_play(self.state)
        after = game.step(self.state, actions)
        done = game.terminal(after)
        won = game.terminal_value(after) < 0  # the side to move after the last move has lost
        reward = won.float()
        first_player_result = torch.where(won, torch.where(mover == 0, 1.0, -1.0), 0.0)
        info = self.tracker.update(torch.zeros_like(reward), done)
        info["episode_return"] = first_player_result * done
        info["final_obs"] = after
        self.state = torch.where(done[:, None], game.initial(self.num_envs, self.device), after)
        return self.state, reward, done, torch.zeros_like(done), info


class VersusEnv(VecEnv):
    """``num_envs`` games of the agent against an opponent (anything with ``act(state) -> actions``), built by
    ``make_opponent(seed)`` at every seeded reset so an evaluation repeats. Each game starts from
    ``opening_moves`` uniformly random moves (0: the empty board), so that two deterministic players do not
    replay one game; the agent then plays the first side in the even envs, the second in the odd ones."""

    def __init__(self, game: TensorGame, num_envs: int, device: torch.device,
                 make_opponent: Callable[[int], Any], name: str, opening_moves: int = 0):
        self.game, self.num_envs, self.device = game, num_envs, torch.device(device)
        self.make_opponent, self.opponent_name, self.opening_moves = make_opponent, name, opening_moves
        self.single_observation_space, self.single_action_space = game_spaces(game)
        self.agent_player = torch.arange(num_envs, device=self.device) % 2
        self.tracker = EpisodeTracker(num_envs, self.device)
        positions = labelled_positions(game)
        self.positions = positions.to(self.device) if positions is not None else None
        self.reset(seed=0)

    def opening(self, rows: torch.Tensor) -> torch.Tensor:
        """Fresh games where ``rows`` (else the current ones): the random opening moves, then the opponent's move
        where the agent plays the other side."""
        fresh = self.game.initial(self.num_envs, self.device)
        for _ in range(self.opening_moves):
            fresh = self.game.step(fresh, self.opener.act(fresh))
        theirs = rows & (self.game.to_play(fresh) != self.agent_player)
        replied = self.game.step(fresh, self.opponent_moves(fresh, theirs))
        fresh = torch.where(theirs[:, None], replied, fresh)  # the others stay as they are (their move: 0)
        return torch.where(rows[:, None], fresh, self.state)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.opponent = self.make_opponent(seed)
            self.opener = RandomOpponent(self.game, self.device, seed + 1)
        self.tracker.reset()
        self.state = self.game.initial(self.num_envs, self.device)
        self.state = self.opening(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self.state

    def step(self, actions: torch.Tensor) -> StepResult:
        game = self.game
        after = game.step(self.state, actions)
        agent_won = game.terminal_value(after) < 0
        live = ~game.terminal(after)
        replied = game.step(after, torch.where(live, self.opponent_moves(after, live), 0))
        opponent_won = live & (game.terminal_value(replied) < 0)
        done = game.terminal(replied)
        reward = agent_won.float() - opponent_won.float()
        info = self.tracker.update(reward, done)
        info["final_obs"] = replied
        self.state = torch.where(done[:, None], self.opening(done), replied)
        return self.state, reward, done, torch.zeros_like(done), info

    def opponent_moves(self, state: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """The opponent's replies where ``live`` (the other rows get a placeholder, never played)."""
        moves = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        if bool(live.any()):
            moves[live] = self.opponent.act(state[live])
        return moves

    def evaluation_metrics(self, returns: torch.Tensor, policy: Any) -> dict[str, float]:
        """Win, draw and loss rates of one evaluation's games against the opponent, and the share of labelled
        positions (:mod:`rlrun.search.positions`) where the policy's move loses value (``eval/mistake_rate``)."""
        tag = self.opponent_name.replace(":", "_")
        out = {f"eval/win_rate_{tag}": float((returns > 0).float().mean()),
               f"eval/draw_rate_{tag}": float((returns == 0).float().mean()),
               f"eval/loss_rate_{tag}": float((returns < 0).float().mean())}
        if self.positions is not None:  # the policy's moves on positions whose values are known
            actions, _ = policy.act(self.positions.states, deterministic=True)
            out.update({f"eval/{k}": v for k, v in mistakes(self.game, self.positions, actions).items()})
        return out


def make_game_env(env_cfg: Any, num_envs: int, device: torch.device, *, training: bool) -> VecEnv:
    """Self-play games for training; games against ``env.opponent`` for evaluation."""
    from rlrun.search.games import GAMES
    from rlrun.search.opponents import make_opponent

    game = GAMES[env_cfg.id]()
    if training:
        return SelfPlayEnv(game, num_envs, device)
    spec = env_cfg.opponent
    try:
        make_opponent(spec, game, device, 0)  # a bad spec is refused now, not at the first evaluation
    except ValueError as err:
        raise ConfigError(f"env.opponent={spec!r} is not accepted: {err}.") from None
    return VersusEnv(game, num_envs, device, lambda seed: make_opponent(spec, game, device, seed), spec,
                     env_cfg.opening_moves)
