"""What the tensor-native classic-control envs share: time limit, same-step autoreset, seeding, statistics.

A subclass says what its state is and how one step changes it (:meth:`TensorClassicEnv._transition`,
a pure function of ``self.state`` and the actions), how a state is observed and how reset states are
drawn; this base class does the rest of the VecEnv contract (:mod:`rlrun.envs.base`) the way
:class:`rlrun.envs.cartpole.CartPoleVecEnv` does it:

* truncation after ``max_episode_steps`` steps, reported even when the same step also terminates
  (as gymnasium's ``TimeLimit`` does);
* same-step autoreset without a host sync: fresh reset states are drawn for *every* env on every
  step and kept only where an episode ended. Each step therefore makes the same random draws
  whatever the episodes did, so one env's random stream never depends on another env's episodes;
* ``reset(seed)`` seeds one ``torch.Generator`` for the whole batch (the batch, not each env, is the
  unit of seeding); ``reset()`` without a seed keeps drawing from it;
* ``state`` ([N, state_dim] float32) and ``steps`` ([N] int64) are plain attributes that are never
  written in place, so returned tensors stay valid after later steps; tests may call
  :meth:`set_state` to start from chosen states.
"""

from __future__ import annotations

import abc
import math

import gymnasium as gym
import torch

from rlrun.envs.base import EpisodeTracker, StepResult, VecEnv


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """gymnasium's ``acrobot.wrap(x, -pi, pi)`` (add or subtract 2 pi until ``x`` is in ``[-pi, pi]``), batched.

    ``x - 2 pi * ceil((x - pi) / 2 pi)`` lands in ``(-pi, pi]``: the same value as gymnasium's loop except
    for the measure-zero inputs ``x = -pi + 2 pi k``, which it maps to ``pi`` where the loop gives ``-pi``.
    """
    return torch.add(x, torch.ceil((x - math.pi) * (0.5 / math.pi)), alpha=-2 * math.pi)


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """gymnasium's ``pendulum.angle_normalize``: ``((x + pi) mod 2 pi) - pi``, in ``[-pi, pi)``."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class TensorClassicEnv(VecEnv):
    """``num_envs`` copies of one classic-control env as a ``[num_envs, state_dim]`` float32 tensor on ``device``."""

    state_dim: int

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} must be >= 1")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = int(max_episode_steps)
        self.single_observation_space, self.single_action_space = self.spaces()
        self.generator = torch.Generator(device=self.device)
        self.generator.seed()
        self.tracker = EpisodeTracker(num_envs, self.device)
        self.state = self._initial_states()
        self.steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ what a subclass defines
    @staticmethod
    @abc.abstractmethod
    def spaces() -> tuple[gym.spaces.Box, gym.Space]:
        """The observation and action spaces of one env, built as gymnasium builds them."""

    @abc.abstractmethod
    def _initial_states(self) -> torch.Tensor:
        """Fresh reset states for every env, [N, state_dim], drawn from ``self.generator``."""

    @abc.abstractmethod
    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(next_state [N, state_dim], reward [N] float32, terminated [N] bool)`` from ``self.state``."""

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """The observation [N, *obs_shape] of ``state`` (the state itself by default)."""
        return state

    # ------------------------------------------------------------------ contract
    def set_state(self, state: torch.Tensor, steps: torch.Tensor | None = None) -> None:
        """Put every env in ``state`` [N, state_dim] with ``steps`` [N] already taken (default 0)."""
        n, d = self.num_envs, self.state_dim
        self.state = torch.as_tensor(state, dtype=torch.float32, device=self.device).reshape(n, d).clone()
        if steps is None:
            self.steps = torch.zeros(n, dtype=torch.int64, device=self.device)
        else:
            self.steps = torch.as_tensor(steps, dtype=torch.int64, device=self.device).reshape(n).clone()

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.state = self._initial_states()
        self.steps = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.tracker.reset()
        return self._observe(self.state)

    def step(self, actions: torch.Tensor) -> StepResult:
        next_state, reward, terminated = self._transition(actions)
        steps = self.steps + 1
        truncated = steps >= self.max_episode_steps
        done = terminated | truncated

        # Same-step autoreset without a host sync: draw for all, keep where done.
        self.state = torch.where(done.unsqueeze(1), self._initial_states(), next_state)
        self.steps = steps.masked_fill_(done, 0)

        info = self.tracker.update(reward, done)
        info["final_obs"] = self._observe(next_state)
        return self._observe(self.state), reward, terminated, truncated, info
