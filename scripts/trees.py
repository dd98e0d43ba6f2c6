"""Run one piece of code against the rlrun of a given source tree, for benchmarks that compare a change with
the code before it in the same script run (scripts/bench_presets.py, scripts/bench_fused.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(revision: str, folder: Path) -> Iterator[Path]:
    """The project at git ``revision``, checked out into ``folder`` for the duration (a detached worktree)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)


def run_in_tree(tree: Path, code: str, *args: str) -> dict:
    """``python -c code args`` importing the rlrun of ``tree``; the JSON the code prints after ``RESULT ``.

    The code must put ``rlrun.__file__`` under the key ``rlrun``: a run that imported another rlrun (an
    installed one shadowing the tree) is refused rather than measured.
    """
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{' '.join(args)} failed with {tree}:\n{done.stdout}{done.stderr}")
    result = json.loads(line[len("RESULT "):])
    if not result["rlrun"].startswith(str(tree)):
        raise SystemExit(f"the run imported {result['rlrun']}, not the rlrun of {tree}")
    return result
