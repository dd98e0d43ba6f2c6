"""``rlrun <command> ...``: ``train`` hands the rest of the command line to a Hydra app.

So every Hydra flag works after ``rlrun train``: ``-m`` for sweeps, ``--cfg job`` to print the
composed config, ``--help``, shell completion.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from rlrun.checkpoint import CheckpointError
from rlrun.config import ConfigError, load, register_schemas

register_schemas()  # the env schema that conf/env/*.yaml start from

USAGE = """usage: rlrun <command> [args]    (rlrun --version: the installed version)

commands:
  train   train an agent; the rest of the line is Hydra overrides and flags, e.g.
            rlrun train algo=ppo env=CartPole
            rlrun train -m algo=ppo env=CartPole seed=1,2,3 algo.norm_adv=true,false
            rlrun train resume=runs/<run folder> total_steps=500000
            rlrun train --help        (config groups and Hydra flags)
            rlrun train --cfg job     (print the composed config)
  plot    learning curves across runs and seeds: mean and 95% CI per group, a PNG and a table
            rlrun plot runs/multirun/<date>/<time> --out curves.png
            rlrun plot --help
  eval    evaluate a run's checkpoint: returns table, optional mp4
            rlrun eval runs/<run folder> --episodes 20 --video
            rlrun eval --help
  play    play a board-game agent (algo=alphazero) in the terminal, or print its move for a position
            rlrun play runs/<run folder>
            rlrun play runs/<run folder> --position 4453

