"""Atari backend: ALE's C++ vector env behind the :class:`~rlrun.envs.base.VecEnv` contract.

The emulators and the image preprocessing run in ``ale_py``'s worker threads
(:class:`ale_py.vector_env.AtariVectorEnv`); this module adds what our contract needs on
top: torch tensors, episodic life, reward clipping, the episode time limit, correct
``info["final_obs"]`` and whole-game episode statistics.

Preprocessing (the DQN / PPO standard, each set by an :class:`~rlrun.config.EnvConfig` field):

* 84x84 greyscale frames (area interpolation);
* ``frame_skip``: one agent step repeats the action for that many emulator frames and
  returns the pixel-wise max of the last two (removes sprite flicker);
* ``frame_stack``: the observation is the last ``frame_stack`` frames, oldest first,
  ``uint8 [N, frame_stack, 84, 84]``; at a game start the older slots are zeros;
* ``noop_max``: a random number (0 .. ``noop_max - 1``, one less after FIRE) of no-op
  frames at every game start;
* ``fire_reset``: in games whose action set has FIRE, FIRE is pressed at every game start
  and after every life loss (Breakout, for one, serves no new ball until it is pressed), in
  training and evaluation envs alike; see "FIRE after a life loss" below;
* ``repeat_action_probability``: sticky actions (0 = deterministic emulator);
* ``max_episode_frames``: a game is truncated after this many emulator frames (at the
  agent step that reaches it); ``max_episode_steps``, when set, truncates after that many
  agent steps as well;
* the minimal action set of the game (``Discrete(n)``).

Training only (``training=True``); evaluation envs (``training=False``) never use them:

* ``episodic_life``: losing a life sets ``terminated`` (no bootstrapping across it), but the
  game goes on: there is no reset, ``obs`` is the next frame of the same game and
  ``info["final_obs"]`` equals ``obs`` for that env;
* ``clip_rewards``: the returned reward is ``sign(raw reward)``.

Episode statistics (``info["episode_done" | "episode_return" | "episode_length"]``) always
count whole games and the raw, unclipped score, whatever the two switches say.

How it is done: ``ale_py`` runs with its own ``episodic_life``, ``life_loss_info`` and
``reward_clipping`` off, in ``SAME_STEP`` autoreset mode, with its frame limit disabled. A
life loss is read from ``info["lives"]`` dropping without a game over; clipping is done
here after the raw reward has gone into the :class:`~rlrun.envs.base.EpisodeTracker`; the
time limit is counted here and the envs that hit it are reset with a masked reset, so their
``final_obs`` is the full last observation. Known ``ale_py`` quirk: when a game ends in the
middle of a frame skip, the newest frame of ``final_obs`` is built from the frames captured
up to the previous step (it repeats the previous newest frame); that row is terminal, so no
value is bootstrapped from it. Where no env finished, ``info["final_obs"]`` is the ``obs``
tensor itself (no copy); treat both as read-only.

FIRE after a life loss: ``ale_py`` presses FIRE only when it resets a game. Its vector
interface cannot step a subset of the envs (``send`` takes exactly one action per env, mapped
to the envs of the last ``recv``; only ``reset`` takes env ids, and it restarts the game), so
the extra internal FIRE step of the usual ``FireResetEnv`` wrapper cannot be done for just the
envs that lost a life. Instead, the agent step that follows a life loss has FIRE added to the
agent's action for that env: NOOP becomes FIRE, RIGHT becomes RIGHTFIRE where the game's
action set has it, and otherwise the action is replaced by FIRE (Breakout: RIGHT, LEFT ->
FIRE). Nothing else changes: that step's reward and frames are what the agent gets, as usual.
The cost is at most one agent step (``frame_skip`` frames) of the agent's movement per life
lost; stepping every env once more would instead move the envs that lost nothing. When the
life-losing step also ends the game (game over or time limit), the reset presses FIRE itself.
With sticky actions every frame of that step may repeat the previous action (probability
``repeat_action_probability ** frame_skip``, 0.4% at 0.25 and skip 4); that FIRE is then lost,
as it is with ``FireResetEnv``.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlrun.checks import ConfigError
from rlrun.envs.base import EpisodeTracker, StepResult, VecEnv

if TYPE_CHECKING:  # the config is only a type here: rlrun.config imports the algorithms, which import envs
    from rlrun.config import EnvConfig

_INSTALL_HINT = (
    "The Atari backend (env.backend=ale, used for ids such as 'ALE/Pong-v5' or "
    "'PongNoFrameskip-v4') needs the Arcade Learning Environment, and the package ale_py "
    "could not be imported{detail}. Install it with `pip install \"rlrun[atari]\"` (or "
    "`pip install ale-py`, which ships the game ROMs), or pick a non-Atari env.id."
)

# ale_py's own frame limit is switched off (we count it here); any value this big is never hit.
_ALE_NO_FRAME_LIMIT = 2**30


def _import_ale() -> tuple[Any, Any]:
    """``(ale_py.roms, ale_py.vector_env)`` or a :class:`ConfigError` that says how to install them."""
    try:
        from ale_py import roms, vector_env
    except ImportError as exc:  # missing, or a broken install
        raise ConfigError(_INSTALL_HINT.format(detail=f" ({exc})")) from exc
    return roms, vector_env


def _normalise(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def game_name(env_id: str, rom_ids: list[str] | None = None) -> str:
    """The ALE ROM name for a gymnasium Atari id: ``'ALE/Pong-v5'``, ``'PongNoFrameskip-v4'`` -> ``'pong'``.

    ``'ALE/MsPacman-v5'`` -> ``'ms_pacman'``. Raises :class:`ConfigError` for RAM variants and
    for games that ``ale_py`` does not know.
    """
    if rom_ids is None:
        roms, _ = _import_ale()
        rom_ids = list(roms.get_all_rom_ids())
    base = env_id.split("/", 1)[1] if env_id.startswith("ALE/") else env_id
    base = re.sub(r"-v\d+$", "", base)
    if "-ram" in base:
        raise ConfigError(
            f"env.id={env_id!r} asks for RAM observations; the ale backend serves 84x84 pixel "
            "observations only. Use the pixel id (e.g. 'ALE/Pong-v5') or env.backend=gymnasium."
        )
    for suffix in ("NoFrameskip", "Deterministic"):
        base = base.removesuffix(suffix)
    by_key = {_normalise(rom): rom for rom in rom_ids}
    rom = by_key.get(_normalise(base))
    if rom is None:
        raise ConfigError(
            f"env.id={env_id!r}: the game {base!r} is not one of the {len(rom_ids)} Atari games "
            "that ale_py ships (e.g. Pong, Breakout, SpaceInvaders, MsPacman; ids look like "
            "'ALE/Pong-v5' or 'PongNoFrameskip-v4')."
        )
    return rom


def fire_variants(action_set: list[Any]) -> np.ndarray | None:
    """``int64 [n]``: for each action of the minimal ``action_set``, the index of the same action with FIRE pressed.

    NOOP -> FIRE, RIGHT -> RIGHTFIRE, UPLEFT -> UPLEFTFIRE, ...; actions that already fire map
    to themselves, and an action whose FIRE variant the set lacks maps to FIRE. ``None`` when
    the game has no FIRE action.
    """
    names = [getattr(a, "name", str(a)) for a in action_set]
    index = {name: i for i, name in enumerate(names)}
    if "FIRE" not in index:
        return None
    fire = index["FIRE"]
    table = [i if "FIRE" in name else index.get("FIRE" if name == "NOOP" else name + "FIRE", fire)
             for i, name in enumerate(names)]
    return np.asarray(table, dtype=np.int64)


def _ale_vector_env(vector_env, game: str, num_envs: int, env_cfg: EnvConfig):
    """ale_py's C++ vector env with the preprocessing that :class:`AtariVecEnv` leaves to it, and none of what
    it does itself (episodic life, life-loss info, reward clipping, the frame limit)."""
    return vector_env.AtariVectorEnv(
        game,
        num_envs,
        num_threads=env_cfg.num_threads,
        max_num_frames_per_episode=_ALE_NO_FRAME_LIMIT,
        repeat_action_probability=env_cfg.repeat_action_probability,
        full_action_space=False,
        autoreset_mode=AutoresetMode.SAME_STEP,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=env_cfg.frame_stack,
        frameskip=env_cfg.frame_skip,
        maxpool=True,
        noop_max=env_cfg.noop_max,
        episodic_life=False,  # ale_py's version resets the whole game on a life loss
        life_loss_info=False,  # life losses are detected here from info["lives"]
        reward_clipping=False,  # the raw reward is needed for statistics; clipped here
        use_fire_reset=env_cfg.fire_reset,
    )


class AtariVecEnv(VecEnv):
    """``num_envs`` preprocessed Atari games stepped by ALE's threads; see the module docstring."""

    def __init__(
        self,
        env_cfg: EnvConfig,
        num_envs: int,
        device: torch.device,
        *,
        training: bool = True,
    ):
        roms, vector_env = _import_ale()
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r} is not accepted: expected an integer >= 1.")
        if env_cfg.max_episode_frames is None or env_cfg.max_episode_frames < 1:
            raise ConfigError(
                f"env.max_episode_frames={env_cfg.max_episode_frames!r} is not accepted: "
                "expected an integer >= 1 (108000 = 30 minutes of play is standard)."
            )
        self.game = game_name(env_cfg.id, list(roms.get_all_rom_ids()))
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.training = training
        self.episodic_life = bool(training and env_cfg.episodic_life)
        self.clip_rewards = bool(training and env_cfg.clip_rewards)
        self.frame_skip = env_cfg.frame_skip
        self.frame_stack = env_cfg.frame_stack

        # The time limit in agent steps: the step that reaches max_episode_frames emulator frames.
        limit = math.ceil(env_cfg.max_episode_frames / env_cfg.frame_skip)
        if env_cfg.max_episode_steps is not None:
            limit = min(limit, env_cfg.max_episode_steps)
        self.max_steps = limit

        self._env = _ale_vector_env(vector_env, self.game, num_envs, env_cfg)
        self.single_observation_space = gym.spaces.Box(
            0, 255, (env_cfg.frame_stack, 84, 84), np.uint8
        )
        self.single_action_space = gym.spaces.Discrete(int(self._env.single_action_space.n))
        self._num_actions = int(self.single_action_space.n)
        # FIRE after a life loss (module docstring): action index -> the index with FIRE added.
        self._add_fire = fire_variants(self._env.ale.get_action_set()) if env_cfg.fire_reset else None
        self._fire_due: np.ndarray | None = None  # [N] bool, None while no env waits for its FIRE

        self._tracker = EpisodeTracker(num_envs, self.device)
        self._steps = np.zeros(num_envs, dtype=np.int64)  # agent steps into the current game
        self._lives = np.zeros(num_envs, dtype=np.int32)
        self._needs_reset = True

    # ------------------------------------------------------------------ helpers
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # ale_py hands out a fresh buffer every call, so sharing its memory is safe.
        return torch.from_numpy(array).to(self.device)

    def _check_open(self) -> None:
        if self._env is None:
            raise RuntimeError("AtariVecEnv is closed.")

    def _checked_actions(self, actions: torch.Tensor) -> np.ndarray:
        """The actions as ale_py takes them, [N] int64 on the host; refuses a wrong shape or range."""
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("AtariVecEnv.step() called before reset().")
        act = torch.as_tensor(actions).detach().to("cpu", torch.int64).numpy().reshape(-1)
        if act.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape [{self.num_envs}], got {tuple(torch.as_tensor(actions).shape)}"
            )
        # An action out of range would make an ale_py worker throw and the batch never complete.
        if act.min() < 0 or act.max() >= self._num_actions:
            raise ValueError(
                f"actions must lie in [0, {self._num_actions}) for {self.game}, got {act.tolist()}"
            )
        return act

    # ------------------------------------------------------------------ contract
    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._check_open()
        if seed is None:
            obs, info = self._env.reset()
        else:
            obs, info = self._env.reset(seed=int(seed))
        self._lives = info["lives"].copy()
        self._fire_due = None  # every game was just reset, and ale_py pressed FIRE there
        self._steps[:] = 0
        self._tracker.reset()
        self._needs_reset = False
        return self._to_device(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        act = self._checked_actions(actions)
        if self._fire_due is not None:
            # The envs that lost a life last step press FIRE now (a new array: ``act`` may share
            # the caller's tensor memory).
            act = np.where(self._fire_due, self._add_fire[act], act)
            self._fire_due = None

        obs, raw_reward, game_over, _, info = self._env.step(act)
        lives = info["lives"]
        self._steps += 1
        # A drop in lives without a game over (ale_py's lives after a game reset do not count).
        life_lost = (lives < self._lives) & ~game_over

        # Envs that ale_py reset this step (game over): take the true last obs from it.
        final = obs
        if game_over.any():
            final = obs.copy()
            final[game_over] = info["final_obs"][game_over]

        # Time limit, counted here: the current obs is the last one (``final`` keeps it);
        # reset those envs now, the others report their obs unchanged.
        time_up = (self._steps >= self.max_steps) & ~game_over
        if time_up.any():
            reset_obs, reset_info = self._env.reset(options={"reset_mask": time_up})
            obs = np.where(time_up[:, None, None, None], reset_obs, obs)
            lives = np.where(time_up, reset_info["lives"], lives)

        game_done = game_over | time_up
        if self._add_fire is not None and life_lost.any():
            due = life_lost & ~time_up  # a reset game got its FIRE from ale_py already
            if due.any():
                self._fire_due = due
        terminated = game_over | life_lost if self.episodic_life else game_over
        truncated = time_up & ~terminated  # a life lost on the last step stays terminal
        self._lives = lives
        self._steps[game_done] = 0

        raw = torch.from_numpy(raw_reward.astype(np.float32)).to(self.device)
        reward = raw.sign() if self.clip_rewards else raw
        obs_t = self._to_device(obs)
        final_t = obs_t if final is obs else self._to_device(final)
        done_t = torch.from_numpy(game_done).to(self.device)
        stats = self._tracker.update(raw, done_t)
        out_info: dict[str, Any] = {
            "final_obs": final_t,
            "lives": torch.from_numpy(np.asarray(lives, dtype=np.int64)).to(self.device),
            **stats,
        }
        return (
            obs_t,
            reward,
            torch.from_numpy(terminated).to(self.device),
            torch.from_numpy(truncated).to(self.device),
            out_info,
        )

    def close(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            env.close()
            # ale_py's worker threads stop when its vector interface is destroyed.
            del env.ale

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: ale_py may be half torn down
            self.close()

    def __repr__(self) -> str:
        return (
            f"AtariVecEnv(game={self.game!r}, num_envs={self.num_envs}, device={self.device}, "
            f"training={self.training}, episodic_life={self.episodic_life}, "
            f"clip_rewards={self.clip_rewards})"
        )
