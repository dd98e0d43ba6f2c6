"""Envs that draw themselves, for ``rlrun eval --video`` and ``--render human``.

One gymnasium env at a time (a :class:`SingleEnv`, a batch of one), preprocessed like its training
backend so the agent sees the observations it was trained on: the torch backend's CartPole is
gymnasium's CartPole-v1 drawn by :class:`CartPoleFrames` (numpy, no pygame), the ale backend's
games are gymnasium ALE envs at frame skip 1 under :class:`AtariFrames`, and the gymnasium
backend's envs draw themselves.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs import resolve_backend
from rlrun.envs.atari import fire_variants
from rlrun.envs.base import EpisodeTracker, StepResult, VecEnv
from rlrun.envs.cartpole import LENGTH, X_THRESHOLD

if TYPE_CHECKING:  # the config is only a type here: rlrun.config imports the algorithms, which import envs
    from rlrun.config import EnvConfig


def has_display() -> bool:
    """Whether a window can open: on Linux and other X11/Wayland systems, $DISPLAY or $WAYLAND_DISPLAY is set."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class RenderError(ValueError):
    """An env that cannot draw itself here (a missing package, no such render mode); the message says why."""


class SingleEnv(VecEnv):
    """One gymnasium env as a batch of one, on ``device``, for the rendered episodes.

    It does not autoreset: :func:`rlrun.run.evaluate` stops at the end of the first episode, and a reset there
    would start an empty recording in ``RecordVideo``. Observations become float32 like
    :class:`~rlrun.envs.gym.GymVecEnv`'s, or stay uint8 for Atari frames like the ale backend's.
    """

    def __init__(self, env: gym.Env, device: torch.device, dtype: torch.dtype = torch.float32):
        self.env, self.num_envs, self.device, self.dtype = env, 1, torch.device(device), dtype
        self.single_observation_space, self.single_action_space = env.observation_space, env.action_space
        self.tracker = EpisodeTracker(1, self.device)

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), device=self.device).to(self.dtype).unsqueeze(0)  # [1, *obs_shape]

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        self.tracker.reset()
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        action = actions[0].detach().cpu().numpy()
        space = self.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            action = int(action)
        else:  # policies sample unbounded Gaussians: clip to the bounds as the gymnasium backend does
            action = np.clip(action, space.low, space.high).astype(space.dtype)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        obs_t = self._obs(obs)
        reward_t = torch.tensor([float(reward)], dtype=torch.float32, device=self.device)
        terminated_t = torch.tensor([bool(terminated)], device=self.device)
        truncated_t = torch.tensor([bool(truncated)], device=self.device)
        info = self.tracker.update(reward_t, terminated_t | truncated_t)
        info["final_obs"] = obs_t
        return obs_t, reward_t, terminated_t, truncated_t, info

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            env.close()


