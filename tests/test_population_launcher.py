"""``hydra/launcher=population``: a sweep's batchable jobs train as populations, every job still a job of the sweep.

Most tests run real Hydra multiruns in this process with a fake ``rlrun.population.train_population`` (it writes
each member's summary.json and records the groups it was given), so they check the launcher alone: grouping,
``max_size``, member folders and ``.hydra`` files, sweep.csv, return values in order, and jobs that run alone
through the ordinary task path (real, tiny runs). The last test runs a real population through joblib.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobStatus

import rlrun.cli
import rlrun.population
from hydra_plugins.rlrun_population import population_launcher
from rlrun import sweep

TINY = ["total_steps=512", "eval.every_steps=256", "eval.episodes=2", "progress=false", "device=cpu"]


def _value(seed: int, lr: float) -> float:
    """The fake's final evaluation return: a different one for every (seed, lr)."""
    return 10.0 * (seed + 1) + round(lr * 1e4, 3)


@pytest.fixture
def fake_population(monkeypatch):
    """Replace train_population with a fake that writes each member's summary.json; returns the groups it got."""
    calls: list[list[dict]] = []

    def fake(cfgs, signals=None):
        calls.append([{"run_dir": c.run_dir, "seed": c.seed, "lr": c.algo.lr, "torch_threads": c.torch_threads}
                      for c in cfgs])
        out = []
        for cfg in cfgs:
            value = _value(cfg.seed, cfg.algo.lr)
            summary = {"status": "completed", "seed": cfg.seed, "final_eval_return": value,
                       "best_eval_return": value, "steps": cfg.total_steps, "wall_s": 0.1, "sps": 1.0}
            Path(cfg.run_dir, "summary.json").write_text(json.dumps(summary))
            out.append(summary)
        return out

    monkeypatch.setattr(rlrun.population, "train_population", fake)
    return calls


def _multirun(sweep_dir: Path, *overrides: str) -> list:
    """A real Hydra multirun of rlrun's task in this process (as `rlrun train -m` runs it, which sets hydra.mode);
    the JobReturns of every batch, in order."""
    GlobalHydra.instance().clear()
    try:
        hydra_ = Hydra.create_main_hydra_file_or_module(calling_file=None, calling_module="rlrun.cli",
                                                        config_path="conf", job_name="train")
        batches = hydra_.multirun(config_name="config", task_function=rlrun.cli.hydra_train.__wrapped__,
                                  overrides=["hydra.mode=MULTIRUN", "hydra/launcher=population",
                                             f"hydra.sweep.dir={sweep_dir}", *overrides],
                                  with_log_configuration=False)
    finally:
        GlobalHydra.instance().clear()
    return [ret for batch in batches for ret in batch]


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def _overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


# ----------------------------------------------------------------- grouping
@pytest.mark.parametrize(("count", "max_size", "sizes"), [
    (8, 64, [8]), (64, 32, [32, 32]), (40, 32, [20, 20]), (65, 32, [22, 22, 21]), (3, 2, [2, 1]), (5, 1, [1] * 5),
])
def test_groups_are_split_evenly(count, max_size, sizes):
    assert [len(part) for part in population_launcher._split(list(range(count)), max_size)] == sizes


def test_seeds_and_learning_rates_form_one_population(tmp_path, fake_population, capsys):
    sweep_dir = tmp_path / "sweep"
    returns = _multirun(sweep_dir, "algo=ppo", "seed=0,1,2,3", "algo.lr=0.001,0.0003", *TINY)
    out = capsys.readouterr().out
    assert "8 jobs train together in one process (they differ in algo.lr, seed)" in out

    assert len(fake_population) == 1 and len(fake_population[0]) == 8  # one process trained all eight
    members = fake_population[0]
    jobs = [(s, lr) for s in range(4) for lr in (0.001, 0.0003)]  # the sweep's order: seed, then lr
    assert [(m["seed"], m["lr"]) for m in members] == jobs
    # Every job is a job of the sweep: its folder where Hydra puts it, .hydra as Hydra writes it, its row, its value
    for member, (seed, lr) in zip(members, jobs):
        job = Path(member["run_dir"])
        assert job.parent == sweep_dir and {f"seed={seed}", f"algo.lr={lr}"} <= set(job.name.split(","))
        assert f"seed={seed}" in _overrides(job) and f"algo.lr={lr}" in _overrides(job)
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["seed"] == seed and config["algo"]["lr"] == lr
        assert yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["output_dir"] == \
            str(job)
    assert [r.return_value for r in returns] == [_value(s, lr) for s, lr in jobs]  # in the sweep's order
    assert all(r.status == JobStatus.COMPLETED for r in returns)
    assert [r.overrides[1:3] for r in returns] == [[f"seed={s}", f"algo.lr={lr}"] for s, lr in jobs]

    rows = _rows(sweep_dir)  # the group job's own folder (.population/) is not a row
    assert [(int(r["seed"]), r["status"], float(r["final_eval_return"])) for r in rows] == [
        (s, "completed", _value(s, lr)) for s, lr in jobs]
    assert (sweep_dir / ".population" / "group_0" / "members.json").is_file()
    # A member's folder resumes like any job's: `rlrun train resume=<folder>` composes it from overrides.yaml
    resumed = rlrun.cli.resume_args([f"resume={members[0]['run_dir']}", "total_steps=1024"])
    assert "seed=0" in resumed and "total_steps=1024" in resumed and "total_steps=512" not in resumed


