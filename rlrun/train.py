"""``train(cfg) -> summary``: seed, device, envs, algorithm, loop, evaluation, checkpoints, summary.

The Hydra app in :mod:`rlrun.cli` is a thin wrapper around this function; tests call it directly.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig

from rlrun import checkpoint, resources
from rlrun.algos import ALGOS
from rlrun.algos.base import Algorithm
from rlrun.config import ConfigError, EnvConfig, TrainConfig, flatten, load, to_dict
from rlrun.envs import VecEnv, is_ale_id, is_game_id, make_vec_env
from rlrun.envs.wrappers import observation_statistics, wrap
from rlrun.interrupt import Interrupted, StopSignals
from rlrun.logger import Logger, shown
from rlrun.loops import LOOPS
from rlrun.resources import ResourceError
from rlrun.run import TRAIN_SEEDS, Run, env_seed
from rlrun.trackers import check_available, open_tracker


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; an unavailable CUDA device is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={name} but no CUDA device is visible to torch: use device=cpu or device=auto.")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={name} but only {count} CUDA device(s) exist: use cuda:0..cuda:{count - 1}.")
    return device


def reward_threshold(env_cfg: EnvConfig) -> float | None:
    """The config's threshold, else the one gymnasium registers for the id (None if neither)."""
    if env_cfg.reward_threshold is not None:
        return env_cfg.reward_threshold
    try:
        if is_ale_id(env_cfg.id):
            import ale_py

            gym.register_envs(ale_py)
        return gym.spec(env_cfg.id).reward_threshold
    except Exception:
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written (None if it can), found without creating anything."""
    folder = folder.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path("runs") / f"{cfg.env.name}__{cfg.algo.name}__s{cfg.seed}__{stamp}"


def build(cfg: TrainConfig, device: torch.device):
    """Training env, evaluation env and agent for ``cfg``; ConfigError for combinations that cannot work."""
    algo_cls = ALGOS[cfg.algo.name]
    if is_game_id(cfg.env.id) and algo_cls.loop != "search":
        raise ConfigError(f"env={cfg.env.name} is a two-player board game, which algo=alphazero plays; algo="
                          f"{cfg.algo.name} learns single-agent envs (CartPole, Pong, HalfCheetah, any gymnasium id).")
    if algo_cls.loop == "search" and not is_game_id(cfg.env.id):
        raise ConfigError(f"algo={cfg.algo.name} plays the two-player board games (env=TicTacToe, env=ConnectFour), "
                          f"not env.id={cfg.env.id}: use ppo, dqn or another algorithm for single-agent envs.")
    env = make_vec_env(cfg.env, cfg.env.num_envs, device, training=True)
    try:
        space = env.single_action_space
        if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ConfigError(f"algo={cfg.algo.name} needs a Discrete or Box action space; {cfg.env.id} has {space}.")
        accepted = algo_cls.action_spaces
        if not isinstance(space, accepted):
            others = sorted(n for n, a in ALGOS.items() if isinstance(space, a.action_spaces))
            raise ConfigError(f"algo={cfg.algo.name} needs a {' or '.join(c.__name__ for c in accepted)} action space, "
                              f"but {cfg.env.id} has {space}: use an algorithm that accepts it ({', '.join(others)}).")
        switches = cfg.algo.env_switches()
        if switches.norm_obs and env.single_observation_space.dtype == np.uint8:
            raise ConfigError(
                f"algo.norm_obs=true normalises vector observations, but {cfg.env.id} gives uint8 images "
                "(the CNN scales them by 1/255 itself): set algo.norm_obs=false.")
        env = wrap(env, switches, training=True)
        eval_env = make_vec_env(cfg.env, cfg.eval.episodes, device, training=False)
        eval_env = wrap(eval_env, switches, training=False, obs_rms=observation_statistics(env))
        agent = algo_cls(cfg.algo, env.single_observation_space, space, device)
    except BaseException:
        env.close()
        raise
    return env, eval_env, agent


def applied_presets() -> list[str]:
    """The preset and experiment files the composed config came from (by file name), when Hydra composed it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    found = []
    preset = choices.get("preset")  # optional: named even when no file exists for the pair
    if preset and (Path(__file__).parent / "conf" / "preset" / f"{preset}.yaml").is_file():
        found.append(f"preset/{preset}.yaml")
    if choices.get("experiment"):
        found.append(f"experiment/{choices['experiment']}.yaml")
    return found


def start_rows(cfg: TrainConfig, run_dir: Path, device: torch.device, resumed_at: int | None = None,
               ) -> list[tuple[str, str]]:
    """The start block of a run: folder, algorithm and the presets applied, env and backend, device, steps."""
    from rlrun.envs import resolve_backend

    presets = applied_presets()
    threads = f", {cfg.torch_threads} torch thread{'s' if cfg.torch_threads > 1 else ''}" if device.type == "cpu" else ""
    every = f"evaluation every {cfg.eval.every_steps:,} steps" if cfg.eval.every_steps else "evaluation at the end"
    steps = f"{cfg.total_steps:,} ({every}, {cfg.eval.episodes} episodes)"
    if resumed_at is not None:
        steps = f"{steps}; resumed at step {resumed_at:,}"
    return [
        ("run folder", shown(run_dir)),
        ("algorithm", f"{cfg.algo.name}" + (f" with {', '.join(presets)}" if presets else " (no preset)")),
        ("env", f"{cfg.env.id} ({cfg.env.name}), {resolve_backend(cfg.env)} backend, {cfg.env.num_envs} envs"),
        ("device", f"{device}{threads}, seed {cfg.seed}"),
        ("steps", steps),
    ]