def make_rendered_env(env_cfg: EnvConfig, render_mode: str, device: torch.device,
                      video_dir: Path | None = None) -> SingleEnv:
    """One env of ``env_cfg`` that draws itself (``rgb_array`` or ``human``), preprocessed like its backend's.

    torch backend: gymnasium's CartPole-v1 (the same dynamics in float64), drawn by :class:`CartPoleFrames`.
    ale backend: gymnasium's ALE env at frameskip 1 under :class:`AtariFrames`. gymnasium backend: the env
    itself. With ``video_dir``, gymnasium's ``RecordVideo`` writes one ``eval-episode-<i>.mp4`` per episode.
    """
    backend = resolve_backend(env_cfg)
    mujoco = backend == "gymnasium" and "mujoco" in str(gym.spec(env_cfg.id).entry_point)
    fps = None
    if backend == "ale":
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(env_cfg.id, frameskip=1, repeat_action_probability=env_cfg.repeat_action_probability,
                       full_action_space=False, obs_type="grayscale", max_num_frames_per_episode=0,
                       render_mode=render_mode)
        env = AtariFrames(env, env_cfg)
        fps = max(1, round(60 / env_cfg.frame_skip))  # one frame per agent step; the Atari runs at 60 Hz
        dtype = torch.uint8
    else:
        if mujoco and render_mode == "rgb_array" and not has_display():
            os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's off-screen renderer; glfw needs a display
        limit = {"max_episode_steps": env_cfg.max_episode_steps} if env_cfg.max_episode_steps else {}
        kwargs = {} if backend == "torch" else dict(env_cfg.kwargs)
        env = gym.make(env_cfg.id, render_mode=render_mode, **limit, **kwargs)
        if render_mode not in env.metadata.get("render_modes", []):
            env.close()
            raise RenderError(f"{env_cfg.id} cannot draw itself in render mode {render_mode!r} (it offers "
                            f"{env.metadata.get('render_modes', [])}); evaluate it without --video / --render.")
        if env_cfg.id == "CartPole-v1" and render_mode == "rgb_array":
            env = CartPoleFrames(env)
        dtype = torch.float32
    try:  # draw once now, so an env that cannot draw itself is refused with a message
        env.reset(seed=0)
        env.render()
    except gym.error.DependencyNotInstalled as err:
        env.close()
        extra = ' (pip install "rlrun[video]" installs pygame with MoviePy)' if "pygame" in str(err) else ""
        raise RenderError(f"Drawing {env_cfg.id} needs a package that is not installed: {err}{extra}. Its scores "
                          "(without --video / --render) need nothing more.") from None
    except Exception as err:  # noqa: BLE001 - the env's own error, e.g. mujoco.FatalError (a bare Exception)
        env.close()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        hint = " MuJoCo needs an OpenGL platform: set MUJOCO_GL=egl or MUJOCO_GL=osmesa." if mujoco else ""
        raise RenderError(f"{env_cfg.id} cannot draw itself in render mode {render_mode!r} here "
                        f"({type(err).__name__}: {first}).{hint} Its scores (without --video / --render) need "
                        "nothing more.") from None
    if video_dir is not None:
        try:
            env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, name_prefix="eval",
                                           fps=fps)
        except gym.error.DependencyNotInstalled:
            env.close()
            raise RenderError('--video writes mp4 files with MoviePy, which is not installed: '
                            'pip install "rlrun[video]".') from None
    return SingleEnv(env, device, dtype)