Curves: tensorboard --logdir runs
"""


def _remove_if_unused(run_dir: Path) -> None:
    """Delete a run folder that Hydra made for a run that never started (no summary, no checkpoint)."""
    if run_dir.is_dir() and not (run_dir / "summary.json").exists() and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.parent.name == "runs" and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()  # the runs/ folder this refused run made


class RunFolderCheck(Callback):
    """Hydra callback: refuse a run or sweep folder that cannot be written, before Hydra tries to create it
    (which would end in a traceback)."""

    def _check(self, folder: str, key: str) -> None:
        from rlrun.train import folder_problem

        problem = folder_problem(Path(folder))
        if problem:
            print(f"rlrun: error: the run folder {folder} cannot be written ({problem}): choose another with "
                  f"{key}=<folder>.", file=sys.stderr)
            raise SystemExit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")


@hydra.main(version_base=None, config_path="conf", config_name="config")
def hydra_train(cfg: DictConfig) -> float:
    """The Hydra task: check the config, train, return the final evaluation return (for sweepers).

    In a sweep (``-m``) a job that fails records why in its folder (``error.txt``, a ``failed`` row in
    ``sweep.csv``) and returns NaN, so the other jobs go on; Ctrl-C still stops the whole sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rlrun.checkpoint import list_checkpoints
    from rlrun.interrupt import StopSignals
    from rlrun.resources import ResourceError
    from rlrun.run import TrainingDiverged
    from rlrun.sweep import cpu_share, record_failure, share_cores
    from rlrun.train import final_return, train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.get("population_members"):  # a group job of hydra/launcher=population
        return _train_population_job(Path(cfg.population_members), cpu_share(hydra_cfg) if multirun else None)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    if multirun and (shared := share_cores(cfg, cpu_share(hydra_cfg))):
        print(f"rlrun: parallel jobs share the cores: {shared} for {run_dir.name}", flush=True)
    signals, preempt, submitit_handler = StopSignals(exit_after_stop=True), None, None
    if os.environ.get("SUBMITIT_EXECUTOR"):  # a job of the submitit launcher (SLURM or local)
        signals, preempt, submitit_handler = _submitit_signals()
        if not cfg.get("resume") and list_checkpoints(run_dir):  # requeued after a preemption or a timeout
            print(f"rlrun: {run_dir} already holds checkpoints: this job was requeued, resuming it", flush=True)
            with open_dict(cfg):
                cfg.resume = str(run_dir)
    try:
        typed = load(cfg)
        with signals:  # held until the exit status is decided: a second signal cannot cut the way out short
            summary = train(typed, signals)
            if summary["status"] == "interrupted":
                _report_interruption(summary, run_dir, preempt, submitit_handler)
    except (ConfigError, CheckpointError, TrainingDiverged, ResourceError) as err:
        if multirun:
            return record_failure(run_dir, err, with_traceback=False)
        if not cfg.get("resume") and not isinstance(err, TrainingDiverged):
            _remove_if_unused(run_dir)
        print(f"rlrun: error: {err}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, (ConfigError, CheckpointError)) else 1) from None
    except Exception as err:  # in a sweep any error fails this job only (error.txt keeps it)
        if not multirun:
            raise
        return record_failure(run_dir, err, with_traceback=True)
    return final_return(summary)


def _train_population_job(members_file: Path, share: int | None) -> float:
    """A group job of ``hydra/launcher=population``: train the members that ``members_file`` lists as one
    population (:func:`rlrun.population.train_population`).

    The launcher has written each member's folder and ``.hydra`` files, and its task config into ``members_file``
    (as Hydra composed it, ``run_dir`` unset); each member's result lands in its own
    folder (``summary.json``, and ``error.txt`` for a member that failed), where the launcher reads it, so the
    group job itself returns NaN. A failure of the whole group fails each member that has no result yet.
    """
    import json
    import math

    from omegaconf import OmegaConf

    from rlrun import population
    from rlrun.checkpoint import list_checkpoints
    from rlrun.interrupt import EXIT_CODES, Interrupted, StopSignals
    from rlrun.resources import ResourceError
    from rlrun.sweep import ERROR_FILE, record_failure, share_cores

    members = json.loads(members_file.read_text())["members"]  # each: its folder, overrides and task config
    folders = [Path(member["folder"]) for member in members]
    cfgs, shared = [], None
    for folder, spec in zip(folders, members):
        member = OmegaConf.create(spec["config"])
        with open_dict(member):
            member.run_dir = str(folder)
        shared = share_cores(member, share)
        OmegaConf.set_struct(member, True)  # as Hydra hands a job its config
        cfgs.append(member)
    if shared:
        print(f"rlrun: parallel jobs share the cores: {shared} for the {len(cfgs)} members of "
              f"{members_file.parent.name}", flush=True)

    def fail(err: BaseException, with_traceback: bool) -> float:
        for folder in folders:
            if not (folder / "summary.json").exists() and not (folder / ERROR_FILE).exists():
                record_failure(folder, err, with_traceback=with_traceback)
        return math.nan

    started = [folder for folder in folders if list_checkpoints(folder)]
    if os.environ.get("SUBMITIT_EXECUTOR") and started:  # requeued by submitit: a population does not resume
        return fail(ConfigError(f"{len(started)} of the {len(folders)} members already hold checkpoints: this "
                                "population was requeued, and a population cannot resume as one; resume each "
                                f"member alone with `rlrun train {shlex.quote('resume=' + str(started[0]))}` "
                                "(and likewise for the others)."), with_traceback=False)
    signals = StopSignals(exit_after_stop=True)  # after a stop, later signals are ignored on the way out
    try:
        with signals:
            population.train_population(cfgs, signals)
    except Interrupted as err:  # every member is saved with an interrupted summary: stop the sweep, as a run does
        print(f"rlrun: interrupted by {err.signame}; every member's checkpoint is saved. Resume a member with "
              f"`rlrun train {shlex.quote('resume=' + str(folders[0]))}` (and likewise for the others)",
              file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES.get(err.signame, 130)) from None
    except (ConfigError, CheckpointError, ResourceError) as err:
        return fail(err, with_traceback=False)
    except Exception as err:  # noqa: BLE001 - the members fail (error.txt keeps it), the sweep goes on
        return fail(err, with_traceback=True)
    return math.nan


def _report_interruption(summary: dict, run_dir: Path, preempt, submitit_handler) -> None:
    """Say how to resume, then exit 130 (SIGINT) or 143 (SIGTERM), stopping a sweep too; after submitit's
    preemption signal, hand over to submitit, which requeues the job (or gives up after max_num_timeout)."""
    from rlrun.interrupt import EXIT_CODES

    signame = summary["signal"] or "SIGINT"
    print(f"rlrun: interrupted by {signame} at step {summary['steps']}; the checkpoint is saved. Resume with "
          f"`rlrun train {shlex.quote('resume=' + str(run_dir))}`", file=sys.stderr, flush=True)
    if preempt is not None and signame == preempt.name:
        submitit_handler(preempt, None)
    raise SystemExit(EXIT_CODES.get(signame, 130))


def _submitit_signals():
    """Inside a submitit job: its preemption/timeout signal (SIGUSR2) stops the run with a checkpoint, after
    which submitit's own handler requeues the job; SIGTERM, which submitit ignores (SLURM sends it on preemption
    before the end), asks for a checkpoint at the next iteration and lets the run go on."""
    import signal

    from submitit import JobEnvironment

    from rlrun.interrupt import StopSignals

    preempt = signal.Signals(JobEnvironment._usr_sig())  # SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
    signals = StopSignals(stop=(signal.SIGINT, preempt), save_soon=(signal.SIGTERM,), exit_after_stop=True)
    return signals, preempt, signal.getsignal(preempt)


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def resume_args(args: list[str]) -> list[str]:
    """Turn ``resume=<run folder> [overrides]`` into the folder's own overrides plus the new ones.

    The run is composed again exactly as it was (its ``.hydra/overrides.yaml``), the new overrides
    win, and Hydra writes into the same folder, so the curves continue where they stopped.
    """
    folder = next((a.split("=", 1)[1] for a in args if _override_key(a) == "resume"), None)
    if folder is None:
        return args
    folder = folder.strip("'\"")  # as Hydra would unquote it
    saved = Path(folder) / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={folder}: {saved} does not exist; resume takes a run folder written by `rlrun train`.")
    old = yaml.safe_load(saved.read_text()) or []
    new_keys = {_override_key(a) for a in args if "=" in a and not a.startswith("-")}
    kept = [a for a in old if _override_key(a) not in new_keys | {"resume", "hydra.run.dir"}]
    rest = [a for a in args if _override_key(a) != "resume"]
    # A sweep job's folder is named after its overrides (seed=0,total_steps=10000): quoted, so that Hydra's
    # override grammar reads the '=' and ',' in it as part of the path.
    quoted = _quote(folder)
    return kept + rest + [f"resume={quoted}", f"hydra.run.dir={quoted}"]


def _quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar."""
    quote = "'" if "'" not in value else '"'
    return quote + value.replace(quote, "\\" + quote) + quote


def env_args(args: list[str]) -> list[str]:
    """``env.id=<id>`` without ``env=``: add the env option whose file has that id (``env.id=Acrobot-v1`` ->
    ``env=Acrobot``, with its settings and its presets), or ``env=gym`` for any other id (the run is then named
    after the id and no other env's preset applies). The default ``env=CartPole`` would otherwise train the id
    under CartPole's name and tuned settings."""
    overrides = {_override_key(a): a.split("=", 1)[1] for a in args if "=" in a and not a.startswith("-")}
    if "env.id" not in overrides or "env" in overrides:
        return args
    env_id = overrides["env.id"].strip("'\"")
    for path in sorted((Path(__file__).parent / "conf" / "env").glob("*.yaml")):
        if path.stem != "gym" and (yaml.safe_load(path.read_text()) or {}).get("id") == env_id:
            return [f"env={path.stem}", *args]
    return ["env=gym", *args]


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [key for name, value in node.items() for key in _flat_keys(value, f"{prefix}{name}.")] or [prefix]


PLUGINS = {
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "sweep", "Hydra's joblib launcher"),
    "hydra/launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray", "Hydra's Ray launcher"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm", "Hydra's submitit launcher"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm", "Hydra's submitit launcher"),
    "hydra/launcher=slurm_gpu": ("hydra_plugins.hydra_submitit_launcher", "slurm", "Hydra's submitit launcher"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweep", "Hydra's Optuna sweeper"),
    "hydra/sweeper=optuna_max": ("hydra_plugins.hydra_optuna_sweeper", "sweep", "Hydra's Optuna sweeper"),
}
"""Launcher and sweeper options, the plugin each needs and the rlrun extra that installs it."""


def plugin_problem(args: list[str]) -> str | None:
    """One sentence for a launcher or sweeper whose Hydra plugin is not installed, naming the extra."""
    import importlib.util

    for arg in args:
        if arg in PLUGINS:
            module, extra, what = PLUGINS[arg]
            if importlib.util.find_spec(module) is None:
                return (f"{arg} needs {what}, which is not installed: pip install \"rlrun[{extra}]\" "
                        "(docs/sweeps.md lists the launchers and their extras).")
    return None


def composition_problem(args: list[str]) -> str | None:
    """One paragraph for an override that Hydra cannot compose because of a misspelt key (``algo.lrr=0.1``) or an
    option that does not exist (``algo=PPO``), with the closest names; None when it composes (or for a sweep or
    a flag, which Hydra reports itself)."""
    import difflib

    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if any(a.startswith("-") for a in args):
        return None
    overrides = [a for a in args if "=" in a and not _override_key(a).startswith("hydra")]
    try:
        with initialize_config_module("rlrun.conf", version_base=None):
            compose("config", overrides=overrides)
        return None
    except HydraException as err:
        text = str(err)
    if missing := re.search(r"Could not find '([\w/]+)/([^']+)'", text):
        group, option = missing.groups()
        options = sorted(p.stem for p in (Path(__file__).parent / "conf" / group).glob("*.yaml"))
        same = [o for o in options if o.lower() == option.lower()]
        close = same or difflib.get_close_matches(option, options, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(f'{group}={c}' for c in close)}? " if close else ""
        return f"{group}={option} is not an option: {hint}The options are {', '.join(options)}."
    if unknown := re.search(r"Could not override '([^']+)'", text):
        key = unknown.group(1)
        rest = [a for a in overrides if _override_key(a) != key]
        try:
            with initialize_config_module("rlrun.conf", version_base=None):
                keys = _flat_keys(OmegaConf.to_container(compose("config", overrides=rest)))
        except HydraException:
            return None
        keys = [k.rstrip(".") for k in keys]
        group = key.split(".")[0] + "."  # the same group and depth first (algo.lrr -> algo.*, totl_steps -> top level)
        candidates = [k for k in keys if k.count(".") == key.count(".") and ("." not in key or k.startswith(group))]
        close = difflib.get_close_matches(key, candidates or keys, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return (f"{key} is not a key of this config: {hint}`rlrun train --cfg job` prints every key, and "
                "docs/configuration.md documents them.")
    return None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in ("--version", "-V", "version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"rlrun {version('rlrun')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("rlrun (not installed: pip install -e .)")
        return
    if command == "train":
        try:
            rest = env_args(resume_args(rest))
            if problem := plugin_problem(rest) or composition_problem(rest):
                raise ConfigError(problem)
        except ConfigError as err:
            print(f"rlrun: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sys.argv = ["rlrun train", *rest]
        hydra_train()
        from rlrun import sweep

        if sweep.failed_jobs:  # a sweep whose jobs did not all succeed (each one is in sweep.csv)
            raise SystemExit(1)
        return
    if command == "plot":
        from rlrun.plot import main as plot_main

        raise SystemExit(plot_main(rest))
    if command == "eval":
        from rlrun.evaluate import main as eval_main

        raise SystemExit(eval_main(rest))
    if command == "play":
        from rlrun.play import main as play_main

        raise SystemExit(play_main(rest))
    print(f"rlrun: unknown command {command!r}; the commands are: train, plot, eval, play.\n\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
