"""The Engstrom et al. (2020) env-side wrappers: running statistics, normalisation, scaling, clipping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.envs.base import EpisodeTracker, VecEnv
from rlrun.envs.cartpole import CartPoleVecEnv
from rlrun.envs.wrappers import ClipObservation, ClipReward, NormalizeObservation, RunningMeanStd, ScaleReward

CPU = torch.device("cpu")


class FakeVecEnv(VecEnv):
    """Observations ~ N(obs_mean, obs_std) per coordinate, a fixed reward per env, episodes of ``length`` steps.

    Deterministic given ``seed``; ``final_obs`` is a distinct tensor (obs + 1000) on the steps where
    an episode ends, so a test can tell whether a wrapper transformed it.
    """

    def __init__(self, num_envs=4, obs_mean=(5.0, -3.0), obs_std=(2.0, 0.5), reward=None, length=10, seed=0):
        self.num_envs, self.device = num_envs, CPU
        self.obs_mean, self.obs_std = torch.tensor(obs_mean), torch.tensor(obs_std)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (len(obs_mean),), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.reward = torch.as_tensor(reward if reward is not None else [1.0] * num_envs, dtype=torch.float32)
        self.length, self.t = length, 0
        self.gen = torch.Generator().manual_seed(seed)
        self.tracker = EpisodeTracker(num_envs, CPU)

    def _obs(self):
        return self.obs_mean + self.obs_std * torch.randn(self.num_envs, len(self.obs_mean), generator=self.gen)

    def reset(self, seed=None):
        self.t = 0
        return self._obs()

    def step(self, actions):
        self.t += 1
        done = torch.full((self.num_envs,), self.t % self.length == 0)
        obs = self._obs()
        final = torch.where(done.unsqueeze(1), obs + 1000.0, obs)
        info = self.tracker.update(self.reward, done)
        info["final_obs"] = final
        return obs, self.reward.clone(), torch.zeros_like(done), done, info


def _actions(env: VecEnv) -> torch.Tensor:
    return torch.zeros(env.num_envs, dtype=torch.int64)


# ----------------------------------------------------------------- RunningMeanStd
def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[3.0, -1.0, 0.0], scale=[2.0, 0.1, 5.0], size=(n, 3)) for n in (7, 1, 50, 13, 200)]
    rms = RunningMeanStd((3,), CPU)
    for b in batches:
        rms.update(torch.from_numpy(b))
    data = np.concatenate(batches)
    # epsilon=1e-4 pseudo-count of the prior (mean 0, var 1) is negligible against 271 samples
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-5, atol=1e-6)
    assert rms.count.item() == pytest.approx(len(data) + 1e-4)
    assert rms.mean.dtype == torch.float64


def test_running_mean_std_scalar_shape():
    rms = RunningMeanStd((), CPU)
    x = torch.arange(10, dtype=torch.float32)
    rms.update(x[:4])
    rms.update(x[4:])
    assert rms.mean.item() == pytest.approx(4.5, abs=1e-4)
    assert rms.var.item() == pytest.approx(x.double().var(unbiased=False).item(), rel=1e-4)


# ----------------------------------------------------------------- NormalizeObservation
def test_normalize_observation_output_has_zero_mean_unit_std():
    env = NormalizeObservation(FakeVecEnv(num_envs=16, length=10**9), clip=None)
    env.reset(seed=0)
    for _ in range(100):  # let the statistics settle
        env.step(_actions(env))
    outs = torch.cat([env.step(_actions(env))[0] for _ in range(100)])  # [1600, 2]
    assert outs.dtype == torch.float32
    torch.testing.assert_close(outs.mean(0), torch.zeros(2), atol=0.08, rtol=0)
    torch.testing.assert_close(outs.std(0), torch.ones(2), atol=0.08, rtol=0)
    # 3200 samples: the standard error of the mean is 2 / sqrt(3200) = 0.035 for the first coordinate
    torch.testing.assert_close(env.rms.mean.float(), torch.tensor([5.0, -3.0]), atol=0.15, rtol=0)
    torch.testing.assert_close(env.rms.var.sqrt().float(), torch.tensor([2.0, 0.5]), atol=0.15, rtol=0)


def test_normalize_observation_transforms_final_obs_and_clips():
    env = NormalizeObservation(FakeVecEnv(num_envs=4, length=3), clip=5.0)
    env.reset()
    for _ in range(3):
        obs, _, _, trunc, info = env.step(_actions(env))
    assert trunc.all()
    # final_obs = raw obs + 1000: normalised with the same statistics it lands far out and is clipped
    assert torch.equal(info["final_obs"], torch.full_like(obs, 5.0))
    assert obs.abs().max() <= 5.0


def test_normalize_observation_frozen_shares_training_statistics():
    train_env = NormalizeObservation(FakeVecEnv(seed=0), clip=None)
    eval_env = NormalizeObservation(FakeVecEnv(seed=1), clip=None, rms=train_env.rms, update=False)
    train_env.reset()
    for _ in range(5):
        train_env.step(_actions(train_env))
    count = train_env.rms.count.item()
    raw = FakeVecEnv(seed=1)
    expected = (raw.reset() - train_env.rms.mean) / torch.sqrt(train_env.rms.var + 1e-8)
    torch.testing.assert_close(eval_env.reset(), expected.float())
    eval_env.step(_actions(eval_env))
    assert train_env.rms.count.item() == count  # the eval env never updates them


# ----------------------------------------------------------------- ScaleReward
def test_scale_reward_divides_by_return_std_and_keeps_sign():
    gamma = 0.9
    rewards = [1.0, -2.0, 0.0, 3.0]
    env = ScaleReward(FakeVecEnv(num_envs=4, reward=rewards, length=5), gamma=gamma)
    env.reset()
    # Reference: R_t = gamma * R_{t-1} + r_t, reset after episode ends; std over every R seen so far.
    ret = np.zeros(4)
    seen = []
    for t in range(1, 13):
        _, scaled, _, trunc, info = env.step(_actions(env))
        ret = ret * gamma + np.array(rewards)
        seen.append(ret.copy())
        std = np.concatenate(seen).std()
        np.testing.assert_allclose(scaled.numpy(), np.array(rewards) / std, rtol=1e-4)
        assert scaled.dtype == torch.float32
        assert torch.equal(torch.sign(scaled), torch.sign(torch.tensor(rewards)))  # not centred
        # episode statistics still count the raw reward
        if trunc.all():
            torch.testing.assert_close(info["episode_return"], torch.tensor(rewards) * 5)
        ret = ret * (1.0 - trunc.numpy())


# ----------------------------------------------------------------- clipping
def test_clip_reward():
    env = ClipReward(FakeVecEnv(num_envs=4, reward=[-30.0, -0.5, 2.0, 100.0]), clip=1.0)
    env.reset()
    _, reward, _, _, info = env.step(_actions(env))
    assert reward.tolist() == [-1.0, -0.5, 1.0, 1.0]


def test_clip_observation_clips_obs_and_final_obs():
    env = ClipObservation(FakeVecEnv(num_envs=3, obs_mean=(50.0, -50.0), obs_std=(1.0, 1.0), length=2), clip=10.0)
    obs = env.reset()
    assert obs.tolist() == [[10.0, -10.0]] * 3
    for _ in range(2):
        obs, _, _, trunc, info = env.step(_actions(env))
    assert trunc.all()
    assert obs.tolist() == [[10.0, -10.0]] * 3
    assert info["final_obs"].tolist() == [[10.0, 10.0]] * 3  # raw final obs = obs + 1000


# ----------------------------------------------------------------- state_dict
def test_wrapper_stack_on_torch_cartpole_state_dict_round_trip(tmp_path):
    def make():
        env = NormalizeObservation(CartPoleVecEnv(8, CPU), clip=10.0)
        return ClipReward(ScaleReward(env, gamma=0.99), clip=10.0)

    env = make()
    obs = env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        obs, reward, _, _, info = env.step(torch.randint(0, 2, (8,), generator=gen))
        assert obs.shape == (8, 4) and reward.shape == (8,) and reward.dtype == torch.float32
        assert reward.abs().max() <= 10.0
    assert env.unwrapped.__class__ is CartPoleVecEnv

    # through a file, as the checkpoint does (tensors only: weights_only loading works)
    torch.save(env.state_dict(), tmp_path / "env.pt")
    state = torch.load(tmp_path / "env.pt", weights_only=True)
    restored = make()
    restored.load_state_dict(state)
    obs_rms, ret_rms = env.env.env.rms, env.env.rms
    new_obs_rms, new_ret_rms = restored.env.env.rms, restored.env.rms
    for old, new in ((obs_rms, new_obs_rms), (ret_rms, new_ret_rms)):
        assert torch.equal(old.mean, new.mean) and torch.equal(old.var, new.var)
        assert torch.equal(old.count, new.count)
    assert set(state) == {"env"} and set(state["env"]) == {"env", "return_rms"}
    assert set(state["env"]["env"]) == {"env", "obs_rms"}


def test_grouped_running_statistics_are_each_groups_own():
    """RunningMeanStd(groups=3) over [3 x 4 envs] batches keeps what three single ones fed each group's envs keep."""
    from rlrun.envs.wrappers import RunningMeanStd, member_state

    torch.manual_seed(0)
    grouped = RunningMeanStd((2,), torch.device("cpu"), groups=3)
    singles = [RunningMeanStd((2,), torch.device("cpu")) for _ in range(3)]
    for scale in (1.0, 5.0, 0.1):
        batch = torch.randn(12, 2) * scale + torch.arange(12.0).unsqueeze(1)
        grouped.update(batch)
        for g, single in enumerate(singles):
            single.update(batch[4 * g:4 * (g + 1)])
    for g, single in enumerate(singles):
        mine = member_state({"obs_rms": grouped.state_dict()}, g)["obs_rms"]
        for key, value in single.state_dict().items():
            torch.testing.assert_close(mine[key], value)
