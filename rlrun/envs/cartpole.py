"""Tensor-native batched CartPole: the dynamics are gymnasium's CartPole-v1.

Same constants, explicit Euler integration with ``tau = 0.02``, termination when
``|x| > 2.4`` or ``|theta| > 12 deg``, reward 1.0 on every step (the terminating one
included), truncation after ``max_episode_steps`` steps (reported even when the same step
also terminates, as gymnasium's ``TimeLimit`` does) and reset states uniform in
``[-0.05, 0.05]``. The one difference is precision: the state is float32 on ``device``
where gymnasium integrates in float64.

The whole batch steps in a handful of elementwise torch ops with no host synchronisation:
fresh reset states are drawn for every env on every step and kept only where an episode
ended, which is cheaper than asking the host which envs finished.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs.classic import TensorClassicEnv

# gymnasium.envs.classic_control.cartpole.CartPoleEnv's constants.
GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_BOUND = 0.05


def cartpole_spaces() -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """CartPole-v1's observation and action spaces, built as gymnasium builds them."""
    high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
    return gym.spaces.Box(-high, high, dtype=np.float32), gym.spaces.Discrete(2)


class CartPoleVecEnv(TensorClassicEnv):
    """``num_envs`` CartPole-v1 copies as one ``[num_envs, 4]`` float32 tensor on ``device``.

    ``state`` ([N, 4]: x, x_dot, theta, theta_dot) and ``steps`` ([N] int64, steps taken in
    the current episode) are plain attributes; tests may assign them (or call
    :meth:`set_state`) to start from chosen states. :meth:`step` never writes into them in
    place, so the tensors it returns stay valid after later steps. Time limit, autoreset and
    seeding are :class:`rlrun.envs.classic.TensorClassicEnv`'s.

    ``reset(seed)`` seeds one ``torch.Generator`` for the whole batch (the batch, not each
    env, is the unit of seeding); ``reset()`` without a seed keeps drawing from it.
    """

    state_dim = 4
    spaces = staticmethod(cartpole_spaces)

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 500):
        super().__init__(num_envs, device, max_episode_steps)
        f32 = dict(dtype=torch.float32, device=self.device)
        self._force_right = torch.tensor(FORCE_MAG / TOTAL_MASS, **f32)
        self._force_left = torch.tensor(-FORCE_MAG / TOTAL_MASS, **f32)
        self._gravity = torch.tensor(GRAVITY, **f32)  # 0-d tensor operands: a Python float costs a conversion per op
        self._four_thirds_length = torch.tensor(LENGTH * 4.0 / 3.0, **f32)
        self._thresholds = torch.tensor([X_THRESHOLD, THETA_THRESHOLD], **f32)

    def _initial_states(self) -> torch.Tensor:
        out = torch.empty((self.num_envs, 4), dtype=torch.float32, device=self.device)
        return out.uniform_(-RESET_BOUND, RESET_BOUND, generator=self.generator)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # gymnasium's CartPoleEnv.step, batched; constants folded so each line is one or two ops:
        #   force    = force_mag if action == 1 else -force_mag
        #   temp     = (force + polemass_length * theta_dot**2 * sin) / total_mass
        #   thetaacc = (gravity * sin - cos * temp) / (length * (4/3 - masspole * cos**2 / total_mass))
        #   xacc     = temp - polemass_length * thetaacc * cos / total_mass
        #   (x, x_dot, theta, theta_dot) += tau * (x_dot, xacc, theta_dot, thetaacc)
        state = self.state
        _, x_dot, theta, theta_dot = state.unbind(1)
        force = torch.where(actions.view(self.num_envs) == 1, self._force_right, self._force_left)
        cos = torch.cos(theta)
        sin = torch.sin(theta)
        temp = torch.addcmul(force, theta_dot.square(), sin, value=POLEMASS_LENGTH / TOTAL_MASS)
        numer = torch.addcmul(torch.mul(sin, self._gravity), cos, temp, value=-1.0)
        denom = torch.addcmul(self._four_thirds_length, cos, cos, value=-LENGTH * MASSPOLE / TOTAL_MASS)
        thetaacc = numer / denom
        xacc = torch.addcmul(temp, thetaacc, cos, value=-POLEMASS_LENGTH / TOTAL_MASS)
        next_state = torch.add(state, torch.stack((x_dot, xacc, theta_dot, thetaacc), dim=1), alpha=TAU)
        # |x| > x_threshold or |theta| > theta_threshold (columns 0 and 2); reward 1 on every step
        terminated = (next_state[:, 0::2].abs() > self._thresholds).any(dim=1)
        reward = torch.ones(self.num_envs, dtype=torch.float32, device=self.device)
        return next_state, reward, terminated
