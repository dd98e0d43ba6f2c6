"""Bad input that docs/reliability.md lists and no other test tries: each is refused with a ConfigError that
names the key and value and says what is accepted, before any run folder is written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rlrun.cli import resume_args
from rlrun.config import ConfigError, load
from rlrun.train import train


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("seed=-1",), "seed=-1 is not accepted: expected an integer >= 0."),
        (("torch_threads=0",), "torch_threads=0 is not accepted: expected an integer >= 1."),
        (("eval.episodes=0",), "eval.episodes=0 is not accepted: expected an integer >= 1."),
        (("checkpoint.every_minutes=-1",), "checkpoint.every_minutes=-1.0 is not accepted: expected a number >= 0."),
        (("checkpoint.keep=0",), "checkpoint.keep=0 is not accepted: expected an integer >= 1."),
        (("algo=dqn", "algo.batch_size=100", "algo.buffer_size=50"),
         "algo.buffer_size=50 is not accepted: expected an integer >= algo.batch_size (100)."),
    ],
)
def test_bad_run_values_are_refused_naming_key_value_and_range(compose, overrides, expected):
    with pytest.raises(ConfigError) as info:
        load(compose(*overrides))
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("env.backend=ale",), "env.backend=ale needs an Atari id such as 'ALE/Pong-v5', not env.id='CartPole-v1'"),
        (("env=LunarLander", "env.backend=torch"),
         ("env.backend=torch has no tensor-native version of env.id='LunarLander-v3': it exists for Acrobot-v1, "
          "CartPole-v1, MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1")),
        (("env=Pong", "algo.norm_obs=true"),
         "algo.norm_obs=true normalises vector observations, but ALE/Pong-v5 gives uint8 images"),
    ],
)
def test_impossible_env_requests_are_refused_before_a_run_folder_exists(tiny_cfg, tmp_path, overrides, expected):
    if "env=Pong" in overrides:
        pytest.importorskip("ale_py")
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        train(tiny_cfg(*overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_refused(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"^device=cuda but no CUDA device is visible to torch: use device=cpu"):
        train(tiny_cfg("device=cuda"))
    assert not (tmp_path / "run").exists()


def test_resume_of_a_folder_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match=r"^resume=does/not/exist: does/not/exist/.hydra/overrides.yaml does not"):
        resume_args(["resume=does/not/exist", "total_steps=10"])


def test_an_unknown_command_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "rlrun.cli", "bogus"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("rlrun: unknown command 'bogus'; the commands are: train, plot, eval, play.")
