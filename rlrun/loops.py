"""Training loops: they own the data flow (collect -> targets -> update -> log); algorithms own the update.

A loop talks to the run through seven members (see :class:`RunHooks`), so the same loop serves
training from scratch, resumed training, tests and populations (many runs sharing one vector env,
:mod:`rlrun.population`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch

from rlrun.algos.base import OffPolicy, OnPolicy, Searching
from rlrun.buffers import ReplayBuffer
from rlrun.envs.base import VecEnv
from rlrun.returns import gae


class RunHooks(Protocol):
    step: int
    """Environment steps taken so far (all envs of a run together)."""
    total_steps: int
    members: int
    """Runs the loop trains at once: 1, or the members of a population (:mod:`rlrun.population`), which share the
    vector env's envs evenly, member-major; ``step`` counts each member's steps."""

    def record_episodes(self, info: dict[str, torch.Tensor]) -> None:
        """Keep the episode statistics of one env step (device tensors, read back later)."""

    def end_iteration(self, metrics: dict[str, Any]) -> bool:
        """Log, evaluate and checkpoint as due; True means stop training."""

    def message(self, text: str) -> None:
        """Tell the user something about the run (console and train.log)."""

    def keep(self, name: str, data: Any) -> bool:
        """Checkpoint the loop's ``data`` (anything with ``state_dict``/``load_state_dict``: the replay buffer)
        under ``name`` when ``checkpoint.replay`` says so, and restore it now from the checkpoint the run resumed
        from, if that holds it. True if it was restored."""


class RolloutBuffer:
    """Preallocated [T, N] storage for one on-policy rollout on the env's device."""

    def __init__(self, num_steps: int, env: VecEnv):
        T, N, dev = num_steps, env.num_envs, env.device
        obs_space, act_space = env.single_observation_space, env.single_action_space
        obs_dtype = torch.uint8 if obs_space.dtype == "uint8" else torch.float32
        act_shape = act_space.shape or ()
        act_dtype = torch.int64 if not act_shape else torch.float32
        self.obs = torch.zeros((T, N, *obs_space.shape), dtype=obs_dtype, device=dev)
        self.next_obs = torch.zeros_like(self.obs)  # V(s_{t+1}): final obs where the episode ended
        self.actions = torch.zeros((T, N, *act_shape), dtype=act_dtype, device=dev)
        self.logp = torch.zeros((T, N), device=dev)
        self.rewards = torch.zeros((T, N), device=dev)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=dev)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=dev)
        # Per-step views into the storage above, made once: add() is then one copy per tensor
        # (indexing with [t] would make the view again on every call).
        storage = (self.obs, self.actions, self.logp, self.rewards, self.terminated, self.truncated, self.next_obs)
        self._rows = list(zip(*(x.unbind(0) for x in storage)))  # [T] tuples of [N, ...] views

    def add(self, t: int, obs, action, logp, reward, terminated, truncated, next_obs) -> None:
        """Store one step of every env at row ``t``."""
        for row, value in zip(self._rows[t], (obs, action, logp, reward, terminated, truncated, next_obs)):
            row.copy_(value)

    @torch.no_grad()
    def compute(self, value_fn, gamma: float, lam: float) -> dict[str, torch.Tensor]:
        """Values, GAE advantages and returns, flattened to [T * N, ...] for the update."""
        T, N = self.rewards.shape
        flat = lambda x: x.reshape(T * N, *x.shape[2:])
        values = value_fn(flat(self.obs)).reshape(T, N)  # [T, N]
        next_values = value_fn(flat(self.next_obs)).reshape(T, N)  # [T, N]
        advantages = gae(self.rewards, values, next_values, self.terminated, self.truncated, gamma, lam)
        return {
            "obs": flat(self.obs), "actions": flat(self.actions), "logp": flat(self.logp),
            "values": flat(values), "advantages": flat(advantages), "returns": flat(advantages + values),
        }


