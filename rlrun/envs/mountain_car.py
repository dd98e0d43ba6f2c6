"""Tensor-native batched MountainCar: gymnasium's MountainCar-v0 and MountainCarContinuous-v0.

Both: state ``(position, velocity)`` (also the observation), velocity += push - 0.0025 cos(3 position)
clipped to ``[-0.07, 0.07]``, position += velocity clipped to ``[-1.2, 0.6]``, the velocity zeroed where the
car sits on the left wall moving left, termination at ``position >= goal and velocity >= 0``, reset
states ``(uniform(-0.6, -0.4), 0)`` and truncation after ``max_episode_steps`` steps (reported also when
the same step terminates, as gymnasium's ``TimeLimit`` does).

* MountainCar-v0: actions 0, 1, 2 push with ``(action - 1) * 0.001``; goal 0.5; reward -1 per step;
  200 steps.
* MountainCarContinuous-v0: the action [N, 1] is clipped to ``[-1, 1]`` and pushes with ``0.0015 * a``;
  goal 0.45; reward ``-0.1 a^2``, plus 100 on the terminating step; 999 steps.

What differs: the state is float32 on ``device`` (gymnasium keeps MountainCar-v0's in float64, and
MountainCarContinuous-v0's in float32 after the first step); discrete actions are not checked (anything
but 0, 1, 2 pushes with ``(action - 1) * 0.001`` instead of failing gymnasium's assertion, as checking
would need a host sync); MountainCarContinuous-v0's ``-0.1 a^2`` uses the clipped action, where gymnasium
penalises the action as given. rlrun's gymnasium backend clips every Box action to the action space before
gymnasium sees it, so this is the reward that backend gives too: an action of 5 acts and costs like 1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs.classic import TensorClassicEnv

# gymnasium.envs.classic_control.mountain_car.MountainCarEnv's and continuous_mountain_car's constants.
MIN_POSITION = -1.2
MAX_POSITION = 0.6
MAX_SPEED = 0.07
GOAL_VELOCITY = 0.0
GRAVITY = 0.0025
FORCE = 0.001  # MountainCar-v0
GOAL_POSITION = 0.5  # MountainCar-v0
POWER = 0.0015  # MountainCarContinuous-v0
CONTINUOUS_GOAL_POSITION = 0.45  # MountainCarContinuous-v0
MIN_ACTION = -1.0
MAX_ACTION = 1.0
RESET_LOW, RESET_HIGH = -0.6, -0.4
GOAL_REWARD = 100.0
ACTION_COST = 0.1


def _observation_space() -> gym.spaces.Box:
    low = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
    high = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)
    return gym.spaces.Box(low, high, dtype=np.float32)


def mountain_car_spaces() -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """MountainCar-v0's observation and action spaces, built as gymnasium builds them."""
    return _observation_space(), gym.spaces.Discrete(3)


def continuous_mountain_car_spaces() -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """MountainCarContinuous-v0's observation and action spaces, built as gymnasium builds them."""
    action_space = gym.spaces.Box(low=MIN_ACTION, high=MAX_ACTION, shape=(1,), dtype=np.float32)
    return _observation_space(), action_space


class _MountainCarBase(TensorClassicEnv):
    """The hill, the walls and the reset states both versions share; ``state`` is [N, 2]: position, velocity."""

    state_dim = 2
    goal_position: float

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int):
        super().__init__(num_envs, device, max_episode_steps)
        f32 = {"dtype": torch.float32, "device": self.device}
        # 0-d tensor operands: a Python float costs a conversion per op
        self._min_position = torch.tensor(MIN_POSITION, **f32)
        self._zero = torch.tensor(0.0, **f32)

    def _initial_states(self) -> torch.Tensor:
        position = torch.empty(self.num_envs, dtype=torch.float32, device=self.device)
        position.uniform_(RESET_LOW, RESET_HIGH, generator=self.generator)
        return torch.stack((position, torch.zeros_like(position)), dim=1)

    def _move(self, push: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(next_state [N, 2], terminated [N])`` after adding ``push`` [N] to the velocity."""
        position, velocity = self.state.unbind(1)
        # velocity += push - gravity * cos(3 position), clipped to the speed limit
        velocity = torch.add(push, torch.cos(position * 3.0), alpha=-GRAVITY).add_(velocity)
        velocity = velocity.clamp_(-MAX_SPEED, MAX_SPEED)
        position = torch.clamp(position + velocity, MIN_POSITION, MAX_POSITION)
        # the left wall stops the car: position == min_position and velocity < 0 -> velocity = 0
        velocity = torch.where((position == self._min_position) & (velocity < 0), self._zero, velocity)
        terminated = (position >= self.goal_position) & (velocity >= GOAL_VELOCITY)
        return torch.stack((position, velocity), dim=1), terminated


class MountainCarVecEnv(_MountainCarBase):
    """``num_envs`` MountainCar-v0 copies (actions [N] in {0, 1, 2}); ``state`` is [N, 2]: position, velocity."""

    spaces = staticmethod(mountain_car_spaces)
    goal_position = GOAL_POSITION

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 200):
        super().__init__(num_envs, device, max_episode_steps)
        self._reward = torch.full((num_envs,), -1.0, dtype=torch.float32, device=self.device)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        push = (actions.reshape(self.num_envs) - 1).to(torch.float32) * FORCE  # (action - 1) * force
        next_state, terminated = self._move(push)
        return next_state, self._reward.clone(), terminated


class MountainCarContinuousVecEnv(_MountainCarBase):
    """``num_envs`` MountainCarContinuous-v0 copies (actions [N, 1] float32); ``state`` is [N, 2]: position, velocity."""

    spaces = staticmethod(continuous_mountain_car_spaces)
    goal_position = CONTINUOUS_GOAL_POSITION

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 999):
        super().__init__(num_envs, device, max_episode_steps)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        force = actions.reshape(self.num_envs).to(torch.float32).clamp(MIN_ACTION, MAX_ACTION)  # [N]
        next_state, terminated = self._move(force * POWER)
        # reward = 100 on reaching the goal, minus 0.1 a^2
        reward = torch.addcmul(terminated.to(torch.float32) * GOAL_REWARD, force, force, value=-ACTION_COST)
        return next_state, reward, terminated
