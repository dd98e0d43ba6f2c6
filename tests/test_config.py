"""Every config file composes and type-checks; bad values are refused with a message naming key and value;
the command line reports problems without a traceback and before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rlrun.conf
from rlrun.algos import ALGOS
from rlrun.config import ConfigError, EnvConfig, TrainConfig, load

CONF = Path(rlrun.conf.__file__).parent


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALGO_NAMES, ENV_NAMES, EXPERIMENTS = _names("algo"), _names("env"), _names("experiment")


def test_every_algorithm_has_a_config_file_and_back():
    assert ALGO_NAMES and set(ALGO_NAMES) == set(ALGOS)


@pytest.mark.parametrize("env", ENV_NAMES)
@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_every_algo_env_pair_composes_and_loads(compose, algo, env):
    # load() checks types and ranges only; it never builds the env, so Atari ids need no ale_py here.
    cfg = load(compose(f"algo={algo}", f"env={env}"))
    assert isinstance(cfg, TrainConfig) and isinstance(cfg.env, EnvConfig)
    assert cfg.algo.name == algo
    assert cfg.env.name == (env if env != "gym" else "CartPole")  # env=gym is named after its id
    assert isinstance(cfg.algo, ALGOS[algo].Config)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_loads(compose, experiment):
    cfg = load(compose(f"experiment={experiment}"))
    assert isinstance(cfg, TrainConfig)


def test_presets_apply_by_themselves(compose):
    # preset/ppo_CartPole.yaml is picked up by `optional preset: ${algo}_${env}` without being named.
    preset = CONF / "preset" / "ppo_CartPole.yaml"
    if not preset.exists():
        pytest.skip("no CartPole preset")
    cfg = load(compose("algo=ppo", "env=CartPole"))
    assert cfg.algo.num_steps == 32 and cfg.algo.gamma == 0.98
    # ...and command-line overrides still win over it
    assert load(compose("algo=ppo", "env=CartPole", "algo.num_steps=7")).algo.num_steps == 7


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("algo.clip_coef=-1", "algo.clip_coef", "-1"),
        ("env.num_envs=0", "env.num_envs", "0"),
        ("total_steps=abc", "total_steps", "abc"),
        ("env.num_envs=abc", "env.num_envs", "abc"),
        ("algo.gamma=1.5", "algo.gamma", "1.5"),
        ("device=tpu", "device", "tpu"),
        ("algo.activation=sigmoid", "algo.activation", "sigmoid"),
    ],
)
def test_bad_values_raise_config_error_naming_key_and_value(compose, override, key, value):
    with pytest.raises(ConfigError) as info:
        load(compose(override))
    message = str(info.value)
    assert key in message and value in message, message
    assert "\n" not in message.strip()


@pytest.mark.parametrize("override", ["env.max_episode_steps=100", "env.vector_mode=async"])
def test_every_env_config_field_can_be_overridden_without_plus(compose, override):
    cfg = load(compose("env=CartPole", override))
    assert str(getattr(cfg.env, override.split("=")[0].split(".")[1])) == override.split("=")[1]


def test_unknown_algorithm_name_in_a_plain_dict_is_refused(compose):
    cfg = compose()
    cfg.algo.name = "nope"
    with pytest.raises(ConfigError, match="ppo"):
        load(cfg)


# ----------------------------------------------------------------- command line
def _rlrun(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _run_folders(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "runs"
    return sorted(runs.rglob("*")) if runs.exists() else []


def test_cli_unknown_algorithm_lists_the_available_ones(tmp_path):
    out = _rlrun(tmp_path, "train", "algo=nope", "progress=false")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "nope" in text and "ppo" in text
    assert "Traceback" not in text
    assert not list((tmp_path).rglob("summary.json"))


def test_cli_bad_value_exits_2_with_one_message_and_no_run_folder(tmp_path):
    out = _rlrun(tmp_path, "train", "algo.clip_coef=-1", "progress=false")
    assert out.returncode == 2
    text = (out.stdout + out.stderr).strip()
    assert "Traceback" not in text
    assert "algo.clip_coef" in text and "-1" in text
    assert len(text.splitlines()) == 1, text  # one paragraph: a single line here
    assert _run_folders(tmp_path) == []


def test_cli_type_error_is_refused_before_any_work(tmp_path):
    out = _rlrun(tmp_path, "train", "total_steps=abc", "progress=false")
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "total_steps" in text and "abc" in text and "Traceback" not in text
    assert not list(tmp_path.rglob("summary.json"))
    assert not list(tmp_path.rglob("*.pt"))
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_cli_help_lists_train(tmp_path):
    out = _rlrun(tmp_path, "--help")
    assert out.returncode == 0
    assert "train" in out.stdout


def test_configuration_docs_are_generated_from_the_current_dataclasses():
    script = Path(__file__).resolve().parent.parent / "scripts" / "gen_config_docs.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"docs/configuration.md is stale: run python {script.name}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_field_of_every_algorithm_can_be_overridden(compose, algo):
    import dataclasses

    fields = dataclasses.fields(ALGOS[algo].Config)
    overrides = [f"algo.{f.name}={json.dumps(getattr(ALGOS[algo].Config(name=algo), f.name))}" for f in fields
                 if f.name != "name"]
    cfg = load(compose(f"algo={algo}", *overrides))  # Hydra refuses a key its composed config lacks
    assert cfg.algo.name == algo


def test_algo_yamls_hold_only_what_differs_from_the_dataclass():
    import dataclasses

    import yaml

    for path in sorted((CONF / "algo").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        base = "dqn" if path.stem == "rainbow" else path.stem  # rainbow.yaml starts from dqn.yaml
        defaults = dataclasses.asdict(ALGOS[base].Config(name=base))
        repeated = {k: v for k, v in data.items() if k not in ("defaults", "name") and defaults.get(k) == v}
        assert not repeated, f"{path.name} repeats the dataclass defaults {repeated}"


def test_env_yamls_hold_only_what_differs_from_the_dataclass():
    import dataclasses

    import yaml

    from rlrun.config import EnvConfig

    defaults = dataclasses.asdict(EnvConfig())
    for path in sorted((CONF / "env").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        repeated = {k: v for k, v in data.items() if k not in ("defaults", "name", "id") and defaults.get(k) == v}
        assert not repeated, f"{path.name} repeats the dataclass defaults {repeated}"


def test_integer_keys_accept_integral_floats_as_people_type_them(compose):
    """total_steps=1e6 is how people type it: an integral float becomes the int; 12.5 is refused as before."""
    cfg = load(compose("total_steps=1e4", "eval.every_steps=5e3", "algo.num_steps=3.2e1", "env.num_envs=8.0",
                       "algo.max_grad_norm=1e0"))
    assert (cfg.total_steps, cfg.eval.every_steps, cfg.algo.num_steps, cfg.env.num_envs) == (10000, 5000, 32, 8)
    assert all(type(v) is int for v in (cfg.total_steps, cfg.eval.every_steps, cfg.algo.num_steps, cfg.env.num_envs))
    assert type(cfg.algo.max_grad_norm) is float  # a float key stays a float
    with pytest.raises(ConfigError, match=r"algo\.num_steps: Value '12\.5'"):
        load(compose("algo.num_steps=12.5"))


def test_env_id_alone_runs_under_its_own_name_and_settings(compose):
    """env.id=<id> without env=: the env file with that id (its name, settings and presets), or env=gym, named
    after the id, with no other env's preset; env=schema is no longer an option."""
    from rlrun.cli import env_args
    from rlrun.config import env_name

    assert env_args(["env.id=Acrobot-v1", "seed=1"]) == ["env=Acrobot", "env.id=Acrobot-v1", "seed=1"]
    assert env_args(["env.id=MountainCarContinuous-v0"])[0] == "env=gym"
    assert env_args(["env=CartPole", "env.id=Acrobot-v1"]) == ["env=CartPole", "env.id=Acrobot-v1"]  # as asked
    cfg = load(compose(*env_args(["env.id=MountainCarContinuous-v0"])))
    assert (cfg.env.name, cfg.env.id) == ("MountainCarContinuous", "MountainCarContinuous-v0")
    ppo = load(compose(*env_args(["env.id=Acrobot-v1"])))
    assert ppo.env.name == "Acrobot" and ppo.algo.gamma == 0.99  # not preset/ppo_CartPole.yaml's 0.98
    assert [env_name(i) for i in ("ALE/Pong-v5", "PongNoFrameskip-v4", "pkg.mod:MyEnv-v0", "Foo")] == [
        "Pong", "PongNoFrameskip", "MyEnv", "Foo"]
    with pytest.raises(Exception, match="schema"):
        compose("env=schema")


