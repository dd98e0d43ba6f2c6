"""One run's state between the loop and the disk: counters, clocks, logging, evaluation and checkpoints.

The loops see a :class:`Run` through :class:`rlrun.loops.RunHooks`; :func:`rlrun.train.train` builds it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlrun import checkpoint
from rlrun.config import TrainConfig, to_dict
from rlrun.envs import VecEnv
from rlrun.interrupt import StopSignals
from rlrun.logger import Logger, write_json

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


def evaluation_notes(extra: dict[str, float], last: dict[str, float]) -> str:
    """The evaluation line's tail for a board game: results against the opponent, mistakes, search throughput."""
    notes = []
    for key, value in extra.items():
        if key.startswith("eval/win_rate_"):
            tag = key.removeprefix("eval/win_rate_")
            notes.append(f"vs {tag.replace('_', ':')} W/D/L {value:.0%}/{extra[f'eval/draw_rate_{tag}']:.0%}/"
                         f"{extra[f'eval/loss_rate_{tag}']:.0%}")
    if "eval/mistake_rate" in extra:
        notes.append(f"mistakes {extra['eval/mistake_rate']:.1%}")
    if "charts/simulations_per_s" in last:
        notes.append(f"{last['charts/simulations_per_s']:,.0f} sims/s")
    return "  ".join(notes)


class Run:
    """Everything about one run that is not the algorithm: counters, clocks, logging, evaluation, checkpoints.

    The loops see it through :class:`rlrun.loops.RunHooks`.
    """

    members = 1  # the loop trains this one run (a population's runs are driven by rlrun.population.train)

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
        self.last_values: dict[str, float] = {}  # the last iteration's logged metrics
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
        self.last_values = values
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
        """Evaluate the agent now (``eval.episodes`` episodes); the mean return."""
        start = time.perf_counter()
        seed = env_seed(self.cfg.seed, EVAL_SEEDS, self.eval_count)
        returns = evaluate(self.agent.policy, self.eval_env, seed, self.cfg.eval.deterministic)
        extra = self.eval_env.evaluation_metrics(returns, self.agent.policy)
        return self.record_eval(returns, time.perf_counter() - start, extra)

    def record_eval(self, returns: torch.Tensor, seconds: float, extra: dict[str, float] | None = None) -> float:
        """Log an evaluation's episode returns [episodes] (taking ``seconds``) and the env's ``extra`` scalars
        (a game's win rates), track the best and the threshold."""
        self.eval_count += 1
        mean = float(returns.mean())
        self.final_eval_return, self.last_eval_step = mean, self.step
        self.best_eval_return = mean if self.best_eval_return is None else max(self.best_eval_return, mean)
        self.eval_seconds += seconds
        if self.threshold is not None and self.steps_to_threshold is None and mean >= self.threshold:
            self.steps_to_threshold, self.seconds_to_threshold = self.step, round(self.train_seconds(), 3)
        self.logger.evaluation(self.step, returns.tolist(), self.best_eval_return, self.sps(),
                               time.perf_counter() - self.t0, evaluation_notes(extra or {}, self.last_values))
        self.logger.scalars({"eval/return_mean": mean, "eval/return_std": float(returns.std(unbiased=False)),
                             "eval/return_min": float(returns.min()), "eval/return_max": float(returns.max()),
                             **(extra or {})},
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

    def finish(self, status: str, signame: str | None = None) -> dict[str, Any]:
        """The run's end: the last checkpoint (unless it failed), ``summary.json`` and the closing event scalars."""
        if status != "failed":
            self.save_checkpoint()
        summary = self.summary(status, signame)
        write_json(self.run_dir / "summary.json", summary)
        self.logger.final(summary)
        self.logger.closing(summary, self.run_dir)
        self.logger.close()
        return summary

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
