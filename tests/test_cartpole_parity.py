"""CartPoleVecEnv against gymnasium's CartPole-v1, plus the VecEnv contract details."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rlrun.envs.cartpole import CartPoleVecEnv

CPU = torch.device("cpu")
ATOL = 1e-5  # float32 (ours) against float64 (gymnasium) over one episode


def _gym_envs(n: int, max_episode_steps: int) -> list[gym.Env]:
    envs = [gym.make("CartPole-v1", max_episode_steps=max_episode_steps) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    return envs


def _start_episode(env: gym.Env, state: np.ndarray) -> None:
    """Reset the TimeLimit counter, then put the env in ``state`` (a row of ours)."""
    env.reset()
    env.unwrapped.state = np.asarray(state, dtype=np.float64).copy()


def _balance(obs: torch.Tensor) -> torch.Tensor:
    """A linear controller that keeps the pole up for 500 steps from reset states."""
    w = torch.tensor([0.1, 0.5, 1.0, 1.0])
    return (obs @ w > 0).long()


def test_spaces_match_gymnasium():
    ref = gym.make("CartPole-v1")
    env = CartPoleVecEnv(4, CPU)
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space


def test_parity_random_actions_with_resync_at_episode_end():
    n, steps, limit = 32, 250, 30
    env = CartPoleVecEnv(n, CPU, max_episode_steps=limit)
    obs = env.reset(seed=123)
    refs = _gym_envs(n, limit)
    for i, ref in enumerate(refs):
        _start_episode(ref, obs[i].numpy())
    rng = np.random.default_rng(0)
    n_term = n_trunc = 0
    for _ in range(steps):
        actions = rng.integers(0, 2, size=n)
        obs, reward, term, trunc, info = env.step(torch.from_numpy(actions))
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_term, r_trunc, _ = ref.step(int(actions[i]))
            np.testing.assert_allclose(info["final_obs"][i].numpy(), r_obs, atol=ATOL, rtol=0)
            assert reward[i].item() == r_rew == 1.0
            assert term[i].item() == r_term
            assert trunc[i].item() == r_trunc
            if r_term or r_trunc:
                _start_episode(ref, obs[i].numpy())
            else:
                np.testing.assert_allclose(obs[i].numpy(), r_obs, atol=ATOL, rtol=0)
        n_term += int(term.sum())
        n_trunc += int(trunc.sum())
    # Both kinds of episode end were exercised.
    assert n_term > 100 and n_trunc > 5


def test_parity_long_episodes_truncate_at_500():
    """A balancing controller reaches the 500-step limit; gymnasium's state follows ours each step."""
    n = 8
    env = CartPoleVecEnv(n, CPU)
    obs = env.reset(seed=7)
    refs = _gym_envs(n, 500)
    for i, ref in enumerate(refs):
        _start_episode(ref, obs[i].numpy())
    truncated_at = {}
    for t in range(1, 511):
        actions = _balance(obs)
        obs, reward, term, trunc, info = env.step(actions)
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_term, r_trunc, _ = ref.step(int(actions[i]))
            np.testing.assert_allclose(info["final_obs"][i].numpy(), r_obs, atol=ATOL, rtol=0)
            assert (term[i].item(), trunc[i].item(), reward[i].item()) == (r_term, r_trunc, r_rew)
            if r_trunc:
                truncated_at.setdefault(i, t)
            if r_term or r_trunc:
                _start_episode(ref, obs[i].numpy())
            else:
                ref.unwrapped.state = obs[i].numpy().astype(np.float64)  # one-step parity
    assert truncated_at and all(t == 500 for t in truncated_at.values())
    assert env.steps.max().item() < 500


def test_autoreset_returns_fresh_obs_and_terminal_final_obs():
    env = CartPoleVecEnv(3, CPU)
    env.reset(seed=0)
    # env 0: about to fall; env 1: cart about to leave the track; env 2: calm.
    start = torch.tensor([[0.0, 0.0, 0.2090, 1.0], [2.399, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    env.set_state(start, torch.tensor([10, 3, 0]))
    obs, reward, term, trunc, info = env.step(torch.tensor([1, 1, 1]))
    assert term.tolist() == [True, True, False] and trunc.tolist() == [False, False, False]
    assert reward.tolist() == [1.0, 1.0, 1.0]
    final = info["final_obs"]
    assert final[0, 2].item() > 12 * 2 * np.pi / 360
    assert final[1, 0].item() > 2.4
    assert obs[:2].abs().max().item() <= 0.05  # fresh reset states
    assert torch.equal(final[2], obs[2])
    assert env.steps.tolist() == [0, 0, 1]
    assert info["episode_done"].tolist() == [True, True, False]
    assert info["episode_length"].tolist() == [1, 1, 0]  # the tracker counts from set_state on


def test_episode_statistics():
    n, limit = 16, 40
    env = CartPoleVecEnv(n, CPU, max_episode_steps=limit)
    obs = env.reset(seed=1)
    gen = torch.Generator().manual_seed(0)
    length = torch.zeros(n, dtype=torch.int64)
    seen_trunc = seen_term = False
    for _ in range(300):
        # half the envs balance (so they truncate), half act randomly (so they terminate)
        actions = torch.where(torch.arange(n) < n // 2, _balance(obs), torch.randint(0, 2, (n,), generator=gen))
        obs, reward, term, trunc, info = env.step(actions)
        length += 1
        done = term | trunc
        assert torch.equal(info["episode_done"], done)
        assert info["episode_return"].dtype == torch.float32 and info["episode_length"].dtype == torch.int64
        assert torch.equal(info["episode_length"], torch.where(done, length, 0))
        assert torch.equal(info["episode_return"], torch.where(done, length.float(), 0.0))
        assert (info["episode_length"][trunc] == limit).all()
        seen_trunc |= bool(trunc.any())
        seen_term |= bool(term.any())
        length[done] = 0
    assert seen_trunc and seen_term


def test_reproducible_with_seed():
    def rollout(seed: int) -> list[torch.Tensor]:
        env = CartPoleVecEnv(8, CPU, max_episode_steps=50)
        out = [env.reset(seed=seed)]
        gen = torch.Generator().manual_seed(0)
        for _ in range(120):
            obs, reward, term, trunc, info = env.step(torch.randint(0, 2, (8,), generator=gen))
            out += [obs, term, trunc, info["final_obs"]]
        return out

    a, b, c = rollout(5), rollout(5), rollout(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_contract_dtypes_and_device():
    env = CartPoleVecEnv(5, torch.device("cpu"))
    obs = env.reset(seed=0)
    assert obs.shape == (5, 4) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    assert obs.abs().max().item() <= 0.05
    obs, reward, term, trunc, info = env.step(torch.zeros(5, dtype=torch.int64))
    assert obs.shape == (5, 4) and obs.dtype == torch.float32
    assert reward.shape == (5,) and reward.dtype == torch.float32
    assert term.dtype == torch.bool and trunc.dtype == torch.bool
    assert set(info) == {"final_obs", "episode_done", "episode_return", "episode_length"}
    assert info["final_obs"].shape == (5, 4)
    assert all(t.device.type == "cpu" for t in (obs, reward, term, trunc, *info.values()))
    # Returned tensors are not overwritten by later steps.
    kept = obs.clone()
    env.step(torch.ones(5, dtype=torch.int64))
    assert torch.equal(obs, kept)
