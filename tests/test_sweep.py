"""Sweeps: sweep.csv, failed jobs that don't stop the others, cores per job, and each launcher.

The joblib and Ray sweeps run for real (tiny CartPole jobs); CI installs both plugins. The SLURM
launcher cannot run here: its preset must compose and the task function must pickle.
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
from omegaconf import OmegaConf

from rlrun import sweep
from rlrun.run import TrainingDiverged, check_finite

TINY = ["total_steps=512", "eval.every_steps=256", "eval.episodes=2", "progress=false"]


def _rlrun(cwd: Path, *args: str, expect: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    out = subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env, check=False)
    assert out.returncode == expect, out.stdout + out.stderr
    return out


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_completed_jobs(sweep_dir: Path, rows: list[dict[str, str]]) -> None:
    """Every row is a completed job whose numbers are its own summary.json's."""
    for row in rows:
        job = sweep_dir / row["job"]
        summary = json.loads((job / "summary.json").read_text())
        assert row["status"] == summary["status"] == "completed"
        assert float(row["final_eval_return"]) == round(summary["final_eval_return"], 2)  # sweep.csv rounds
        assert int(row["steps"]) == summary["steps"] and int(row["seed"]) == summary["seed"]
        assert list(job.glob("events.out.tfevents.*")), f"{job} has no TensorBoard events"


# ----------------------------------------------------------------- cores per job
@pytest.mark.parametrize(("launcher", "expected"), [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 8),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 5),
    ({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "ray": {"remote": {}}}, 1),
    ({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
      "ray": {"remote": {"num_cpus": 4}}}, 4),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "cpus_per_task": 6}, 6),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
      "cpus_per_task": None}, None),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, None),
])
def test_cpu_share_per_launcher(launcher, expected):
    # 16 cores: joblib 2 jobs -> 8 each; -1 (all cores = 16 jobs) -> 1; -2 (15 jobs) -> 1; 3 jobs -> 5
    assert sweep.cpu_share(OmegaConf.create({"launcher": launcher}), cpu_count=16) == expected


def test_share_cores_caps_torch_and_env_threads_never_raises_them():
    cfg = OmegaConf.create({"torch_threads": 4, "env": {"num_envs": 8, "num_threads": 0}})
    assert sweep.share_cores(cfg, 2) == "torch_threads=2 env.num_threads=2"
    cfg = OmegaConf.create({"torch_threads": 1, "env": {"num_envs": 3, "num_threads": 0}})
    sweep.share_cores(cfg, 8)
    assert cfg.torch_threads == 1 and cfg.env.num_threads == 3  # one per env, as 0 means, within the share
    assert sweep.share_cores(cfg, None) is None


# ----------------------------------------------------------------- sweep.csv from job folders
def _job(sweep_dir: Path, name: str, num: int, overrides: list[str], summary: dict | None = None,
         error: str | None = None) -> None:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": num}))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    if error is not None:
        (job / "error.txt").write_text(error)


def test_summary_rows_in_job_order_with_status_running_failed_completed(tmp_path):
    done = {"status": "completed", "final_eval_return": 12.5, "best_eval_return": 20.0, "steps": 512,
            "wall_s": 1.5, "sps": 400.0}
    _job(tmp_path, "seed=10", 10, ["seed=10"], summary=done)  # job 10 sorts after job 2, unlike its name
    _job(tmp_path, "seed=2", 2, ["seed=2"], error="algo.lr=-1.0 is not accepted: expected a number > 0.\nmore")
    _job(tmp_path, "seed=3", 3, ["seed=3"])
    rows = sweep.write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["seed=2", "seed=3", "seed=10"]
    assert [r["status"] for r in rows] == ["failed", "running", "completed"]
    read = _rows(tmp_path)
    assert read[0]["error"] == "algo.lr=-1.0 is not accepted: expected a number > 0."
    assert read[2]["final_eval_return"] == "12.5" and read[2]["seed"] == "10" and read[2]["overrides"] == "seed=10"
    assert list(tmp_path.glob("*.tmp")) == []


def test_check_finite_names_the_loss_that_diverged():
    check_finite({"losses/td_loss": 0.5, "losses/explained_variance": math.nan, "charts/SPS": 1.0}, 100)
    with pytest.raises(TrainingDiverged, match=r"losses/policy_loss = nan at step 300.*algo\.lr"):
        check_finite({"losses/value_loss": 1.0, "losses/policy_loss": math.nan}, 300)
    with pytest.raises(TrainingDiverged, match="losses/td_loss = inf"):
        check_finite({"losses/td_loss": math.inf}, 1)


