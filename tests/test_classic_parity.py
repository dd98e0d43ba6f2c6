"""The tensor-native Acrobot, MountainCar, MountainCarContinuous and Pendulum against gymnasium's, plus the contract.

gymnasium's env starts every step from our (float32) state, so each comparison is one float64 step against one
float32 step: tight tolerances hold even for Acrobot, whose trajectories are chaotic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.config import ConfigError, EnvConfig, load
from rlrun.envs import TORCH_ENVS, make_vec_env, resolve_backend, torch_env_class
from rlrun.envs.acrobot import AcrobotVecEnv
from rlrun.envs.mountain_car import MountainCarContinuousVecEnv, MountainCarVecEnv
from rlrun.envs.pendulum import PendulumVecEnv
from rlrun.train import train

CPU = torch.device("cpu")
ATOL = 1e-5  # one float32 step (ours) against one float64 step (gymnasium)


@dataclass(frozen=True)
class Case:
    cls: type
    state_low: tuple[float, ...]  # where random start states are drawn (one-step parity)
    state_high: tuple[float, ...]
    reset_low: tuple[float, ...]  # where reset states must lie
    reset_high: tuple[float, ...]
    policy: Callable[[torch.Tensor, np.random.Generator], np.ndarray]  # state [N, d] -> actions (numpy)
    terminal: tuple[float, ...] | None  # a state whose next step terminates under action `push`
    push: float | int

    @property
    def discrete(self) -> bool:
        return isinstance(self.cls.spaces()[1], gym.spaces.Discrete)


def _half(pump: np.ndarray, random: np.ndarray) -> np.ndarray:
    """The first half of the envs pump (their episodes terminate), the others act at random (they run to the limit)."""
    return np.where((np.arange(len(pump)) < len(pump) // 2).reshape(-1, *[1] * (pump.ndim - 1)), pump, random)


def _acrobot_policy(state: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Torque along dtheta2 swings the arm up within ~100 steps."""
    return _half(np.where(state[:, 3].numpy() > 0, 2, 0), rng.integers(0, 3, len(state)))


