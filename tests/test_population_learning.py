"""Learning is unchanged by batching: the same 8 seeds of RL Zoo's PPO CartPole run (experiment=ppo_cartpole_zoo,
100k steps, evaluation every 10k steps) trained as one population and as 8 ordinary runs solve CartPole as
often and in about as many env steps. Slow (about 2 minutes); deselect with ``-m "not slow"``.

A member's curve is not the ordinary run's curve of the same seed (the population draws its random numbers
from one generator), so the comparison is of the two sets of seeds: the number that reach 475 at an
evaluation, and the median env steps to the first such evaluation (within 1.5x, plus one evaluation interval).
"""

from __future__ import annotations

import statistics

import pytest

from rlrun.population.train import train_population
from rlrun.train import train

pytestmark = pytest.mark.slow

SEEDS = range(8)
ZOO = ("experiment=ppo_cartpole_zoo", "progress=false", "device=cpu", "eval.every_steps=10000", "eval.episodes=10")


def test_population_members_learn_as_ordinary_runs(compose, tmp_path):
    cfgs = [compose(*ZOO, f"seed={s}", f"run_dir={tmp_path / 'population' / str(s)}") for s in SEEDS]
    batched = train_population(cfgs)
    alone = [train(compose(*ZOO, f"seed={s}", f"run_dir={tmp_path / 'alone' / str(s)}")) for s in SEEDS]
    steps = {name: [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
             for name, runs in (("batched", batched), ("alone", alone))}
    print({name: sorted(s) for name, s in steps.items()})
    assert all(r["status"] == "completed" for r in batched + alone)
    assert len(steps["batched"]) >= len(steps["alone"]) - 1, steps
    assert len(steps["batched"]) >= 6, steps
    assert statistics.median(steps["batched"]) <= 1.5 * statistics.median(steps["alone"]) + 10_000, steps
