"""Env backends behind one factory. See :mod:`rlrun.envs.base` for the contract."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch

from rlrun.checks import ConfigError
from rlrun.envs.base import EpisodeTracker, VecEnv

if TYPE_CHECKING:  # the config is only a type here: rlrun.config imports the algorithms, which import envs
    from rlrun.config import EnvConfig

# Gymnasium ids that have a tensor-native twin in this package: "module:Class", built by make_vec_env as
# Class(num_envs, device, max_episode_steps=...) (the class's default is gymnasium's registered time limit).
TORCH_ENVS = {
    "Acrobot-v1": "rlrun.envs.acrobot:AcrobotVecEnv",
    "CartPole-v1": "rlrun.envs.cartpole:CartPoleVecEnv",
    "MountainCar-v0": "rlrun.envs.mountain_car:MountainCarVecEnv",
    "MountainCarContinuous-v0": "rlrun.envs.mountain_car:MountainCarContinuousVecEnv",
    "Pendulum-v1": "rlrun.envs.pendulum:PendulumVecEnv",
}


def is_game_id(env_id: str) -> bool:
    """A two-player tensor board game (rlrun.search.games): TicTacToe, ConnectFour."""
    from rlrun.search.games import GAMES

    return env_id in GAMES


def is_ale_id(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def torch_env_class(env_id: str) -> type[VecEnv]:
    """The tensor-native class TORCH_ENVS names for ``env_id`` (imported on first use)."""
    module, _, name = TORCH_ENVS[env_id].partition(":")
    return getattr(importlib.import_module(module), name)


def resolve_backend(env_cfg: EnvConfig) -> str:
    """The backend ``env.backend=auto`` stands for, or the one asked for if it can serve the id.

    auto: torch where a tensor-native env exists and no ``env.kwargs`` are given (those are
    gymnasium.make's, and the tensor envs take none), ale for Atari ids, else gymnasium.
    """
    backend = env_cfg.backend
    if is_game_id(env_cfg.id):
        if backend not in ("auto", "torch"):
            raise ConfigError(f"env.backend={backend} cannot play {env_cfg.id}: the board games exist as tensor "
                              "rules only (env.backend=torch or auto).")
        return "torch"
    if backend == "auto":
        if env_cfg.id in TORCH_ENVS and not env_cfg.kwargs:
            return "torch"
        return "ale" if is_ale_id(env_cfg.id) else "gymnasium"
    if backend == "torch" and env_cfg.id not in TORCH_ENVS:
        raise ConfigError(
            f"env.backend=torch has no tensor-native version of env.id={env_cfg.id!r}: "
            f"it exists for {', '.join(sorted(TORCH_ENVS))}. Use env.backend=gymnasium (or auto)."
        )
    if backend == "torch" and env_cfg.kwargs:
        raise ConfigError(
            f"env.backend=torch builds the tensor-native {env_cfg.id}, which takes no env.kwargs "
            f"(got {dict(env_cfg.kwargs)!r}; they are passed to gymnasium.make). "
            "Use env.backend=gymnasium (or auto) to pass them."
        )
    if backend == "ale" and not is_ale_id(env_cfg.id):
        raise ConfigError(
            f"env.backend=ale needs an Atari id such as 'ALE/Pong-v5', not env.id={env_cfg.id!r}. "
            "Use env.backend=gymnasium (or auto) for other environments."
        )
    return backend


def make_vec_env(
    env_cfg: EnvConfig, num_envs: int, device: torch.device, *, training: bool = True
) -> VecEnv:
    """Build ``num_envs`` copies of ``env_cfg.id`` on ``device`` with the resolved backend.

    ``training=False`` builds evaluation envs: no Atari life-loss episodes and no reward clipping.
    """
    backend = resolve_backend(env_cfg)
    if is_game_id(env_cfg.id):
        from rlrun.envs.games import make_game_env

        return make_game_env(env_cfg, num_envs, device, training=training)
    if backend == "torch":
        cls = torch_env_class(env_cfg.id)
        # env.max_episode_steps=null keeps the class's default, gymnasium's registered limit for the id
        limit = {"max_episode_steps": env_cfg.max_episode_steps} if env_cfg.max_episode_steps else {}
        return cls(num_envs, device, **limit)
    if backend == "ale":
        from rlrun.envs.atari import AtariVecEnv

        return AtariVecEnv(env_cfg, num_envs, device, training=training)
    from rlrun.envs.gym import GymVecEnv

    return GymVecEnv(env_cfg, num_envs, device)


__all__ = ["TORCH_ENVS", "EpisodeTracker", "VecEnv", "is_ale_id", "is_game_id", "make_vec_env", "resolve_backend", "torch_env_class"]
