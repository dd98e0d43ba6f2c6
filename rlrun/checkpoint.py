"""Checkpoints: written atomically (temporary file, fsync, rename), read without unpickling objects.

A checkpoint is a dict of tensors and plain Python values, so ``torch.load(weights_only=True)``
reads it and a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PATTERN = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message says which and why."""


def path_for(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:010d}.pt"


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run folder; CheckpointError if there is none."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"No checkpoint in {Path(run_dir) / 'checkpoints'}: expected files named step_<N>.pt. "
            "Is this a run folder written by `rlrun train`, and did the run get to save one?"
        )
    return found[-1]


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and the temporary files of writes that were killed."""
    for path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)
    folder = Path(run_dir) / "checkpoints"
    for tmp in folder.glob("step_*.pt.tmp") if folder.is_dir() else ():
        tmp.unlink(missing_ok=True)


def load_newest(run_dir: str | Path, device: torch.device | str = "cpu",
                report: Callable[[str], None] = print) -> dict[str, Any]:
    """The newest checkpoint of ``run_dir`` that loads; each newer one that does not is reported by name.

    A checkpoint is written atomically, so a crash never leaves half of one, but a disk can still corrupt or
    truncate a file. CheckpointError, in one paragraph, when there is none or none loads.
    """
    found = list_checkpoints(run_dir)
    if not found:
        latest(run_dir)  # raises the "no checkpoint" error
    refused = []
    for path in reversed(found):
        try:
            state = load(path, device)
        except CheckpointError as err:
            refused.append(str(err))
            continue
        for reason in refused:
            report(f"{reason} Resuming from the previous one, {path.name}, instead.")
        return state
    raise CheckpointError(
        f"None of the {len(found)} checkpoint(s) in {Path(run_dir) / 'checkpoints'} can be loaded, so the run cannot "
        f"resume: {' '.join(refused)} Start a new run, or restore a checkpoint from a backup.")


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (tensors and plain data only) onto ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, corrupt, not a checkpoint, or objects it will not build: one line
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"Checkpoint {path} holds a Python object ({refused.group(1)}) besides tensors and plain data; it is "
                "refused, because loading it could run code. rlrun checkpoints hold only tensors, numbers, strings, "
                "lists and dicts."
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))  # torch's own first line misleads here
        first = detail.group(1).strip() if detail else (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"Checkpoint {path} cannot be read ({first}); it is corrupt or not an rlrun checkpoint.") from None
    if not isinstance(state, dict) or "step" not in state or "agent" not in state:
        raise CheckpointError(f"{path} is not an rlrun checkpoint (no 'step' and 'agent' entries).")
    return state
