"""``hydra/launcher=population``: the jobs of a sweep that can train together run as one process each group.

``rlrun train -m algo=ppo env=CartPole seed=range(16) hydra/launcher=population`` composes the 16 jobs as any
launcher does, then groups them by :func:`rlrun.population.group_key`: jobs whose configs differ only in values a
population batches (seeds, learning rates, ...) form one group, split evenly into groups of at most ``max_size``,
and each group trains as one population (:func:`rlrun.population.train_population`). Every member is still a job
of the sweep: it has its folder where Hydra would have put it, with ``.hydra/config.yaml``, ``hydra.yaml`` and
``overrides.yaml`` as Hydra writes them (so ``sweep.csv``, ``rlrun plot`` and ``rlrun train resume=<folder>``
work on it), its own ``summary.json``, and its own return value for the sweeper, in the order of the sweep.
A job that cannot join a group (another algorithm, a refused config, alone with its settings) runs as an
ordinary job, through Hydra's ``run_job`` and the task function, and the launcher says why.

How the groups run (``dispatch``): ``local`` runs the jobs one after another in this process; any other value
is a ``hydra/launcher`` option (``joblib``, ``ray``, ``submitit_local``, ``submitit_slurm``, ``slurm_gpu``) that
receives one job per group (a *group job*) and one per single job, with ``dispatch_options`` as its settings.
A group job is the task function (:func:`rlrun.cli.hydra_train`) composed with ``+population_members=<file>``:
the file lists the member folders, which this launcher has written before; the group job trains them and the
launcher then reads each member's result from its ``summary.json`` (or ``error.txt``). A group job's own
folder is ``<sweep dir>/.population/group_<n>/`` (hidden from ``sweep.csv`` and ``rlrun plot``).
"""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses cannot look up string annotations.
import copy
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

LOCAL = ("local", "basic")
"""``dispatch`` values that run every job in this process, one after another."""
GROUP_FOLDER = ".population"
"""Where group jobs keep their own folders and member lists, inside the sweep folder (hidden: ``sweep.csv`` and
``rlrun plot`` look at ``*/.hydra`` and skip hidden folders)."""
MEMBERS_FILE = "members.json"
MEMBERS_KEY = "population_members"
"""The task config key of a group job: the path of its :data:`MEMBERS_FILE`."""


@dataclass
class _Job:
    """One job of the sweep, composed."""

    pos: int  # its place in the batch the sweeper gave
    overrides: list[str]
    config: DictConfig  # the composed config, hydra node included
    name: str  # its folder name, for messages
    key: str | None = None  # the population it may join (None: it runs alone)
    reason: str | None = None  # why it runs alone
    folder: Path | None = None  # a member's folder, once written
    task_cfg: DictConfig | None = None  # a member's task config (hydra node removed)
    hydra_cfg: DictConfig | None = None  # a member's hydra config, as run_job records it
    resolved: Any = None  # a member's task config, resolved (plain data)


@dataclass
class _Group:
    """Members that train as one population."""

    jobs: list[_Job]
    differ: list[str] = field(default_factory=list)
    folder: Path | None = None  # the group job's own folder

    @property
    def pos(self) -> int:
        return self.jobs[0].pos


