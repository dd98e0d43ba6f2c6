"""Typed configuration: one dataclass per config group, each field typed and documented once.

Hydra composes YAML from ``rlrun/conf``; :func:`load` merges each group onto its dataclass
(types checked by OmegaConf), builds the dataclasses (ranges checked in ``__post_init__``)
and turns every problem into a :class:`ConfigError` whose message names the key, the bad
value and what would be accepted. Nothing is derived back into the config: derived values
(batch size, number of iterations) are properties.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value that cannot work; the message is meant for the user as it is."""


def _check(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted: expected {accepted}.")


def _positive(key: str, value: Any) -> None:
    _check(value is not None and value > 0, key, value, "a number > 0")


def _unit(key: str, value: float, *, closed: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value <= 1.0
    _check(ok, key, value, "a number in [0, 1]" if closed else "a number in (0, 1]")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, "one of " + ", ".join(choices))


# --------------------------------------------------------------------------- env
ENV_BACKENDS = ("auto", "torch", "gymnasium", "ale")


@dataclass
class EnvConfig:
    """Which environment, through which backend, how many copies."""

    name: str = "CartPole"
    """Short name used in run-folder names and plots."""
    id: str = "CartPole-v1"
    """Gymnasium id (``ALE/Pong-v5`` style ids go to the ale backend)."""
    backend: str = "auto"
    """auto | torch | gymnasium | ale. auto: torch where a tensor-native env exists, ale for ALE ids, else gymnasium."""
    num_envs: int = 8
    """Environments stepped together for training."""
    vector_mode: str = "sync"
    """gymnasium backend only: sync (one process) or async (one worker process per env)."""
    max_episode_steps: Optional[int] = None
    """Time limit in agent steps; None keeps the env's registered limit."""
    reward_threshold: Optional[float] = None
    """Evaluation return that counts as solved; None takes the gymnasium spec's value."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gymnasium.make (gymnasium backend)."""
    # Atari (ale backend) preprocessing, each a switch.
    frame_skip: int = 4
    """Agent step = this many emulator frames (max-pooled over the last two)."""
    frame_stack: int = 4
    """Observation = this many most recent 84x84 grey frames."""
    noop_max: int = 30
    """Up to this many no-op actions at reset (random starts)."""
    fire_reset: bool = True
    """Press FIRE at reset in games that need it."""
    episodic_life: bool = True
    """Training only: losing a life ends the episode for bootstrapping (not for statistics)."""
    clip_rewards: bool = True
    """Training only: reward -> sign(reward)."""
    repeat_action_probability: float = 0.0
    """Sticky actions (0.25 in Machado et al. 2018's protocol)."""
    max_episode_frames: int = 108000
    """Emulator frames before an Atari episode is truncated (30 minutes)."""
    num_threads: int = 0
    """ale backend worker threads (0: one per env, capped by the cores)."""

    def __post_init__(self) -> None:
        _choice("env.backend", self.backend, ENV_BACKENDS)
        _choice("env.vector_mode", self.vector_mode, ("sync", "async"))
        _check(self.num_envs >= 1, "env.num_envs", self.num_envs, "an integer >= 1")
        if self.max_episode_steps is not None:
            _check(self.max_episode_steps >= 1, "env.max_episode_steps", self.max_episode_steps, "an integer >= 1 or null")
        _check(self.frame_skip >= 1, "env.frame_skip", self.frame_skip, "an integer >= 1")
        _check(self.frame_stack >= 1, "env.frame_stack", self.frame_stack, "an integer >= 1")
        _check(self.noop_max >= 0, "env.noop_max", self.noop_max, "an integer >= 0")
        _unit("env.repeat_action_probability", self.repeat_action_probability)
        _check(self.num_threads >= 0, "env.num_threads", self.num_threads, "an integer >= 0")
