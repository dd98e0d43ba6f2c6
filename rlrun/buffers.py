"""Replay storage for off-policy learning: a ring buffer of preallocated tensors on the training
device, n-step returns built at insertion, and proportional prioritized replay on a sum tree
(kept on the host: see :class:`SumTree`).

Layout. Rows are env steps, columns envs: transition (t, e) lives in row ``t % T``, column ``e``
(``T = capacity // num_envs``). Each env step goes into an n-step window first; once the window
holds ``n`` steps its oldest one leaves as a transition (s_t, a_t, G_t, disc_t, s_{t+m+1}) with
the return built by :func:`rlrun.returns.n_step_return` (cut at episode ends, never across them).

Observations. Vectors are stored twice per transition (s_t and the bootstrap observation), which
is cheap. Stacked uint8 frames ([stack, H, W], Atari) are stored once per frame: row t keeps only
the newest frame of s_t plus how many of the stack's frames belong to the current game
(``valid``; older slots of a fresh game are zeros, as the env gives them). A stack is rebuilt from
rows t-stack+1..t and the bootstrap observation from row t+m+1, which is written as soon as the
env returns it. Only a time-limit truncation needs a frame that no row holds (the final frame of
the cut game): those go to a small side ring. Memory per Atari transition (84x84, stack 4):

    frame 7056 + action 8 + return 4 + discount 4 + valid 1 + next offset 1 + final slot 4
    + sum tree 16 (PER, float64, two nodes per leaf, host memory) + side ring 7056 / 128  ~= 7149 bytes,

i.e. ~7.15 GB for 1M transitions (stacks stored whole would take 2 x 28224 bytes).
The newest frames run ahead of the transitions by n rows and a stack reaches stack-1 rows back,
so the oldest ``n + stack - 1`` rows of a full buffer are never sampled.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.returns import n_step_return

SIDE_RING_FRACTION = 128
"""Frame store: one side-ring slot (final frame of a truncated game) per this many rows."""


class SumTree:
    """Binary tree whose leaves are priorities and whose inner nodes are sums of their children.

    Invariant: ``nodes[i] == nodes[2 i] + nodes[2 i + 1]`` for every inner node i, recomputed from the
    children on each update (never accumulated from differences, so a subtree whose leaves are all 0
    sums to exactly 0). ``nodes[1]`` is the total; the ``size`` leaves sit at ``nodes[size:2 size]``.
    Updates and prefix-sum searches are vectorised over a batch of leaves (a few ops per level).

    The tree lives on the host as a float64 numpy array, whatever the training device: each update or
    search walks all ~17-20 levels, and a numpy op on a few elements costs well under 1 us where a
    torch op costs ~5 us of dispatch on the CPU (and a kernel launch on CUDA). Index and priority
    tensors cross at the boundary: on CUDA a small device-to-host copy per call, which waits for them
    to be computed (the replay buffer passes host arrays where it has them, so storing transitions
    copies nothing). Sampled leaves go back to ``device``. Draws use torch's CPU generator, so
    ``torch.manual_seed`` fixes them.
    """

    def __init__(self, capacity: int, device: torch.device):
        self.size = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.size.bit_length() - 1
        self.device = torch.device(device)
        self.nodes = np.zeros(2 * self.size)  # [2 size] float64, nodes[0] unused; only ever written in place,
        self._next = self.nodes[1:]  # as this view relies on: _next[i] = nodes[i + 1], the right sibling of left child i
        self._levels = np.arange(1, self.depth + 1).reshape(-1, 1)  # [depth, 1]: shifts from a leaf to its ancestors

    @property
    def total(self) -> torch.Tensor:
        """The sum of all priorities: a 0-d float64 tensor on the CPU (a copy, not a view of the tree)."""
        return torch.tensor(self.nodes[1])

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """The priorities [M] (float64) of leaves ``index`` [M], on ``index``'s device."""
        return torch.from_numpy(self.nodes[_host(index) + self.size]).to(index.device)

    def update(self, index: torch.Tensor | np.ndarray, priority: torch.Tensor | np.ndarray) -> None:
        """Set leaves ``index`` [M] to ``priority`` [M] and recompute their ancestors from their children.

        Both may be tensors on any device or numpy arrays. Level by level from the bottom, every
        ancestor gets the sum of its two children (one gather-add-scatter per level).
        """
        node = _host(index).astype(np.int64, copy=False) + self.size  # [M]
        self.nodes[node] = _host(priority)
        parent = node >> self._levels  # [depth, M]: row k holds the ancestors k + 1 levels up
        left = parent << 1  # [depth, M] their left children
        for p, lft in zip(parent, left):  # bottom up: a level reads the one below, already updated
            self.nodes[p] = self.nodes[lft] + self._next[lft]

    def find(self, values: torch.Tensor) -> torch.Tensor:
        """The leaf i with prefix_{i-1} < value <= prefix_i for each value [M] in (0, total]: leaf indices [M].

        Rounding can leave a value a hair above the mass of the subtree it descends into; the
        search then stays on the side that has mass, so it never returns a leaf of priority 0
        (an empty slot or a retired transition, whose importance weight would be infinite).
        The indices (int64) are on the tree's device.
        """
        return torch.from_numpy(self._find(_host(values))).to(self.device)

    def _find(self, values: np.ndarray) -> np.ndarray:
        """:meth:`find` on the host: ``values`` [M] -> leaf indices [M]."""
        values = values.astype(np.float64, copy=False)  # [M]
        node = np.ones(values.shape, dtype=np.int64)  # [M] the root
        for _ in range(self.depth):
            node <<= 1  # the left child
            left = self.nodes[node]  # [M]
            right = ((values > left) & (self._next[node] > 0)) | (left <= 0)  # [M] descend right
            values = values - left * right  # left * right is exactly left or 0 (priorities are finite)
            node += right
        return node - self.size

    def sample(self, batch_size: int) -> torch.Tensor:
        """Stratified: one leaf from each of ``batch_size`` equal slices of [0, total], P(i) = p_i / total.

        Leaf indices [B] (int64) on the tree's device.
        """
        return torch.from_numpy(self.draw(batch_size)[0]).to(self.device)

    def draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample` on the host: leaf indices [B] and their probabilities P(i) = p_i / total [B]."""
        u = torch.rand(batch_size, dtype=torch.float64).numpy()  # [B] torch's CPU generator
        total = self.nodes[1]
        values = (np.arange(batch_size) + u) * (total / batch_size)  # [B]
        leaves = self._find(np.maximum(values, 1e-300))  # a value of exactly 0 could land on an empty leaf
        return leaves, self.nodes[leaves + self.size] / total


def _host(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``x`` as a numpy array on the host (a device-to-host copy for a CUDA tensor)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def importance_weights(probs: torch.Tensor, count: int, beta: float) -> torch.Tensor:
    """PER importance-sampling weights w_i = (count * P(i))^-beta / max_j w_j (max over the batch)."""
    weights = (count * probs).pow(-beta)  # [B]
    return (weights / weights.max()).float()


class ReplayBuffer:
    """Ring buffer of ``capacity`` transitions (rounded down to whole rows of ``num_envs``); see the module doc."""

    def __init__(self, capacity: int, num_envs: int, observation_space: gym.Space, device: torch.device,
                 n_step: int = 1, gamma: float = 0.99, prioritized: bool = False, alpha: float = 0.5,
                 priority_eps: float = 1e-6, groups: int = 1):
        if groups > 1 and (prioritized or num_envs % groups):
            raise ValueError(f"a replay of {groups} groups needs uniform sampling and envs in equal groups "
                             f"(num_envs={num_envs}, prioritized={prioritized})")
        self.groups = groups  # a population's members: envs in equal consecutive groups, sampled apart
        shape = tuple(observation_space.shape)
        self.frames = observation_space.dtype == "uint8" and len(shape) == 3
        self.stack = shape[0] if self.frames else 1
        self.N, self.T, self.n, self.gamma, self.device = num_envs, capacity // num_envs, n_step, gamma, device
        if self.T < n_step + self.stack + 1:
            raise ValueError(f"a replay buffer of {capacity} transitions has {self.T} rows for {num_envs} envs; "
                             f"n_step={n_step} with a stack of {self.stack} frames needs >= {n_step + self.stack + 1}")
        T, N, n, dev = self.T, num_envs, n_step, device
        obs_dtype = torch.uint8 if observation_space.dtype == "uint8" else torch.float32
        self.actions = torch.zeros((T, N), dtype=torch.int64, device=dev)
        self.returns = torch.zeros((T, N), device=dev)
        self.discounts = torch.zeros((T, N), device=dev)
        if self.frames:
            self.frame = torch.zeros((T, N, *shape[1:]), dtype=torch.uint8, device=dev)  # newest frame of s_t
            self.valid = torch.zeros((T, N), dtype=torch.uint8, device=dev)  # frames of s_t in the current game
            self.next_offset = torch.zeros((T, N), dtype=torch.uint8, device=dev)  # m + 1
            self.final_slot = torch.full((T, N), -1, dtype=torch.int32, device=dev)  # side-ring slot or -1
            self.side = torch.zeros((max(N * 4, T * N // SIDE_RING_FRACTION), *shape[1:]), dtype=torch.uint8,
                                    device=dev)
            self.side_pos = 0
            self.w_final = torch.full((n, N), -1, dtype=torch.int32, device=dev)
        else:
            self.obs = torch.zeros((T, N, *shape), dtype=obs_dtype, device=dev)
            self.next_obs = torch.zeros_like(self.obs)
            self.w_obs = torch.zeros((n, N, *shape), dtype=obs_dtype, device=dev)
            self.w_next = torch.zeros_like(self.w_obs)
        # The n-step window, a ring of the last n env steps.
        self.w_actions = torch.zeros((n, N), dtype=torch.int64, device=dev)
        self.w_rewards = torch.zeros((n, N), device=dev)
        self.w_term = torch.zeros((n, N), dtype=torch.bool, device=dev)
        self.w_trunc = torch.zeros((n, N), dtype=torch.bool, device=dev)
        self.w_pos = self.w_len = 0
        self.step = 0  # absolute index of the env step whose observation is the current one
        self.emitted = 0  # transitions (rows) written so far
        self.prioritized, self.alpha, self.priority_eps = prioritized, alpha, priority_eps
        if prioritized:
            self.tree = SumTree(T * N, dev)
            self.max_priority = torch.ones((), dtype=torch.float64)  # on the CPU, beside the tree
        self._env_ids = torch.arange(N, device=dev)
        self._host_env_ids = np.arange(N)  # the tree's leaves of row t are t * N + these

    # ----------------------------------------------------------------- size and memory
    def __len__(self) -> int:
        """Transitions that can be sampled."""
        return (self._hi() - self._lo()) * self.N

    def _hi(self) -> int:
        return self.emitted

    def _lo(self) -> int:
        lo = max(0, self.emitted - self.T)
        if self.frames:  # frame rows run ahead by up to n; stacks reach stack - 1 rows back
            lo = max(lo, self.step - self.T + self.stack)
        return min(lo, self.emitted)

    def nbytes(self) -> int:
        """Bytes of all storage (the n-step window and the host-side sum tree included)."""
        tensors = [v for v in vars(self).values() if isinstance(v, torch.Tensor)]
        tree = self.tree.nodes.nbytes if self.prioritized else 0
        return sum(t.numel() * t.element_size() for t in tensors) + tree

    # ----------------------------------------------------------------- writing
    def _write_frame(self, obs: torch.Tensor, new_game: torch.Tensor | None) -> None:
        """Store the newest frame of ``obs`` [N, stack, H, W] in row ``self.step``."""
        row = self.step % self.T
        if new_game is None:
            valid = torch.ones(self.N, dtype=torch.uint8, device=self.device)
        else:
            prev = self.valid[(self.step - 1) % self.T]
            valid = torch.where(new_game, 1, (prev + 1).clamp(max=self.stack)).to(torch.uint8)
        self.frame[row] = obs[:, -1]
        self.valid[row] = valid
        if self.prioritized:  # this row's frame was the history of the row stack - 1 ahead: retire it
            gone = (self.step + self.stack - 1) % self.T
            self.tree.update(gone * self.N + self._host_env_ids, np.zeros(self.N))

    def _to_side(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Copy ``frames`` [N, H, W] into the side ring; the slot per env [N] (int32), -1 where not ``mask``."""
        slots = (self.side_pos + self._env_ids) % self.side.shape[0]
        self.side[slots] = torch.where(mask.view(-1, 1, 1), frames, self.side[slots])
        self.side_pos = (self.side_pos + self.N) % self.side.shape[0]
        return torch.where(mask, slots, -1).to(torch.int32)

    def start(self, obs: torch.Tensor) -> None:
        """Begin collecting from ``obs`` [N, ...], the first observation after an env reset.

        Steps still in the n-step window (a resumed run: the env was reset under them) end there as
        truncated episodes, so their returns bootstrap from the last observation they saw.
        """
        if self.w_len:
            newest = (self.w_pos - 1) % self.n
            cut = ~(self.w_term[newest] | self.w_trunc[newest])  # [N]
            self.w_trunc[newest] |= cut
            if self.frames:  # the last frame written is about to be overwritten: keep it in the side ring
                slots = self._to_side(self.frame[self.step % self.T], torch.ones_like(cut))
                self.w_final[newest] = torch.where(cut, slots, self.w_final[newest])
                if self.emitted:  # the newest row may bootstrap from that frame too
                    row = (self.emitted - 1) % self.T
                    plain = (self.next_offset[row].long() + self.emitted - 1 == self.step) & (self.final_slot[row] < 0)
                    self.final_slot[row] = torch.where(plain, slots, self.final_slot[row])
        if self.frames:
            self._write_frame(obs, None)

    def add(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, next_obs: torch.Tensor, info: dict[str, torch.Tensor]) -> None:
        """One env step of every env: s_t = ``obs``, a_t, r_t, the episode ends, ``next_obs`` (what the env
        returned: the next game's first observation after an autoreset) and ``info["final_obs"]`` (s_{t+1})."""
        w = self.w_pos
        self.w_actions[w], self.w_rewards[w] = action, reward
        self.w_term[w], self.w_trunc[w] = terminated, truncated
        if self.frames:
            self.w_final[w] = self._to_side(info["final_obs"][:, -1], truncated) if bool(truncated.any()) else -1
        else:
            self.w_obs[w], self.w_next[w] = obs, info["final_obs"]
        self.w_pos, self.w_len = (w + 1) % self.n, min(self.w_len + 1, self.n)
        self.step += 1
        if self.frames:  # the next observation's frame, right away (after an autoreset: the new game's first)
            new_game = info.get("episode_done", terminated | truncated)
            self._write_frame(next_obs, new_game)
        if self.w_len == self.n:
            self._emit()

    def _emit(self) -> None:
        """Write the window's oldest step as an n-step transition into row ``self.emitted``."""
        order = (self.w_pos + torch.arange(self.n, device=self.device)) % self.n  # oldest first
        oldest = self.w_pos % self.n  # the window is full: the oldest step sits where the next one goes
        returns, discounts, last = n_step_return(self.w_rewards[order], self.w_term[order], self.w_trunc[order],
                                                 self.gamma)  # [N] each
        row = self.emitted % self.T
        self.actions[row], self.returns[row], self.discounts[row] = self.w_actions[oldest], returns, discounts
        last_slot = order[last]  # [N] window slot of step m
        if self.frames:
            self.next_offset[row] = (last + 1).to(torch.uint8)
            self.final_slot[row] = self.w_final[last_slot, self._env_ids]
        else:
            self.obs[row] = self.w_obs[oldest]
            self.next_obs[row] = self.w_next[last_slot, self._env_ids]
        if self.prioritized:  # new transitions enter at the largest priority seen so far
            self.tree.update(row * self.N + self._host_env_ids, self.max_priority.expand(self.N))
        self.emitted += 1

    # ----------------------------------------------------------------- reading
    def _stack(self, newest: torch.Tensor, env: torch.Tensor, valid: torch.Tensor,
               last_frame: torch.Tensor | None = None) -> torch.Tensor:
        """Rebuild [B, stack, H, W] from the frames of absolute rows newest-stack+1..newest (zeros before the game).

        With ``last_frame`` [B, H, W] the stack is rows newest-stack+2..newest followed by that frame.
        """
        k = torch.arange(self.stack, device=self.device)  # [S]
        rows = (newest.unsqueeze(1) - self.stack + 1 + k) % self.T  # [B, S]
        out = self.frame[rows, env.unsqueeze(1)]  # [B, S, H, W]
        if last_frame is not None:
            out = torch.cat([out[:, 1:], last_frame.unsqueeze(1)], dim=1)
        keep = k.unsqueeze(0) >= self.stack - valid.long().unsqueeze(1)  # [B, S]
        return out * keep.view(*keep.shape, 1, 1).to(out.dtype)

    def _gather(self, t: torch.Tensor, env: torch.Tensor) -> dict[str, torch.Tensor]:
        """The transitions at absolute rows ``t`` [B], envs ``env`` [B]."""
        row = t % self.T
        batch = {"actions": self.actions[row, env], "returns": self.returns[row, env],
                 "discounts": self.discounts[row, env], "indices": row * self.N + env}
        if not self.frames:
            batch["obs"], batch["next_obs"] = self.obs[row, env], self.next_obs[row, env]
            return batch
        batch["obs"] = self._stack(t, env, self.valid[row, env])
        nxt = t + self.next_offset[row, env].long()  # [B] absolute row of s_{t+m+1}
        plain = self._stack(nxt, env, self.valid[nxt % self.T, env])
        slot = self.final_slot[row, env]  # [B]
        m = nxt - 1
        final_valid = (self.valid[m % self.T, env] + 1).clamp(max=self.stack)
        final = self._stack(m, env, final_valid, self.side[slot.clamp(min=0).long()])
        batch["next_obs"] = torch.where((slot >= 0).view(-1, 1, 1, 1), final, plain)
        return batch

    def _absolute(self, row: torch.Tensor) -> torch.Tensor:
        """The absolute step index of physical rows (the newest T rows written)."""
        newest = self.emitted - 1
        return newest - (newest - row) % self.T

    def sample(self, batch_size: int, beta: float = 0.4) -> dict[str, torch.Tensor]:
        """A batch of transitions: uniform, or proportional to priority with importance weights ``weights``."""
        lo, hi = self._lo(), self._hi()
        if hi <= lo:
            raise RuntimeError("the replay buffer holds no transition that can be sampled yet")
        if self.prioritized:
            leaves, probs = self.tree.draw(batch_size)  # [B] each, on the host
            index = torch.from_numpy(leaves).to(self.device)  # [B]
            row, env = index // self.N, index % self.N
            batch = self._gather(self._absolute(row), env)
            batch["weights"] = importance_weights(torch.from_numpy(probs).to(self.device), (hi - lo) * self.N, beta)
            return batch
        G, per_group = self.groups, self.N // self.groups
        t = torch.randint(lo, hi, (G, batch_size), device=self.device)
        env = torch.randint(0, per_group, (G, batch_size), device=self.device)  # each group draws from its own envs
        env += torch.arange(0, self.N, per_group, device=self.device).unsqueeze(1)
        batch = self._gather(t.reshape(-1), env.reshape(-1))
        batch["weights"] = torch.ones(G * batch_size, device=self.device)
        return self._by_group(batch)

    def latest(self) -> dict[str, torch.Tensor]:
        """The newest transition of every env (the naive online update, no replay)."""
        t = torch.full((self.N,), self.emitted - 1, dtype=torch.int64, device=self.device)
        batch = self._gather(t, self._env_ids)
        batch["weights"] = torch.ones(self.N, device=self.device)
        return self._by_group(batch)

    def _by_group(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """[G * B, ...] -> [G, B, ...] for a grouped buffer (a population's per-member batches)."""
        if self.groups == 1:
            return batch
        return {k: v.reshape(self.groups, -1, *v.shape[1:]) for k, v in batch.items()}

    def update_priorities(self, indices: torch.Tensor, errors: torch.Tensor) -> None:
        """p_i = (|error_i| + eps)^alpha for the sampled ``indices``; the running max feeds new transitions."""
        priority = (errors.detach().abs().double() + self.priority_eps).pow(self.alpha).cpu()  # [B]
        self.tree.update(indices, priority)
        self.max_priority = torch.maximum(self.max_priority, priority.max())

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor) or k in _COUNTERS}
        if self.prioritized:  # a tensor sharing the tree's memory: loads with torch.load(weights_only=True)
            state["tree"] = torch.from_numpy(self.tree.nodes)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key == "tree":
                self.tree.nodes[:] = value.cpu().numpy()
            elif isinstance(value, torch.Tensor) and key != "_env_ids":
                getattr(self, key).copy_(value)
            elif key in _COUNTERS:
                setattr(self, key, int(value))


_COUNTERS = ("w_pos", "w_len", "step", "emitted", "side_pos")
