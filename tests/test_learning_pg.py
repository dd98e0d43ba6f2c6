"""Learning tests for the policy-gradient family with the shipped presets (fixed seed). Slow; deselect
with ``-m "not slow"``.

Budgets: 500k env steps on CartPole-v1 for vpg, a2c, npg and trpo (vpg included: its preset solved
CartPole within 50k steps on seeds 0, 1 and 2, so it needs no budget of its own), 300k on Pendulum-v1
for trpo. Training stops at the first evaluation that reaches the threshold (eval.stop_at_threshold).
"""

from __future__ import annotations

import pytest

from rlrun.train import train

pytestmark = pytest.mark.slow

CARTPOLE_BUDGET = {"vpg": 500_000, "a2c": 500_000, "npg": 500_000, "trpo": 500_000}


def train_until_solved(compose, tmp_path, algo: str, env: str, budget: int, *overrides: str) -> dict:
    """Train with the (algo, env) preset, seed 0, until the first evaluation at the threshold or ``budget`` steps."""
    cfg = compose(f"algo={algo}", f"env={env}", "seed=0", f"total_steps={budget}", "progress=false", "device=cpu",
                  "eval.stop_at_threshold=true", f"run_dir={tmp_path / 'run'}", *overrides)
    summary = train(cfg)
    print(summary)
    assert summary["status"] == "completed"
    assert summary["steps_to_threshold"] is not None and summary["steps_to_threshold"] <= budget, summary
    return summary


@pytest.mark.parametrize("algo", sorted(CARTPOLE_BUDGET))
def test_solves_cartpole_within_budget(compose, tmp_path, algo):
    summary = train_until_solved(compose, tmp_path, algo, "CartPole", CARTPOLE_BUDGET[algo])
    assert summary["best_eval_return"] >= 475, summary


def test_trpo_pendulum_reaches_minus_400_within_300k_steps(compose, tmp_path):
    # preset/trpo_Pendulum.yaml applies by itself
    summary = train_until_solved(compose, tmp_path, "trpo", "Pendulum", 300_000, "env.reward_threshold=-400")
    assert summary["best_eval_return"] >= -400, summary
