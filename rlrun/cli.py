"""``rlrun <command> ...``: ``train`` hands the rest of the command line to a Hydra app.

So every Hydra flag works after ``rlrun train``: ``-m`` for sweeps, ``--cfg job`` to print the
composed config, ``--help``, shell completion.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, open_dict

from rlrun.checkpoint import CheckpointError
from rlrun.config import ConfigError, load, register_schemas

register_schemas()  # the env schema that conf/env/*.yaml start from

USAGE = """usage: rlrun <command> [args]

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

Curves: tensorboard --logdir runs
"""


def _remove_if_unused(run_dir: Path) -> None:
    """Delete a run folder that Hydra made for a run that never started (no summary, no checkpoint)."""
    if run_dir.is_dir() and not (run_dir / "summary.json").exists() and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.parent.name == "runs" and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()  # the runs/ folder this refused run made


@hydra.main(version_base=None, config_path="conf", config_name="config")
def hydra_train(cfg: DictConfig) -> float:
    """The Hydra task: check the config, train, return the final evaluation return (for sweepers).

    In a sweep (``-m``) a job that fails records why in its folder (``error.txt``, a ``failed`` row in
    ``sweep.csv``) and returns NaN, so the other jobs go on; Ctrl-C still stops the whole sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rlrun.sweep import cpu_share, record_failure, share_cores
    from rlrun.train import TrainingDiverged, final_return, train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    if multirun and (shared := share_cores(cfg, cpu_share(hydra_cfg))):
        print(f"rlrun: parallel jobs share the cores: {shared} for {run_dir.name}", flush=True)
    try:
        typed = load(cfg)
        summary = train(typed)
    except (ConfigError, CheckpointError, TrainingDiverged) as err:
        if multirun:
            return record_failure(run_dir, err, with_traceback=False)
        if not cfg.get("resume") and not isinstance(err, TrainingDiverged):
            _remove_if_unused(run_dir)
        print(f"rlrun: error: {err}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, TrainingDiverged) else 2) from None
    except Exception as err:  # in a sweep any error fails this job only (error.txt keeps it)
        if not multirun:
            raise
        return record_failure(run_dir, err, with_traceback=True)
    if summary["status"] == "interrupted":  # Ctrl-C: checkpoint and summary are saved; stop a sweep too
        print(f"rlrun: interrupted at step {summary['steps']}; resume with `rlrun train resume={run_dir}`",
              file=sys.stderr)
        raise SystemExit(130)
    return final_return(summary)


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
    saved = Path(folder) / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={folder}: {saved} does not exist; resume takes a run folder written by `rlrun train`.")
    old = yaml.safe_load(saved.read_text()) or []
    new_keys = {_override_key(a) for a in args if "=" in a and not a.startswith("-")}
    kept = [a for a in old if _override_key(a) not in new_keys | {"resume", "hydra.run.dir"}]
    return kept + args + [f"hydra.run.dir={folder}"]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        try:
            rest = resume_args(rest)
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
    print(f"rlrun: unknown command {command!r}; the commands are: train, plot, eval.\n\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
