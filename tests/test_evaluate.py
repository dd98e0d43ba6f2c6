"""`rlrun eval`: scores of a trained run's checkpoint, reproducibility, equality with training's own evaluation,
saved observation statistics, videos, the rendered Atari env against the ale backend, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import rlrun.envs.render
from rlrun import checkpoint
from rlrun.config import EnvConfig
from rlrun.evaluate import DEFAULT_SEED, evaluate_run, main, make_rendered_env
from rlrun.run import EVAL_SEEDS, env_seed
from rlrun.train import train

# 2048 steps: enough PPO for CartPole returns that differ between episodes (about 50-100), about 1.5 s.
RUN = ("total_steps=2048", "eval.every_steps=1024", "checkpoint.every_steps=1024")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny PPO CartPole run on the torch backend, with checkpoints at steps 1024 and 2048."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    return run_dir, train(tiny_config(run_dir, *RUN))


@pytest.fixture(scope="module")
def norm_run(tmp_path_factory) -> tuple[Path, dict]:
    """The same on the gymnasium backend with observation normalisation (statistics saved in the checkpoint)."""
    run_dir = tmp_path_factory.mktemp("eval") / "norm_run"
    return run_dir, train(tiny_config(run_dir, *RUN, "env.backend=gymnasium", "algo.norm_obs=true"))


def _final_eval_seed(run_dir: Path) -> int:
    """The env seed of the run's last periodic evaluation (the one summary.json reports)."""
    state = torch.load(checkpoint.latest(run_dir), weights_only=True)
    return env_seed(state["config"]["seed"], EVAL_SEEDS, state["eval_count"] - 1)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns("videos")))


# ----------------------------------------------------------------- scores
def test_scores_the_latest_checkpoint_with_consistent_statistics(run):
    run_dir, _ = run
    result = evaluate_run(run_dir, episodes=5)
    returns = np.array(result["returns"])
    assert result["episodes"] == len(returns) == 5
    assert result["step"] == 2048 and result["checkpoint"] == str(checkpoint.latest(run_dir))
    assert result["deterministic"] and result["seed"] == DEFAULT_SEED and result["device"] == "cpu"
    assert result["env"] == "CartPole-v1" and result["backend"] == "torch" and result["algo"] == "ppo"
    assert ((returns >= 1) & (returns <= 500) & (returns == returns.round())).all()  # CartPole: +1 per step
    assert result["mean"] == pytest.approx(returns.mean())
    assert result["std"] == pytest.approx(returns.std())
    assert (result["min"], result["max"]) == (returns.min(), returns.max())


def test_the_same_seed_gives_the_same_episodes(run):
    run_dir, _ = run
    assert evaluate_run(run_dir, episodes=4)["returns"] == evaluate_run(run_dir, episodes=4)["returns"]
    first = evaluate_run(run_dir, episodes=4, deterministic=False, seed=7)
    assert not first["deterministic"]
    assert evaluate_run(run_dir, episodes=4, deterministic=False, seed=7)["returns"] == first["returns"]


def test_equals_the_runs_own_final_evaluation(run):
    # Same checkpoint, same number of envs (eval.episodes=2), same seed: the same episodes as training's last evaluation.
    run_dir, summary = run
    result = evaluate_run(run_dir, episodes=2, seed=_final_eval_seed(run_dir))
    assert result["mean"] == summary["final_eval_return"]


def test_checkpoint_by_step_or_path(run):
    run_dir, _ = run
    path = checkpoint.path_for(run_dir, 1024)
    by_step = evaluate_run(run_dir, episodes=3, checkpoint="1024")
    assert by_step["step"] == 1024 and by_step["checkpoint"] == str(path)
    assert evaluate_run(run_dir, episodes=3, checkpoint=str(path))["returns"] == by_step["returns"]


def test_batches_play_the_same_episodes(norm_run, monkeypatch):
    # On the gymnasium backend episode i starts from seed + i however the episodes are split into batches.
    run_dir, _ = norm_run
    whole = evaluate_run(run_dir, episodes=6)["returns"]
    monkeypatch.setattr(rlrun.evaluate, "MAX_BATCH", 4)
    assert evaluate_run(run_dir, episodes=6)["returns"] == whole


