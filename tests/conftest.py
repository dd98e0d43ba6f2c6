"""Shared helpers: compose the packaged Hydra config, and shrink it to a tiny training run.

Nothing here registers global state: each composition initialises Hydra inside a context
manager that clears ``GlobalHydra`` again on exit, so tests stay independent of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

# The overrides that make a run finish in about a second on a CPU: two 256-step iterations of
# the CartPole preset (8 envs x 32 steps), an evaluation of 2 episodes after each, no progress bar.
TINY = {
    "total_steps": "512",
    "eval.every_steps": "256",
    "eval.episodes": "2",
    "progress": "false",
    "device": "cpu",
}


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose_config(*overrides: str) -> DictConfig:
    """``rlrun/conf/config.yaml`` composed with ``overrides`` exactly as `rlrun train` would see them."""
    if GlobalHydra.instance().is_initialized():  # left over by someone else: start clean
        GlobalHydra.instance().clear()
    with hydra.initialize_config_module(config_module="rlrun.conf", version_base=None):
        return hydra.compose("config", overrides=list(overrides))


def tiny_config(run_dir: Path, *overrides: str) -> DictConfig:
    """A composed config for a tiny run writing into ``run_dir``; ``overrides`` win over the tiny defaults."""
    merged = {**TINY, "run_dir": str(run_dir)}
    extra = []
    for override in overrides:
        if "=" in override and not override.startswith(("+", "~")):
            merged[_key(override)] = override.split("=", 1)[1]
        else:
            extra.append(override)
    # Group choices (algo=, env=, experiment=) go first so the key overrides apply on top of them.
    return compose_config(*extra, *(f"{k}={v}" for k, v in merged.items()))


@pytest.fixture
def one_thread():
    """Run the test with one torch CPU thread (restored afterwards).

    Small networks are bound by per-op overhead; on a shared two-core machine two OpenMP
    threads spinning against other processes make a tiny PPO update ~50x slower (DESIGN.md,
    Performance). ``train()`` sets ``torch_threads`` itself; this is for tests that call
    networks directly. Opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def compose() -> Callable[..., DictConfig]:
    """``compose("algo=ppo", "env=Pendulum", ...)`` -> the composed DictConfig."""
    return compose_config


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``tiny_cfg("env=Pendulum", ..., run_dir=...)``: a tiny training config with its run folder under tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return tiny_config(run_dir or tmp_path / "run", *overrides)

    return make
