"""Learning tests: DQN and Rainbow solve CartPole-v1 with their shipped presets. Slow (about a minute each
on a shared 2-core CPU); deselect with ``-m "not slow"``.

Measured (seed: env steps to the first evaluation >= 475): dqn 0: 45k, 1: 15k, 2: 40k;
rainbow 0: 30k, 1: 10k, 2: 25k (evaluation every 5k steps, presets dqn_CartPole / rainbow_CartPole).
"""

from __future__ import annotations

import pytest

from rlrun.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algo", ["dqn", "rainbow"])
def test_solves_cartpole_within_100k_steps(compose, tmp_path, algo):
    # preset/<algo>_CartPole.yaml applies by itself; training stops at the first evaluation >= 475.
    cfg = compose(f"algo={algo}", "env=CartPole", "seed=0", "total_steps=100000", "eval.stop_at_threshold=true",
                  "progress=false", "device=cpu", f"run_dir={tmp_path / 'run'}")
    summary = train(cfg)
    print(summary)
    assert summary["status"] == "completed"
    assert summary["best_eval_return"] >= 475, summary
    assert summary["steps_to_threshold"] is not None and summary["steps_to_threshold"] <= 100_000, summary
