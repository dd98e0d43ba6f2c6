"""Learning tests: PPO actually learns with the shipped presets. Slow (tens of seconds to minutes each);
deselect with ``-m "not slow"``."""

from __future__ import annotations

import pytest

from rlrun.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["torch", "gymnasium"])
def test_ppo_solves_cartpole_within_200k_steps(compose, tmp_path, backend):
    # The default composition: preset/ppo_CartPole.yaml applies by itself (algo=ppo env=CartPole).
    base = compose("algo=ppo", "env=CartPole")
    total = min(int(base.total_steps), 200_000)
    cfg = compose("algo=ppo", "env=CartPole", f"env.backend={backend}", "seed=0", f"total_steps={total}",
                  "progress=false", "device=cpu", f"run_dir={tmp_path / 'run'}")
    summary = train(cfg)
    print(summary)
    assert summary["status"] == "completed"
    assert summary["steps"] <= 200_000 + cfg.algo.num_steps * cfg.env.num_envs
    assert summary["best_eval_return"] >= 475, summary
    assert summary["steps_to_threshold"] is not None and summary["steps_to_threshold"] <= 200_000, summary
    # The plain `rlrun train algo=ppo env=CartPole` must also *end* solved, not just pass through 475.
    assert summary["final_eval_return"] >= 475, summary


def test_ppo_pendulum_reaches_minus_400_within_300k_steps(compose, tmp_path):
    # preset/ppo_Pendulum.yaml applies by itself; training stops at the first evaluation >= -400.
    cfg = compose("algo=ppo", "env=Pendulum", "total_steps=300000", "seed=0", "progress=false", "device=cpu",
                  "env.reward_threshold=-400", "eval.stop_at_threshold=true", f"run_dir={tmp_path / 'run'}")
    summary = train(cfg)
    print(summary)
    assert summary["status"] == "completed"
    assert summary["best_eval_return"] >= -400, summary
    assert summary["steps_to_threshold"] is not None and summary["steps_to_threshold"] <= 300_000, summary
