"""Smoke runs of train(cfg) per backend, the run folder's contents, resume, interruption and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlrun.conf
import rlrun.run
from rlrun import checkpoint
from rlrun.checkpoint import CheckpointError
from rlrun.config import ConfigError, load
from rlrun.envs import resolve_backend
from rlrun.train import train

SUMMARY_KEYS = {"algo", "env", "seed", "steps", "wall_s", "sps", "final_eval_return", "best_eval_return",
                "reward_threshold", "steps_to_threshold", "seconds_to_threshold", "status", "signal", "segments"}
LOSS_TAGS = {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
             "losses/explained_variance"}
CONF = Path(rlrun.conf.__file__).parent


def _scalars(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in acc.Scalars(tag)]


def _check_run(run_dir: Path, summary: dict, total_steps: int, episodes_end: bool) -> EventAccumulator:
    """What every finished run leaves behind (DESIGN.md: run folder, summary.json keys, TensorBoard tags)."""
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["status"] == "completed"
    assert summary["steps"] >= total_steps
    assert summary["final_eval_return"] is not None and summary["best_eval_return"] >= summary["final_eval_return"]
    ckpts = checkpoint.list_checkpoints(run_dir)
    assert ckpts and ckpts[-1] == checkpoint.path_for(run_dir, summary["steps"])
    assert list(run_dir.glob("events.out.tfevents.*"))
    acc = _scalars(run_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"charts/SPS", "charts/learning_rate", "eval/return_mean"} | LOSS_TAGS <= tags
    if episodes_end:
        assert {"charts/episodic_return", "charts/episodic_length"} <= tags
    assert _steps(acc, "charts/SPS")[-1] == summary["steps"]  # x axis = environment steps
    assert _steps(acc, "eval/return_mean")[-1] == summary["steps"]
    return acc


# ----------------------------------------------------------------- smoke runs per backend
@pytest.mark.parametrize("backend", ["torch", "gymnasium"])
def test_cartpole_smoke(tiny_cfg, tmp_path, backend):
    cfg = tiny_cfg(f"env.backend={backend}")
    assert resolve_backend(load(cfg).env) == backend
    summary = train(cfg)
    assert summary["algo"] == "ppo" and summary["env"] == "CartPole-v1" and summary["seed"] == 0
    assert summary["reward_threshold"] == 475.0
    acc = _check_run(tmp_path / "run", summary, 512, episodes_end=True)
    assert _steps(acc, "charts/SPS") == [256, 512]  # 8 envs x 32 steps per iteration (CartPole preset)
    assert _steps(acc, "eval/return_mean") == [256, 512]


def test_pendulum_smoke_continuous_actions(tiny_cfg, tmp_path):
    cfg = tiny_cfg("env=Pendulum", "env.backend=gymnasium", "algo.num_steps=64", "algo.minibatch_size=128")
    assert resolve_backend(load(cfg).env) == "gymnasium"
    summary = train(cfg)
    assert summary["env"] == "Pendulum-v1"
    _check_run(tmp_path / "run", summary, 512, episodes_end=False)
    assert summary["final_eval_return"] < 0  # Pendulum's reward is a cost


def test_pong_smoke(tiny_cfg, tmp_path):
    pytest.importorskip("ale_py")
    if not (CONF / "env" / "Pong.yaml").exists():
        pytest.skip("no env/Pong.yaml")
    # A Pong game lasts thousands of agent steps: cap it at 400 emulator frames (100 agent steps)
    # so the evaluation episode ends quickly.
    cfg = tiny_cfg("env=Pong", "env.num_envs=2", "env.max_episode_frames=400", "algo.num_steps=16",
                   "algo.minibatch_size=32", "algo.update_epochs=1", "total_steps=64", "eval.every_steps=0",
                   "eval.episodes=1")
    assert resolve_backend(load(cfg).env) == "ale"
    summary = train(cfg)
    assert summary["env"] == "ALE/Pong-v5"
    _check_run(tmp_path / "run", summary, 64, episodes_end=False)
    assert -21 <= summary["final_eval_return"] <= 21


# ----------------------------------------------------------------- checkpoints and resume
def test_resume_continues_steps_and_curves(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    first = train(tiny_cfg())  # 2 iterations of 256 steps
    assert first["steps"] == 512
    # 1000 is not a whole number of iterations: the run stops at the first iteration end past it.
    second = train(tiny_cfg("total_steps=1000", f"resume={run_dir}"))
    assert second["status"] == "completed"
    assert second["steps"] == 1024
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1024
    acc = _check_run(run_dir, second, 1000, episodes_end=True)
    # The curves continue past the first run's last step, and the first run's points are kept.
    assert _steps(acc, "charts/SPS") == [256, 512, 768, 1024]
    assert _steps(acc, "losses/policy_loss") == [256, 512, 768, 1024]
    assert second["best_eval_return"] >= first["best_eval_return"]


def test_resume_with_nothing_left_to_train_is_refused_and_leaves_the_folder_as_it_was(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg())
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for total in (256, 512):  # below and at the step the run reached
        with pytest.raises(ConfigError, match=rf"already at step 512, so total_steps={total} leaves nothing"):
            train(tiny_cfg(f"total_steps={total}", f"resume={run_dir}"))
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_checkpoints_are_written_by_wall_time_by_default(tiny_cfg, tmp_path, monkeypatch):
    import rlrun.run as run_module

    clock = iter(range(0, 10**6, 301))  # each reading of the clock is 301 s after the one before
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: float(next(clock)))
    train(tiny_cfg("total_steps=2048", "eval.every_steps=0", "checkpoint.keep=20"))  # every_minutes=10 (default)
    steps = [checkpoint.load(p)["step"] for p in checkpoint.list_checkpoints(tmp_path / "run")]
    assert steps[-1] == 2048 and len(steps) >= 3  # some during the run, by time alone, and the final one
    train(tiny_cfg("total_steps=2048", "eval.every_steps=0", "checkpoint.keep=20", "checkpoint.every_minutes=0",
                   run_dir=tmp_path / "off"))
    assert [checkpoint.load(p)["step"] for p in checkpoint.list_checkpoints(tmp_path / "off")] == [2048]


def test_checkpoint_loads_with_weights_only(tiny_cfg, tmp_path):
    summary = train(tiny_cfg())
    path = checkpoint.latest(tmp_path / "run")
    state = torch.load(path, weights_only=True)
    assert state["step"] == summary["steps"] == 512
    assert {"agent", "env", "config", "train_seconds", "best_eval_return"} <= set(state)
    assert {"policy", "optimizer"} <= set(state["agent"])
    assert state["config"]["algo"]["name"] == "ppo"
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temporary file


def test_corrupt_checkpoint_raises_checkpoint_error(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg())
    path = checkpoint.latest(run_dir)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert str(path) in message and "corrupt" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError):
        train(tiny_cfg("total_steps=1024", f"resume={run_dir}"))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load(path)


def test_resume_without_checkpoint_raises_checkpoint_error(tiny_cfg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="No checkpoint"):
        train(tiny_cfg(f"resume={empty}"))


def test_keyboard_interrupt_saves_checkpoint_and_summary(tiny_cfg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    original = rlrun.run.Run.end_iteration
    calls = []

    def interrupt_on_second_call(self, metrics):
        calls.append(self.step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, metrics)

    monkeypatch.setattr(rlrun.run.Run, "end_iteration", interrupt_on_second_call)
    summary = train(tiny_cfg("total_steps=2048"))
    assert calls == [256, 512]
    assert summary["status"] == "interrupted"
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert checkpoint.latest(run_dir) == checkpoint.path_for(run_dir, 512)


# ----------------------------------------------------------------- command line, end to end
TINY_CLI = ["eval.every_steps=256", "eval.episodes=2", "progress=false"]


def _rlrun(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    out = subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_cli_train_then_resume_in_the_same_folder(tmp_path):
    _rlrun(tmp_path, "train", "total_steps=512", *TINY_CLI)
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1
    run = folders[0]
    assert run.name.startswith("CartPole__ppo__s0__")
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    assert (run / "checkpoints").is_dir() and checkpoint.list_checkpoints(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 512

    rel = run.relative_to(tmp_path)
    _rlrun(tmp_path, "train", f"resume={rel}", "total_steps=1024", *TINY_CLI)
    assert list((tmp_path / "runs").iterdir()) == [run]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] >= 1024
    assert checkpoint.latest(run) == checkpoint.path_for(run, summary["steps"])


def test_cli_multirun_puts_each_job_in_a_folder_named_after_its_overrides(tmp_path):
    _rlrun(tmp_path, "train", "-m", "seed=0,1", "total_steps=256", *TINY_CLI)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["multirun"]
    summaries = sorted((tmp_path / "runs" / "multirun").rglob("summary.json"))
    assert len(summaries) == 2
    jobs = [s.parent for s in summaries]
    assert jobs[0].parent == jobs[1].parent  # one sweep folder
    assert "seed=0" in jobs[0].name and "seed=1" in jobs[1].name
    for job, seed in zip(jobs, (0, 1)):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "completed" and summary["steps"] == 256
        assert (job / ".hydra").is_dir() and checkpoint.list_checkpoints(job)
        assert list(job.glob("events.out.tfevents.*"))


def test_hparams_hold_the_config_and_the_final_metrics_are_logged(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    summary = train(tiny_cfg("algo.lr=0.002"))
    run = tmp_path / "run"
    hparams, metric_tags = {}, set()
    for event in EventFileLoader(str(next(run.glob("events.out.tfevents.*")))).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != "hparams":
                continue
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                hparams = dict(data.session_start_info.hparams)
            if data.HasField("experiment"):
                metric_tags = {m.name.tag for m in data.experiment.metric_infos}
    assert hparams["algo.lr"].number_value == 0.002 and hparams["algo.name"].string_value == "ppo"
    assert {"eval/return_mean", "final/final_eval_return", "final/best_eval_return"} <= metric_tags
    scalars = EventAccumulator(str(run), size_guidance={"scalars": 0})
    scalars.Reload()
    final = scalars.Scalars("final/final_eval_return")
    assert [(e.step, e.value) for e in final] == [(summary["steps"], summary["final_eval_return"])]
