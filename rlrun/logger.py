"""TensorBoard scalars against environment steps, the config as text and hparams, and a console progress bar."""

from __future__ import annotations

import json
import shlex
import sys
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

FINAL_KEYS = ("final_eval_return", "best_eval_return", "steps_to_threshold", "seconds_to_threshold", "sps")
"""summary.json keys that :meth:`Logger.final` writes as ``final/<key>`` scalars."""
HPARAM_METRICS = ("eval/return_mean", *(f"final/{key}" for key in FINAL_KEYS))
"""The metric columns of TensorBoard's HParams dashboard."""


class Logger:
    """Writes the DESIGN.md tags (``charts/...``, ``losses/...``, ``eval/...``) into the run folder, and tells the
    run's story in plain lines (a start block, a line per evaluation, a closing summary) on the console and in
    ``train.log``.

    ``progress``: a progress bar below those lines, when the console is a terminal (under nohup, SLURM or CI the
    lines stay plain). ``console=False`` writes ``train.log`` only (a population's members: the population
    speaks for them on the console). ``tracker``: a :class:`~rlrun.trackers.WandbTracker` that every scalar and
    the summary are mirrored to.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None, progress: bool = True,
                 total_steps: int = 0, start_step: int = 0, description: str = "train", console: bool = True,
                 tracker: Any = None):
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self.tracker, self.failed = tracker, False
        self.log_path = Path(run_dir) / "train.log"
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.console, self.total_steps = console, total_steps
        self.bar = None
        if progress and console and sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            # At most ~78 columns: "ppo CartPole ━━━━━━━━━━━━━━ 120,000/200,000  9,512 SPS  ret 231.6  ETA 0:00:08"
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=14), TextColumn("{task.fields[steps]}"),
                TextColumn("{task.fields[sps]} SPS"), TextColumn("ret {task.fields[ret]}"), TextColumn("ETA"),
                TimeRemainingColumn(), expand=False,
            )
            self.task = self.bar.add_task(description[:16], total=total_steps, completed=start_step, sps="-",
                                          ret="-", steps=self._steps(start_step))
            self.bar.start()

    def _steps(self, step: int) -> str:
        return f"{min(step, self.total_steps):,}/{self.total_steps:,}"  # never past the total

    def message(self, text: str) -> None:
        """One line for the user: on the console (above the progress bar) and appended to ``train.log``."""
        line = f"rlrun: {text}"
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        elif self.console:
            print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def start(self, rows: list[tuple[str, str]]) -> None:
        """The start block: one ``name  value`` line per row (run folder, algorithm, env, device, steps)."""
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.message(f"{name:<{width}}  {value}")

    def evaluation(self, step: int, returns: list[float], best: float, sps: float, elapsed: float,
                   notes: str = "") -> None:
        """One line per evaluation: step, mean +- std [min, max] of the episode returns, best so far, SPS, time,
        and ``notes`` (a board game's results against its opponent)."""
        values = torch.tensor(returns)  # float32, as the run records the mean (so the best agrees with it)
        mean, std = float(values.mean()), float(values.std(unbiased=False))
        self.message(f"step {step:>9,}  eval {mean:.1f} +- {std:.1f} [{min(returns):.1f}, {max(returns):.1f}]"
                     f"  best {best:.1f}  {sps:,.0f} SPS  {clock(elapsed)}" + (f"  {notes}" if notes else ""))

    def closing(self, summary: dict[str, Any], run_dir: Path) -> None:
        """The closing summary: status, final and best evaluation, the threshold, steps and time, where to look."""
        def num(value: Any) -> str:
            return "-" if value is None else f"{value:.1f}"

        self.message(f"{summary['status']}: final eval {num(summary['final_eval_return'])}, "
                     f"best {num(summary['best_eval_return'])}; {summary['steps']:,} steps in "
                     f"{clock(summary['wall_s'])} ({summary['sps']:,.0f} SPS)")
        threshold = summary.get("reward_threshold")
        if threshold is not None:
            reached = summary.get("steps_to_threshold")
            self.message(f"threshold {threshold:g}: " + (
                f"reached at step {reached:,}, after {clock(summary['seconds_to_threshold'])} of training"
                if reached is not None else "not reached"))
        folder = shlex.quote(shown(run_dir))
        self.message(f"run folder {shown(run_dir)}")
        self.message(f"look at it: tensorboard --logdir {folder}   |   rlrun eval {folder}")

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if self.tracker is not None:
            self.tracker.log(values, step)

    def episodes(self, returns: list[float], lengths: list[float], step: int) -> None:
        """Log the mean return and length of the episodes that ended in the last iteration."""
        if returns:
            self.recent_returns.extend(returns)
            self.scalars({"charts/episodic_return": sum(returns) / len(returns),
                          "charts/episodic_length": sum(lengths) / len(lengths)}, step)

    def config(self, flat: dict[str, Any]) -> None:
        """The resolved config as a text table and as TensorBoard hparams (compared across a sweep).

        The HParams dashboard shows, per run, the last value of each metric tag in :data:`HPARAM_METRICS`:
        the evaluation curve and the ``final/...`` scalars that :meth:`final` writes at the end.
        """
        rows = "\n".join(f"|{k}|{v}|" for k, v in flat.items())
        self.writer.add_text("config", "|key|value|\n|-|-|\n" + rows)
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
        for summary in hparams_summary(clean, dict.fromkeys(HPARAM_METRICS, 0.0)):
            self.writer.file_writer.add_summary(summary)

    def final(self, summary: dict[str, Any]) -> None:
        """The run's summary numbers as ``final/...`` scalars at its last step (the HParams table's columns)."""
        values = {f"final/{key}": summary[key] for key in FINAL_KEYS if summary.get(key) is not None}
        self.scalars(values, int(summary["steps"]))
        if self.tracker is not None:
            self.tracker.summary(summary)
            self.failed = summary["status"] == "failed"

    def progress(self, step: int, sps: float) -> None:
        if self.bar is not None:
            ret = f"{sum(self.recent_returns) / len(self.recent_returns):.1f}" if self.recent_returns else "-"
            self.bar.update(self.task, completed=min(step, self.total_steps), sps=f"{sps:,.0f}", ret=ret,
                            steps=self._steps(step))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.writer.flush()
        self.writer.close()
        if self.tracker is not None:
            self.tracker.close(failed=self.failed)
            self.tracker = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def clock(seconds: float | None) -> str:
    """``m:ss.s``, or ``h:mm:ss.s`` from an hour on."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def shown(path: Path | str) -> str:
    """``path`` as the user would type it: relative to the working directory when it lies inside it."""
    path = Path(path)
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)

