"""``train_population(cfgs) -> summaries``: P runs trained as one, each a full run of its own.

One vector env holds every member's envs (member p owns envs ``p * N .. (p + 1) * N - 1``), one stacked agent
(:mod:`rlrun.population.algos`) acts for all of them, and the algorithm's ordinary loop
(:mod:`rlrun.loops`: the off-policy one with a replay that samples each member's envs apart) drives the lot
through a :class:`PopulationRun`, which splits every
iteration's episodes, metrics and evaluations among the members' own :class:`rlrun.run.Run` objects. Those
write what a single run writes: TensorBoard events, checkpoints (in the single run's layout, so a member's
folder resumes and evaluates as an ordinary run), ``summary.json``.

A member that diverges or reaches its threshold with ``eval.stop_at_threshold`` ends on its own (summary,
checkpoint) and sits out the rest with a learning rate of 0 while the others go on; Ctrl-C and SIGTERM
checkpoint every member that is still training.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rlrun import resources
from rlrun.config import ConfigError, TrainConfig, flatten, load, to_dict
from rlrun.envs import make_vec_env
from rlrun.envs.wrappers import member_state, observation_statistics, wrap
from rlrun.fused import keep_freed_memory
from rlrun.interrupt import Interrupted, StopSignals
from rlrun.logger import Logger
from rlrun.loops import LOOPS
from rlrun.population.algos import POPULATION_ALGOS
from rlrun.population.groups import group_key, why_not_batchable
from rlrun.run import EVAL_SEEDS, TRAIN_SEEDS, Run, TrainingDiverged, check_finite, env_seed, evaluate
from rlrun.trackers import check_available, open_tracker
from rlrun.train import (
    default_run_dir,
    deterministic_algorithms,
    folder_problem,
    out_of_memory,
    resolve_device,
    reward_threshold,
    seed_everything,
    start_rows,
)


class Member:
    """What a member's :class:`Run` sees of the population's agent: its own checkpoint and the device."""

    def __init__(self, population: Any, index: int):
        self.population, self.index, self.device = population, index, population.device

    def state_dict(self) -> dict[str, Any]:
        return self.population.member_state_dict(self.index)


class MemberEnv:
    """What a member's :class:`Run` sees of the population's vector env: its own statistics, in a single run's
    layout (the observation and reward normalisers keep one set per member)."""

    def __init__(self, env: Any, index: int):
        self.env, self.index = env, index

    def state_dict(self) -> dict[str, Any]:
        return member_state(self.env.state_dict(), self.index)


class PopulationRun:
    """The loop's :class:`rlrun.loops.RunHooks` for a population: ``step`` counts each member's env steps (they
    step together), and each iteration's results go to the members' runs."""

    def __init__(self, runs: list[Run], agent: Any, env: Any, eval_env: Any, signals: StopSignals):
        self.runs, self.agent, self.env, self.eval_env, self.signals = runs, agent, env, eval_env, signals
        self.size = self.members = len(runs)
        self.step = runs[0].step
        self.total_steps = runs[0].total_steps
        self.summaries: list[dict[str, Any] | None] = [None] * self.size  # None while a member trains
        self._episodes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.eval_count = 0
        self.seed = env_seed(*(run.cfg.seed for run in runs))
        self.last_report = time.perf_counter()

    def active(self) -> list[int]:
        return [p for p in range(self.size) if self.summaries[p] is None]

    # --------------------------------------------------------------- RunHooks
    def record_episodes(self, info: dict[str, torch.Tensor]) -> None:
        self._episodes.append((info["episode_done"], info["episode_return"], info["episode_length"]))

    def message(self, text: str, members: list[int] | None = None) -> None:
        """A line on the console, and in the ``train.log`` of ``members`` (default: every member)."""
        line = f"rlrun: {text}"
        print(line, flush=True)
        for p in range(self.size) if members is None else members:
            with open(self.runs[p].logger.log_path, "a") as f:
                f.write(line + "\n")

    def keep(self, name: str, data: Any) -> bool:
        return False  # the on-policy loop keeps no data across iterations

    def end_iteration(self, metrics: dict[str, Any]) -> bool:
        """Each member's episodes, metrics, evaluation and checkpoint; True once no member is training."""
        member_step = self.step
        for p in self.active():
            self.runs[p].step = member_step
        self.log_episodes()
        self.log_metrics(metrics)
        first = self.runs[self.active()[0]] if self.active() else None
        if first is not None and first.eval_due():
            self.run_eval()
        for p in self.active():
            run = self.runs[p]
            if run.finished() and run.step < run.total_steps:  # reached its threshold, eval.stop_at_threshold
                self.end_member(p, "completed")
            elif run.checkpoint_due() and run.step < run.total_steps:
                run.save_checkpoint()
        self.signals.save_requested = False
        self.report(member_step)
        return not self.active() or self.step >= self.total_steps

    # --------------------------------------------------------------- the members' share
    def log_episodes(self) -> None:
        if not self._episodes:
            return
        steps = len(self._episodes)
        done, rets, lens = (torch.stack(x).reshape(steps, self.size, -1).cpu() for x in zip(*self._episodes))
        self._episodes.clear()
        for p in self.active():
            mask = done[:, p]
            run = self.runs[p]
            run.logger.episodes(rets[:, p][mask].tolist(), lens[:, p][mask].float().tolist(), run.step)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Metrics are 0-d (shared) or [P] tensors, or floats: one device-to-host copy for all of them."""
        tensors = {k: v.detach().float().expand(self.size) if v.dim() == 0 else v.detach().float()
                   for k, v in metrics.items() if isinstance(v, torch.Tensor)}
        table = torch.stack(list(tensors.values())).cpu().tolist() if tensors else []  # [K][P]
        floats = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)}
        for p in self.active():
            run = self.runs[p]
            values = {k: row[p] for k, row in zip(tensors, table)}
            values.update(floats)
            values["charts/SPS"] = run.sps()
            run.logger.scalars(values, run.step)
            try:
                check_finite(values, run.step)
            except TrainingDiverged as err:
                self.end_member(p, "failed", str(err))

    def run_eval(self) -> None:
        """Evaluate every member still training at once: ``eval.episodes`` envs each, member-major."""
        start = time.perf_counter()
        seed = env_seed(self.seed, EVAL_SEEDS, self.eval_count)
        self.eval_count += 1
        returns = evaluate(self.agent.policy, self.eval_env, seed, self.runs[0].cfg.eval.deterministic)
        returns = returns.reshape(self.size, -1)  # [P, episodes]
        seconds = time.perf_counter() - start
        for p in self.active():
            self.runs[p].record_eval(returns[p], seconds)

    def end_member(self, p: int, status: str, error: str | None = None) -> None:
        """Member ``p`` stops training: its checkpoint (unless it failed), summary and event files are written."""
        run = self.runs[p]
        self.agent.freeze(p)
        if error:
            (run.run_dir / "error.txt").write_text(error.rstrip() + "\n")
            self.message(f"member {run.run_dir.name} failed: {error.splitlines()[0]}", members=[p])
        self.summaries[p] = run.finish(status)

    def report(self, member_step: int, final: bool = False) -> None:
        """A line on the console every 10 s and at the end: steps, SPS (all members together), evaluation returns."""
        now = time.perf_counter()
        if now - self.last_report < 10 and not final:
            return
        self.last_report = now
        run = self.runs[0]
        sps = self.size * run.sps()
        evals = [r.final_eval_return for r in self.runs if r.final_eval_return is not None]
        solved = sum(r.steps_to_threshold is not None for r in self.runs)
        text = f"population of {self.size}: step {member_step:,}/{run.total_steps:,} per member, {sps:,.0f} SPS in all"
        if evals:
            text += (f", eval return mean {sum(evals) / len(evals):.1f} (min {min(evals):.1f}, max {max(evals):.1f})"
                     f", {solved} solved")
        self.message(text, members=self.active())


def load_members(cfgs: list[DictConfig | TrainConfig]) -> list[TrainConfig]:
    """The members' typed configs; a group they cannot form together is refused (ConfigError)."""
    keys = {group_key(c) if isinstance(c, DictConfig) else "typed" for c in cfgs}
    for c in cfgs:
        if isinstance(c, DictConfig) and (why := why_not_batchable(c)):
            raise ConfigError(f"{c.get('run_dir')}: cannot train as a population member: {why}.")
    if len(keys) != 1:
        raise ConfigError("these jobs differ in more than the values a population batches "
                          "(rlrun.population.BATCHABLE); they cannot train as one population.")
    return [c if isinstance(c, TrainConfig) else load(c) for c in cfgs]


