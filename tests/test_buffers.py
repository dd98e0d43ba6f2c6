"""Replay storage: n-step returns across an episode end, the sum tree, prioritized sampling, Atari frames
stored once (stacks rebuilt exactly, memory per transition), checkpoint round trip."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.buffers import ReplayBuffer, SumTree, importance_weights
from rlrun.returns import n_step_return

pytestmark = pytest.mark.usefixtures("one_thread")
GAMMA = 0.5


# ----------------------------------------------------------------- n-step returns
def test_n_step_return_without_episode_end():
    # r = [1, 2, 4], gamma 0.5: G = 1 + 0.5 * 2 + 0.25 * 4 = 3, bootstrap gamma^3 from s_3 (m = 2)
    r = torch.tensor([[1.0], [2.0], [4.0]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    g, disc, last = n_step_return(r, no, no, GAMMA)
    assert torch.allclose(g, torch.tensor([3.0])) and torch.allclose(disc, torch.tensor([0.125]))
    assert last.tolist() == [2]


def test_n_step_return_cut_at_termination_inside_the_window():
    # env 0 terminates at k = 1: G = 1 + 0.5 * 2 = 2, no bootstrap, the reward after the end is not added.
    # env 1 is truncated at k = 1: same G, but bootstraps gamma^2 from the final observation of step 1.
    # env 2 terminates at k = 0: G = 1, disc 0, m = 0.
    r = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])
    term = torch.tensor([[False, False, True], [True, False, False], [False, False, False]])
    trunc = torch.tensor([[False, False, False], [False, True, False], [False, False, False]])
    g, disc, last = n_step_return(r, term, trunc, GAMMA)
    assert torch.allclose(g, torch.tensor([2.0, 2.0, 1.0]))
    assert torch.allclose(disc, torch.tensor([0.0, 0.25, 0.0]))
    assert last.tolist() == [1, 1, 0]


def _vector_buffer(n_step=3, capacity=64, num_envs=1, prioritized=False):
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    return ReplayBuffer(capacity, num_envs, space, torch.device("cpu"), n_step, GAMMA, prioritized)


def test_replay_builds_n_step_transitions_cut_at_episode_ends():
    # One env, observations 0, 1, 2, ...; rewards 1, 2, 4, 8, 16; the episode terminates at step 1
    # (final obs 100, next obs after the reset 2) and goes on from there.
    buf = _vector_buffer()
    buf.start(torch.tensor([[0.0]]))
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0]
    for t, r in enumerate(rewards):
        obs = torch.tensor([[float(t)]])
        term = torch.tensor([t == 1])
        final = torch.tensor([[100.0 if t == 1 else t + 1.0]])
        buf.add(obs, torch.tensor([t]), torch.tensor([r]), term, torch.tensor([False]), torch.tensor([[t + 1.0]]),
                {"final_obs": final})
    assert buf.emitted == 3  # steps 0, 1, 2 have a full window; 3 and 4 wait for more steps
    batch = buf._gather(torch.arange(3), torch.zeros(3, dtype=torch.int64))
    # step 0: 1 + 0.5 * 2, terminal -> disc 0;  step 1: 2, terminal;  step 2: 4 + 0.5 * 8 + 0.25 * 16 = 12, gamma^3
    assert torch.allclose(batch["returns"], torch.tensor([2.0, 2.0, 12.0]))
    assert torch.allclose(batch["discounts"], torch.tensor([0.0, 0.0, 0.125]))
    assert batch["obs"].view(-1).tolist() == [0.0, 1.0, 2.0]
    assert batch["next_obs"].view(-1).tolist() == [100.0, 100.0, 5.0]
    assert batch["actions"].tolist() == [0, 1, 2]


def test_resume_cuts_pending_windows_as_truncated():
    buf = _vector_buffer()
    buf.start(torch.tensor([[0.0]]))
    for t in range(2):
        buf.add(torch.tensor([[float(t)]]), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([False]),
                torch.tensor([False]), torch.tensor([[t + 1.0]]), {"final_obs": torch.tensor([[t + 1.0]])})
    state = buf.state_dict()
    new = _vector_buffer()
    new.load_state_dict(state)
    new.start(torch.tensor([[50.0]]))  # the env was reset under the pending steps 0 and 1
    new.add(torch.tensor([[50.0]]), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([False]),
            torch.tensor([False]), torch.tensor([[51.0]]), {"final_obs": torch.tensor([[51.0]])})
    batch = new._gather(torch.tensor([0]), torch.tensor([0]))
    assert torch.allclose(batch["returns"], torch.tensor([1.5]))  # 1 + 0.5 * 1, cut at step 1
    assert torch.allclose(batch["discounts"], torch.tensor([0.25]))  # truncated: bootstraps gamma^2 ...
    assert batch["next_obs"].item() == 2.0  # ... from the last observation step 1 saw


# ----------------------------------------------------------------- sum tree and PER
def test_sum_tree_totals_and_prefix_search():
    tree = SumTree(5, torch.device("cpu"))  # rounded up to 8 leaves
    tree.update(torch.arange(5), torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total.item() == 10.0
    # prefix sums 1, 3, 6, 10: value v picks the first leaf whose prefix sum reaches it
    found = tree.find(torch.tensor([0.5, 1.0, 1.5, 3.0, 3.01, 6.5, 10.0]))
    assert found.tolist() == [0, 0, 1, 1, 2, 3, 3]
    tree.update(torch.tensor([1, 3]), torch.tensor([0.0, 10.0]))  # updates propagate to the root
    assert tree.total.item() == 14.0 and tree.find(torch.tensor([1.5])).tolist() == [2]


def test_sum_tree_sampling_frequencies_are_proportional_to_priority():
    torch.manual_seed(0)
    priorities = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 10.0])
    tree = SumTree(6, torch.device("cpu"))
    tree.update(torch.arange(6), priorities)
    draws = torch.cat([tree.sample(100) for _ in range(500)])  # 50,000 stratified draws
    freq = torch.bincount(draws, minlength=8)[:6].double() / draws.numel()
    assert freq[4] == 0  # priority 0 is never drawn
    assert torch.allclose(freq, priorities.double() / priorities.sum(), atol=0.01), freq

def test_sum_tree_never_returns_a_zero_priority_leaf_under_rounding():
    # Random float priorities with retired (0) leaves between them and an empty tail, searched at
    # every prefix-sum boundary and at the total: values where rounding decides the branch. A zero
    # leaf would get an infinite importance weight (on CUDA a Rainbow run on Breakout died of it).
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        priorities = torch.rand(1000, generator=g, dtype=torch.float64) * 10
        priorities[::3] = 0
        priorities[700:] = 0
        tree = SumTree(1000, torch.device("cpu"))
        tree.update(torch.arange(1000), priorities)
        values = torch.cat([priorities.cumsum(0), tree.total.view(1)])
        leaves = tree.find(values[values > 0])
        assert bool((leaves < 1000).all()) and bool((priorities[leaves] > 0).all())



def test_sum_tree_matches_a_brute_force_prefix_sum_search():
    # Batches of random updates (repeated leaves included, the last write wins) keep every inner node
    # exactly the sum of its children, and the search agrees with searchsorted on the leaves' cumsum
    # for 20,000 random values (those within 1e-9 of a boundary, where rounding decides, left out).
    rng = np.random.default_rng(0)
    tree = SumTree(3000, torch.device("cpu"))  # 4096 leaves, 12 levels
    priorities = np.zeros(3000)
    for _ in range(50):
        index = rng.integers(0, 3000, 64)
        value = rng.random(64) * 10 * (rng.random(64) > 0.3)  # about a third retired (0)
        tree.update(torch.from_numpy(index), torch.from_numpy(value))
        priorities[index] = value  # numpy assignment: the last of repeated indices wins, as in the tree
    nodes = tree.nodes
    assert np.array_equal(nodes[1:tree.size], nodes[2:2 * tree.size:2] + nodes[3:2 * tree.size:2])
    assert np.array_equal(nodes[tree.size:tree.size + 3000], priorities)
    prefix = np.cumsum(priorities)
    values = rng.random(20_000) * prefix[-1]
    above = np.searchsorted(prefix, values).clip(max=len(prefix) - 1)  # [V] the boundaries either side
    nearest = np.minimum(np.abs(prefix[above] - values), np.abs(values - prefix[(above - 1).clip(min=0)]))
    values = values[(nearest > 1e-9 * prefix[-1]) & (values > 0)]
    assert len(values) > 19_000
    want = np.searchsorted(prefix, values, side="left")  # first i with prefix_i >= value
    assert np.array_equal(tree.find(torch.from_numpy(values)).numpy(), want)
    assert (priorities[want] > 0).all()


def test_importance_weights_hand_computed():
    # count 4, P = [0.5, 0.25], beta 1: w = (4 P)^-1 = [0.5, 1] -> / max = [0.5, 1]
    w = importance_weights(torch.tensor([0.5, 0.25], dtype=torch.float64), 4, 1.0)
    assert torch.allclose(w, torch.tensor([0.5, 1.0]))


def test_prioritized_buffer_new_transitions_at_max_priority_and_updates():
    buf = _vector_buffer(n_step=1, capacity=16, prioritized=True)
    buf.start(torch.zeros(1, 1))
    for t in range(4):
        buf.add(torch.full((1, 1), float(t)), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([False]),
                torch.tensor([False]), torch.full((1, 1), t + 1.0), {"final_obs": torch.full((1, 1), t + 1.0)})
    assert torch.allclose(buf.tree.get(torch.arange(4)), torch.ones(4, dtype=torch.float64))
    buf.update_priorities(torch.tensor([0, 1]), torch.tensor([3.0, 0.0]))  # p = (|d| + eps)^0.5
    assert buf.tree.get(torch.tensor([0])).item() == pytest.approx(3.0 ** 0.5, rel=1e-5)
    buf.add(torch.full((1, 1), 4.0), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([False]),
            torch.tensor([False]), torch.full((1, 1), 5.0), {"final_obs": torch.full((1, 1), 5.0)})
    assert buf.tree.get(torch.tensor([4])).item() == pytest.approx(3.0 ** 0.5, rel=1e-5)  # the max so far
    batch = buf.sample(8, beta=0.4)
    assert batch["weights"].max().item() == pytest.approx(1.0) and (batch["weights"] > 0).all()


def _filled_prioritized_buffer() -> ReplayBuffer:
    """A prioritized buffer of 2 envs that wrapped around, with priorities set from varied errors."""
    torch.manual_seed(1)
    buf = _vector_buffer(n_step=3, capacity=32, num_envs=2, prioritized=True)
    buf.start(torch.zeros(2, 1))
    for t in range(25):
        obs = torch.full((2, 1), float(t))
        buf.add(obs, torch.tensor([t, t + 1]), torch.rand(2), torch.tensor([t % 7 == 6, False]),
                torch.tensor([False, t % 9 == 8]), obs + 1, {"final_obs": obs + 1})
        if t % 4 == 3:
            batch = buf.sample(8)
            buf.update_priorities(batch["indices"], torch.randn(8))
    return buf


def test_prioritized_buffer_checkpoint_round_trip():
    # state_dict -> torch.save -> torch.load(weights_only=True) -> load_state_dict: the same tree, the
    # same running max, and under the same seed the same batches, weights included.
    buf = _filled_prioritized_buffer()
    file = io.BytesIO()
    torch.save(buf.state_dict(), file)
    file.seek(0)
    state = torch.load(file, weights_only=True)
    assert isinstance(state["tree"], torch.Tensor) and state["tree"].dtype == torch.float64
    new = _vector_buffer(n_step=3, capacity=32, num_envs=2, prioritized=True)
    new.load_state_dict(state)
    assert np.array_equal(new.tree.nodes, buf.tree.nodes) and new.tree.total.item() > 0
    assert new.max_priority.item() == buf.max_priority.item() > 1
    for seed in range(3):
        torch.manual_seed(seed)
        want = buf.sample(16, beta=0.6)
        torch.manual_seed(seed)
        got = new.sample(16, beta=0.6)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), seed


# ----------------------------------------------------------------- Atari frames, stored once
class FakeAtari:
    """Stacked [N, 4, 2, 2] uint8 frames like the ale backend: a frame counter per env, zeros before a game."""

    def __init__(self, num_envs: int, stack: int = 4, game_len: int = 7):
        self.n, self.stack, self.game_len = num_envs, stack, game_len
        self.t = torch.zeros(num_envs, dtype=torch.int64)
        self.count = 0
        self.frames = torch.zeros(num_envs, stack, 2, 2, dtype=torch.uint8)

    def reset(self) -> torch.Tensor:
        self.count += 1
        self.frames.zero_()
        self.frames[:, -1] = self.count
        return self.frames.clone()

    def step(self, truncate_at: int | None = None):
        self.count += 1
        self.t += 1
        term = self.t % self.game_len == 0
        trunc = torch.zeros_like(term) if truncate_at is None else (self.t == truncate_at) & ~term
        final = torch.cat([self.frames[:, 1:], torch.full((self.n, 1, 2, 2), self.count % 251, dtype=torch.uint8)], 1)
        done = term | trunc
        self.count += 1
        fresh = torch.zeros_like(final)
        fresh[:, -1] = self.count % 251
        self.frames = torch.where(done.view(-1, 1, 1, 1), fresh, final)
        return self.frames.clone(), term, trunc, {"final_obs": final, "episode_done": done}


def test_frames_are_stored_once_and_stacks_rebuilt_exactly():
    space = gym.spaces.Box(0, 255, (4, 2, 2), np.uint8)
    buf = ReplayBuffer(40, 2, space, torch.device("cpu"), n_step=3, gamma=GAMMA)
    env = FakeAtari(2)
    obs = env.reset()
    buf.start(obs)
    history = []
    for t in range(30):
        next_obs, term, trunc, info = env.step(truncate_at=18)
        history.append((obs, info["final_obs"], term, trunc))
        buf.add(obs, torch.tensor([0, 1]), torch.ones(2), term, trunc, next_obs, info)
        obs = next_obs
    history.append((obs, None, None, None))  # the current observation, s_30
    lo, hi = buf._lo(), buf._hi()
    assert hi - lo >= 10
    for t in range(lo, hi):
        batch = buf._gather(torch.tensor([t, t]), torch.tensor([0, 1]))
        assert torch.equal(batch["obs"], history[t][0]), t
        # the bootstrap observation: s_{t+m+1}, or the final observation where step t+m was truncated
        m = int(buf.next_offset[t % buf.T, 0]) - 1
        _, final, term, trunc = history[t + m]
        for e in range(2):
            if term[e]:
                continue  # terminal: disc = 0, the observation is never used
            want = final[e] if trunc[e] else history[t + m + 1][0][e]
            assert torch.equal(batch["next_obs"][e], want), (t, e)


def test_prioritized_frames_retire_rows_that_lost_their_history():
    # A frame buffer that wrapped around: exactly the rows that can be sampled have a priority, the
    # rows whose stacks reach into overwritten frames (and the unwritten ones) are 0 and never drawn.
    space = gym.spaces.Box(0, 255, (4, 2, 2), np.uint8)
    buf = ReplayBuffer(40, 2, space, torch.device("cpu"), n_step=3, gamma=GAMMA, prioritized=True)
    env = FakeAtari(2)
    obs = env.reset()
    buf.start(obs)
    for _ in range(30):
        next_obs, term, trunc, info = env.step(truncate_at=18)
        buf.add(obs, torch.tensor([0, 1]), torch.ones(2), term, trunc, next_obs, info)
        obs = next_obs
    rows = torch.arange(buf.T)
    absolute = buf._absolute(rows)  # [T]
    sampleable = (absolute >= buf._lo()) & (absolute < buf._hi())
    priority = buf.tree.get(torch.arange(buf.T * buf.N)).view(buf.T, buf.N)  # [T, N]
    assert 0 < int(sampleable.sum()) < buf.T
    assert torch.equal(priority > 0, sampleable.view(-1, 1).expand(-1, buf.N))
    torch.manual_seed(0)
    drawn = buf.sample(256)["indices"] // buf.N
    assert bool(sampleable[drawn].all())


def test_atari_memory_per_transition_is_within_budget():
    # 1M Atari transitions (84x84 frames, stack 4) must fit in 7.5 GB, prioritized replay included.
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buf = ReplayBuffer(4096, 8, space, torch.device("cpu"), n_step=3, prioritized=True)
    per_transition = buf.nbytes() / 4096
    assert 7056 < per_transition <= 7200, per_transition  # one 84x84 frame plus ~100 bytes
    assert per_transition * 1_000_000 <= 7.5e9


def test_a_grouped_replay_samples_each_groups_own_envs():
    """groups=3 over 6 envs: group g's batch holds only transitions of envs 2g and 2g+1 ([G, B, ...] batches)."""
    space = gym.spaces.Box(-1.0, 1.0, (1,))
    replay = ReplayBuffer(60, 6, space, torch.device("cpu"), groups=3)
    obs = torch.zeros(6, 1)
    replay.start(obs)
    env_id = torch.arange(6.0).unsqueeze(1)  # each env's observation is its index
    for _ in range(5):
        info = {"final_obs": env_id, "episode_done": torch.zeros(6, dtype=torch.bool)}
        replay.add(env_id, torch.zeros(6, dtype=torch.int64), torch.zeros(6), torch.zeros(6, dtype=torch.bool),
                   torch.zeros(6, dtype=torch.bool), env_id, info)
    batch = replay.sample(40)
    assert batch["obs"].shape == (3, 40, 1) and batch["weights"].shape == (3, 40)
    for g in range(3):
        assert set(batch["obs"][g].flatten().tolist()) == {2.0 * g, 2.0 * g + 1}
    assert replay.latest()["obs"].shape == (3, 2, 1)