def _refuse(message: str) -> None:
    print(f"rlrun: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar."""
    quote = "'" if "'" not in value else '"'
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _value(value: Any) -> str:
    """A plain value (from ``dispatch_options``) written in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return _quote(str(value))


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{'ray': {'remote': {'num_cpus': 2}}}`` -> ``[('ray.remote.num_cpus', 2)]``; null values are left out."""
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out += _leaves(value, f"{prefix}{key}.")
        return out
    return [] if node is None else [(prefix[:-1], node)]


def _flat(cfg: DictConfig) -> dict[str, Any]:
    from rlrun.config import flatten

    return flatten(OmegaConf.to_container(cfg, resolve=True))


def _split(jobs: list[_Job], max_size: int) -> list[list[_Job]]:
    """``jobs`` in ceil(n / max_size) groups of sizes that differ by one at most, in order."""
    count = -(-len(jobs) // max_size)
    base, extra = divmod(len(jobs), count)
    out, start = [], 0
    for i in range(count):
        size = base + (i < extra)
        out.append(jobs[start:start + size])
        start += size
    return out


class PopulationLauncher(Launcher):
    """Runs the batchable jobs of a sweep as populations, one process per group; the others as ordinary jobs."""

    def __init__(self, max_size: int = 64, dispatch: str = "local", dispatch_options: Any = None) -> None:
        self.max_size = max_size
        self.dispatch = str(dispatch)
        options = dispatch_options if dispatch_options is not None else {}
        if OmegaConf.is_config(options):
            options = OmegaConf.to_container(options, resolve=True)
        self.dispatch_options: dict[str, Any] = dict(options)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._inner: Launcher | None = None  # the dispatch launcher

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1:
            _refuse(f"hydra.launcher.max_size={self.max_size} is not accepted: expected an integer >= 1 "
                    "(the most jobs that train together in one process).")
        if not isinstance(self.dispatch_options, dict):
            _refuse("hydra.launcher.dispatch_options is not accepted: expected a mapping of the dispatch "
                    "launcher's settings, e.g. hydra.launcher.dispatch_options.n_jobs=2.")

    # ----------------------------------------------------------------- the sweep's batch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if self.dispatch not in LOCAL and self._inner is None:
            self._inner = self._dispatch_launcher()  # once: a sweeper may call launch for batch after batch
        inner = self._inner

        jobs = self._compose(job_overrides, initial_job_idx)
        groups, alone = self._group(jobs)
        log.info(f"Launching {len(jobs)} jobs: {sum(len(g.jobs) for g in groups)} in {len(groups)} "
                 f"population(s), {len(alone)} alone" + ("" if inner is None else f", through {self.dispatch}"))
        for number, group in enumerate(groups, 1):
            differ = ", ".join(group.differ) or "nothing"
            print(f"rlrun: population {number} of {len(groups)}: {len(group.jobs)} jobs train together in one "
                  f"process (they differ in {differ})", flush=True)
        for job in alone:
            print(f"rlrun: job {job.name} runs alone: {job.reason}", flush=True)

        # Job numbers: in this process every job keeps its place in the sweep. A dispatch launcher numbers the
        # jobs it is given from initial_job_idx on, so there the single jobs come first and the members after.
        if inner is None:
            nums = {job.pos: initial_job_idx + job.pos for job in jobs}
        else:
            order = alone + [job for group in groups for job in group.jobs]
            nums = {job.pos: initial_job_idx + i for i, job in enumerate(order)}
        for group in groups:
            self._write_members(group, nums, sweep_dir)

        results: dict[int, JobReturn] = {}
        if inner is None:
            units: list[Any] = sorted([*alone, *groups], key=lambda unit: unit.pos)
            for unit in units:
                if isinstance(unit, _Job):
                    results[unit.pos] = self._run_alone(unit, nums[unit.pos])
                else:
                    self._start(unit)
                    ret = self._run_group_here(unit)
                    results.update(self._finish(unit, ret))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        else:
            for group in groups:
                self._start(group)
            overrides = [list(job.overrides) for job in alone] + [self._group_overrides(g) for g in groups]
            returns = list(inner.launch(overrides, initial_job_idx=initial_job_idx))
            for job, ret in zip(alone, returns[:len(alone)]):
                results[job.pos] = ret
            for group, ret in zip(groups, returns[len(alone):]):
                results.update(self._finish(group, ret))
        return [results[job.pos] for job in jobs]

    # ----------------------------------------------------------------- composing and grouping
    def _compose(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[_Job]:
        """Each job's config, as the basic launcher composes it, and whether (and with whom) it may train."""
        assert self.config is not None and self.hydra_context is not None
        jobs = []
        saved = HydraConfig.instance().cfg
        try:
            for pos, overrides in enumerate(job_overrides):
                idx = initial_job_idx + pos
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                _number(config, idx, idx)
                HydraConfig.instance().set_config(config)
                name = str(OmegaConf.select(config, "hydra.sweep.subdir"))
                job = _Job(pos=pos, overrides=list(overrides), config=config, name=name)
                job.key, job.reason = self._classify(config)
                jobs.append(job)
        finally:
            HydraConfig.instance().cfg = saved
        return jobs

    @staticmethod
    def _classify(config: DictConfig) -> tuple[str | None, str | None]:
        """(group key, None) for a job that may train in a population, (None, why not) for one that runs alone."""
        from rlrun import population
        from rlrun.config import ConfigError, load

        task_cfg = _task_config(config)
        try:
            load(task_cfg)  # a config that is refused fails alone, exactly as in any other sweep
        except ConfigError as err:
            first = (str(err).strip().splitlines() or ["refused"])[0]
            return None, f"its config is refused ({first})"
        except Exception as err:  # noqa: BLE001 - the ordinary path reports it in full
            return None, f"its config cannot be read ({type(err).__name__}: {err})"
        try:
            reason = population.why_not_batchable(task_cfg)
            key = None if reason else population.group_key(task_cfg)
        except Exception as err:  # noqa: BLE001
            return None, f"it cannot be grouped ({type(err).__name__}: {err})"
        if key is None:
            return None, reason or "it does not train as a population"
        return key, None

    def _group(self, jobs: list[_Job]) -> tuple[list[_Group], list[_Job]]:
        """Jobs with one key form groups of at most max_size (split evenly); a job left with no partner runs alone."""
        by_key: dict[str, list[_Job]] = {}
        alone = []
        for job in jobs:
            if job.key is None:
                alone.append(job)
            else:
                by_key.setdefault(job.key, []).append(job)
        groups = []
        for members in by_key.values():
            if len(members) == 1:
                members[0].reason = "no other job of this batch shares its settings"
                alone.append(members[0])
                continue
            for part in _split(members, self.max_size):
                if len(part) == 1:
                    part[0].reason = f"hydra.launcher.max_size={self.max_size} leaves it without a partner"
                    alone.append(part[0])
                    continue
                flats = [_flat(_task_config(job.config)) for job in part]
                keys = sorted(set().union(*flats))
                differ = [k for k in keys if k != "run_dir" and len({repr(f.get(k)) for f in flats}) > 1]
                groups.append(_Group(jobs=part, differ=differ))
        groups.sort(key=lambda g: g.pos)
        alone.sort(key=lambda j: j.pos)
        return groups, alone

    # ----------------------------------------------------------------- members
    def _write_members(self, group: _Group, nums: dict[int, int], sweep_dir: Path) -> None:
        """Each member's folder and ``.hydra`` files, exactly where and as ``run_job`` writes them; then the group
        job's member list."""
        saved = HydraConfig.instance().cfg
        try:
            for job in group.jobs:
                config = job.config
                _number(config, nums[job.pos], nums[job.pos])
                HydraConfig.instance().set_config(config)
                output_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                  str(OmegaConf.select(config, "hydra.sweep.subdir")))
                with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                    config.hydra.runtime.output_dir = os.path.abspath(output_dir)
                HydraConfig.instance().set_config(config)
                job.folder = Path(config.hydra.runtime.output_dir)
                job.name = job.folder.name
                job.task_cfg = _task_config(config)
                job.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
                # What the group job trains: resolved here, where ${hydra:...} means this member's Hydra config
                job.resolved = OmegaConf.to_container(job.task_cfg, resolve=True)
                job.folder.mkdir(parents=True, exist_ok=True)
                if config.hydra.output_subdir is not None:
                    hydra_output = job.folder / str(config.hydra.output_subdir)
                    _save_config(job.task_cfg, "config.yaml", hydra_output)
                    _save_config(job.hydra_cfg, "hydra.yaml", hydra_output)
                    _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        finally:
            HydraConfig.instance().cfg = saved
        group.folder = sweep_dir / GROUP_FOLDER / f"group_{nums[group.pos]}"
        group.folder.mkdir(parents=True, exist_ok=True)
        members = [{"folder": str(job.folder), "overrides": job.overrides, "config": job.resolved}
                   for job in group.jobs]
        (group.folder / MEMBERS_FILE).write_text(json.dumps({"members": members}, indent=1) + "\n")

    def _group_overrides(self, group: _Group) -> list[str]:
        """The overrides of a group job: the task function trains the members listed in its file."""
        assert group.folder is not None
        sweep_dir = group.folder.parent.parent
        return [f"+{MEMBERS_KEY}={_quote(str(group.folder / MEMBERS_FILE))}",
                f"hydra.sweep.dir={_quote(str(sweep_dir))}",
                f"hydra.sweep.subdir={_quote(f'{GROUP_FOLDER}/{group.folder.name}')}"]

    def _callback(self, job: _Job, event: str, **kwargs: Any) -> None:
        """The Hydra callbacks' ``on_job_start`` / ``on_job_end`` for a member, with its Hydra config current."""
        assert self.hydra_context is not None
        saved = HydraConfig.instance().cfg
        try:
            HydraConfig.instance().set_config(job.config)
            getattr(self.hydra_context.callbacks, event)(config=job.config, **kwargs)
        finally:
            HydraConfig.instance().cfg = saved

    def _start(self, group: _Group) -> None:
        for job in group.jobs:
            self._callback(job, "on_job_start", task_function=self.task_function)

    def _finish(self, group: _Group, group_return: JobReturn | None) -> dict[int, JobReturn]:
        """Each member's JobReturn, from what it left in its folder; a member that left nothing failed."""
        from rlrun.sweep import ERROR_FILE, record_failure
        from rlrun.train import final_return

        failure: BaseException | None = None
        if group_return is not None and group_return.status == JobStatus.FAILED:
            failure = group_return._return_value
        out = {}
        for job in group.jobs:
            assert job.folder is not None and job.hydra_cfg is not None
            try:
                summary = json.loads((job.folder / "summary.json").read_text())
            except (OSError, ValueError):
                summary = None
            if (job.folder / ERROR_FILE).is_file() or (summary is not None and summary.get("status") == "failed"):
                value = math.nan
            elif summary is not None:
                value = final_return(summary)
            else:
                err = failure or RuntimeError("the population ended without this member's summary.json")
                value = record_failure(job.folder, err, with_traceback=failure is not None)
            ret = JobReturn(overrides=list(OmegaConf.to_container(job.config.hydra.overrides.task)),
                            cfg=job.task_cfg, hydra_cfg=job.hydra_cfg,
                            working_dir=str(job.folder) if job.hydra_cfg.hydra.job.chdir else os.getcwd(),
                            task_name=str(job.config.hydra.job.name), status=JobStatus.COMPLETED)
            ret.return_value = value
            self._callback(job, "on_job_end", job_return=ret)
            out[job.pos] = ret
        return out

    # ----------------------------------------------------------------- running
    def _run_alone(self, job: _Job, num: int) -> JobReturn:
        """An ordinary job, as the basic launcher runs it."""
        assert self.hydra_context is not None and self.task_function is not None
        _number(job.config, num, num)
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=job.config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _run_group_here(self, group: _Group) -> JobReturn:
        """A group job in this process: the task function with ``population_members`` set."""
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, self._group_overrides(group))
        num = group.jobs[0].config.hydra.job.num
        _number(config, f"group_{num}", num)
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _dispatch_launcher(self) -> Launcher:
        """The ``dispatch`` launcher, set up with a copy of the sweep's config in which ``hydra/launcher`` is it
        (with ``dispatch_options`` as its settings), so that the jobs it composes see it as their launcher (and
        ``rlrun.sweep.cpu_share`` splits the cores as it does for that launcher)."""
        from hydra.core.plugins import Plugins

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        loader = self.hydra_context.config_loader
        if self.dispatch == "population":
            _refuse("hydra.launcher.dispatch=population is not accepted: the groups need another launcher "
                    "(local, joblib, ray, submitit_local, submitit_slurm, ...).")
        options = loader.get_group_options("hydra/launcher")
        if self.dispatch not in options:
            choices = ", ".join(["local", *(o for o in options if o not in ("basic", "population"))])
            _refuse(f"hydra.launcher.dispatch={self.dispatch} is not accepted: expected one of {choices} "
                    "(a hydra/launcher option; install its plugin first).")
        kept = [o for o in OmegaConf.to_container(self.config.hydra.overrides.hydra)
                if not (_override_key(o) == "hydra/launcher" or _override_key(o).startswith("hydra.launcher."))]
        settings = [f"++hydra.launcher.{key}={_value(value)}" for key, value in _leaves(self.dispatch_options)]
        config = loader.load_configuration(config_name=self.config.hydra.job.config_name,
                                           overrides=[*kept, f"hydra/launcher={self.dispatch}", *settings],
                                           run_mode=RunMode.MULTIRUN)
        OmegaConf.copy_cache(from_config=self.config, to_config=config)  # the same ${now:...} sweep folder
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(Path(str(self.config.hydra.sweep.dir)).absolute())
            config.hydra.overrides.hydra = [*kept, f"hydra/launcher={self.dispatch}", *settings]
        return Plugins.instance().instantiate_launcher(hydra_context=self.hydra_context,
                                                       task_function=self.task_function, config=config)


def _number(config: DictConfig, job_id: Any, num: int) -> None:
    """Set ``hydra.job.id`` and ``hydra.job.num`` (as launchers do; the hydra node may be read-only by now)."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.job.id = job_id
        config.hydra.job.num = num


def _task_config(config: DictConfig) -> DictConfig:
    """The task's config: ``config`` without its hydra node (as ``run_job`` passes it to the task function)."""
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        if "hydra" in task_cfg:
            del task_cfg["hydra"]
    return task_cfg