def out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator failing to get memory."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(err))


@contextlib.contextmanager
def deterministic_algorithms(on: bool):
    """``deterministic=true``: torch's deterministic kernels and cuDNN's, for the run (restored afterwards).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before its first call to be deterministic on CUDA >= 10.2.
    """
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def resume_state(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """The newest checkpoint of ``run_dir`` that loads (a newer unreadable one is named on the console)."""
    return checkpoint.load_newest(run_dir, device, report=lambda text: print(f"rlrun: {text}", flush=True))


def prepare(cfg: TrainConfig, device: torch.device) -> tuple[Path, dict[str, Any] | None]:
    """The run folder and, for ``resume=``, the checkpoint to continue from; refuses what cannot work before
    anything is allocated or written."""
    resources.check(cfg, device)
    check_available(cfg.logger)
    state = None
    if cfg.resume:
        run_dir = Path(cfg.resume)
        state = resume_state(run_dir, device)
        if state["step"] >= cfg.total_steps:
            raise ConfigError(
                f"resume={run_dir}: the run is already at step {state['step']:,}, so total_steps={cfg.total_steps} "
                f"leaves nothing to train; continue it with a larger total, e.g. total_steps={2 * state['step']}. "
                "The folder is unchanged.")
    else:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if problem := folder_problem(run_dir):
        raise ConfigError(f"The run folder {run_dir} cannot be written ({problem}): choose another with "
                          "run_dir=<folder> (or hydra.run.dir=<folder> on the command line).")
    return run_dir, state


def restore(state: dict[str, Any], agent: Algorithm, env: VecEnv, device: torch.device) -> None:
    """Put a checkpoint's agent, env statistics and random-number state back."""
    agent.load_state_dict(state["agent"])
    env.load_state_dict(state["env"])
    torch.set_rng_state(state["torch_rng"].cpu())  # loaded onto the training device with the rest
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)


def execute(run: Run, signals: StopSignals) -> dict[str, Any]:
    """Train ``run`` to its end, a stop signal or an error; the last checkpoint and ``summary.json`` are written
    whatever happens (a failed run's summary says so, and keeps the checkpoints it had)."""
    agent, env, device = run.agent, run.env, run.agent.device
    status, signame = "failed", None
    gc.collect()
    gc.freeze()  # the long-lived setup objects: the collector's passes then skip them (~3% of a small-MLP run)
    with signals:
        try:
            obs = env.reset(seed=env_seed(run.cfg.seed, TRAIN_SEEDS, run.step))
            LOOPS[type(agent).loop](agent, env, obs, run)
            if run.last_eval_step != run.step or run.final_eval_return is None:
                run.run_eval()
            status = "completed"
        except Interrupted as err:
            status, signame = "interrupted", err.signame
        except KeyboardInterrupt:  # Python's own SIGINT handler (ours is set only in the main thread)
            status, signame = "interrupted", "SIGINT"
        except Exception as err:
            if out_of_memory(err):
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ResourceError(
                    f"Out of memory on {device} at step {run.step} ({first}). Lower env.num_envs, the batch "
                    "(algo.minibatch_size or algo.batch_size), algo.num_steps or algo.buffer_size, or train on a "
                    f"device with more memory; the checkpoints already in {run.run_dir / 'checkpoints'} are kept."
                ) from None
            raise
        finally:
            with signals.deferred(then_raise=False):  # a second Ctrl-C must not cut the last checkpoint short
                gc.unfreeze()
                summary = run.finish(status, signame)
                env.close()
                run.eval_env.close()
    return summary


def train(cfg: DictConfig | TrainConfig | dict, signals: StopSignals | None = None) -> dict[str, Any]:
    """Train one agent as ``cfg`` says; returns the summary also written to ``<run_dir>/summary.json``.

    ``signals`` (default: SIGINT and SIGTERM) end the run with a checkpoint and an ``interrupted`` summary
    naming the signal. Running out of memory ends it with a ``failed`` summary and a :class:`ResourceError`.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else load(cfg)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.torch_threads)
    run_dir, state = prepare(cfg, device)
    seed_everything(cfg.seed)
    with deterministic_algorithms(cfg.deterministic):
        env, eval_env, agent = build(cfg, device)
        run_dir.mkdir(parents=True, exist_ok=True)
        if state:
            restore(state, agent, env, device)
        flat = flatten({k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")})
        tracker = open_tracker(cfg, run_dir, flat, resuming=state is not None)
        logger = Logger(run_dir, purge_step=state["step"] + 1 if state else None, progress=cfg.progress,
                        total_steps=cfg.total_steps, start_step=state["step"] if state else 0,
                        description=f"{cfg.algo.name} {cfg.env.name}", tracker=tracker)
        logger.config(flat)
        logger.start([*start_rows(cfg, run_dir, device, resumed_at=state["step"] if state else None),
                      *([tracker.where()] if tracker else [])])
        signals = signals or StopSignals()
        run = Run(cfg, run_dir, agent, env, eval_env, logger, reward_threshold(cfg.env), state, signals)
        del state  # the run keeps what it still needs; a saved replay buffer (GBs) is freed once the loop loads it
        return execute(run, signals)


def final_return(summary: dict[str, Any]) -> float:
    """What the Hydra task returns (a sweeper maximises it); NaN when the run never evaluated."""
    value = summary.get("final_eval_return")
    return float(value) if value is not None else math.nan
