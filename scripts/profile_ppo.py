"""Where the time of `rlrun train experiment=ppo_cartpole_zoo` goes, on this machine.

RL Zoo's PPO CartPole settings: 8 envs x 32 steps, 20 epochs of one 256-sample minibatch, 100k env
steps = 391 iterations = 7,820 gradient steps, tensor CartPole, one torch thread.

    python scripts/profile_ppo.py                   # micro-benchmarks, then one whole run
    python scripts/profile_ppo.py --runs 3 --sb3    # three whole runs, then SB3's same work for a ratio
    python scripts/profile_ppo.py --no-run algo.update_epochs=10   # Hydra overrides go last

It prints
  * the cost of one gradient step (one PPO update / its steps) and of one collection step (act,
    env step, buffer add and episode bookkeeping for all envs), each the best of many short timings
    so that other processes on a shared machine show up as little as possible;
  * for whole training runs (evaluation only at the end): the wall time and how it splits into
    PPO.update, RolloutBuffer.compute, the loop's per-iteration logging and the rest (collection);
  * with --sb3, Stable-Baselines3's PPO on the same work in the same script and the ratio
    rlrun / SB3 (DESIGN.md, Performance: compare against a reference measured alongside).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

ZOO_STEPS = 100_000


def zoo_config(overrides: list[str], run_dir: str):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlrun.config import load

    GlobalHydra.instance().clear()
    with initialize_config_module("rlrun.conf", version_base=None):
        cfg = compose("config", overrides=[
            "experiment=ppo_cartpole_zoo", "progress=false", "eval.every_steps=0", "device=cpu",
            f"run_dir={run_dir}", *overrides,
        ])
    return load(cfg)


def best_of(fn, inner: int, repeats: int) -> float:
    """Seconds per call of ``fn``: the fastest of ``repeats`` timings of ``inner`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def micro(cfg, repeats: int) -> None:
    """Per-gradient-step and per-collection-step costs on the run's own agent, env and buffer."""
    from rlrun.loops import RolloutBuffer
    from rlrun.train import build, seed_everything

    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    env, eval_env, agent = build(cfg, torch.device(cfg.device))
    buffer = RolloutBuffer(cfg.algo.num_steps, env)
    state = {"obs": env.reset(seed=cfg.seed)}
    episodes: list = []

    def rollout() -> None:  # what run_on_policy does per iteration before the update
        obs = state["obs"]
        for t in range(cfg.algo.num_steps):
            action, logp = agent.policy.act(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(t, obs, action, logp, reward, terminated, truncated, info["final_obs"])
            episodes.append((info["episode_done"], info["episode_return"], info["episode_length"]))
            obs = next_obs
        state["obs"] = obs
        episodes.clear()

    rollout()
    batch = buffer.compute(agent.policy.value, cfg.algo.gamma, cfg.algo.gae_lambda)
    agent.set_progress(0.5)
    steps_per_update = cfg.algo.update_epochs * -(-batch["obs"].shape[0] // cfg.algo.minibatch_size)
    update = best_of(lambda: agent.update(batch), 2, repeats)
    collect = best_of(rollout, 1, repeats * 4) / cfg.algo.num_steps
    compute = best_of(lambda: buffer.compute(agent.policy.value, cfg.algo.gamma, cfg.algo.gae_lambda), 5, repeats)
    iterations = -(-cfg.total_steps // (cfg.algo.num_steps * env.num_envs))
    print(f"gradient step     {update / steps_per_update * 1e6:8.0f} us   (one update of {steps_per_update} steps: "
          f"{update * 1e3:.1f} ms)")
    print(f"collection step   {collect * 1e6:8.0f} us   (act + env step + buffer add for {env.num_envs} envs)")
    print(f"buffer.compute    {compute * 1e6:8.0f} us   (values and GAE, once per iteration)")
    print(f"-> {iterations} iterations: updates {iterations * update:.2f} s, collection "
          f"{iterations * cfg.algo.num_steps * collect:.2f} s, compute {iterations * compute:.2f} s")
    env.close()
    eval_env.close()


@contextmanager
def timers(totals: dict[str, float]):
    """Accumulate wall time spent in PPO.update, RolloutBuffer.compute and Run.end_iteration during a run."""
    from rlrun import loops, train
    from rlrun.algos.ppo import PPO

    patched = [(PPO, "update"), (loops.RolloutBuffer, "compute"), (train.Run, "end_iteration")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]
    for owner, name, fn in originals:
        def timed(*args, _fn=fn, _name=f"{owner.__name__}.{name}", **kwargs):
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - start
        setattr(owner, name, timed)
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def whole_runs(overrides: list[str], runs: int, seed: int) -> list[float]:
    from rlrun.train import train

    seconds = []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = zoo_config([f"seed={seed + i}", *overrides], tmp)
            totals: dict[str, float] = defaultdict(float)
            start = time.perf_counter()
            with timers(totals):
                summary = train(cfg)
            wall = time.perf_counter() - start
        seconds.append(wall)
        loop = summary["steps"] / summary["sps"]  # training seconds, evaluation excluded
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in totals.items())
        rest = loop - sum(totals.values())
        print(f"run {i} (seed {seed + i}): {wall:.2f} s in train(), loop {loop:.2f} s = {parts}, "
              f"collection and the rest {rest:.2f} s; final eval return {summary['final_eval_return']}")
    return seconds


def sb3_run(seed: int) -> float:
    """Stable-Baselines3 PPO with RL Zoo's CartPole-v1 hyperparameters for the same 100k steps."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    def linear(start: float):
        return lambda remaining: remaining * start

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), device="cpu", seed=seed, verbose=0)
    start = time.perf_counter()
    model.learn(ZOO_STEPS)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="whole training runs (seeds seed, seed+1, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20, help="timings per micro-benchmark (the best counts)")
    parser.add_argument("--no-run", action="store_true", help="micro-benchmarks only")
    parser.add_argument("--sb3", action="store_true", help="also time Stable-Baselines3 on the same work")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on top of experiment=ppo_cartpole_zoo")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        micro(zoo_config([f"seed={args.seed}", *args.overrides], tmp), args.repeats)
    if args.no_run:
        return
    seconds = whole_runs(args.overrides, args.runs, args.seed)
    print(f"whole run: median {statistics.median(seconds):.2f} s over {len(seconds)} run(s)")
    if args.sb3:
        sb3 = sb3_run(args.seed)
        print(f"SB3 same work: {sb3:.2f} s; rlrun / SB3 = {statistics.median(seconds) / sb3:.3f}")


if __name__ == "__main__":
    main()