# ----------------------------------------------------------------- real sweeps
def test_joblib_2x2_sweep_writes_four_jobs_and_the_summary(tmp_path):
    out = _rlrun(tmp_path, "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "algo.lr=0.001,0.0003", "seed=0,1", "hydra.sweep.dir=sweep", *TINY)
    sweep_dir = tmp_path / "sweep"
    rows = _rows(sweep_dir)
    assert len(rows) == 4 and len({r["job"] for r in rows}) == 4
    assert {(r["overrides"].split()[0], r["seed"]) for r in rows} == {
        ("algo.lr=0.001", "0"), ("algo.lr=0.001", "1"), ("algo.lr=0.0003", "0"), ("algo.lr=0.0003", "1")}
    _check_completed_jobs(sweep_dir, rows)
    assert "4 of 4 jobs completed, 0 failed" in out.stdout
    assert "torch_threads=1" in out.stdout  # two jobs on this machine's cores: one torch thread each


@pytest.mark.parametrize(("values", "error"), [
    ("algo.clip_coef=-1,0.2", "algo.clip_coef=-1.0 is not accepted: expected a number > 0."),
    ("env.num_envs=abc,8",
     "Bad config value for env.num_envs: Value 'abc' of type 'str' could not be converted to Integer."),
])
def test_a_failed_job_is_recorded_and_does_not_stop_the_others(tmp_path, values, error):
    out = _rlrun(tmp_path, "train", "-m", values, "hydra.sweep.dir=sweep", *TINY, expect=1)
    sweep_dir = tmp_path / "sweep"
    rows = _rows(sweep_dir)
    assert [r["status"] for r in rows] == ["failed", "completed"]  # the first job failed, the second still ran
    assert rows[0]["error"] == error
    assert error in (sweep_dir / rows[0]["job"] / "error.txt").read_text()
    assert not (sweep_dir / rows[0]["job"] / "summary.json").exists()
    _check_completed_jobs(sweep_dir, rows[1:])
    assert "1 of 2 jobs completed, 1 failed" in out.stdout


def test_ray_sweep_on_a_local_ray(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    _rlrun(tmp_path, "train", "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
           "+hydra.launcher.ray.init.include_dashboard=false", "seed=0,1", "hydra.sweep.dir=sweep", *TINY,
           timeout=600)
    rows = _rows(tmp_path / "sweep")
    assert sorted(r["seed"] for r in rows) == ["0", "1"]
    _check_completed_jobs(tmp_path / "sweep", rows)


def test_optuna_maximises_the_final_return(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    _rlrun(tmp_path, "train", "-m", "hydra/sweeper=optuna_max", "hydra.sweeper.n_trials=3",
           "algo.lr=interval(0.0001,0.003)", "hydra.sweep.dir=sweep", *TINY)
    sweep_dir = tmp_path / "sweep"
    rows = _rows(sweep_dir)
    assert len(rows) == 3
    _check_completed_jobs(sweep_dir, rows)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(r["final_eval_return"]) for r in rows)  # maximised, not minimised


def test_slurm_preset_composes_and_the_task_pickles():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cloudpickle = pytest.importorskip("cloudpickle")
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import rlrun.cli

    GlobalHydra.instance().clear()
    with initialize_config_module("rlrun.conf", version_base=None):
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and sweep.cpu_share(cfg.hydra) == launcher.cpus_per_task
    task = rlrun.cli.hydra_train.__wrapped__  # what the launcher ships to the cluster
    assert cloudpickle.loads(cloudpickle.dumps(task)).__name__ == "hydra_train"


def test_sweep_csv_rounds_returns_to_the_precision_that_means_something(tmp_path):
    job = tmp_path / "seed=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "summary.json").write_text(json.dumps({"status": "completed", "final_eval_return": 69.9000015258789,
                                                  "best_eval_return": 71.12345, "steps": 512, "wall_s": 1.23456,
                                                  "sps": 415.678}))
    row = sweep.write_summary(tmp_path)[0]
    assert (row["final_eval_return"], row["best_eval_return"], row["wall_s"], row["sps"]) == (69.9, 71.12, 1.2, 416.0)
    assert "69.9000015" not in (tmp_path / "sweep.csv").read_text()

