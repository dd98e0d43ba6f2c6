"""Any gymnasium env behind the VecEnv contract, through gymnasium's own vector envs.

gymnasium's ``SyncVectorEnv`` (one process) or ``AsyncVectorEnv`` (a worker process per env)
runs ``num_envs`` copies of ``gymnasium.make(env.id, ...)`` with same-step autoreset; this
class moves the numpy results to torch tensors on ``device`` and back for actions.

Where gymnasium puts the last observation in same-step autoreset mode (checked against
gymnasium 1.x's ``SyncVectorEnv.step`` and the ``AsyncVectorEnv`` worker): ``infos["final_obs"]``
is a numpy *object* array of length ``num_envs`` holding each finished env's observation
(``None`` elsewhere), ``infos["_final_obs"]`` is its bool mask, and the finished env's own step
info sits under ``infos["final_info"]`` (masked by ``infos["_final_info"]``). Both keys are
absent on steps where no env finished.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from rlrun.checks import ConfigError
from rlrun.envs.base import EpisodeTracker, StepResult, VecEnv

if TYPE_CHECKING:  # the config is only a type here: rlrun.config imports the algorithms, which import envs
    from rlrun.config import EnvConfig

# Where a registered env's entry point lives -> the extra that installs its dependencies.
_EXTRAS = {
    "gymnasium.envs.box2d": 'pip install swig && pip install "gymnasium[box2d]"',
    "gymnasium.envs.mujoco": 'pip install "gymnasium[mujoco]"',
    "ale_py": 'pip install "gymnasium[atari]"',
}


def _make_env(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]) -> gym.Env:
    """Module level (picklable) so async workers can build their env under any start method."""
    if max_episode_steps is not None:
        kwargs = {**kwargs, "max_episode_steps": max_episode_steps}
    return gym.make(env_id, **kwargs)


def _install_hint(env_id: str, entry_point: Any = None) -> str:
    text = f"{env_id} {entry_point if isinstance(entry_point, str) else ''}"
    lowered = text.lower()
    for module, command in _EXTRAS.items():
        if module in text:
            return command
    if any(k in lowered for k in ("lunarlander", "bipedalwalker", "carracing", "box2d")):
        return _EXTRAS["gymnasium.envs.box2d"]
    mujoco_names = ("ant", "halfcheetah", "hopper", "humanoid", "walker2d", "swimmer", "reacher", "pusher",
                    "inverteddoublependulum", "invertedpendulum", "mujoco")
    if any(lowered.startswith(k) or f"/{k}" in lowered for k in mujoco_names):
        return _EXTRAS["gymnasium.envs.mujoco"]
    if env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4"):
        return _EXTRAS["ale_py"]
    return ""


def _check_id(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error as exc:
        hint = _install_hint(env_id)
        extra = f" If it is provided by an optional extra, install it with `{hint}`." if hint else ""
        raise ConfigError(
            f"env.id={env_id!r} is not a registered gymnasium environment ({str(exc).rstrip('.')}).{extra} "
            "Check the spelling and version suffix (for example 'CartPole-v1', 'Pendulum-v1'); "
            "`python -c \"import gymnasium; gymnasium.pprint_registry()\"` lists the ids this install knows."
        ) from exc


class GymVecEnv(VecEnv):
    """``num_envs`` copies of a gymnasium env; Discrete or Box actions, Box observations."""

    def __init__(self, env_cfg: EnvConfig, num_envs: int, device: torch.device):
        self.env_id = env_cfg.id
        self.num_envs = num_envs
        self.device = torch.device(device)
        spec = _check_id(env_cfg.id)

        make = functools.partial(_make_env, env_cfg.id, env_cfg.max_episode_steps, dict(env_cfg.kwargs))
        vector_cls = AsyncVectorEnv if env_cfg.vector_mode == "async" else SyncVectorEnv
        try:
            self.envs = vector_cls([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        except gym.error.DependencyNotInstalled as exc:
            hint = _install_hint(env_cfg.id, spec.entry_point)
            how = f"Install it with `{hint}`" if hint else "Install the missing package"
            raise ConfigError(
                f"env.id={env_cfg.id!r} is registered but its dependencies are missing ({exc}). "
                f"{how}, or choose another env.id."
            ) from exc
        except TypeError as exc:
            if not env_cfg.kwargs:
                raise
            raise ConfigError(
                f"env.kwargs={dict(env_cfg.kwargs)!r} are not accepted by env.id={env_cfg.id!r}: {exc}. "
                "Remove or rename the offending keys."
            ) from exc

        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        try:
            self._check_spaces()
        except ConfigError:
            self.envs.close()
            raise

        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        if not self._discrete:
            space = self.single_action_space
            self._action_low = np.asarray(space.low)
            self._action_high = np.asarray(space.high)
            self._action_dtype = space.dtype
        self.tracker = EpisodeTracker(num_envs, self.device)

    def _check_spaces(self) -> None:
        act, obs = self.single_action_space, self.single_observation_space
        if not isinstance(act, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ConfigError(
                f"env.id={self.env_id!r} has action space {act}, which the gymnasium backend does not support: "
                "it handles Discrete and Box action spaces."
            )
        if not isinstance(obs, gym.spaces.Box):
            raise ConfigError(
                f"env.id={self.env_id!r} has observation space {obs}, which the gymnasium backend does not "
                "support: it handles Box observation spaces only. Choose an env with a Box observation space."
            )

    # ------------------------------------------------------------------ conversions
    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)

    def _actions(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.detach().cpu().numpy()
        if self._discrete:
            return a.astype(np.int64, copy=False).reshape(self.num_envs)
        a = a.reshape((self.num_envs, *self.single_action_space.shape))
        # Clip to the bounds (policies sample unbounded Gaussians), then cast to the env's dtype.
        return np.clip(a, self._action_low, self._action_high).astype(self._action_dtype, copy=False)

    # ------------------------------------------------------------------ contract
    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.envs.reset(seed=seed)
        self.tracker.reset()
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, infos = self.envs.step(self._actions(actions))
        obs = np.asarray(obs, dtype=np.float32)
        final_obs = obs
        mask = infos.get("_final_obs")
        if mask is not None and mask.any():
            final_obs = obs.copy()
            for i in np.flatnonzero(mask):
                final_obs[i] = infos["final_obs"][i]

        reward_t = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device)
        terminated_t = torch.as_tensor(np.asarray(terminated, dtype=np.bool_), device=self.device)
        truncated_t = torch.as_tensor(np.asarray(truncated, dtype=np.bool_), device=self.device)
        obs_t = self._obs(obs)
        info: dict[str, Any] = self.tracker.update(reward_t, terminated_t | truncated_t)
        info["final_obs"] = obs_t.clone() if final_obs is obs else self._obs(final_obs)
        return obs_t, reward_t, terminated_t, truncated_t, info

    def close(self) -> None:
        envs = getattr(self, "envs", None)
        if envs is not None:
            envs.close()
            self.envs = None