def test_a_misspelt_key_or_option_gets_the_closest_names_in_one_paragraph():
    """What `rlrun train` prints instead of Hydra's advice to append with '+' or its config-search-path dump."""
    from rlrun.cli import composition_problem

    lrr = composition_problem(["algo.lrr=0.1"])
    assert lrr.startswith("algo.lrr is not a key of this config: did you mean algo.lr")
    assert composition_problem(["totl_steps=5"]).startswith("totl_steps is not a key of this config: did you mean "
                                                            "total_steps")
    assert composition_problem(["algo=PPO"]).startswith("algo=PPO is not an option: did you mean algo=ppo?")
    assert "did you mean env=CartPole?" in composition_problem(["env=cartpole"])
    assert "\n" not in lrr and "+algo" not in lrr
    assert composition_problem(["algo=ppo", "algo.lr=0.1", "env.id=Acrobot-v1", "env=Acrobot"]) is None
    assert composition_problem(["-m", "seed=1,2"]) is None  # sweeps and flags: Hydra's own handling


def test_a_scalar_for_a_list_key_is_one_sentence_with_the_list_form(compose):
    with pytest.raises(ConfigError, match=r"algo\.hidden_sizes=64 is not accepted: expected a list, e\.g\. "
                                          r"algo\.hidden_sizes=\[64,64\]"):
        load(compose("algo.hidden_sizes=64"))


