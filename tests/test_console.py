"""What a run tells the user: a start block, a line per evaluation and a closing summary, on the console and in
train.log alike; plain lines without a terminal, a progress bar within 80 columns with one."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

RUN = ["train", "total_steps=4e3", "eval.every_steps=2e3", "eval.episodes=2", "device=cpu"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def rlrun_lines(text: str) -> list[str]:
    return [line for line in ANSI.sub("", text).replace("\r", "\n").split("\n") if line.startswith("rlrun:")]


def check_story(lines: list[str], run_dir: Path) -> None:
    text = "\n".join(lines)
    assert f"rlrun: run folder  {run_dir}" in text
    assert "rlrun: algorithm   ppo with preset/ppo_CartPole.yaml" in text
    assert "rlrun: env         CartPole-v1 (CartPole), torch backend, 8 envs" in text
    assert "rlrun: device      cpu, 1 torch thread, seed 0" in text
    assert "rlrun: steps       4,000 (evaluation every 2,000 steps, 2 episodes)" in text
    evals = [line for line in lines if re.match(r"rlrun: step +[\d,]+  eval [-\d.]+ \+- [\d.]+ \[[-\d.]+, [-\d.]+\]  best", line)]
    assert len(evals) == 2, text  # at 2,048 and at the end (4,096)
    assert re.search(r"rlrun: completed: final eval [\d.]+, best [\d.]+; 4,096 steps in \d+:\d\d\.\d", text)
    assert "rlrun: threshold 475: " in text
    assert f"rlrun: look at it: tensorboard --logdir {run_dir}   |   rlrun eval {run_dir}" in text


def test_without_a_terminal_a_run_prints_plain_lines_and_train_log_holds_them(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "rlrun.cli", *RUN, f"hydra.run.dir={run_dir}"], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout and "\r" not in done.stdout  # no progress-bar redraws
    lines = rlrun_lines(done.stdout)
    check_story(lines, run_dir)
    assert (run_dir / "train.log").read_text().splitlines() == lines


def test_in_a_terminal_the_progress_bar_fits_80_columns_and_never_overshoots(tmp_path):
    run_dir = tmp_path / "run"
    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="80", LINES="24", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "rlrun.cli", *RUN, f"hydra.run.dir={run_dir}"], stdin=follower,
                            stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out
    check_story(rlrun_lines(out), run_dir)
    bars = [line for line in ANSI.sub("", out).replace("\r", "\n").split("\n") if "SPS ret" in line]
    assert bars, out
    assert all(len(line.rstrip()) <= 80 and "…" not in line for line in bars), bars
    counts = [tuple(int(x.replace(",", "")) for x in m.groups()) for line in bars
              if (m := re.search(r"([\d,]+)/([\d,]+)", line))]
    assert counts and all(done <= total for done, total in counts) and counts[-1] == (4000, 4000)