class AtariFrames(gym.Wrapper):
    """ale_py's vector-env preprocessing (the ale backend's) on one gymnasium ALE env running at frameskip 1.

    An agent step repeats the action ``frame_skip`` frames, sums the raw reward and keeps the pixel-wise max of
    the last two grey frames, shrunk to 84x84 by area averaging; the observation stacks the last ``frame_stack``
    of those, oldest first, zeros at a game start (``uint8 [frame_stack, 84, 84]``). A game starts with no-op
    frames (0 .. noop_max - 1, plus one without FIRE) and FIRE where the game has it; after a life loss the next
    step's action gets FIRE added, as the ale backend does (:func:`rlrun.envs.atari.fire_variants`). The episode is truncated
    at the agent step that reaches ``max_episode_frames`` frames, or after ``max_episode_steps`` steps.
    From the same emulator state the frames equal the ale backend's up to one grey level on rare pixels
    (rounding in the resize); the no-op counts are drawn from another random stream.
    """

    def __init__(self, env: gym.Env, env_cfg: EnvConfig):
        super().__init__(env)
        self.frame_skip, self.noop_max = env_cfg.frame_skip, env_cfg.noop_max
        meanings = env.unwrapped.get_action_meanings()
        self.fire = meanings.index("FIRE") if env_cfg.fire_reset and "FIRE" in meanings else None
        self.add_fire = fire_variants(meanings) if self.fire is not None else None  # after a life loss
        self.fire_due, self.lives = False, 0
        self.max_steps = math.ceil(env_cfg.max_episode_frames / env_cfg.frame_skip)
        if env_cfg.max_episode_steps is not None:
            self.max_steps = min(self.max_steps, env_cfg.max_episode_steps)
        height, width = env.observation_space.shape
        self.rows, self.cols = _area_weights(height, 84), _area_weights(width, 84)  # [84, H], [84, W]
        self.observation_space = gym.spaces.Box(0, 255, (env_cfg.frame_stack, 84, 84), np.uint8)
        self.stack = np.zeros(self.observation_space.shape, np.uint8)
        self.steps = 0

    def _push(self, grey: np.ndarray) -> np.ndarray:
        small = self.rows @ (grey.astype(np.float32) @ self.cols.T)  # [84, 84], the horizontal pass first
        self.stack = np.roll(self.stack, -1, axis=0)
        self.stack[-1] = np.rint(small).clip(0, 255).astype(np.uint8)
        return self.stack.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        grey, info = self.env.reset(seed=seed, options=options)
        noops = int(self.np_random.integers(self.noop_max)) + (self.fire is None) if self.noop_max else 0
        for action in [0] * noops + ([self.fire] if self.fire is not None else []):
            grey, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                grey, info = self.env.reset()
        self.stack[:] = 0
        self.steps = 0
        self.fire_due, self.lives = False, int(info.get("lives", 0))
        return self._push(grey), info

    def step(self, action: int):
        if self.fire_due:  # the ale backend's FIRE after a life loss, added to this step's action
            action, self.fire_due = int(self.add_fire[action]), False
        total, frames = 0.0, []
        for _ in range(self.frame_skip):
            grey, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            frames = [*frames[-1:], grey]
            if terminated or truncated:
                break
        self.steps += 1
        truncated = truncated or self.steps >= self.max_steps
        lives = int(info.get("lives", 0))
        self.fire_due = self.add_fire is not None and lives < self.lives and not (terminated or truncated)
        self.lives = lives
        obs = self._push(np.maximum(frames[0], frames[-1]))
        return obs, total, terminated, truncated, info


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] float32: output pixel i averages input pixels over [i, i + 1) * size_in / size_out."""
    scale = size_in / size_out
    edges = np.arange(size_out + 1) * scale
    pixels = np.arange(size_in)
    overlap = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)  # [size_out, size_in]
    return (np.clip(overlap, 0.0, None) / scale).astype(np.float32)


class CartPoleFrames(gym.Wrapper):
    """Draws CartPole-v1 frames (600x400 RGB) from the env's state with numpy, so videos need no pygame."""

    WIDTH, HEIGHT = 600, 400
    SCALE = WIDTH / (2 * X_THRESHOLD)  # pixels per metre: the track from -2.4 to 2.4 fills the width
    CART_W, CART_H, TRACK_Y = 50, 30, 300
    POLE_W, POLE_LEN = 10, SCALE * 2 * LENGTH

    def render(self) -> np.ndarray:
        x, _, theta, _ = self.env.unwrapped.state
        img = np.full((self.HEIGHT, self.WIDTH, 3), 255, np.uint8)
        img[self.TRACK_Y] = 0
        cx = x * self.SCALE + self.WIDTH / 2
        x0, x1 = max(0, round(cx - self.CART_W / 2)), min(self.WIDTH, round(cx + self.CART_W / 2))
        img[self.TRACK_Y - self.CART_H // 2: self.TRACK_Y + self.CART_H // 2, x0:x1] = 0
        # The pole: pixels whose centre lies within the rotated rectangle standing on the axle.
        ax, ay = cx, self.TRACK_Y - self.CART_H / 4
        reach = int(self.POLE_LEN + self.POLE_W)
        r0, c0 = max(0, int(ay) - reach), max(0, int(ax) - reach)
        r1, c1 = min(self.HEIGHT, int(ay) + reach), min(self.WIDTH, int(ax) + reach)
        if r1 > r0 and c1 > c0:
            dy, dx = np.mgrid[r0:r1, c0:c1] + 0.5
            dx, dy = dx - ax, dy - ay
            along = dx * math.sin(theta) - dy * math.cos(theta)  # up the pole (theta > 0 leans right)
            across = dx * math.cos(theta) + dy * math.sin(theta)
            pole = (along >= 0) & (along <= self.POLE_LEN) & (np.abs(across) <= self.POLE_W / 2)
            img[r0:r1, c0:c1][pole] = (202, 152, 101)
            axle = dx**2 + dy**2 <= 5**2
            img[r0:r1, c0:c1][axle] = (129, 132, 203)
        return img


# --------------------------------------------------------------------------- the command
