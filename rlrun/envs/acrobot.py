"""Tensor-native batched Acrobot: the dynamics are gymnasium's Acrobot-v1 (``book`` variant).

Same constants, one RK4 step of ``dt = 0.2`` through gymnasium's ``_dsdt`` for the whole batch, the
angles wrapped into ``[-pi, pi]`` and the velocities clipped to ``4 pi`` and ``9 pi`` after it, termination
when ``-cos(theta1) - cos(theta1 + theta2) > 1``, reward -1 per step and 0 on the terminating one, no
torque noise, truncation after ``max_episode_steps = 500`` steps (also when the same step terminates, as
gymnasium's ``TimeLimit`` does) and reset states uniform in ``[-0.1, 0.1]^4``. The observation is
``(cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2)``.

What differs: the state is float32 on ``device`` where gymnasium integrates in float64. The dynamics are
chaotic, so long trajectories drift apart, while one step from the same state agrees to a few 1e-6 along
trajectories; from states with both velocities near their bounds RK4's stages pass through derivatives in
the hundreds and one float32 step can differ by up to ~1e-2 in ``dtheta1``. ``cos(x - pi/2)`` in
``_dsdt`` is written ``sin(x)``; the angle wrap sends the measure-zero input ``-pi + 2 pi k`` to ``pi``
where gymnasium's loop keeps ``-pi``. Actions are not checked: anything but 0, 1, 2 gives a torque of
``action - 1`` instead of gymnasium's assertion error (checking would need a host sync).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs.classic import TensorClassicEnv, wrap_angle

# gymnasium.envs.classic_control.acrobot.AcrobotEnv's constants.
DT = 0.2
LINK_LENGTH_1 = 1.0
LINK_MASS_1 = 1.0
LINK_MASS_2 = 1.0
LINK_COM_POS_1 = 0.5
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0
MAX_VEL_1 = 4 * math.pi
MAX_VEL_2 = 9 * math.pi
GRAVITY = 9.8
RESET_BOUND = 0.1

# _dsdt's terms with the constants folded (m1, m2, l1, lc1, lc2, I1, I2 as above):
#   d1   = m1 lc1^2 + m2 (l1^2 + lc2^2 + 2 l1 lc2 cos t2) + I1 + I2 = D1_0 + D1_COS cos t2
#   d2   = m2 (lc2^2 + l1 lc2 cos t2) + I2                          = D2_0 + D2_COS cos t2
#   phi2 = m2 lc2 g cos(t1 + t2 - pi/2)                             = PHI2 sin(t1 + t2)
#   phi1 = -m2 l1 lc2 sin t2 (dt2^2 + 2 dt2 dt1) + (m1 lc1 + m2 l1) g cos(t1 - pi/2) + phi2
#        = -M2L1LC2 sin t2 (dt2^2 + 2 dt2 dt1) + PHI1 sin t1 + phi2
#   ddt2 = (a + d2 / d1 phi1 - m2 l1 lc2 dt1^2 sin t2 - phi2) / (m2 lc2^2 + I2 - d2^2 / d1)
#   ddt1 = -(d2 ddt2 + phi1) / d1
_M1, _M2, _L1, _LC1, _LC2, _I1, _I2 = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1, LINK_COM_POS_1, LINK_COM_POS_2,
                                       LINK_MOI, LINK_MOI)
D1_0 = _M1 * _LC1**2 + _M2 * (_L1**2 + _LC2**2) + _I1 + _I2
D1_COS = 2 * _M2 * _L1 * _LC2
D2_0 = _M2 * _LC2**2 + _I2
D2_COS = _M2 * _L1 * _LC2
M2L1LC2 = _M2 * _L1 * _LC2
PHI1 = (_M1 * _LC1 + _M2 * _L1) * GRAVITY
PHI2 = _M2 * _LC2 * GRAVITY
DDT2_DENOM_0 = _M2 * _LC2**2 + _I2


def acrobot_spaces() -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """Acrobot-v1's observation and action spaces, built as gymnasium builds them."""
    high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
    return gym.spaces.Box(low=-high, high=high, dtype=np.float32), gym.spaces.Discrete(3)


