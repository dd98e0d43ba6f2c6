"""``train(cfg) -> summary``: seed, device, envs, algorithm, loop, evaluation, checkpoints, summary.

The Hydra app in :mod:`rlrun.cli` is a thin wrapper around this function; tests call it directly.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import time
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
from rlrun.envs import VecEnv, is_ale_id, make_vec_env
from rlrun.envs.wrappers import observation_statistics, wrap
from rlrun.interrupt import Interrupted, StopSignals
from rlrun.logger import Logger, write_json
from rlrun.loops import LOOPS
from rlrun.resources import ResourceError

TRAIN_SEEDS, EVAL_SEEDS = 0, 1  # the purpose key of env_seed()
LOOP_DATA = ("replay",)  # checkpoint keys that hold a loop's data (Run.keep)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names it, the step and what usually helps."""


def check_finite(values: dict[str, float], step: int) -> None:
    """Raise :class:`TrainingDiverged` if a logged loss is NaN or infinite (nothing learns after that).

    Explained variance is NaN by definition when the returns of a batch do not vary; it is not checked.
    """
    bad = [k for k, v in values.items()
           if k.startswith("losses/") and k != "losses/explained_variance" and not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"{bad[0]} = {values[bad[0]]} at step {step}: training diverged ({', '.join(bad)} not finite). "
            "A smaller learning rate (algo.lr), gradient clipping (algo.max_grad_norm) or observation/reward "
            "normalisation usually helps; the run folder keeps the curves up to here.")


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


