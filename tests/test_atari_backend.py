"""The ale backend (rlrun.envs.atari) against the VecEnv contract of rlrun.envs.base."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ale_py")

import gymnasium as gym
from omegaconf import OmegaConf

from rlrun.config import ConfigError, EnvConfig
from rlrun.envs import make_vec_env
from rlrun.envs.atari import AtariVecEnv, fire_variants, game_name

CPU = torch.device("cpu")
CONF_DIR = Path(__file__).resolve().parents[1] / "rlrun" / "conf" / "env"


def make(env_id: str, num_envs: int = 2, *, training: bool = True, **overrides) -> AtariVecEnv:
    cfg = EnvConfig(name=env_id, id=env_id, **overrides)
    return AtariVecEnv(cfg, num_envs, CPU, training=training)


def random_actions(env: AtariVecEnv, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, env.single_action_space.n, (steps, env.num_envs), generator=gen)


def test_shapes_dtypes_and_spaces():
    env = make("ALE/Pong-v5", 3)
    try:
        assert env.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), "uint8")
        assert env.single_action_space == gym.spaces.Discrete(6)  # Pong's minimal action set
        obs = env.reset(seed=0)
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == torch.uint8 and obs.device == CPU
        assert env.single_observation_space.contains(obs[0].numpy())
        obs, rew, term, trunc, info = env.step(torch.zeros(3, dtype=torch.int64))
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == torch.uint8
        assert rew.shape == (3,) and rew.dtype == torch.float32
        assert term.shape == trunc.shape == (3,)
        assert term.dtype == trunc.dtype == torch.bool
        assert info["final_obs"].shape == obs.shape and info["final_obs"].dtype == torch.uint8
        assert info["episode_done"].dtype == torch.bool
        assert info["episode_return"].dtype == torch.float32
        assert info["episode_length"].dtype == torch.int64
    finally:
        env.close()


def test_frame_stack_setting_is_honoured():
    env = make("PongNoFrameskip-v4", 1, frame_stack=2)
    try:
        assert env.reset(seed=0).shape == (1, 2, 84, 84)
        assert env.single_observation_space.shape == (2, 84, 84)
    finally:
        env.close()


def test_same_step_autoreset_on_time_limit():
    # 40 emulator frames = 10 agent steps at frame_skip 4.
    env = make("ALE/Pong-v5", 3, training=False, max_episode_frames=40)
    try:
        prev = env.reset(seed=1)
        for t in range(1, 11):
            obs, _, term, trunc, info = env.step(torch.zeros(3, dtype=torch.int64))
            if t < 10:
                assert not trunc.any() and not info["episode_done"].any()
                assert torch.equal(info["final_obs"], obs)
                prev = obs
        assert trunc.all() and not term.any()
        assert info["episode_done"].all()
        assert info["episode_length"].tolist() == [10, 10, 10]
        final = info["final_obs"]
        # final_obs continues the old stack; obs starts a new game (older slots empty).
        assert torch.equal(final[:, :-1], prev[:, 1:])
        assert not torch.equal(final, obs)
        assert (obs[:, :-1] == 0).all() and obs[:, -1].any()
        # The new game counts from zero again.
        for _ in range(10):
            obs, _, _, trunc, info = env.step(torch.zeros(3, dtype=torch.int64))
        assert trunc.all() and info["episode_length"].tolist() == [10, 10, 10]
    finally:
        env.close()


def test_max_episode_steps_also_truncates():
    env = make("ALE/Pong-v5", 2, max_episode_steps=5)
    try:
        env.reset(seed=0)
        for _ in range(5):
            _, _, _, trunc, info = env.step(torch.zeros(2, dtype=torch.int64))
        assert trunc.all() and info["episode_length"].tolist() == [5, 5]
    finally:
        env.close()


def test_game_over_autoreset_and_no_life_loss_termination_in_evaluation():
    env = make("ALE/Breakout-v5", 2, training=False)
    try:
        prev = env.reset(seed=2)
        lives_prev = torch.full((2,), 5)
        saw_life_loss = saw_game_over = False
        for act in random_actions(env, 1500, seed=2):
            obs, _, term, trunc, info = env.step(act)
            lives = info["lives"]
            assert torch.equal(term, info["episode_done"])  # only whole games end
            assert not trunc.any()
            for i in range(2):
                if term[i]:
                    saw_game_over = True
                    assert lives[i] == 5 and lives_prev[i] == 1  # a new game started
                    assert torch.equal(info["final_obs"][i, :-1], prev[i, 1:])
                    assert not torch.equal(info["final_obs"][i], obs[i])
                    assert (obs[i, :-1] == 0).all()
                else:
                    assert torch.equal(info["final_obs"][i], obs[i])
                    if lives[i] < lives_prev[i]:
                        saw_life_loss = True
            prev, lives_prev = obs, lives
            if saw_game_over and saw_life_loss:
                break
        assert saw_life_loss and saw_game_over
    finally:
        env.close()


def test_episodic_life_terminates_per_life_but_reports_whole_games():
    # Same seed, same actions: the training env and the evaluation env play the very same
    # games; only terminated and the reward scale differ.
    train = make("ALE/Breakout-v5", 2, training=True)
    evaluate = make("ALE/Breakout-v5", 2, training=False)
    try:
        assert torch.equal(train.reset(seed=5), evaluate.reset(seed=5))
        lives_prev = torch.full((2,), 5)
        terms_in_game = torch.zeros(2, dtype=torch.int64)
        raw_sum = torch.zeros(2)
        games = torch.zeros(2, dtype=torch.int64)
        life_loss_steps = 0
        for act in random_actions(train, 2000, seed=5):
            o_t, r_t, term_t, trunc_t, info_t = train.step(act)
            o_e, r_e, term_e, trunc_e, info_e = evaluate.step(act)
            assert torch.equal(o_t, o_e) and torch.equal(info_t["lives"], info_e["lives"])
            assert set(r_t.tolist()) <= {-1.0, 0.0, 1.0}
            assert torch.equal(r_t, r_e.sign())
            done = info_t["episode_done"]
            assert torch.equal(done, info_e["episode_done"]) and torch.equal(done, term_e)
            life_lost = (info_t["lives"] < lives_prev) & ~done
            assert torch.equal(term_t, done | life_lost)
            assert not (trunc_t.any() or trunc_e.any())
            if life_lost.any():
                life_loss_steps += 1
                # The game goes on: no reset, the last observation is the current one.
                assert torch.equal(info_t["final_obs"][life_lost], o_t[life_lost])
                assert not info_t["episode_done"][life_lost].any()
            terms_in_game += term_t
            raw_sum += r_e
            for i in torch.nonzero(done).flatten().tolist():
                assert terms_in_game[i] == 5  # four lives lost, then the game over
                assert info_t["episode_return"][i] == info_e["episode_return"][i] == raw_sum[i]
                assert info_t["episode_length"][i] == info_e["episode_length"][i]
                terms_in_game[i] = 0
                raw_sum[i] = 0
                games[i] += 1
            lives_prev = info_t["lives"]
            if (games >= 1).all():
                break
        assert (games >= 1).all() and life_loss_steps > 0
    finally:
        train.close()
        evaluate.close()


def test_reported_returns_are_raw_while_training_rewards_are_clipped():
    # Space Invaders scores 5..30 per invader, so raw and clipped sums differ quickly.
    kw = {"max_episode_frames": 800}  # 200 agent steps, then truncation ends the game
    train = make("ALE/SpaceInvaders-v5", 2, training=True, **kw)
    evaluate = make("ALE/SpaceInvaders-v5", 2, training=False, **kw)
    try:
        train.reset(seed=3)
        evaluate.reset(seed=3)
        clipped_sum, raw_sum = torch.zeros(2), torch.zeros(2)
        for act in random_actions(train, 200, seed=3):
            _, r_t, _, _, info_t = train.step(act)
            _, r_e, _, trunc_e, info_e = evaluate.step(act)
            clipped_sum += r_t
            raw_sum += r_e
        assert set(r_t.tolist()) <= {-1.0, 0.0, 1.0}
        assert info_t["episode_done"].all() and trunc_e.all()
        assert torch.equal(info_t["episode_return"], raw_sum)
        assert torch.equal(info_e["episode_return"], raw_sum)
        assert (raw_sum > clipped_sum).any()
    finally:
        train.close()
        evaluate.close()


@pytest.mark.parametrize("training", [True, False])
def test_fire_after_a_life_loss_relaunches_the_ball(training):
    # A NOOP-only agent never presses FIRE itself. Breakout serves no new ball until FIRE is
    # pressed, so without the env's FIRE after a life loss the game would stall for good
    # (until the 108k-frame cap) after the first lost ball.
    env = make("ALE/Breakout-v5", 2, training=training)
    noop = torch.zeros(2, dtype=torch.int64)
    try:
        env.reset(seed=7)
        lives_prev = torch.full((2,), 5)
        lost_once = torch.zeros(2, dtype=torch.bool)
        relaunched = torch.zeros(2, dtype=torch.bool)  # a reward or another life lost after that
        games = torch.zeros(2, dtype=torch.int64)
        terms_in_game = torch.zeros(2, dtype=torch.int64)
        for _ in range(3000):
            obs, rew, term, trunc, info = env.step(noop)
            done = info["episode_done"]
            life_lost = (info["lives"] < lives_prev) & ~done
            relaunched |= lost_once & ((rew != 0) | life_lost | done)
            lost_once |= life_lost
            # The FIRE press is the env's own business: the contract is unchanged.
            assert not trunc.any()
            assert torch.equal(term, done | life_lost if training else done)
            assert torch.equal(info["final_obs"][life_lost], obs[life_lost])  # the game goes on
            terms_in_game += term
            for i in torch.nonzero(done).flatten().tolist():
                assert terms_in_game[i] == (5 if training else 1)  # every ball served, every life lost
                terms_in_game[i] = 0
                games[i] += 1
            lives_prev = info["lives"]
            if (games >= 2).all():
                break
        assert lost_once.all() and relaunched.all()
        assert (games >= 2).all()  # whole games end: FIRE at the start and after each life loss
        assert torch.equal(noop, torch.zeros(2, dtype=torch.int64))  # the caller's actions are untouched
    finally:
        env.close()


def test_no_fire_at_all_when_fire_reset_is_off():
    # fire_reset=False: no FIRE at the game start either, so a NOOP agent never sees a ball.
    env = make("ALE/Breakout-v5", 1, training=False, fire_reset=False, noop_max=0)
    try:
        env.reset(seed=0)
        for _ in range(300):
            _, rew, term, _, info = env.step(torch.zeros(1, dtype=torch.int64))
            assert rew.item() == 0 and not term.any() and info["lives"].item() == 5
    finally:
        env.close()


def test_fire_is_added_to_the_agents_action():
    from ale_py import Action

    def names(table, action_set):
        return [action_set[i].name for i in table]

    invaders = [Action.NOOP, Action.FIRE, Action.RIGHT, Action.LEFT, Action.RIGHTFIRE, Action.LEFTFIRE]
    assert names(fire_variants(invaders), invaders) == ["FIRE", "FIRE", "RIGHTFIRE", "LEFTFIRE",
                                                         "RIGHTFIRE", "LEFTFIRE"]
    breakout = [Action.NOOP, Action.FIRE, Action.RIGHT, Action.LEFT]  # no RIGHTFIRE: FIRE instead
    assert fire_variants(breakout).tolist() == [1, 1, 1, 1]
    assert fire_variants([Action.NOOP, Action.UP, Action.DOWN]) is None  # no FIRE, nothing to press
    for env_id, fire_reset, expected in [("ALE/MsPacman-v5", True, None), ("ALE/Breakout-v5", False, None),
                                         ("ALE/Breakout-v5", True, [1, 1, 1, 1])]:
        env = make(env_id, 1, fire_reset=fire_reset)
        try:
            table = env._add_fire
            assert (None if table is None else table.tolist()) == expected
        finally:
            env.close()


def test_same_seed_reproduces_trajectories():
    def rollout(env: AtariVecEnv, seed: int) -> list[torch.Tensor]:
        out = [env.reset(seed=seed)]
        for act in random_actions(env, 150, seed=11):
            obs, rew, term, trunc, info = env.step(act)
            out += [obs, rew, term, trunc, info["final_obs"], info["episode_return"]]
        return out

    a = make("ALE/Breakout-v5", 2, repeat_action_probability=0.25)
    b = make("ALE/Breakout-v5", 2, repeat_action_probability=0.25)
    try:
        first = rollout(a, 123)
        assert all(torch.equal(x, y) for x, y in zip(first, rollout(b, 123)))
        assert all(torch.equal(x, y) for x, y in zip(first, rollout(a, 123)))  # re-seeding
    finally:
        a.close()
        b.close()


def test_game_name_mapping():
    assert game_name("ALE/Pong-v5") == "pong"
    assert game_name("PongNoFrameskip-v4") == "pong"
    assert game_name("ALE/MsPacman-v5") == "ms_pacman"
    assert game_name("MontezumaRevengeNoFrameskip-v4") == "montezuma_revenge"


def test_unknown_game_raises_config_error():
    with pytest.raises(ConfigError, match="NotARealGame"):
        make("ALE/NotARealGame-v5")
    with pytest.raises(ConfigError, match="RAM"):
        make("ALE/Pong-ram-v5")


def test_missing_ale_py_raises_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)
    monkeypatch.setitem(sys.modules, "ale_py.vector_env", None)
    monkeypatch.setitem(sys.modules, "ale_py.roms", None)
    with pytest.raises(ConfigError, match=r"pip install \"rlrun\[atari\]\""):
        make("ALE/Pong-v5")


def test_bad_actions_raise_instead_of_hanging():
    env = make("ALE/Pong-v5", 2)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(torch.zeros(2, dtype=torch.int64))
        env.reset(seed=0)
        with pytest.raises(ValueError):
            env.step(torch.tensor([0, 6]))
        with pytest.raises(ValueError):
            env.step(torch.zeros(3, dtype=torch.int64))
        env.step(torch.zeros(2, dtype=torch.int64))  # still usable
    finally:
        env.close()


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no thread count")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_close_releases_threads():
    before = _threads()
    env = make("ALE/Pong-v5", 2, num_threads=2)
    env.reset(seed=0)
    assert _threads() > before
    env.close()
    assert _threads() == before
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


@pytest.mark.parametrize("name", ["Pong", "Breakout"])
def test_yaml_configs_build_through_the_factory(name):
    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"))
    assert data.pop("defaults") == ["/schema/env@_here_", "_self_"]  # starts from the EnvConfig schema
    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    assert set(data) <= fields, set(data) - fields
    cfg = EnvConfig(**data)
    assert cfg.name == name and cfg.id == f"ALE/{name}-v5"
    env = make_vec_env(cfg, 2, CPU, training=False)
    try:
        assert isinstance(env, AtariVecEnv)
        assert not env.episodic_life and not env.clip_rewards  # evaluation envs
        assert env.reset(seed=0).shape == (2, 4, 84, 84)
    finally:
        env.close()
