"""GymVecEnv: gymnasium's vector envs behind the VecEnv contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.config import ConfigError, EnvConfig
from rlrun.envs.gym import GymVecEnv

CPU = torch.device("cpu")


def _env(env_id: str, num_envs: int = 2, **cfg) -> GymVecEnv:
    return GymVecEnv(EnvConfig(id=env_id, backend="gymnasium", **cfg), num_envs, CPU)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cartpole_shapes_dtypes_and_final_obs(mode):
    n = 3
    env = _env("CartPole-v1", n, vector_mode=mode)
    try:
        assert env.single_observation_space == gym.make("CartPole-v1").observation_space
        assert env.single_action_space == gym.spaces.Discrete(2)
        obs = env.reset(seed=0)
        assert obs.shape == (n, 4) and obs.dtype == torch.float32 and obs.device == CPU
        gen = torch.Generator().manual_seed(0)
        ended = 0
        for _ in range(60):
            obs, reward, term, trunc, info = env.step(torch.randint(0, 2, (n,), generator=gen))
            assert obs.shape == (n, 4) and obs.dtype == torch.float32
            assert reward.shape == (n,) and reward.dtype == torch.float32
            assert term.shape == (n,) and term.dtype == torch.bool and trunc.dtype == torch.bool
            assert set(info) == {"final_obs", "episode_done", "episode_return", "episode_length"}
            final = info["final_obs"]
            assert final.shape == (n, 4) and final.dtype == torch.float32
            assert torch.equal(final[~term], obs[~term])
            for i in torch.nonzero(term).flatten().tolist():
                ended += 1
                # the terminal state is out of bounds; the returned obs is a fresh reset state
                assert final[i, 0].abs() > 2.4 or final[i, 2].abs() > 12 * 2 * np.pi / 360
                assert obs[i].abs().max() <= 0.05
                assert info["episode_length"][i] > 0
                assert info["episode_return"][i] == float(info["episode_length"][i])
        assert ended > 0
    finally:
        env.close()


def test_pendulum_truncation_box_actions_and_episode_stats():
    env = _env("Pendulum-v1", 2)
    try:
        assert isinstance(env.single_action_space, gym.spaces.Box)
        obs = env.reset(seed=3)
        assert obs.shape == (2, 3)
        total = torch.zeros(2)
        for t in range(1, 201):
            actions = torch.full((2, 1), 0.5)
            obs, reward, term, trunc, info = env.step(actions)
            total += reward
            assert not term.any()
            if t < 200:
                assert not trunc.any() and not info["episode_done"].any()
        assert trunc.all() and info["episode_done"].all()
        assert not torch.equal(info["final_obs"], obs)
        assert info["episode_length"].tolist() == [200, 200]
        torch.testing.assert_close(info["episode_return"], total)
        # The next episode's statistics start from zero.
        _, _, _, _, info = env.step(torch.zeros(2, 1))
        assert info["episode_length"].tolist() == [0, 0]
    finally:
        env.close()


def test_box_actions_are_clipped_to_bounds():
    """Pendulum's reward uses the (clipped) torque: 100 must act exactly like the bound 2."""
    rewards = []
    for torque in (2.0, 100.0):
        env = _env("Pendulum-v1", 2)
        env.reset(seed=11)
        rs = [env.step(torch.full((2, 1), torque))[1] for _ in range(5)]
        env.close()
        rewards.append(torch.stack(rs))
    assert torch.equal(rewards[0], rewards[1])


def test_max_episode_steps_override():
    env = _env("Pendulum-v1", 1, max_episode_steps=7)
    env.reset(seed=0)
    truncs = [env.step(torch.zeros(1, 1))[3].item() for _ in range(7)]
    env.close()
    assert truncs == [False] * 6 + [True]


def test_seeding_is_reproducible_and_per_env():
    a, b = _env("CartPole-v1", 3), _env("CartPole-v1", 3)
    try:
        obs_a, obs_b = a.reset(seed=42), b.reset(seed=42)
        assert torch.equal(obs_a, obs_b)
        for i in range(3):  # env i is seeded with seed + i
            ref, _ = gym.make("CartPole-v1").reset(seed=42 + i)
            assert np.array_equal(obs_a[i].numpy(), ref)
        gen = torch.Generator().manual_seed(0)
        for _ in range(40):
            actions = torch.randint(0, 2, (3,), generator=gen)
            ra, rb = a.step(actions), b.step(actions)
            assert all(torch.equal(x, y) for x, y in zip(ra[:4], rb[:4]))
            assert torch.equal(ra[4]["final_obs"], rb[4]["final_obs"])
        assert not torch.equal(a.reset(seed=1), a.reset(seed=2))
    finally:
        a.close()
        b.close()


def test_unknown_id_is_a_config_error():
    with pytest.raises(ConfigError, match="NoSuchEnv-v0"):
        _env("NoSuchEnv-v0")
    with pytest.raises(ConfigError, match="CartPole-v9"):
        _env("CartPole-v9")


def test_missing_extra_names_the_pip_command():
    try:
        import Box2D  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r'LunarLander-v3.*pip install "gymnasium\[box2d\]"'):
            _env("LunarLander-v3")
    else:
        pytest.skip("Box2D is installed")


class _MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_unsupported_action_space_is_a_config_error():
    env_id = "RlrunTestMultiBinary-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_MultiBinaryEnv)
    with pytest.raises(ConfigError, match="MultiBinary"):
        _env(env_id)