def test_norm_obs_uses_the_saved_statistics(norm_run, tmp_path):
    run_dir, summary = norm_run
    assert evaluate_run(run_dir, episodes=2, seed=_final_eval_seed(run_dir))["mean"] == summary["final_eval_return"]
    # The same checkpoint with fresh statistics (mean 0, variance 1) plays other episodes.
    fresh = _copy(run_dir, tmp_path)
    path = checkpoint.latest(fresh)
    state = torch.load(path, weights_only=True)
    env_state = state["env"]
    while "obs_rms" not in env_state:
        env_state = env_state["env"]
    rms = env_state["obs_rms"]
    rms["mean"].zero_(), rms["var"].fill_(1.0)
    checkpoint.save(state, path)
    assert evaluate_run(fresh, episodes=8)["returns"] != evaluate_run(run_dir, episodes=8)["returns"]


# ----------------------------------------------------------------- videos
def test_video_writes_an_mp4_per_rendered_episode(run, capsys):
    imageio = pytest.importorskip("imageio.v3")
    run_dir, _ = run
    assert main([str(run_dir), "--episodes", "1", "--video"]) == 0
    out = capsys.readouterr().out
    videos = list((run_dir / "videos" / "2048").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    assert str(run_dir / "videos" / "2048") in out
    frames = imageio.imread(videos[0])
    assert frames.shape[1:] == (400, 600, 3) and len(frames) >= 2


def test_rendered_episodes_are_the_scored_ones_on_the_gymnasium_backend(norm_run, tmp_path):
    # Same env, seeds and saved normalisation as the scored episodes: the recorded episodes are the first scored ones.
    run_dir, _ = norm_run
    result = evaluate_run(run_dir, episodes=3, video=True, video_dir=tmp_path / "videos", render_episodes=2)
    rendered = result["rendered"]
    assert rendered["returns"] == result["returns"][:2]
    assert [Path(v).name for v in rendered["videos"]] == ["eval-episode-0.mp4", "eval-episode-1.mp4"]
    assert all(Path(v).stat().st_size > 0 for v in rendered["videos"])


# ----------------------------------------------------------------- the command
def test_cli_prints_the_table_and_writes_json(run, tmp_path, capsys):
    run_dir, _ = run
    assert main([str(run_dir), "--episodes", "3", "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "step 2048" in out and "deterministic" in out
    assert out.splitlines()[3].split() == ["episodes", "mean", "std", "min", "max"]
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["episodes"] == len(data["returns"]) == 3 and data["step"] == 2048
    assert out.splitlines()[4].split()[0] == "3" and float(out.splitlines()[4].split()[1]) == round(data["mean"], 2)


def _refused(argv: list[str], capsys) -> str:
    """Run `rlrun eval argv`, check it refuses with one `rlrun: error:` paragraph and status 2; the message."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("rlrun: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_refuses_a_missing_folder_and_one_that_is_not_a_run(tmp_path, capsys):
    assert "does not exist" in _refused([str(tmp_path / "nope")], capsys)
    assert "is not a run folder" in _refused([str(tmp_path)], capsys)
    (tmp_path / "some_run" / "checkpoints").mkdir(parents=True)
    assert "some_run" in _refused([str(tmp_path)], capsys)  # a folder of runs: names one


def test_refuses_a_run_without_checkpoint_saying_where_it_looked(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    err = _refused([str(tmp_path)], capsys)
    assert "No checkpoint" in err and str(tmp_path / "checkpoints") in err


def test_refuses_a_corrupt_checkpoint(run, tmp_path, capsys):
    run_dir = _copy(run[0], tmp_path)
    checkpoint.latest(run_dir).write_bytes(b"\x00garbage, not a checkpoint" * 10)
    assert "corrupt" in _refused([str(run_dir)], capsys)


def test_refuses_a_missing_checkpoint_step_listing_the_steps(run, capsys):
    err = _refused([str(run[0]), "--checkpoint", "999"], capsys)
    assert "--checkpoint 999" in err and "1024, 2048" in err


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_refuses_a_bad_episode_count(run, capsys, value):
    assert "--episodes" in _refused([str(run[0]), "--episodes", value], capsys)


def test_refuses_render_human_without_a_display(run, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(rlrun.envs.render.sys, "platform", "linux")
    err = _refused([str(run[0]), "--render", "human"], capsys)
    assert "$DISPLAY" in err and "--video" in err


def test_refuses_a_window_that_cannot_open(run, capsys, monkeypatch):
    # A display that does not exist: pygame is missing, or cannot open it; either way one message, no traceback.
    monkeypatch.setenv("DISPLAY", ":4242")
    assert "CartPole-v1" in _refused([str(run[0]), "--render", "human"], capsys)


class _OpensAFile:
    """Unpickling this calls open(path, 'w'): a stand-in for arbitrary code in a tampered checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_refuses_a_checkpoint_that_would_unpickle_an_object(run, tmp_path, capsys):
    run_dir = _copy(run[0], tmp_path)
    path = checkpoint.latest(run_dir)
    marker = tmp_path / "code_ran"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "extra": _OpensAFile(marker)}, path)
    assert "refused, because loading it could run code" in _refused([str(run_dir)], capsys)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what a plain torch.load would have done
    assert marker.exists()


# ----------------------------------------------------------------- Atari
@pytest.mark.parametrize("game", ["Pong", "Breakout"])  # Breakout: lives lost, each followed by FIRE
def test_rendered_atari_env_matches_the_ale_backend(game):
    pytest.importorskip("ale_py")
    from rlrun.envs.atari import AtariVecEnv

    cfg = EnvConfig(name=game, id=f"ALE/{game}-v5", noop_max=0)  # no random no-ops: the same emulator states
    backend = AtariVecEnv(cfg, 1, torch.device("cpu"), training=False)
    single = make_rendered_env(cfg, "rgb_array", torch.device("cpu"))
    try:
        assert single.single_action_space == backend.single_action_space
        obs = [(backend.reset(seed=0), single.reset(seed=0))]
        n = int(backend.single_action_space.n)
        actions = torch.from_numpy(np.random.default_rng(0).integers(0, n, size=(400, 1)))
        lives = []
        for action in actions:
            a, reward_a, _, _, info_a = backend.step(action)
            b, reward_b, _, _, info_b = single.step(action)
            lives.append(int(info_a["lives"][0]))
            assert torch.equal(info_a["episode_done"], info_b["episode_done"])
            assert torch.equal(reward_a, reward_b)
            if info_a["episode_done"].any():  # the backend's obs is the next game's: the single env does not autoreset
                break
            obs.append((a, b))
        if game == "Breakout":
            assert min(lives) < max(lives)  # the comparison went through life losses
        for a, b in obs:
            assert a.shape == b.shape == (1, 4, 84, 84) and a.dtype == b.dtype == torch.uint8
        diff = torch.stack([(a.int() - b.int()).abs() for a, b in obs])
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4  # at most rounding in the resize
    finally:
        backend.close()
        single.close()


def test_atari_eval_and_video(tmp_path):
    pytest.importorskip("ale_py")
    # A tiny Pong run whose games are cut at 400 emulator frames (100 agent steps), as in test_train.py.
    cfg = tiny_config(tmp_path / "pong", "env=Pong", "env.num_envs=2", "env.max_episode_frames=400",
                      "algo.num_steps=16", "algo.minibatch_size=32", "algo.update_epochs=1", "total_steps=64",
                      "eval.every_steps=0", "eval.episodes=1")
    train(cfg)
    result = evaluate_run(tmp_path / "pong", episodes=2, video=True)
    assert result["backend"] == "ale" and len(result["returns"]) == 2
    assert all(-21 <= r <= 21 for r in result["returns"] + result["rendered"]["returns"])
    (video,) = result["rendered"]["videos"]
    assert Path(video).parent == tmp_path / "pong" / "videos" / "64" and Path(video).stat().st_size > 0


def test_a_missing_pygame_names_the_extra_that_installs_it():
    """Classic-control frames come from gymnasium's pygame renderer; without pygame, one message naming rlrun[video]."""
    import importlib.util

    from rlrun.envs.render import RenderError

    if importlib.util.find_spec("pygame") is not None:
        pytest.skip("pygame is installed here")
    with pytest.raises(RenderError, match=r'pygame is not installed.*pip install "rlrun\[video\]" installs pygame'):
        make_rendered_env(EnvConfig(name="Acrobot", id="Acrobot-v1"), "rgb_array", torch.device("cpu"))
