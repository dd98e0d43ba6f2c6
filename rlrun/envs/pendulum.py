"""Tensor-native batched Pendulum: the dynamics are gymnasium's Pendulum-v1.

Same constants (``g = 10``, ``m = l = 1``, ``dt = 0.05``, max speed 8, max torque 2), the torque [N, 1]
clipped to ``[-2, 2]``, cost ``angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2`` on the state before the
step (the reward is minus that), semi-implicit Euler ``thdot += (3 g / (2 l) sin th + 3 / (m l^2) u) dt``
clipped to ``[-8, 8]`` then ``th += thdot dt``, never terminated, truncated after ``max_episode_steps = 200``
steps, reset states uniform in ``[-pi, pi] x [-1, 1]``. The observation is ``(cos th, sin th, thdot)``.

What differs: the state is float32 on ``device`` where gymnasium keeps float64, and the stored angle is
wrapped into ``[-pi, pi)`` after every step where gymnasium lets it grow without bound. Everything the
agent sees (cos, sin, and the cost's ``angle_normalize``) is 2 pi-periodic in the angle, so the wrap
changes no observation or reward; it keeps float32 precise under long time limits (an unwrapped float32
angle near 1e4 rad has a resolution of ~1e-3).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs.classic import TensorClassicEnv, angle_normalize

# gymnasium.envs.classic_control.pendulum.PendulumEnv's constants.
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
G = 10.0
M = 1.0
L = 1.0
RESET_TH = math.pi  # DEFAULT_X: reset th uniform in [-pi, pi]
RESET_THDOT = 1.0  # DEFAULT_Y: reset thdot uniform in [-1, 1]


def pendulum_spaces() -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Pendulum-v1's observation and action spaces, built as gymnasium builds them."""
    high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
    action_space = gym.spaces.Box(low=-MAX_TORQUE, high=MAX_TORQUE, shape=(1,), dtype=np.float32)
    return gym.spaces.Box(low=-high, high=high, dtype=np.float32), action_space


class PendulumVecEnv(TensorClassicEnv):
    """``num_envs`` Pendulum-v1 copies (actions [N, 1] float32); ``state`` is [N, 2]: th, thdot (observations [N, 3])."""

    state_dim = 2
    spaces = staticmethod(pendulum_spaces)

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 200):
        super().__init__(num_envs, device, max_episode_steps)
        self._terminated = torch.zeros(num_envs, dtype=torch.bool, device=self.device)

    def _initial_states(self) -> torch.Tensor:
        out = torch.empty((self.num_envs, 2), dtype=torch.float32, device=self.device)
        out.uniform_(-RESET_THDOT, RESET_THDOT, generator=self.generator)
        out[:, 0].mul_(RESET_TH / RESET_THDOT)  # th: uniform(-pi, pi)
        return out

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        th, thdot = state.unbind(1)
        return torch.stack((torch.cos(th), torch.sin(th), thdot), dim=1)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        th, thdot = self.state.unbind(1)
        u = actions.reshape(self.num_envs).to(torch.float32).clamp(-MAX_TORQUE, MAX_TORQUE)  # [N]
        # costs = angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2
        costs = torch.addcmul(angle_normalize(th).square(), thdot, thdot, value=0.1)
        costs = torch.addcmul(costs, u, u, value=0.001)
        # newthdot = thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, clipped to the max speed
        accel = torch.add(torch.sin(th) * (3 * G / (2 * L)), u, alpha=3.0 / (M * L**2))
        newthdot = torch.add(thdot, accel, alpha=DT).clamp_(-MAX_SPEED, MAX_SPEED)
        newth = angle_normalize(torch.add(th, newthdot, alpha=DT))  # gymnasium leaves th unwrapped
        return torch.stack((newth, newthdot), dim=1), -costs, self._terminated.clone()