def env_seed(*keys: int) -> int:
    """A 31-bit env seed derived from (run seed, purpose, counter); env i of the batch gets it + i.

    Hashing keeps the streams of nearby runs apart: with plain ``seed + i``, runs seed=0 and
    seed=1 would share all but one of their env seeds.
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] >> 1)


@torch.no_grad()
def evaluate(policy, env: VecEnv, seed: int, deterministic: bool = True) -> torch.Tensor:
    """The return of the first episode of each of ``env.num_envs`` envs: [num_envs] on the CPU.

    The episodes draw their random numbers (DQN's evaluation epsilon, a sampled action) from torch's
    generator seeded with ``seed`` inside :func:`torch.random.fork_rng`, which puts the training stream
    back afterwards: how often a run evaluates never changes what it trains on.
    """
    with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
        torch.manual_seed(seed)
        obs = env.reset(seed=seed)
        returns = torch.zeros(env.num_envs, device=env.device)
        finished = torch.zeros(env.num_envs, dtype=torch.bool, device=env.device)
        while not bool(finished.all()):
            action, _ = policy.act(obs, deterministic=deterministic)
            obs, _, _, _, info = env.step(action)
            new = info["episode_done"] & ~finished
            returns = torch.where(new, info["episode_return"], returns)
            finished |= new
    return returns.cpu()


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


class Run:
    """Everything about one run that is not the algorithm: counters, clocks, logging, evaluation, checkpoints.

    The loops see it through :class:`rlrun.loops.RunHooks`.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, agent, env: VecEnv, eval_env: VecEnv,
                 logger: Logger, threshold: float | None, state: dict[str, Any] | None,
                 signals: StopSignals | None = None):
        self.cfg, self.run_dir, self.agent, self.env, self.eval_env = cfg, run_dir, agent, env, eval_env
        self.logger, self.threshold = logger, threshold
        self.signals = signals or StopSignals(stop=())
        self.total_steps = cfg.total_steps
        state = state or {}
        self.step = int(state.get("step", 0))
        self.start_step = self.step
        self.train_seconds_before = float(state.get("train_seconds", 0.0))
        self.segments_before: list[dict[str, Any]] = list(state.get("segments", []))  # earlier runs of this folder
        self.best_eval_return = state.get("best_eval_return")
        self.final_eval_return: float | None = None
        self.last_eval_step = state.get("last_eval_step")
        self.steps_to_threshold = state.get("steps_to_threshold")
        self.seconds_to_threshold = state.get("seconds_to_threshold")
        self.eval_count = int(state.get("eval_count", 0))
        self.last_ckpt_step = self.step
        self.eval_seconds = 0.0
        self.t0 = self.last_ckpt_time = time.perf_counter()
        self._episodes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.kept: dict[str, Any] = {}  # the loop's data that goes into checkpoints (keep())
        self.resumed_data = {k: v for k, v in state.items() if k in LOOP_DATA and v is not None}

    # --------------------------------------------------------------- clocks
    def train_seconds(self) -> float:
        """Seconds spent training (evaluation excluded), including before a resume."""
        return self.train_seconds_before + time.perf_counter() - self.t0 - self.eval_seconds

    def sps(self) -> float:
        """Env steps per training second of this segment (since the start or the resume)."""
        spent = time.perf_counter() - self.t0 - self.eval_seconds
        return (self.step - self.start_step) / spent if spent > 0 else 0.0

    def segments(self) -> list[dict[str, Any]]:
        """Each uninterrupted part of the run, this one last: steps from, to, wall seconds and SPS."""
        now = {"start_step": self.start_step, "end_step": self.step,
               "wall_s": round(time.perf_counter() - self.t0, 3), "sps": round(self.sps(), 1)}
        return [*self.segments_before, now]

    # --------------------------------------------------------------- hooks for the loops
    def record_episodes(self, info: dict[str, torch.Tensor]) -> None:
        self._episodes.append((info["episode_done"], info["episode_return"], info["episode_length"]))

    def message(self, text: str) -> None:
        self.logger.message(text)

    def keep(self, name: str, data: Any) -> bool:
        """See :meth:`rlrun.loops.RunHooks.keep`: the loop's data (the replay buffer) is checkpointed with
        ``checkpoint.replay=true``, and restored from the checkpoint this run resumed from if that holds it."""
        if self.cfg.checkpoint.replay:
            self.kept[name] = data
        saved = self.resumed_data.pop(name, None)  # loaded once, then let go (a replay buffer can be GBs)
        if saved is not None:
            data.load_state_dict(saved)
        return saved is not None

    def end_iteration(self, metrics: dict[str, Any]) -> bool:
        """After each iteration: log, stop on a diverged loss, evaluate and checkpoint as due; True means stop."""
        self.log_episodes()
        values = self.log_metrics(metrics)
        check_finite(values, self.step)
        if self.eval_due():
            self.run_eval()
        if self.checkpoint_due() and self.step < self.total_steps:
            self.save_checkpoint()
        self.logger.progress(self.step, values["charts/SPS"])
        return self.finished()

    def log_episodes(self) -> None:
        """The returns and lengths of the episodes that ended since the last call."""
        if self._episodes:
            done, rets, lens = (torch.stack(x) for x in zip(*self._episodes))
            self._episodes.clear()
            self.logger.episodes(rets[done].tolist(), lens[done].float().tolist(), self.step)

    def log_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Log an iteration's metrics and the SPS as scalars; returns them as floats."""
        tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
        values = {}
        if tensors:  # one device-to-host copy for all of them (an update may mix CPU and CUDA scalars)
            device = next(iter(tensors.values())).device
            stacked = torch.stack([v.detach().float().reshape(()).to(device) for v in tensors.values()])
            values = dict(zip(tensors, stacked.tolist()))
        values.update({k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)})
        values["charts/SPS"] = self.sps()
        self.logger.scalars(values, self.step)
        return values

    def eval_due(self) -> bool:
        """Every ``eval.every_steps`` env steps, except at the end (the final evaluation comes after the loop)."""
        every = self.cfg.eval.every_steps
        return bool(every) and self.step // every > (self.last_eval_step or 0) // every and self.step < self.total_steps

    def finished(self) -> bool:
        """The step budget is spent, or an evaluation reached the threshold with ``eval.stop_at_threshold``."""
        solved = self.cfg.eval.stop_at_threshold and self.steps_to_threshold is not None
        return solved or self.step >= self.total_steps

    def checkpoint_due(self) -> bool:
        """Every ``checkpoint.every_steps`` env steps, every ``checkpoint.every_minutes``, or when a signal asked."""
        ckpt = self.cfg.checkpoint
        by_steps = ckpt.every_steps and self.step // ckpt.every_steps > self.last_ckpt_step // ckpt.every_steps
        by_time = ckpt.every_minutes and time.perf_counter() - self.last_ckpt_time >= 60 * ckpt.every_minutes
        return bool(by_steps or by_time or self.signals.save_requested)

    # --------------------------------------------------------------- evaluation and checkpoints
    def run_eval(self) -> float:
        start = time.perf_counter()
        seed = env_seed(self.cfg.seed, EVAL_SEEDS, self.eval_count)
        returns = evaluate(self.agent.policy, self.eval_env, seed, self.cfg.eval.deterministic)
        self.eval_count += 1
        mean = float(returns.mean())
        self.final_eval_return, self.last_eval_step = mean, self.step
        self.best_eval_return = mean if self.best_eval_return is None else max(self.best_eval_return, mean)
        self.eval_seconds += time.perf_counter() - start
        if self.threshold is not None and self.steps_to_threshold is None and mean >= self.threshold:
            self.steps_to_threshold, self.seconds_to_threshold = self.step, round(self.train_seconds(), 3)
        self.logger.scalars({"eval/return_mean": mean, "eval/return_std": float(returns.std(unbiased=False)),
                             "eval/return_min": float(returns.min()), "eval/return_max": float(returns.max())},
                            self.step)
        return mean

    def save_checkpoint(self) -> Path:
        state = {
            "step": self.step, "agent": self.agent.state_dict(), "env": self.env.state_dict(),
            "config": to_dict(self.cfg), "train_seconds": self.train_seconds(),
            "best_eval_return": self.best_eval_return, "last_eval_step": self.last_eval_step,
            "steps_to_threshold": self.steps_to_threshold, "seconds_to_threshold": self.seconds_to_threshold,
            "eval_count": self.eval_count, "torch_rng": torch.get_rng_state(), "segments": self.segments(),
        }
        if self.agent.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.agent.device)
        for name, data in self.kept.items():
            state[name] = data.state_dict()
        with self.signals.deferred():  # a signal waits for the write: the run stops with this checkpoint saved
            path = checkpoint.save(state, checkpoint.path_for(self.run_dir, self.step))
            checkpoint.prune(self.run_dir, self.cfg.checkpoint.keep)
        self.last_ckpt_step, self.last_ckpt_time = self.step, time.perf_counter()
        self.signals.save_requested = False
        return path

    def summary(self, status: str, signame: str | None = None) -> dict[str, Any]:
        """summary.json: wall time and SPS cover the whole run, every segment (resume) included."""
        segments = self.segments()
        train_seconds = self.train_seconds()
        return {
            "algo": self.cfg.algo.name, "env": self.cfg.env.id, "seed": self.cfg.seed, "steps": self.step,
            "wall_s": round(sum(seg["wall_s"] for seg in segments), 3),
            "sps": round(self.step / train_seconds, 1) if train_seconds > 0 else 0.0,
            "final_eval_return": self.final_eval_return, "best_eval_return": self.best_eval_return,
            "reward_threshold": self.threshold, "steps_to_threshold": self.steps_to_threshold,
            "seconds_to_threshold": self.seconds_to_threshold, "status": status, "signal": signame,
            "segments": segments,
        }


def build(cfg: TrainConfig, device: torch.device):
    """Training env, evaluation env and agent for ``cfg``; ConfigError for combinations that cannot work."""
    algo_cls = ALGOS[cfg.algo.name]
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
                if status != "failed":
                    run.save_checkpoint()
                summary = run.summary(status, signame)
                write_json(run.run_dir / "summary.json", summary)
                run.logger.final(summary)
                run.logger.close()
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
        logger = Logger(run_dir, purge_step=state["step"] + 1 if state else None, progress=cfg.progress,
                        total_steps=cfg.total_steps, start_step=state["step"] if state else 0,
                        description=f"{cfg.algo.name} {cfg.env.name}")
        logger.config(flatten({k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")}))
        signals = signals or StopSignals()
        run = Run(cfg, run_dir, agent, env, eval_env, logger, reward_threshold(cfg.env), state, signals)
        return execute(run, signals)


def final_return(summary: dict[str, Any]) -> float:
    """What the Hydra task returns (a sweeper maximises it); NaN when the run never evaluated."""
    value = summary.get("final_eval_return")
    return float(value) if value is not None else math.nan
