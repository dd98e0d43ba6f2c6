"""Faults, driven through real `rlrun train` processes: signals, kill -9 mid-run and mid-checkpoint, corrupt
checkpoints, a diverged loss, an unwritable or impossible request, a sweep job resumed, a submitit requeue.

Each must end with a clear message, and nothing already saved may be lost. The children are started with
SIGINT at its default disposition (a background job of a non-interactive shell, as CI runs us, inherits
SIGINT ignored, and Python then never turns it into KeyboardInterrupt).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrun import checkpoint

# A PPO CartPole run that would go on for minutes, checkpointing every 2,048 steps (~0.3 s).
LONG = ["total_steps=10000000", "checkpoint.every_steps=2048", "eval.every_steps=0", "progress=false"]
SLOW_WRITER = """
import io, os, sys, time
import torch
saves = []
real_save = torch.save
def slow_save(obj, f, *args, **kwargs):  # the second checkpoint onwards: half written, then a long pause
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    saves.append(len(data))
    if len(saves) == 1:
        f.write(data)
        return
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    time.sleep(600)
    f.write(data[len(data) // 2:])
torch.save = slow_save
from rlrun.cli import main
main(sys.argv[1:])
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cwd: Path, *args: str, code: str | None = None) -> subprocess.Popen:
    """`rlrun <args>` (or ``python -c code <args>``) in ``cwd``, in its own session, SIGINT at its default."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "rlrun.cli", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint, start_new_session=True)  # noqa: PLW1509


def run(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False,
                          preexec_fn=_default_sigint)


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    """Poll ``condition()`` until it returns something truthy; fail (with the child's output) after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the child exited ({proc.returncode}) first:\n{proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail("timed out waiting")


def checkpoints(run_dir: Path, at_least: int = 1) -> list[Path]:
    found = checkpoint.list_checkpoints(run_dir)
    return found if len(found) >= at_least else []


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


# ----------------------------------------------------------------- signals
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_an_interrupted_summary_then_resume_finishes(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "train", *LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: checkpoints(run_dir, 2), proc=proc)
    proc.send_signal(signum)
    returncode, out = finish(proc)
    assert returncode == code, out
    name = signal.Signals(signum).name
    assert f"interrupted by {name}" in out and f"rlrun train resume={run_dir}" in out
    assert "Traceback" not in out
    stopped = summary(run_dir)
    assert stopped["status"] == "interrupted" and stopped["signal"] == name
    newest = checkpoint.list_checkpoints(run_dir)[-1]
    assert newest == checkpoint.path_for(run_dir, stopped["steps"])  # the checkpoint is at the step it stopped
    assert checkpoint.load(newest)["step"] == stopped["steps"]

    total = stopped["steps"] + 2048
    done = run(tmp_path, "train", f"resume={run_dir}", f"total_steps={total}", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    finished = summary(run_dir)
    assert finished["status"] == "completed" and finished["steps"] >= total and finished["signal"] is None
    first, second = finished["segments"]
    assert first["end_step"] == second["start_step"] == stopped["steps"]
    assert finished["wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"], abs=0.01)


def test_a_second_ctrl_c_while_the_last_checkpoint_is_written_does_not_cut_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "train", *LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: checkpoints(run_dir, 1), proc=proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    returncode, out = finish(proc)
    assert returncode == 130, out
    stopped = summary(run_dir)
    assert stopped["status"] == "interrupted"
    assert checkpoint.load(checkpoint.list_checkpoints(run_dir)[-1])["step"] == stopped["steps"]


def test_sigterm_stops_a_sweep_after_saving_the_running_job(tmp_path):
    proc = start(tmp_path, "train", "-m", "seed=0,1", *LONG, "hydra.sweep.dir=sweep")
    sweep_dir = tmp_path / "sweep"

    def jobs(seed: int) -> list[Path]:  # folders are named after all of a job's overrides: ...,seed=0,...
        return [p for p in sweep_dir.glob(f"*seed={seed}*") if p.is_dir()] if sweep_dir.is_dir() else []

    (job,) = wait_for(lambda: [p for p in jobs(0) if checkpoints(p, 1)], proc=proc)
    proc.send_signal(signal.SIGTERM)
    returncode, out = finish(proc)
    assert returncode == 143, out
    assert summary(job)["status"] == "interrupted" and summary(job)["signal"] == "SIGTERM"
    assert not jobs(1)  # the sweep stopped there


# ----------------------------------------------------------------- kill -9
def test_kill_9_mid_run_loses_at_most_the_last_interval(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "train", *LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: checkpoints(run_dir, 2), proc=proc)
    proc.kill()
    proc.communicate(timeout=60)
    saved = checkpoint.load(checkpoint.list_checkpoints(run_dir)[-1])["step"]
    assert not (run_dir / "summary.json").exists()  # no summary that would make it look finished
    total = saved + 2048
    done = run(tmp_path, "train", f"resume={run_dir}", f"total_steps={total}", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    finished = summary(run_dir)
    assert finished["status"] == "completed" and finished["steps"] >= total
    assert finished["segments"][-1]["start_step"] == saved


def test_kill_9_while_a_checkpoint_is_written_leaves_the_previous_one_loadable(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "train", *LONG, f"hydra.run.dir={run_dir}", code=SLOW_WRITER)
    ckpt_dir = run_dir / "checkpoints"
    tmp_file = wait_for(lambda: next((p for p in ckpt_dir.glob("*.tmp") if p.stat().st_size > 0), None)
                        if ckpt_dir.is_dir() else None, proc=proc)
    proc.kill()  # half of the second checkpoint is on disk
    proc.communicate(timeout=60)
    (first,) = checkpoint.list_checkpoints(run_dir)
    step = checkpoint.load(first)["step"]
    done = run(tmp_path, "train", f"resume={run_dir}", f"total_steps={step + 2048}", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(run_dir)["segments"][-1]["start_step"] == step
    assert not tmp_file.exists()  # the killed write's leftover is cleaned up


# ----------------------------------------------------------------- corrupt checkpoints
def _two_checkpoints(tmp_path: Path) -> tuple[Path, list[Path]]:
    run_dir = tmp_path / "run"
    done = run(tmp_path, "train", "total_steps=4096", "checkpoint.every_steps=2048", "eval.every_steps=0",
               "progress=false", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stdout + done.stderr
    found = checkpoint.list_checkpoints(run_dir)
    assert [checkpoint.load(p)["step"] for p in found] == [2048, 4096]
    return run_dir, found


def test_a_corrupt_newest_checkpoint_is_named_and_the_previous_one_is_used(tmp_path):
    run_dir, (older, newest) = _two_checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    done = run(tmp_path, "train", f"resume={run_dir}", "total_steps=6144", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(newest) in done.stdout and "Resuming from the previous one, " + older.name in done.stdout
    assert summary(run_dir)["segments"][-1]["start_step"] == 2048


def test_no_loadable_checkpoint_is_one_paragraph(tmp_path):
    run_dir, found = _two_checkpoints(tmp_path)
    for path in found:
        path.write_bytes(b"garbage")
    done = run(tmp_path, "train", f"resume={run_dir}", "total_steps=6144", "progress=false")
    assert done.returncode == 2
    assert done.stderr.startswith("rlrun: error: None of the 2 checkpoint(s)") and done.stderr.count("\n") == 1
    assert all(str(p) in done.stderr for p in found)


# ----------------------------------------------------------------- failures with a clear message
def test_a_nan_loss_fails_the_run_with_a_message_and_a_failed_summary(tmp_path):
    run_dir, saved = _two_checkpoints(tmp_path)  # a healthy start, then a resume whose learning rate explodes
    done = run(tmp_path, "train", f"resume={run_dir}", "algo.lr=1e30", "algo.max_grad_norm=null",
               "total_steps=20000", "progress=false")
    assert done.returncode == 1
    assert done.stderr.startswith("rlrun: error: losses/") and "diverged" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert summary(run_dir)["status"] == "failed"
    assert checkpoint.list_checkpoints(run_dir) == saved  # what was saved before is kept, and still loads
    assert checkpoint.load(saved[-1])["step"] == 4096


def test_an_unwritable_run_folder_is_refused_in_one_line(tmp_path, tiny_cfg):
    from rlrun.config import ConfigError
    from rlrun.train import train

    (tmp_path / "afile").write_text("")
    done = run(tmp_path, "train", "hydra.run.dir=afile/run", "total_steps=256", "progress=false")
    assert done.returncode == 2
    assert done.stderr == ("rlrun: error: the run folder afile/run cannot be written "
                           f"({tmp_path}/afile is a file, not a folder): choose another with hydra.run.dir=<folder>.\n")
    with pytest.raises(ConfigError, match="cannot be written"):  # train() called directly with such a run_dir
        train(tiny_cfg(run_dir=tmp_path / "afile" / "run"))


def test_an_impossible_memory_request_is_refused_before_allocating(tmp_path):
    done = run(tmp_path, "train", "env.num_envs=100000000", "progress=false")
    assert done.returncode == 1
    assert done.stderr.startswith("rlrun: error: This run needs at least") and done.stderr.count("\n") == 1
    assert "rollout storage" in done.stderr and "env.num_envs=100000000" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing half written
    done = run(tmp_path, "train", "algo=dqn", "algo.buffer_size=100000000000", "progress=false")
    assert done.returncode == 1 and "replay buffer" in done.stderr and "algo.buffer_size" in done.stderr


# ----------------------------------------------------------------- sweeps
def test_a_sweep_job_folder_can_be_resumed(tmp_path):
    done = run(tmp_path, "train", "-m", "seed=0", "total_steps=512", "eval.every_steps=0", "progress=false",
               "hydra.sweep.dir=sweep")
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    assert "=" in job.name and "," in job.name  # seed=0,total_steps=512,...: the override grammar's own symbols
    resumed = run(tmp_path, "train", f"resume={job.relative_to(tmp_path)}", "total_steps=1024", "progress=false")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = summary(job)
    assert finished["status"] == "completed" and finished["steps"] == 1024 and finished["seed"] == 0
    assert [s["start_step"] for s in finished["segments"]] == [0, 512]


def test_a_preempted_submitit_job_is_requeued_and_continues_from_its_checkpoint(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if shutil.which("pgrep") is None:
        pytest.skip("needs pgrep")
    proc = start(tmp_path, "train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60",
                 "total_steps=100000", "checkpoint.every_steps=2048", "eval.every_steps=0", "progress=false",
                 "hydra.sweep.dir=sweep")
    sweep_dir = tmp_path / "sweep"

    def job_folder():
        folders = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".submitit"] if sweep_dir.is_dir() else []
        return folders[0] if folders and checkpoints(folders[0], 1) else None

    job = wait_for(job_folder, timeout=180, proc=proc)
    controller = next(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit())
    task = subprocess.run(["pgrep", "-P", controller], capture_output=True, text=True, check=False).stdout.split()
    assert len(task) == 1
    os.kill(int(task[0]), signal.SIGUSR2)  # what SLURM sends before a preemption or the time limit
    returncode, out = finish(proc, timeout=240)
    assert returncode == 0, out
    logs = tmp_path / "sweep" / ".submitit" / controller
    log = (logs / f"{controller}_0_log.out").read_text() + (logs / f"{controller}_0_log.err").read_text()
    assert "interrupted by SIGUSR2" in log and "Requeued job" in log and "resuming it" in log
    finished = summary(job)
    assert finished["status"] == "completed" and finished["steps"] >= 100000
    first, second = finished["segments"]
    assert second["start_step"] == first["end_step"] > 0  # it continued from its checkpoint


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_every_member_of_a_population(tmp_path, signum, code):
    """hydra/launcher=population: a stop signal checkpoints each member with an interrupted summary, exits as a run
    does, and a member's folder resumes alone."""
    proc = start(tmp_path, "train", "-m", "seed=0,1", *LONG, "hydra/launcher=population", "hydra.sweep.dir=sweep")
    sweep_dir = tmp_path / "sweep"

    def members() -> list[Path]:
        found = sorted(p for p in sweep_dir.glob("*seed=*") if p.is_dir()) if sweep_dir.is_dir() else []
        return found if len(found) == 2 and all(checkpoints(p, 1) for p in found) else []

    folders = wait_for(members, proc=proc)
    proc.send_signal(signum)
    returncode, out = finish(proc)
    assert returncode == code, out
    assert "Traceback" not in out
    for folder in folders:
        stopped = summary(folder)
        assert stopped["status"] == "interrupted" and stopped["signal"] == signal.Signals(signum).name
        assert checkpoint.load(checkpoint.list_checkpoints(folder)[-1])["step"] == stopped["steps"]
    total = summary(folders[1])["steps"] + 1024
    done = run(tmp_path, "train", f"resume={folders[1]}", f"total_steps={total}", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(folders[1])["status"] == "completed" and summary(folders[1])["steps"] >= total
