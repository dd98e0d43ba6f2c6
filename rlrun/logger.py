"""TensorBoard scalars against environment steps, the config as text and hparams, and a console progress bar."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

FINAL_KEYS = ("final_eval_return", "best_eval_return", "steps_to_threshold", "seconds_to_threshold", "sps")
"""summary.json keys that :meth:`Logger.final` writes as ``final/<key>`` scalars."""
HPARAM_METRICS = ("eval/return_mean", *(f"final/{key}" for key in FINAL_KEYS))
"""The metric columns of TensorBoard's HParams dashboard."""


class Logger:
    """Writes the DESIGN.md tags (``charts/...``, ``losses/...``, ``eval/...``) into the run folder."""

    def __init__(self, run_dir: Path, purge_step: int | None = None, progress: bool = True,
                 total_steps: int = 0, start_step: int = 0, description: str = "train"):
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self.log_path = Path(run_dir) / "train.log"
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.bar = None
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("steps"), TextColumn("{task.fields[sps]:>8} SPS"),
                TextColumn("return {task.fields[ret]:>8}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(description, total=total_steps, completed=start_step, sps="-", ret="-")
            self.bar.start()

    def message(self, text: str) -> None:
        """One line for the user: on the console (above the progress bar) and appended to ``train.log``."""
        line = f"rlrun: {text}"
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def episodes(self, returns: list[float], lengths: list[float], step: int) -> None:
        """Log the mean return and length of the episodes that ended in the last iteration."""
        if returns:
            self.recent_returns.extend(returns)
            self.writer.add_scalar("charts/episodic_return", sum(returns) / len(returns), step)
            self.writer.add_scalar("charts/episodic_length", sum(lengths) / len(lengths), step)

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

    def progress(self, step: int, sps: float) -> None:
        if self.bar is not None:
            ret = f"{sum(self.recent_returns) / len(self.recent_returns):.1f}" if self.recent_returns else "-"
            self.bar.update(self.task, completed=step, sps=f"{sps:,.0f}", ret=ret)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.writer.flush()
        self.writer.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