def test_rlrun_version(capsys):
    from importlib.metadata import version

    from rlrun.cli import main

    main(["--version"])
    assert capsys.readouterr().out.strip() == f"rlrun {version('rlrun')}"


def test_a_launcher_or_sweeper_that_is_not_installed_names_its_extra(monkeypatch, capsys):
    import importlib.util

    from rlrun import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hydra_plugins.hydra_joblib_launcher" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "-m", "hydra/launcher=joblib", "seed=0,1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'hydra/launcher=joblib needs Hydra\'s joblib launcher, which is not installed: pip install "rlrun[sweep]"' in err
    assert cli.plugin_problem(["hydra/launcher=ray", "hydra/sweeper=optuna_max"]) is None  # installed here


def test_single_run_folders_carry_the_overrides_that_tell_them_apart():
    """DQN and naive DQN no longer share a folder name but for the time; eval/checkpoint keys stay out."""
    from rlrun.config import run_suffix

    naive = run_suffix(["algo=dqn", "algo.replay=false", "algo.target_network=false", "eval.every_steps=0", "seed=3"])
    assert naive == "__replay=false,target_network=false"
    assert run_suffix(["algo=dqn", "env=CartPole", "seed=1", "progress=false"]) == ""
    assert run_suffix(["env.id=ALE/Pong-v5"]) == "__id=ALE-Pong-v5"  # no path separators
    long = run_suffix([f"algo.k{i}=1234567" for i in range(20)])
    assert len(long) <= 82 and long.endswith("=1234567")  # whole overrides only
    conf = (Path(rlrun.conf.__file__).parent / "config.yaml").read_text()
    assert "${run_suffix:${hydra.overrides.task}}" in conf