def _car_policy(state: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Pushing along the velocity reaches the goal in ~115 steps."""
    return _half(np.where(state[:, 1].numpy() >= 0, 2, 0), rng.integers(0, 3, len(state)))


def _continuous_car_policy(state: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Full power along the velocity, plus noise; actions beyond [-1, 1] included (they are clipped)."""
    pump = np.where(state[:, 1].numpy() >= 0, 1.0, -1.0) + rng.normal(0.0, 0.4, len(state))
    return _half(pump, rng.uniform(-1.5, 1.5, len(state))).astype(np.float32)[:, None]


def _pendulum_policy(state: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-3.0, 3.0, (len(state), 1)).astype(np.float32)  # beyond [-2, 2] too: clipped


PI = math.pi
CASES = {
    # Velocities up to half their bounds: at both bounds at once RK4's stages pass through derivatives in the
    # hundreds and one float32 step can be off by up to ~1e-2 (states trajectories rarely visit; see acrobot.py).
    "Acrobot-v1": Case(AcrobotVecEnv, (-PI, -PI, -2 * PI, -4.5 * PI), (PI, PI, 2 * PI, 4.5 * PI),
                       (-0.1,) * 4, (0.1,) * 4, _acrobot_policy, (PI - 0.01, 0.0, 0.0, 0.0), 1),
    "MountainCar-v0": Case(MountainCarVecEnv, (-1.2, -0.07), (0.6, 0.07), (-0.6, 0.0), (-0.4, 0.0),
                           _car_policy, (0.49, 0.05), 2),
    "MountainCarContinuous-v0": Case(MountainCarContinuousVecEnv, (-1.2, -0.07), (0.6, 0.07), (-0.6, 0.0),
                                     (-0.4, 0.0), _continuous_car_policy, (0.44, 0.05), 0.5),
    # Angles beyond [-pi, pi] check the cost's angle_normalize.
    "Pendulum-v1": Case(PendulumVecEnv, (-10.0, -8.0), (10.0, 8.0), (-PI, -1.0), (PI, 1.0), _pendulum_policy,
                        None, 0.0),
}
IDS = list(CASES)


def _random_states(case: Case, n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.uniform(case.state_low, case.state_high, (n, len(case.state_low)))).float()


def _random_actions(case: Case, n: int, rng: np.random.Generator) -> np.ndarray:
    if case.discrete:
        return rng.integers(0, 3, n)
    high = float(case.cls.spaces()[1].high[0])
    return rng.uniform(-1.5 * high, 1.5 * high, (n, 1)).astype(np.float32)


def _gym_action(case: Case, action: np.ndarray) -> int | np.ndarray:
    """What rlrun's gymnasium backend hands gymnasium: ints, or Box actions clipped to the space."""
    if case.discrete:
        return int(action)
    space = case.cls.spaces()[1]
    return np.clip(action, space.low, space.high).astype(np.float32)


def _in_reset_bounds(case: Case, state: torch.Tensor) -> bool:
    low, high = torch.tensor(case.reset_low), torch.tensor(case.reset_high)
    return bool(((state >= low) & (state <= high)).all())


def _put(ref: gym.Env, state: torch.Tensor) -> None:
    """Put gymnasium's (unwrapped) env in our state, in float64 as gymnasium keeps it."""
    ref.unwrapped.state = state.numpy().astype(np.float64)


def _check_step(ref_out, ours_final_obs, ours_reward, ours_term) -> None:
    r_obs, r_rew, r_term = ref_out[:3]
    np.testing.assert_allclose(ours_final_obs.numpy(), r_obs, atol=ATOL, rtol=0)
    assert ours_reward.item() == pytest.approx(float(r_rew), abs=ATOL, rel=0)
    assert ours_term.item() == r_term


# ----------------------------------------------------------------- spaces and registry
@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_time_limit_match_gymnasium(env_id):
    ref = gym.make(env_id)
    env = CASES[env_id].cls(4, CPU)
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.max_episode_steps == gym.spec(env_id).max_episode_steps
    assert TORCH_ENVS[env_id].split(":")[1] == CASES[env_id].cls.__name__


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_env_builds_it_under_auto_with_the_time_limit(env_id):
    cfg = EnvConfig(id=env_id)
    assert resolve_backend(cfg) == "torch"
    env = make_vec_env(cfg, 3, CPU)
    assert type(env) is torch_env_class(env_id) is CASES[env_id].cls
    assert env.num_envs == 3 and env.max_episode_steps == gym.spec(env_id).max_episode_steps
    env = make_vec_env(EnvConfig(id=env_id, max_episode_steps=7), 2, CPU)
    assert env.max_episode_steps == 7


def test_env_kwargs_go_to_gymnasium():
    """The tensor envs take no gymnasium.make keyword arguments: auto falls back, torch refuses."""
    assert resolve_backend(EnvConfig(id="Pendulum-v1", kwargs={"g": 9.81})) == "gymnasium"
    with pytest.raises(ConfigError, match="takes no env.kwargs"):
        resolve_backend(EnvConfig(id="Pendulum-v1", backend="torch", kwargs={"g": 9.81}))


# ----------------------------------------------------------------- dynamics
@pytest.mark.parametrize("env_id", IDS)
def test_one_step_parity_from_random_states(env_id):
    """Many states across the state space, random actions (Box ones beyond the bounds too)."""
    case = CASES[env_id]
    n, steps = 64, 80
    rng = np.random.default_rng(0)
    env = case.cls(n, CPU)
    env.reset(seed=0)
    ref = gym.make(env_id).unwrapped
    ref.reset(seed=0)
    n_term = n_wall = 0
    for _ in range(steps):
        env.set_state(_random_states(case, n, rng))
        start = env.state
        actions = _random_actions(case, n, rng)
        _, reward, term, trunc, info = env.step(torch.from_numpy(actions))
        assert not trunc.any()
        for i in range(n):
            _put(ref, start[i])
            _check_step(ref.step(_gym_action(case, actions[i])), info["final_obs"][i], reward[i], term[i])
        n_term += int(term.sum())
        if env_id.startswith("MountainCar"):  # the left wall stopped the car
            final = info["final_obs"]
            n_wall += int(((final[:, 0] == -1.2) & (final[:, 1] == 0) & (start[:, 1] < 0)).sum())
    if env_id == "Pendulum-v1":
        assert n_term == 0
    else:
        assert n_term > 50
    if env_id.startswith("MountainCar"):
        assert n_wall > 10


@pytest.mark.parametrize("env_id", IDS)
def test_trajectory_parity_with_time_limit_and_autoreset(env_id):
    """Episodes from our reset states under a policy that finishes them; gymnasium's TimeLimit alongside.

    gymnasium restarts from our state each step (one-step parity) and from our fresh reset state after each
    episode end.
    """
    case = CASES[env_id]
    n, steps, limit = 16, 320, 150
    rng = np.random.default_rng(1)
    env = case.cls(n, CPU, max_episode_steps=limit)
    obs = env.reset(seed=123)
    refs = [gym.make(env_id, max_episode_steps=limit) for _ in range(n)]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)
        _put(ref, env.state[i])
    n_term = n_trunc = 0
    for _ in range(steps):
        start = env.state
        actions = case.policy(start, rng)
        obs, reward, term, trunc, info = env.step(torch.from_numpy(actions))
        for i, ref in enumerate(refs):
            out = ref.step(_gym_action(case, actions[i]))
            _check_step(out, info["final_obs"][i], reward[i], term[i])
            assert trunc[i].item() == out[3]
            if out[2] or out[3]:
                assert _in_reset_bounds(case, env.state[i])
                ref.reset()
            else:
                assert torch.equal(obs[i], info["final_obs"][i])
            _put(ref, env.state[i])
        n_term += int(term.sum())
        n_trunc += int(trunc.sum())
    assert n_trunc > 0
    assert n_term == 0 if env_id == "Pendulum-v1" else n_term > 10


