"""Sweeps (`rlrun train -m`): the sweep summary, failed jobs that don't stop the others, cores per job.

- ``sweep.csv`` in the sweep folder has a row per job: its folder, overrides, seed, status
  (``completed``, ``interrupted``, ``failed`` or ``running``), final and best evaluation return,
  steps, wall time, SPS and the error of a failed job. It is rebuilt from the job folders whenever
  a job ends (so it can be read while the sweep runs) and once more when the sweep ends, by
  :class:`SweepSummary`, a Hydra callback that ``conf/config.yaml`` registers.
- A job that fails (a value its config refuses, a diverged run, any exception) writes
  ``error.txt`` into its folder and returns NaN; the other jobs go on, and `rlrun train -m` exits
  with status 1 at the end if any job failed.
- :func:`cpu_share` reads the launcher's settings to find how many cores each parallel job may
  use, so that jobs don't oversubscribe the machine (see :func:`share_cores`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

COLUMNS = ["job", "overrides", "seed", "status", "final_eval_return", "best_eval_return", "steps", "wall_s", "sps",
           "error"]
ROUNDING = {"final_eval_return": 2, "best_eval_return": 2, "wall_s": 1, "sps": 0}
"""Decimals kept in sweep.csv (summary.json keeps every digit)."""
SUMMARY_FILE = "sweep.csv"
ERROR_FILE = "error.txt"
failed_jobs = 0
"""Failed jobs of the last sweep in this process (read by `rlrun train -m` for its exit status)."""


# ----------------------------------------------------------------- the summary
def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def job_row(job_dir: Path) -> dict[str, Any]:
    """One job folder as a row of ``sweep.csv``; a job without summary.json is failed (error.txt) or running."""
    overrides = _read_yaml(job_dir / ".hydra" / "overrides.yaml") or []
    config = _read_yaml(job_dir / ".hydra" / "config.yaml") or {}
    row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(overrides), "seed": config.get("seed")}
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    for key in ("status", "final_eval_return", "best_eval_return", "steps", "wall_s", "sps"):
        row[key] = summary.get(key)
    for key, digits in ROUNDING.items():  # returns are means of float32 sums: 69.9, not 69.9000015258789
        if isinstance(row[key], float):
            row[key] = round(row[key], digits)
    error = job_dir / ERROR_FILE
    if error.is_file():
        row["status"] = "failed"
        row["error"] = (error.read_text().strip().splitlines() or ["failed"])[0]
    row["status"] = row["status"] or "running"
    return row


def _job_number(job_dir: Path) -> tuple[int, str]:
    hydra_yaml = _read_yaml(job_dir / ".hydra" / "hydra.yaml") or {}
    num = ((hydra_yaml.get("hydra") or {}).get("job") or {}).get("num")
    return (num if isinstance(num, int) else 1 << 30, job_dir.name)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep (each has ``.hydra/overrides.yaml``), in job order."""
    found = [p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=_job_number)


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rebuild ``<sweep_dir>/sweep.csv`` from the job folders (atomically: readers never see half a file)."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(d) for d in job_dirs(sweep_dir)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = sweep_dir / f".{SUMMARY_FILE}.{os.getpid()}.tmp"  # one per process: parallel jobs may write at once
    tmp.write_text(buffer.getvalue())
    tmp.replace(sweep_dir / SUMMARY_FILE)
    return rows


class SweepSummary(Callback):
    """Hydra callback: keep ``sweep.csv`` current during a multirun and report failed jobs at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global failed_jobs
        failed_jobs = 0

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global failed_jobs
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        failed = [r for r in rows if r["status"] == "failed"]
        failed_jobs = len(failed)
        done = sum(r["status"] == "completed" for r in rows)
        print(f"rlrun: sweep finished: {done} of {len(rows)} jobs completed, {len(failed)} failed; "
              f"summary in {sweep_dir / SUMMARY_FILE}")
        for row in failed:
            print(f"rlrun:   failed: {row['job']}: {row['error']}")


# ----------------------------------------------------------------- failed jobs
def record_failure(job_dir: Path, err: BaseException, with_traceback: bool) -> float:
    """Write ``error.txt`` (the message, then the traceback for unexpected errors) and return NaN for the sweeper."""
    job_dir.mkdir(parents=True, exist_ok=True)
    text = f"{type(err).__name__}: {err}" if with_traceback else str(err)
    if with_traceback:
        text += "\n\n" + "".join(traceback.format_exception(err))
    (job_dir / ERROR_FILE).write_text(text.rstrip() + "\n")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"rlrun: job {job_dir.name} failed: {first}", flush=True)
    return math.nan


# ----------------------------------------------------------------- cores per job
def cpu_share(hydra_cfg: DictConfig, cpu_count: int | None = None) -> int | None:
    """Cores one job may use when the launcher runs several at once; None for one job at a time.

    joblib: cpu_count // n_jobs (n_jobs -1 is every core, -2 all but one, as joblib counts).
    Ray: the job's ``num_cpus`` resource (Ray's default for a task is 1). submitit:
    ``cpus_per_task`` when set. The basic launcher runs jobs one after another: no cap.
    """
    launcher = hydra_cfg.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    cpus = cpu_count or os.cpu_count() or 1
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        n_jobs = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
        return max(1, cpus // max(1, n_jobs))
    if "ray" in target:
        remote = OmegaConf.select(launcher, "ray.remote") or {}
        return max(1, math.floor(float(remote.get("num_cpus") or 1)))
    if "submitit" in target:
        per_task = launcher.get("cpus_per_task")
        return int(per_task) if per_task else None
    return None


def share_cores(cfg: DictConfig, share: int | None) -> str | None:
    """Cap ``torch_threads`` and the ale backend's ``env.num_threads`` at ``share``; what was set, or None."""
    if share is None:
        return None
    with open_dict(cfg):
        cfg.torch_threads = min(int(cfg.torch_threads), share)
        num_envs = int(cfg.env.get("num_envs") or 1)
        threads = int(cfg.env.get("num_threads") or 0)
        cfg.env.num_threads = min(threads or num_envs, share)
    return f"torch_threads={cfg.torch_threads} env.num_threads={cfg.env.num_threads}"
