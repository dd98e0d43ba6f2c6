"""Weights & Biases (``logger.wandb=true``), tested offline: the W&B run mirrors TensorBoard's scalars, the
config and the summary; a resume and ``rlrun eval --video`` continue the same W&B run; the mode rule; the
missing-package refusal."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config

from rlrun import trackers
from rlrun.checks import ConfigError
from rlrun.evaluate import main as eval_main
from rlrun.plot import read_scalars
from rlrun.population import train_population
from rlrun.train import train

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2


@pytest.fixture(autouse=True)
def no_credentials(tmp_path, monkeypatch):
    """No API key anywhere and no WANDB_MODE: ``logger.wandb_mode=auto`` must choose offline by itself."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))


def records(path: Path) -> list[Any]:
    """The protobuf records of an offline ``run-<id>.wandb`` file: a 7-byte header (``:W&B``, magic, version),
    then LevelDB's log format (32 KiB blocks; each chunk: crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def wandb_run(folder: Path) -> dict[str, Any]:
    """What an offline W&B run folder holds: id, name, group, config, history rows and the final summary."""
    (path,) = folder.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, name=record.run.display_name, group=record.run.run_group)
            run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            run["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
    return run


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def curves(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """W&B rows -> ``tag: [(global_step, value), ...]``."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        for key, value in row.items():
            if not key.startswith("_") and key != "global_step" and isinstance(value, (int, float)):
                out.setdefault(key, []).append((row["global_step"], value))
    return out


def test_an_offline_run_mirrors_tensorboard_config_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    summary = train(tiny_config(run_dir, "logger.wandb=true", "algo.lr=0.002"))
    (folder,) = offline_runs(run_dir)
    got = wandb_run(folder)
    assert got["name"] == "run" and got["id"] == (run_dir / "wandb" / trackers.ID_FILE).read_text().strip()
    assert got["config"]["algo.lr"] == 0.002 and got["config"]["env.id"] == "CartPole-v1"
    assert got["config"]["logger.wandb"] is True and "run_dir" not in got["config"]
    events = read_scalars(run_dir)
    tags = events.Tags()["scalars"]
    mirrored = curves(got["history"])
    assert {"eval/return_mean", "charts/episodic_return", "losses/value_loss", "final/sps"} <= set(tags)
    assert set(mirrored) == set(tags)
    for tag in tags:
        tensorboard = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in mirrored[tag]] == [s for s, _ in tensorboard], tag
        assert [v for _, v in mirrored[tag]] == pytest.approx([v for _, v in tensorboard], rel=1e-6), tag
    assert got["summary"]["status"] == "completed"
    assert got["summary"]["final_eval_return"] == pytest.approx(summary["final_eval_return"])
    log = (run_dir / "train.log").read_text()
    assert f"W&B offline (no API key: wandb login), upload with: wandb sync {folder}" in log


def test_resume_and_eval_videos_continue_the_same_wandb_run(tmp_path, capsys):
    pytest.importorskip("moviepy")
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, "logger.wandb=true"))
    train(tiny_config(run_dir, "logger.wandb=true", "total_steps=1024", f"resume={run_dir}"))
    first, second = (wandb_run(f) for f in offline_runs(run_dir))
    assert first["id"] == second["id"]
    assert max(curves(second["history"])["eval/return_mean"])[0] == 1024
    assert min(s for s, _ in curves(second["history"])["eval/return_mean"]) > 512  # appended, not restarted
    capsys.readouterr()
    assert eval_main([str(run_dir), "--episodes", "1", "--video"]) == 0
    assert "1 video(s) added as eval/video at step 1,024" in capsys.readouterr().out
    third = offline_runs(run_dir)[-1]
    assert wandb_run(third)["id"] == first["id"]
    rows = [row for row in wandb_run(third)["history"] if "eval/video/count" in row]
    assert len(rows) == 1 and rows[0]["global_step"] == 1024 and rows[0]["eval/video/count"] == 1
    assert [p.suffix for p in third.glob("files/media/videos/eval/*")] == [".mp4"]


def test_each_population_member_is_its_own_wandb_run(tmp_path):
    cfgs = [tiny_config(tmp_path / f"m{p}", f"seed={p}", "logger.wandb=true") for p in range(2)]
    summaries = train_population(cfgs)
    runs = [wandb_run(offline_runs(tmp_path / f"m{p}")[0]) for p in range(2)]
    assert runs[0]["id"] != runs[1]["id"] and [r["config"]["seed"] for r in runs] == [0, 1]
    for run, summary in zip(runs, summaries):
        assert run["summary"]["final_eval_return"] == pytest.approx(summary["final_eval_return"])


def test_sweep_runs_share_a_group_named_after_the_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "12-00-00"
    (sweep / "0").mkdir(parents=True)
    assert trackers.sweep_group(sweep / "0") is None
    (sweep / "multirun.yaml").write_text("{}")
    assert trackers.sweep_group(sweep / "0") == "multirun/12-00-00"


def test_mode_rule(monkeypatch, tmp_path):
    assert trackers.wandb_mode("offline") == ("offline", "logger.wandb_mode=offline")
    assert trackers.wandb_mode("auto") == ("offline", "no API key: wandb login")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://127.0.0.1")  # nothing listens on 443 here
    assert trackers.wandb_mode("auto") == ("offline", "127.0.0.1 not reachable")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert trackers.wandb_mode("auto") == ("disabled", "WANDB_MODE")


def test_missing_wandb_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r'logger.wandb=true needs Weights & Biases.*pip install "rlrun\[wandb\]"'):
        train(tiny_config(tmp_path / "run", "logger.wandb=true"))
    assert not (tmp_path / "run").exists()
    train(tiny_config(tmp_path / "plain"))  # off by default: nothing needs wandb
