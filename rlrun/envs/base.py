"""The VecEnv contract every backend follows.

All tensors live on ``env.device`` and are batch first:

* ``reset(seed) -> obs``                       obs: [N, *obs_shape]
* ``step(actions) -> obs, reward, terminated, truncated, info``
    actions:     [N] int64 for Discrete, [N, A] float32 for Box
    reward:      [N] float32
    terminated:  [N] bool   the MDP reached a terminal state: do not bootstrap
    truncated:   [N] bool   cut by a time limit: bootstrap from ``info["final_obs"]``
    info:        dict with the keys below

Autoreset happens in the same step: where ``terminated | truncated`` the returned
``obs`` is already the first observation of the next episode, and the true last
observation of the finished one is ``info["final_obs"]`` ([N, *obs_shape]; rows of
envs that did not finish equal ``obs``).

Episode statistics are the env layer's job, so every algorithm logs them alike:

* ``info["episode_done"]``:   [N] bool, a whole episode (for Atari: the whole game, not one life) ended
* ``info["episode_return"]``: [N] float32, its undiscounted return from the raw, unclipped reward
* ``info["episode_length"]``: [N] int64, its length in agent steps

(values are 0 where ``episode_done`` is False).
"""

from __future__ import annotations

import abc
from typing import Any

import gymnasium as gym
import torch

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


class VecEnv(abc.ABC):
    """A batch of ``num_envs`` environments stepping together on ``device``."""

    num_envs: int
    device: torch.device
    single_observation_space: gym.Space
    single_action_space: gym.Space

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env; env ``i`` is seeded with ``seed + i`` when ``seed`` is given."""

    @abc.abstractmethod
    def step(self, actions: torch.Tensor) -> StepResult:
        """Advance every env one agent step and autoreset the finished ones."""

    def close(self) -> None:
        """Release workers, threads or emulators (no-op by default)."""

    # Wrappers forward what they do not change; these make that uniform.
    @property
    def unwrapped(self) -> VecEnv:
        return self

    def state_dict(self) -> dict[str, Any]:
        """Statistics worth checkpointing (observation normaliser, ...); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def evaluation_metrics(self, returns: torch.Tensor, policy: Any) -> dict[str, float]:
        """Scalars of an evaluation beyond the returns' mean and spread, from its episode returns [episodes] and the
        ``policy`` evaluated (a game: win, draw and loss rates, mistakes on labelled positions); none by default."""
        return {}


class EpisodeTracker:
    """Running undiscounted return and length per env, reported when an episode ends."""

    def __init__(self, num_envs: int, device: torch.device):
        self.returns = torch.zeros(num_envs, dtype=torch.float32, device=device)
        self.lengths = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.returns.zero_()
        self.lengths.zero_()

    def update(self, reward: torch.Tensor, episode_done: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add one step's raw ``reward`` [N]; return the info keys for envs where ``episode_done`` [N]."""
        returns = self.returns + reward
        lengths = self.lengths + 1
        info = {
            "episode_done": episode_done,
            "episode_return": returns * episode_done,
            "episode_length": lengths * episode_done,
        }
        self.returns = returns.masked_fill_(episode_done, 0.0)
        self.lengths = lengths.masked_fill_(episode_done, 0)
        return info
