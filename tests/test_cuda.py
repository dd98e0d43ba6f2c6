"""Training on CUDA: every algorithm and backend runs with its tensors on the GPU.

Skipped where there is no GPU (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``. The checkpoint of a CUDA run is read back without a
``map_location`` so its tensors show where training kept them.
"""

from __future__ import annotations

import pytest
import torch

from rlrun import checkpoint
from rlrun.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tensors(tree):
    """Every tensor in a nested state dict, except optimizers' ``step`` counters (torch keeps those on the CPU)."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if key != "step":
                yield from _tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors(value)


def _agent_devices(run_dir) -> set[str]:
    state = torch.load(checkpoint.latest(run_dir), weights_only=True)  # no map_location: as saved
    return {t.device.type for t in _tensors(state["agent"]) if t.is_floating_point()}


@pytest.mark.parametrize("algo", ["ppo", "vpg", "a2c", "npg", "trpo", "dqn", "rainbow"])
def test_every_algorithm_trains_on_cuda(tiny_cfg, tmp_path, algo):
    overrides = [f"algo={algo}", "device=cuda"]
    if algo in ("dqn", "rainbow"):
        overrides += ["total_steps=2000", "algo.learning_starts=500", "eval.every_steps=1000"]
    summary = train(tiny_cfg(*overrides))
    assert summary["status"] == "completed"
    assert summary["final_eval_return"] is not None
    assert _agent_devices(tmp_path / "run") == {"cuda"}


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_gaussian_policy_on_gymnasium_backend_trains_on_cuda(tiny_cfg, tmp_path, algo):
    summary = train(tiny_cfg(f"algo={algo}", "env=Pendulum", "device=cuda"))
    assert summary["status"] == "completed"
    assert _agent_devices(tmp_path / "run") == {"cuda"}


@pytest.mark.parametrize("algo", ["ppo", "rainbow"])
def test_atari_trains_on_cuda(tiny_cfg, tmp_path, algo):
    pytest.importorskip("ale_py")
    overrides = [f"algo={algo}", "env=Pong", "env.num_envs=4", "device=cuda", "total_steps=1024",
                 "eval.every_steps=0", "eval.episodes=1", "env.max_episode_frames=2000"]
    if algo == "rainbow":
        overrides += ["algo.learning_starts=256", "algo.buffer_size=4096"]
    else:
        overrides += ["algo.num_steps=128"]
    summary = train(tiny_cfg(*overrides))
    assert summary["status"] == "completed"
    assert _agent_devices(tmp_path / "run") == {"cuda"}


def test_cuda_checkpoint_resumes_on_cuda_and_loads_on_cpu(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg("algo=dqn", "device=cuda", "total_steps=1000", "algo.learning_starts=200",
                   "checkpoint.replay=true", run_dir=run_dir))
    on_cpu = checkpoint.load(checkpoint.latest(run_dir), "cpu")
    assert {t.device.type for t in _tensors(on_cpu)} == {"cpu"}
    summary = train(tiny_cfg("algo=dqn", "device=cuda", "total_steps=2000", "algo.learning_starts=200",
                             "checkpoint.replay=true", f"resume={run_dir}", run_dir=run_dir))
    assert summary["status"] == "completed" and summary["steps"] >= 2000


def test_deterministic_true_gives_the_same_rainbow_run_twice_on_cuda(tiny_cfg, tmp_path):
    common = ("algo=rainbow", "device=cuda", "deterministic=true", "total_steps=1200", "algo.learning_starts=400")
    for name in ("a", "b"):
        train(tiny_cfg(*common, run_dir=tmp_path / name))
    policies = [checkpoint.load(checkpoint.latest(tmp_path / name))["agent"]["policy"] for name in ("a", "b")]
    assert all(torch.equal(policies[0][k], policies[1][k]) for k in policies[0])


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_population_trains_on_cuda_and_members_resume_alone(tmp_path, algo):
    from rlrun.population.train import train_population
    from tests.conftest import tiny_config

    cfgs = [tiny_config(tmp_path / f"m{s}", f"algo={algo}", "device=cuda", f"seed={s}") for s in range(3)]
    summaries = train_population(cfgs)
    assert [s["status"] for s in summaries] == ["completed"] * 3
    assert _agent_devices(tmp_path / "m1") == {"cuda"}
    resumed = train(tiny_config(tmp_path / "m1", f"algo={algo}", "device=cuda", "seed=1", "total_steps=1024",
                                f"resume={tmp_path / 'm1'}"))
    assert resumed["status"] == "completed" and resumed["steps"] >= 1024