@pytest.mark.parametrize("env_id", IDS)
def test_autoreset_final_obs_and_truncation_on_the_terminating_step(env_id):
    case = CASES[env_id]
    limit = 50
    env = case.cls(4, CPU, max_episode_steps=limit)
    env.reset(seed=0)
    calm = env.state[0]
    terminal = torch.tensor(case.terminal, dtype=torch.float32) if case.terminal is not None else calm
    # env 0: terminates; env 1: terminates on its last allowed step; env 2: only truncates; env 3: goes on.
    start = torch.stack((terminal, terminal, calm, calm))
    env.set_state(start, torch.tensor([5, limit - 1, limit - 1, 5]))
    actions = torch.tensor([case.push] * 4) if case.discrete else torch.full((4, 1), float(case.push))
    obs, reward, term, trunc, info = env.step(actions)
    can_end = case.terminal is not None
    assert term.tolist() == [can_end, can_end, False, False]
    assert trunc.tolist() == [False, True, True, False]
    done = [can_end, True, True, False]
    assert info["episode_done"].tolist() == done
    assert info["episode_length"].tolist() == [int(d) for d in done]  # the tracker counts from set_state on
    assert env.steps.tolist() == [0 if d else 6 for d in done]
    # The final observation is the true next state, as gymnasium computes it; obs starts the next episode.
    ref = gym.make(env_id).unwrapped
    ref.reset(seed=0)
    for i in range(4):
        _put(ref, start[i])
        _check_step(ref.step(_gym_action(case, actions[i].numpy())), info["final_obs"][i], reward[i], term[i])
        if done[i]:
            assert _in_reset_bounds(case, env.state[i])
            assert not torch.equal(obs[i], info["final_obs"][i])
        else:
            assert torch.equal(obs[i], info["final_obs"][i])
    assert torch.equal(obs, env._observe(env.state))
    fresh = env.state[torch.tensor(done)]  # each finished env draws its own reset state
    assert len({tuple(row) for row in fresh.tolist()}) == len(fresh)
    if env_id == "MountainCarContinuous-v0":
        assert reward[0].item() == pytest.approx(100.0 - 0.1 * 0.25)


@pytest.mark.parametrize("env_id", ["MountainCarContinuous-v0", "Pendulum-v1"])
def test_box_actions_are_clipped(env_id):
    """An action beyond the bound acts, and costs, exactly like the bound (as on the gymnasium backend)."""
    high = float(CASES[env_id].cls.spaces()[1].high[0])
    runs = []
    for action in (high, 100.0 * high):
        env = CASES[env_id].cls(8, CPU)
        env.reset(seed=3)
        steps = [env.step(torch.full((8, 1), action)) for _ in range(20)]
        runs.append([torch.cat((obs, reward[:, None]), dim=1) for obs, reward, *_ in steps])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


# ----------------------------------------------------------------- statistics, seeding, contract
@pytest.mark.parametrize("env_id", IDS)
def test_episode_statistics(env_id):
    case = CASES[env_id]
    n, limit = 16, 40
    rng = np.random.default_rng(2)
    env = case.cls(n, CPU, max_episode_steps=limit)
    env.reset(seed=1)
    length = torch.zeros(n, dtype=torch.int64)
    total = torch.zeros(n)
    ended = 0
    for _ in range(200):
        _, reward, term, trunc, info = env.step(torch.from_numpy(case.policy(env.state, rng)))
        length += 1
        total += reward
        done = term | trunc
        assert torch.equal(info["episode_done"], done)
        assert info["episode_return"].dtype == torch.float32 and info["episode_length"].dtype == torch.int64
        assert torch.equal(info["episode_length"], torch.where(done, length, 0))
        torch.testing.assert_close(info["episode_return"], torch.where(done, total, 0.0))
        assert (info["episode_length"][trunc] == limit).all()
        ended += int(done.sum())
        length[done] = 0
        total[done] = 0.0
    assert ended >= 4 * n


