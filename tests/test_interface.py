"""Every algorithm offers what rlrun/algos/base.py declares, and the callers use nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos import ALGOS
from rlrun.algos.base import Algorithm, AlgorithmConfig, OffPolicy, OnPolicy, Policy, Searching
from rlrun.envs.games import game_spaces
from rlrun.loops import LOOPS
from rlrun.search.games import TicTacToe

FAMILIES = {"on_policy": OnPolicy, "off_policy": OffPolicy, "search": Searching}
ROOT = Path(__file__).resolve().parent.parent / "rlrun"


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_every_algorithm_offers_its_familys_declared_interface(name):
    algo_cls = ALGOS[name]
    assert algo_cls.loop in LOOPS and set(FAMILIES) == set(LOOPS)
    cfg = algo_cls.Config(name=name)
    assert isinstance(cfg, AlgorithmConfig)
    obs_space, action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2)
    if algo_cls.loop == "search":  # AlphaZero plays board games
        obs_space, action_space = game_spaces(TicTacToe())
    agent = algo_cls(cfg, obs_space, action_space, torch.device("cpu"))
    assert isinstance(agent, Algorithm) and isinstance(agent, FAMILIES[algo_cls.loop])
    assert isinstance(agent.policy, Policy)
    assert all(issubclass(space, gym.Space) for space in algo_cls.action_spaces)


@pytest.mark.parametrize("caller", ["train.py", "loops.py", "evaluate.py"])
def test_the_callers_do_not_probe_algorithms(caller):
    text = (ROOT / caller).read_text()
    assert not re.findall(r"\b(getattr|hasattr)\(", text)