def dsdt(s: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
    """gymnasium's ``AcrobotEnv._dsdt`` (book variant) for a batch: ``s`` [N, 4], ``torque`` [N] -> [N, 4]."""
    t1, t2, dt1, dt2 = s.unbind(1)
    cos2, sin2 = torch.cos(t2), torch.sin(t2)
    d1 = cos2 * D1_COS + D1_0
    d2 = cos2 * D2_COS + D2_0
    phi2 = torch.sin(t1 + t2) * PHI2
    # phi1 = -m2 l1 lc2 sin t2 (dt2^2 + 2 dt2 dt1) + PHI1 sin t1 + phi2
    phi1 = torch.add(phi2, torch.sin(t1), alpha=PHI1)
    phi1 = torch.addcmul(phi1, sin2, dt2 * (dt2 + 2 * dt1), value=-M2L1LC2)
    ratio = d2 / d1
    numer = torch.addcmul(torque, ratio, phi1) - phi2
    numer = torch.addcmul(numer, sin2, dt1.square(), value=-M2L1LC2)
    ddt2 = numer / torch.addcmul(torch.full_like(d2, DDT2_DENOM_0), ratio, d2, value=-1.0)
    ddt1 = -torch.addcmul(phi1, d2, ddt2) / d1
    return torch.stack((dt1, dt2, ddt1, ddt2), dim=1)


def rk4_step(s: torch.Tensor, torque: torch.Tensor, dt: float = DT) -> torch.Tensor:
    """gymnasium's ``acrobot.rk4(_dsdt, s, [0, dt])`` (one classical Runge-Kutta step) for a batch [N, 4]."""
    k1 = dsdt(s, torque)
    k2 = dsdt(torch.add(s, k1, alpha=dt / 2), torque)
    k3 = dsdt(torch.add(s, k2, alpha=dt / 2), torque)
    k4 = dsdt(torch.add(s, k3, alpha=dt), torque)
    # s + dt / 6 (k1 + 2 k2 + 2 k3 + k4)
    return torch.add(s, torch.add(k1 + k4, k2 + k3, alpha=2.0), alpha=dt / 6)


class AcrobotVecEnv(TensorClassicEnv):
    """``num_envs`` Acrobot-v1 copies; ``state`` is [N, 4]: theta1, theta2, dtheta1, dtheta2 (observations are [N, 6])."""

    state_dim = 4
    spaces = staticmethod(acrobot_spaces)

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 500):
        super().__init__(num_envs, device, max_episode_steps)
        f32 = {"dtype": torch.float32, "device": self.device}
        self._vel_low = torch.tensor([-MAX_VEL_1, -MAX_VEL_2], **f32)
        self._vel_high = torch.tensor([MAX_VEL_1, MAX_VEL_2], **f32)

    def _initial_states(self) -> torch.Tensor:
        out = torch.empty((self.num_envs, 4), dtype=torch.float32, device=self.device)
        return out.uniform_(-RESET_BOUND, RESET_BOUND, generator=self.generator)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        angles = state[:, :2]  # [N, 2]
        # [N, 2, 2] -> [N, 4]: cos t1, sin t1, cos t2, sin t2
        trig = torch.stack((torch.cos(angles), torch.sin(angles)), dim=2).flatten(1)
        return torch.cat((trig, state[:, 2:]), dim=1)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torque = actions.reshape(self.num_envs).to(torch.float32) - 1.0  # AVAIL_TORQUE[a] = a - 1
        ns = rk4_step(self.state, torque)
        angles = wrap_angle(ns[:, :2])
        velocities = torch.clamp(ns[:, 2:], self._vel_low, self._vel_high)
        next_state = torch.cat((angles, velocities), dim=1)
        # -cos(t1) - cos(t1 + t2) > 1
        t1, t2 = angles.unbind(1)
        terminated = torch.cos(t1) + torch.cos(t1 + t2) < -1.0
        reward = terminated.to(torch.float32) - 1.0  # -1, or 0 on the terminating step
        return next_state, reward, terminated