def train_population(cfgs: list[DictConfig | TrainConfig], signals: StopSignals | None = None) -> list[dict[str, Any]]:
    """Train ``cfgs`` as one population; returns each member's summary (also in its ``summary.json``).

    Raises ConfigError (nothing written) for a group that cannot train together, and :class:`Interrupted`
    after a stop signal once every member is saved with an ``interrupted`` summary.
    """
    typed = load_members(cfgs)
    first, size = typed[0], len(typed)
    device = resolve_device(first.device)
    torch.set_num_threads(first.torch_threads)
    if device.type == "cpu":  # stacked activations are ~1 MiB: keep malloc from re-faulting them (rlrun/fused.py)
        keep_freed_memory()
    run_dirs = [Path(c.run_dir) if c.run_dir else default_run_dir(c) for c in typed]
    for run_dir in run_dirs:
        if problem := folder_problem(run_dir):
            raise ConfigError(f"The run folder {run_dir} cannot be written ({problem}).")
    whole = dataclasses.replace(first, env=dataclasses.replace(first.env, num_envs=size * first.env.num_envs))
    resources.check(whole, device)
    check_available(first.logger)
    seed_everything(env_seed(*(c.seed for c in typed)))
    signals = signals or StopSignals()
    with deterministic_algorithms(first.deterministic):
        env = make_vec_env(first.env, size * first.env.num_envs, device, training=True)
        eval_env = None
        try:
            switches = first.algo.env_switches()
            gammas = [c.algo.gamma for c in typed]
            if switches.norm_reward and len(set(gammas)) > 1:  # each member scales by its own discounted return
                per_env = torch.tensor(gammas, dtype=torch.float64, device=device)
                switches = dataclasses.replace(switches, gamma=per_env.repeat_interleave(first.env.num_envs))
            env = wrap(env, switches, training=True, groups=size)  # observation and reward statistics per member
            eval_env = wrap(make_vec_env(first.env, size * first.eval.episodes, device, training=False), switches,
                            training=False, obs_rms=observation_statistics(env), groups=size)
            try:
                agent = POPULATION_ALGOS[first.algo.name]([c.algo for c in typed], env.single_observation_space,
                                                          env.single_action_space, device)
            except ValueError as err:
                raise ConfigError(f"algo={first.algo.name} on {first.env.id}: {err}.") from None
            runs = []
            for p, (cfg, run_dir) in enumerate(zip(typed, run_dirs)):
                run_dir.mkdir(parents=True, exist_ok=True)
                flat = flatten({k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")})
                tracker = open_tracker(cfg, run_dir, flat)
                logger = Logger(run_dir, progress=False, total_steps=cfg.total_steps,
                                description=f"{cfg.algo.name} {cfg.env.name}", console=False, tracker=tracker)
                logger.config(flat)
                logger.start([*start_rows(cfg, run_dir, device), ("population", f"member {p + 1} of {size}"),
                              *([tracker.where()] if tracker else [])])
                runs.append(Run(cfg, run_dir, Member(agent, p), MemberEnv(env, p), eval_env, logger,
                                reward_threshold(cfg.env), None, signals))
            population = PopulationRun(runs, agent, env, eval_env, signals)
            print(f"rlrun: training {size} runs as one population ({first.algo.name} on {first.env.id}, "
                  f"{size} x {first.env.num_envs} envs on {device})", flush=True)
            return execute(population, signals)
        finally:
            env.close()
            if eval_env is not None:
                eval_env.close()


def execute(population: PopulationRun, signals: StopSignals) -> list[dict[str, Any]]:
    """Train to the end, a stop signal or an error; every member still training is saved whatever happens."""
    status, signame, error = "failed", None, None
    gc.collect()
    gc.freeze()
    with signals:
        try:
            obs = population.env.reset(seed=env_seed(population.seed, TRAIN_SEEDS, 0))
            LOOPS[type(population.agent).loop](population.agent, population.env, obs, population)
            active = population.active()
            if active and any(population.runs[p].last_eval_step != population.runs[p].step for p in active):
                population.run_eval()
            population.report(population.step, final=True)
            status = "completed"
        except Interrupted as err:
            status, signame = "interrupted", err.signame
        except KeyboardInterrupt:
            status, signame = "interrupted", "SIGINT"
        except Exception as err:
            if out_of_memory(err):
                error = (f"Out of memory at step {population.step} ({str(err).splitlines()[0]}): "
                         "a smaller population (hydra.launcher.max_size) or fewer envs per member needs less.")
            else:
                error = f"{type(err).__name__}: {err}"
            raise
        finally:
            with signals.deferred(then_raise=False):
                gc.unfreeze()
                for p in population.active():
                    run = population.runs[p]
                    if error:
                        (run.run_dir / "error.txt").write_text(error.rstrip() + "\n")
                    population.summaries[p] = run.finish(status, signame)
    if signame is not None:
        raise Interrupted(int(signal.Signals[signame]))
    return population.summaries