def test_max_size_splits_a_group(tmp_path, fake_population, capsys):
    returns = _multirun(tmp_path / "sweep", "hydra.launcher.max_size=4", "seed=0,1,2,3", "algo.lr=0.001,0.0003",
                        *TINY)
    assert [len(group) for group in fake_population] == [4, 4]
    assert [(m["seed"], m["lr"]) for m in fake_population[1]] == [(2, 0.001), (2, 0.0003), (3, 0.001), (3, 0.0003)]
    assert capsys.readouterr().out.count("4 jobs train together") == 2
    assert [r.return_value for r in returns] == [_value(s, lr) for s in range(4) for lr in (0.001, 0.0003)]


def test_a_job_that_cannot_join_runs_alone_through_the_ordinary_path(tmp_path, fake_population, capsys):
    sweep_dir = tmp_path / "sweep"
    returns = _multirun(sweep_dir, "algo=ppo,rainbow", "seed=0,1", *TINY)
    out = capsys.readouterr().out
    assert "2 jobs train together in one process (they differ in seed)" in out
    assert out.count("runs alone: algo=rainbow does not train as a population yet") == 2
    assert [[m["seed"] for m in group] for group in fake_population] == [[0, 1]]  # rainbow never reached it

    rows = _rows(sweep_dir)
    assert [(r["overrides"].split()[0], r["seed"], r["status"]) for r in rows] == [
        ("algo=ppo", "0", "completed"), ("algo=ppo", "1", "completed"),
        ("algo=rainbow", "0", "completed"), ("algo=rainbow", "1", "completed")]
    for row in rows:
        assert _overrides(sweep_dir / row["job"])[0] == row["overrides"].split()[0]
    rainbow = [sweep_dir / r["job"] for r in rows[2:]]
    for job, ret in zip(rainbow, returns[2:]):  # a real, tiny run: TensorBoard events, its own return value
        summary = json.loads((job / "summary.json").read_text())
        assert summary["algo"] == "rainbow" and list(job.glob("events.out.tfevents.*"))
        assert ret.return_value == summary["final_eval_return"]
    assert [r.return_value for r in returns[:2]] == [_value(m["seed"], m["lr"]) for m in fake_population[0]]
    nums = [yaml.safe_load((sweep_dir / r["job"] / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]
            for r in rows]
    assert nums == [0, 1, 2, 3]  # run here, every job keeps its place in the sweep


def test_a_refused_config_fails_alone_and_the_others_train(tmp_path, fake_population, capsys):
    sweep_dir = tmp_path / "sweep"
    returns = _multirun(sweep_dir, "algo.clip_coef=-1,0.2", "seed=0,1", *TINY)
    out = capsys.readouterr().out
    error = "algo.clip_coef=-1.0 is not accepted: expected a number > 0."
    assert out.count(f"runs alone: its config is refused ({error})") == 2
    assert [[m["seed"] for m in group] for group in fake_population] == [[0, 1]]
    rows = _rows(sweep_dir)
    assert [r["status"] for r in rows] == ["failed", "failed", "completed", "completed"]
    assert rows[0]["error"] == error and (sweep_dir / rows[0]["job"] / "error.txt").is_file()
    assert all(math.isnan(r.return_value) for r in returns[:2])
    assert [r.return_value for r in returns[2:]] == [_value(m["seed"], m["lr"]) for m in fake_population[0]]
    assert sweep.failed_jobs == 2  # so `rlrun train -m` exits with status 1


def test_a_group_that_cannot_run_fails_each_member(tmp_path, monkeypatch):
    def refuse(cfgs, signals=None):
        raise rlrun.config.ConfigError("this population needs more memory than the machine has")

    monkeypatch.setattr(rlrun.population, "train_population", refuse)
    sweep_dir = tmp_path / "sweep"
    returns = _multirun(sweep_dir, "seed=0,1", *TINY)
    assert all(math.isnan(r.return_value) and r.status == JobStatus.COMPLETED for r in returns)
    rows = _rows(sweep_dir)
    assert [(r["status"], r["error"]) for r in rows] == [
        ("failed", "this population needs more memory than the machine has")] * 2


def test_dispatch_hands_each_group_to_another_launcher(tmp_path, fake_population, capsys):
    # joblib with n_jobs=1 runs its jobs in this process, where the fake is: the path of any dispatch launcher
    sweep_dir = tmp_path / "sweep"
    returns = _multirun(sweep_dir, "hydra.launcher.dispatch=joblib", "hydra.launcher.dispatch_options.n_jobs=1",
                        "seed=0,1", "algo.clip_coef=0.2,-1", "torch_threads=64", *TINY)
    assert [[(m["seed"], m["torch_threads"]) for m in group] for group in fake_population] == [
        [(0, min(64, os.cpu_count() or 1)), (1, min(64, os.cpu_count() or 1))]]  # joblib's share of the cores
    group_config = yaml.safe_load((sweep_dir / ".population" / "group_2" / ".hydra" / "hydra.yaml").read_text())
    assert group_config["hydra"]["launcher"]["_target_"].endswith("JoblibLauncher")  # the group job's launcher
    # Jobs that run alone go first to the dispatch launcher, which numbers its jobs in turn: the members after them
    rows = _rows(sweep_dir)
    assert [(r["overrides"].split()[:2], r["status"]) for r in rows] == [
        (["seed=0", "algo.clip_coef=-1"], "failed"), (["seed=1", "algo.clip_coef=-1"], "failed"),
        (["seed=0", "algo.clip_coef=0.2"], "completed"), (["seed=1", "algo.clip_coef=0.2"], "completed")]
    # ... and the sweeper still gets every job's value in its own order
    assert [r.overrides[:2] for r in returns] == [["seed=0", "algo.clip_coef=0.2"], ["seed=0", "algo.clip_coef=-1"],
                                                   ["seed=1", "algo.clip_coef=0.2"], ["seed=1", "algo.clip_coef=-1"]]
    assert [r.return_value for r in returns[::2]] == [_value(m["seed"], m["lr"]) for m in fake_population[0]]
    assert all(math.isnan(r.return_value) for r in returns[1::2])


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.launcher.max_size=0", "hydra.launcher.max_size=0 is not accepted"),
    ("hydra.launcher.dispatch=nowhere", "hydra.launcher.dispatch=nowhere is not accepted: expected one of local"),
])
def test_bad_launcher_settings_are_refused(tmp_path, fake_population, capsys, override, message):
    with pytest.raises(SystemExit) as exit_info:
        _multirun(tmp_path / "sweep", override, "seed=0,1", *TINY)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert fake_population == []


# ----------------------------------------------------------------- for real
def test_a_real_population_through_joblib(tmp_path):
    """`rlrun train -m` as a user types it: two PPO seeds train for real as one population in a joblib worker,
    which caps the threads at its share of the cores (n_jobs=2)."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    out = subprocess.run([sys.executable, "-m", "rlrun.cli", "train", "-m", "hydra/launcher=population",
                          "hydra.launcher.dispatch=joblib", "hydra.launcher.dispatch_options.n_jobs=2",
                          "algo=ppo", "seed=0,1", "torch_threads=64", "hydra.sweep.dir=sweep", *TINY],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 jobs train together in one process (they differ in seed)" in out.stdout
    share = max(1, (os.cpu_count() or 1) // 2)
    assert f"torch_threads={min(64, share)} env.num_threads=" in out.stdout
    rows = _rows(tmp_path / "sweep")
    assert [(r["seed"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
    for row in rows:
        job = tmp_path / "sweep" / row["job"]
        summary = json.loads((job / "summary.json").read_text())
        assert float(row["final_eval_return"]) == round(summary["final_eval_return"], 2) and summary["steps"] == 512
        assert list(job.glob("events.out.tfevents.*")) and list((job / "checkpoints").glob("*.pt"))
