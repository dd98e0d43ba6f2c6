"""docs/tutorial.md stays true: every `rlrun` command in its ```bash blocks runs, in order, in a fresh folder,
with fewer steps (the last overrides win) so the test takes well under a minute."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parent.parent / "docs" / "tutorial.md"
SHORTER = {"train": ["total_steps=2048", "eval.every_steps=1024", "eval.episodes=2", "progress=false",
                     "device=cpu"]}


def commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), flags=re.DOTALL)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("rlrun ")]


def test_the_tutorial_runs_four_rlrun_commands():
    assert [c[1] for c in commands()] == ["train", "train", "plot", "eval"]


def test_every_tutorial_command_runs(tmp_path):
    pytest.importorskip("moviepy")  # step 4 records a video (the test extra installs MoviePy)
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    for command in commands():
        args = command[1:] + SHORTER.get(command[1], [])
        done = subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env, check=False)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    runs = tmp_path / "runs" / "tutorial"
    assert (runs / "first" / "summary.json").is_file() and (runs / "first" / "train.log").read_text()
    assert len(list((runs / "sweep").glob("*/summary.json"))) == 6 and (runs / "sweep" / "sweep.csv").is_file()
    assert (runs / "norm_adv.png").stat().st_size > 0
    assert list((runs / "first" / "videos").rglob("*.mp4"))