def run_on_policy(agent: OnPolicy, env: VecEnv, obs: torch.Tensor, run: RunHooks) -> torch.Tensor:
    """Collect ``num_steps`` from every env, compute GAE targets, update; repeat until the run says stop.

    A truncated episode (time limit) bootstraps from V(final observation): the env layer hands
    the true last observation over in ``info["final_obs"]`` and GAE only treats ``terminated``
    as the end of the return (CleanRL treats both as terminal; SB3 bootstraps the same way as here).
    Returns the last observation so a caller can keep going.
    """
    cfg = agent.cfg
    buffer = RolloutBuffer(cfg.num_steps, env)
    batch_steps = cfg.num_steps * (env.num_envs // run.members)  # each run's share of the rollout
    stop = run.step >= run.total_steps
    while not stop:
        if agent.whole_episodes:  # every batch starts from freshly reset envs
            obs = env.reset()
        schedule = agent.set_progress(run.step / run.total_steps)
        for t in range(cfg.num_steps):
            action, logp = agent.policy.act(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(t, obs, action, logp, reward, terminated, truncated, info["final_obs"])
            run.record_episodes(info)
            obs = next_obs
        run.step += batch_steps
        metrics = agent.update(agent.targets(buffer))
        stop = run.end_iteration({**metrics, **schedule})
    return obs


def make_replay(cfg: Any, env: VecEnv, members: int = 1) -> ReplayBuffer:
    """The off-policy loop's replay buffer for the algorithm config ``cfg`` (buffer_size, n_step, gamma and the
    PER settings); ``replay=false`` keeps only the few newest rows that n-step returns and frame stacks need.
    ``members`` > 1: a population's, ``buffer_size`` per member, each sampling its own envs' transitions."""
    space, num_envs = env.single_observation_space, env.num_envs
    stack = space.shape[0] if len(space.shape) == 3 else 1
    minimum = num_envs * (cfg.n_step + stack + 1)
    capacity = max(cfg.buffer_size * members, minimum) if cfg.replay else minimum
    return ReplayBuffer(capacity, num_envs, space, env.device, cfg.n_step, cfg.gamma, cfg.prioritized and cfg.replay,
                        cfg.per_alpha, cfg.per_eps, groups=members)


def per_beta(start: float, fraction: float) -> float:
    """The importance-sampling exponent of prioritized replay, annealed linearly from ``start`` to 1 over training
    (Schaul et al. 2016): beta = start + (1 - start) * fraction."""
    return start + (1.0 - start) * min(1.0, fraction)


def schedules(agent: OffPolicy, replay: ReplayBuffer, fraction: float) -> tuple[dict[str, float], float]:
    """Set the agent's schedules (epsilon) for ``fraction`` of training; the values to log, and PER's beta."""
    beta = per_beta(agent.cfg.per_beta, fraction)
    return {**agent.set_progress(fraction), **({"charts/beta": beta} if replay.prioritized else {})}, beta


def run_off_policy(agent: OffPolicy, env: VecEnv, obs: torch.Tensor, run: RunHooks) -> torch.Tensor:
    """Act, store, sample, update, log: the DQN family's loop, which owns the replay buffer.

    Every env step goes into the replay buffer (n-step returns are built there, at insertion).
    After ``learning_starts`` env steps, every ``train_frequency`` env steps (all envs together) run
    ``gradient_steps`` updates on sampled batches (with ``replay=false``, the newest transitions); with
    prioritized replay each sample's new priority comes from the error the update returns. Then the
    target network is updated as due. One vector step of ``num_envs > train_frequency`` envs is several
    training phases, so the number of updates per env step never depends on ``num_envs``;
    ``charts/gradient_steps`` logs the count. The buffer goes into checkpoints with
    ``checkpoint.replay=true``; a run resumed without it collects ``learning_starts`` transitions again
    before its next update. The run is told about an iteration every ``log_every`` env steps. Returns
    the last observation.
    """
    cfg = agent.cfg
    replay = make_replay(cfg, env, run.members)
    train_from = cfg.learning_starts
    if not run.keep("replay", replay) and run.step > 0:  # resumed without its replay: refill before learning
        train_from = run.step + cfg.learning_starts
        run.message(f"resumed at step {run.step:,} without the replay buffer (checkpoint.replay=false): collecting "
                    f"{cfg.learning_starts:,} transitions (algo.learning_starts) before the next update")
    replay.start(obs)
    n = env.num_envs // run.members  # each run's envs
    metrics: dict[str, Any] = {}
    last_log, last_train = run.step, run.step
    stop = run.step >= run.total_steps
    schedule, beta = schedules(agent, replay, run.step / run.total_steps)
    while not stop:
        action, _ = agent.policy.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        replay.add(obs, action, reward, terminated, truncated, next_obs, info)
        run.record_episodes(info)
        obs = next_obs
        run.step += n
        if run.step < train_from or not len(replay):
            last_train = run.step
        else:  # every training phase that is due: with more envs than train_frequency, several per env step
            phases = (run.step - last_train) // cfg.train_frequency
            last_train += phases * cfg.train_frequency
            for _ in range(phases * cfg.gradient_steps):
                batch = replay.sample(cfg.batch_size, beta) if cfg.replay else replay.latest()
                metrics, errors = agent.update(batch)
                if replay.prioritized:
                    replay.update_priorities(batch["indices"], errors)
                agent.update_target(run.step)
        if run.step - last_log >= cfg.log_every or run.step >= run.total_steps:
            last_log = run.step
            stop = run.end_iteration({**metrics, **schedule, "charts/gradient_steps": agent.gradient_steps_done})
            schedule, beta = schedules(agent, replay, run.step / run.total_steps)
        elif run.step % 64 < n:  # epsilon and beta follow the step closely between logged iterations
            schedule, beta = schedules(agent, replay, run.step / run.total_steps)
    return obs


def run_search(agent: Searching, env: VecEnv, obs: torch.Tensor, run: RunHooks) -> torch.Tensor:
    """AlphaZero's self-play: every env's game moves by the agent's search; each finished game's positions go into
    a replay with the search policies and the value targets (the outcome from each position's side to move, mixed
    with the search's root value by ``value_target_q``); every
    ``moves_per_update`` moves, ``gradient_steps`` updates on sampled positions once the replay holds
    ``learning_starts``; with ``algo.mirror`` each position is stored mirrored too. An env step is one move of
    one game. The replay goes into checkpoints with
    ``checkpoint.replay=true``; games in progress at a checkpoint are not saved (a resumed run starts new ones).
    """
    from rlrun.search.selfplay import GameHistory, PositionReplay, value_targets

    cfg = agent.cfg
    history = GameHistory(agent.game, env.num_envs, env.device)
    replay = PositionReplay(cfg.replay_size, agent.game, env.device)
    run.keep("replay", replay)
    metrics: dict[str, Any] = {}
    last_log, moves, games, started = run.step, 0, 0, time.perf_counter()
    stop = run.step >= run.total_steps
    while not stop:
        for _ in range(cfg.moves_per_update):
            result = agent.self_play(obs)
            history.add(obs, result.policy, result.value)
            obs, _, terminated, _, info = env.step(result.action)
            run.record_episodes(info)
            states, policies, z, q = history.finish(terminated, info["final_obs"])
            z = value_targets(z, q, cfg.value_target_q)
            replay.add(states, policies, z)
            if cfg.mirror:
                replay.add(*agent.game.mirror(states, policies), z)
            games += int(terminated.sum())
            moves += env.num_envs
            run.step += env.num_envs
        if len(replay) >= max(cfg.learning_starts, 1):
            for _ in range(cfg.gradient_steps):
                metrics = agent.update(replay.sample(cfg.batch_size))
        if run.step - last_log >= cfg.log_every or run.step >= run.total_steps:
            seconds = max(time.perf_counter() - started, 1e-9)
            throughput = {"charts/simulations_per_s": moves * cfg.num_simulations / seconds,
                          "charts/games_per_s": games / seconds, "charts/replay_size": len(replay),
                          "charts/gradient_steps": agent.gradient_steps_done}
            stop = run.end_iteration({**metrics, **agent.set_progress(run.step / run.total_steps), **throughput})
            last_log, moves, games, started = run.step, 0, 0, time.perf_counter()
    return obs


# What an algorithm's class attribute ``loop`` names.
LOOPS = {"on_policy": run_on_policy, "off_policy": run_off_policy, "search": run_search}