@pytest.mark.parametrize("env_id", IDS)
def test_reproducible_with_seed(env_id):
    case = CASES[env_id]

    def rollout(seed: int) -> list[torch.Tensor]:
        env = case.cls(8, CPU, max_episode_steps=30)
        out = [env.reset(seed=seed), env.reset()]  # reset() without a seed keeps drawing from the stream
        rng = np.random.default_rng(0)
        for _ in range(100):
            obs, reward, term, trunc, info = env.step(torch.from_numpy(_random_actions(case, 8, rng)))
            out += [obs, reward, term, trunc, info["final_obs"]]
        return out

    a, b, c = rollout(5), rollout(5), rollout(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("env_id", IDS)
def test_one_envs_stream_does_not_depend_on_the_others_episodes(env_id):
    """Population training: env 0 sees the same episodes whatever the other envs do and whenever they end."""
    case = CASES[env_id]
    n = 6
    seen = []
    for offsets, seed in (((0,) * n, 0), ((0, 3, 11, 1, 7, 2), 1)):
        env = case.cls(n, CPU, max_episode_steps=13)
        env.reset(seed=9)
        env.set_state(env.state, torch.tensor(offsets))  # the others' episodes end at other times
        rng = np.random.default_rng(seed)
        rows = []
        for t in range(60):
            actions = _random_actions(case, n, rng)
            actions[0] = _random_actions(case, 1, np.random.default_rng(1000 + t))[0]  # env 0's own actions
            obs, reward, term, trunc, info = env.step(torch.from_numpy(actions))
            rows.append(torch.cat((obs[0], reward[:1], term[:1].float(), trunc[:1].float(), info["final_obs"][0])))
        seen.append(torch.stack(rows))
    assert torch.equal(seen[0], seen[1])
    obs_dim = env.single_observation_space.shape[0]
    assert seen[0][:, obs_dim + 2].sum() >= 4  # env 0 itself was truncated (and reset) several times


@pytest.mark.parametrize("env_id", IDS)
def test_contract_dtypes_and_device(env_id):
    case = CASES[env_id]
    env = case.cls(5, CPU)
    obs_dim = env.single_observation_space.shape[0]
    obs = env.reset(seed=0)
    assert obs.shape == (5, obs_dim) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    assert _in_reset_bounds(case, env.state)
    assert env.single_observation_space.contains(obs[0].numpy())
    actions = torch.zeros(5, dtype=torch.int64) if case.discrete else torch.zeros(5, 1)
    obs, reward, term, trunc, info = env.step(actions)
    assert obs.shape == (5, obs_dim) and obs.dtype == torch.float32
    assert reward.shape == (5,) and reward.dtype == torch.float32
    assert term.dtype == torch.bool and trunc.dtype == torch.bool
    assert set(info) == {"final_obs", "episode_done", "episode_return", "episode_length"}
    assert info["final_obs"].shape == (5, obs_dim)
    assert all(t.device.type == "cpu" for t in (obs, reward, term, trunc, *info.values()))
    # Returned tensors are not overwritten by later steps.
    kept = [t.clone() for t in (obs, reward, term, trunc, info["final_obs"])]
    for _ in range(3):
        env.step(actions)
    assert all(torch.equal(a, b) for a, b in zip(kept, (obs, reward, term, trunc, info["final_obs"])))


# ----------------------------------------------------------------- training on it
@pytest.mark.parametrize("env", ["Pendulum", "Acrobot"])
def test_ppo_smoke_on_the_torch_backend(tiny_cfg, tmp_path, env):
    cfg = tiny_cfg(f"env={env}", "env.backend=torch", "total_steps=3072", "eval.every_steps=1536",
                   "algo.num_steps=64", "algo.minibatch_size=128", "env.max_episode_steps=100")
    assert resolve_backend(load(cfg).env) == "torch"
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["steps"] >= 3072
    assert summary["env"] == {"Pendulum": "Pendulum-v1", "Acrobot": "Acrobot-v1"}[env]
    assert summary["final_eval_return"] < 0  # both rewards are costs
