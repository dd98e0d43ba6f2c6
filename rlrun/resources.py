"""Memory a run needs before it starts, checked against what the device has, so that an impossible request
(``env.num_envs=100000000``, a replay buffer larger than the machine) is refused in one paragraph before
anything is allocated, instead of dying in a 51 GB allocation traceback.

The estimate counts the large, preallocated storage: the rollout of the on-policy family
(:class:`rlrun.loops.RolloutBuffer` plus the values and advantages computed from it), the replay buffer of the
DQN family (:class:`rlrun.buffers.ReplayBuffer`'s layout), and the tensor-native envs' own state. Networks,
optimisers and the allocator's slack are left out: a run refused here could never start, and one let through
can still run out later (that ends in a :class:`ResourceError` too, from :func:`rlrun.train.train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from rlrun.algos import ALGOS
from rlrun.algos.alphazero import AlphaZeroConfig
from rlrun.config import TrainConfig
from rlrun.envs import is_game_id, resolve_backend
from rlrun.envs.games import GameSpace


class ResourceError(RuntimeError):
    """The run needs more memory than the device has; the message says how much, for what, and what to lower."""


@dataclass
class Need:
    """One piece of storage: what it is, its bytes, and the config keys that size it."""

    what: str
    nbytes: int
    keys: str


def observation_space(cfg: TrainConfig) -> gym.Space | None:
    """The env's observation space without building the batch of envs (None if it cannot be told cheaply)."""
    env = cfg.env
    if is_game_id(env.id):
        from rlrun.search.games import GAMES

        return GameSpace(GAMES[env.id]())
    backend = resolve_backend(env)
    if backend == "ale":
        return gym.spaces.Box(0, 255, (env.frame_stack, 84, 84), np.uint8)
    try:  # one gymnasium env, made and closed (milliseconds for classic control and MuJoCo); the tensor-native
        # envs have gymnasium's spaces (tests/test_classic_parity.py)
        single = gym.make(env.id, **dict(env.kwargs))
    except Exception:  # noqa: BLE001 - an unknown id or a missing extra: building the envs says what is wrong
        return None
    try:
        return single.observation_space
    finally:
        single.close()


def _obs_bytes(space: gym.Space) -> int:
    shape = space.shape or ()
    itemsize = 1 if space.dtype == np.uint8 else 4  # everything else is stored as float32
    return int(math.prod(shape)) * itemsize


def estimate(cfg: TrainConfig, space: gym.Space) -> list[Need]:
    """The big preallocated storage of ``cfg`` on the training device, piece by piece."""
    algo, n = cfg.algo, cfg.env.num_envs
    obs = _obs_bytes(space)
    needs = []
    if ALGOS[algo.name].loop == "on_policy":  # the policy-gradient family and PQN
        hidden = max(algo.hidden_sizes)
        per_step = 2 * obs + 8 + 4 + 4 + 2  # obs and next obs, action, log-prob, reward, terminated, truncated
        per_step += 4 * 4 + 2 * 4 * hidden  # values, next values, advantages, returns; the value pass's activations
        needs.append(Need("rollout storage", algo.num_steps * n * per_step,
                          f"algo.num_steps={algo.num_steps} x env.num_envs={n} transitions: lower env.num_envs "
                          "or algo.num_steps"))
    elif isinstance(algo, AlphaZeroConfig):
        if not isinstance(space, GameSpace):
            return []  # not a board game: build() refuses it
        game = space.game
        per_position = game.state_size + 4 * game.num_actions + 4  # state, search policy, outcome
        needs.append(Need("position replay", algo.replay_size * per_position,
                          f"algo.replay_size={algo.replay_size} positions: lower algo.replay_size"))
        needs.append(Need("game histories", n * game.rows * game.cols * per_position,
                          f"env.num_envs={n} games in progress: lower env.num_envs"))
    else:  # the DQN family
        frames = space.dtype == np.uint8 and len(space.shape or ()) == 3
        per_transition = (obs // space.shape[0] + 7149 - 7056) if frames else 2 * obs + 16  # see rlrun.buffers
        capacity = algo.buffer_size if algo.replay else n * (algo.n_step + 2)
        needs.append(Need("replay buffer", capacity * per_transition,
                          f"algo.buffer_size={algo.buffer_size} transitions: lower algo.buffer_size"))
    if resolve_backend(cfg.env) == "torch":
        envs = n + cfg.eval.episodes
        needs.append(Need("tensor envs", envs * 8 * obs, f"env.num_envs={n}: lower env.num_envs"))
    return needs


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's MemAvailable (None where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gigabytes(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def check(cfg: TrainConfig, device: torch.device) -> None:
    """Raise :class:`ResourceError` if the storage ``cfg`` asks for cannot fit in ``device``'s free memory."""
    space = observation_space(cfg)
    free = available_bytes(device)
    if space is None or free is None:
        return
    needs = estimate(cfg, space)
    total = sum(need.nbytes for need in needs)
    if total <= free:
        return
    parts = "; ".join(f"{need.what} {gigabytes(need.nbytes)} ({need.keys})" for need in needs
                      if need.nbytes >= 0.05 * total)
    raise ResourceError(
        f"This run needs at least {gigabytes(total)} of memory on {device} before training starts, but "
        f"{gigabytes(free)} are free: {parts}. Nothing was allocated and no run folder was written.")
