"""Population training against the sweeps it replaces: 16 seeds of RL Zoo's PPO CartPole run, in one script.

    (a)  rlrun train -m experiment=ppo_cartpole_zoo 'seed=range(16)' hydra/launcher=population
         (one population of 16 with torch_threads=2), and (a') two populations of 8 dispatched through joblib
         (one core each)
    (b)  the same sweep with hydra/launcher=joblib, two jobs at a time (one core each)
    (c)  Stable-Baselines3 with the same hyperparameters, the same 16 seeds, two processes at a time

Every contender trains 100k env steps per seed and evaluates 10 deterministic episodes every 10,000 steps;
the wall time is the whole sweep's, evaluation, start-up and writing included. Printed: wall time, ratios
(a)/(c) and (a)/(b) (targets <= 0.1 and <= 0.25), and per contender how many seeds reached a mean evaluation
return of 475 and how many ended there, with the median env steps to the first such evaluation.

    python scripts/bench_population.py                     # about 6 minutes on 2 cores
    python scripts/bench_population.py --seeds 4 --skip-sb3
    python scripts/bench_population.py --dqn --seeds 8       # DQN's CartPole preset: population vs sweep
    python scripts/bench_population.py --members 1024,4096 --device cuda --steps 500000   # on a GPU: aggregate SPS

The last form trains populations of the given sizes in this process (tensor CartPole on the device) and prints
aggregate env steps per second against PureJaxRL's published ~10M steps/s for 2,048 PPO CartPole agents on an
A100 (Lu et al. 2022, 2,048 x 500k steps in ~98 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THRESHOLD = 475.0
EVAL_EVERY = 10_000
EVAL_EPISODES = 10
STEPS = 100_000
ZOO = ["experiment=ppo_cartpole_zoo", "env.backend=torch", "progress=false", "device=cpu",
       f"eval.every_steps={EVAL_EVERY}", f"eval.episodes={EVAL_EPISODES}"]


def rlrun_sweep(sweep_dir: Path, seeds: int, extra: list[str], base: list[str] = ZOO) -> dict:
    """One `rlrun train -m` sweep in a fresh process; its wall time and the jobs' summaries."""
    cmd = [sys.executable, "-m", "rlrun.cli", "train", "-m", *base, f"seed=range({seeds})",
           f"hydra.sweep.dir={sweep_dir}", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    if len(summaries) != seeds:
        raise RuntimeError(f"{sweep_dir}: {len(summaries)} summaries for {seeds} seeds")
    return {"wall": wall, "reached": [s["steps_to_threshold"] for s in summaries],
            "final": [s["final_eval_return"] for s in summaries]}


def sb3_seed(seed: int) -> dict:
    """SB3 PPO with RL Zoo's CartPole hyperparameters, evaluated like the rlrun runs."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)

    class Protocol(BaseCallback):
        def __init__(self):
            super().__init__()
            self.eval_env = gym.make("CartPole-v1")
            self.next_eval, self.reached, self.last = EVAL_EVERY, None, None

        def evaluate(self) -> float:
            returns = []
            for ep in range(EVAL_EPISODES):
                obs, _ = self.eval_env.reset(seed=10_000 + 100 * seed + ep)
                done, total = False, 0.0
                while not done:
                    action, _ = self.model.predict(obs, deterministic=True)
                    obs, r, term, trunc, _ = self.eval_env.step(int(action))
                    total, done = total + r, term or trunc
                returns.append(total)
            self.last = float(np.mean(returns))
            if self.reached is None and self.last >= THRESHOLD:
                self.reached = self.num_timesteps
            return self.last

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += EVAL_EVERY
                self.evaluate()
            return True

    linear = lambda start: (lambda remaining: remaining * start)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu")
    callback = Protocol()
    model.learn(total_timesteps=STEPS, callback=callback)
    callback.evaluate()  # the final evaluation, as rlrun's runs end with one
    return {"reached": callback.reached, "final": callback.last}


def sb3_sweep(seeds: int) -> dict:
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(sb3_seed, range(seeds), chunksize=1)
    return {"wall": time.perf_counter() - start, "reached": [r["reached"] for r in results],
            "final": [r["final"] for r in results]}


def describe(name: str, result: dict) -> str:
    reached = [s for s in result["reached"] if s is not None]
    ended = sum(f is not None and f >= THRESHOLD for f in result["final"])
    steps = f"{statistics.median(reached):,.0f}" if reached else "-"
    return f"| {name} | {result['wall']:.1f} | {len(reached)}/{len(result['reached'])} | {ended} | {steps} |"


def cpu_comparison(args: argparse.Namespace) -> None:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        results["(a) population of 16, torch_threads=2"] = rlrun_sweep(
            tmp / "a", args.seeds, ["hydra/launcher=population", "torch_threads=2", "+bench=population"])
        results["(a') 2 populations of 8, joblib"] = rlrun_sweep(
            tmp / "a2", args.seeds, ["hydra/launcher=population", f"hydra.launcher.max_size={max(1, args.seeds // 2)}",
                                     "hydra.launcher.dispatch=joblib", "hydra.launcher.dispatch_options.n_jobs=2",
                                     "+bench=population_joblib"])
        results["(b) ordinary sweep, joblib n_jobs=2"] = rlrun_sweep(
            tmp / "b", args.seeds, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+bench=ordinary"])
        if args.keep:
            print(f"sweeps kept in {tmp}; the figure: rlrun plot {tmp}/a {tmp}/b --group-by bench --out curves.png")
    if not args.skip_sb3:
        results["(c) SB3, 2 processes at a time"] = sb3_sweep(args.seeds)
    print(f"\nPPO CartPole-v1, RL Zoo settings, {STEPS:,} steps x {args.seeds} seeds, eval {EVAL_EPISODES} episodes "
          f"every {EVAL_EVERY:,} steps, {os.cpu_count()} cores\n")
    print("| contender | wall s | reached 475 | ended >= 475 | median steps to 475 |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        print(describe(name, result))
    a = min(results["(a) population of 16, torch_threads=2"]["wall"], results["(a') 2 populations of 8, joblib"]["wall"])
    b = results["(b) ordinary sweep, joblib n_jobs=2"]["wall"]
    print(f"\n(a)/(b) = {a / b:.3f} (target <= 0.25), the faster (a) form")
    if "(c) SB3, 2 processes at a time" in results:
        print(f"(a)/(c) = {a / results['(c) SB3, 2 processes at a time']['wall']:.3f} (target <= 0.1)")


def dqn_comparison(args: argparse.Namespace) -> None:
    """DQN's CartPole preset (preset/dqn_CartPole.yaml, 100k steps, evaluation every 5k) for the seeds: one
    population against the ordinary sweep, two jobs at a time."""
    base = ["algo=dqn", "env=CartPole", "progress=false", "device=cpu"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        results[f"(a) population of {args.seeds}, torch_threads=2"] = rlrun_sweep(
            tmp / "dqn_a", args.seeds, ["hydra/launcher=population", "torch_threads=2", "+bench=population"], base)
        results["(b) ordinary sweep, joblib n_jobs=2"] = rlrun_sweep(
            tmp / "dqn_b", args.seeds, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+bench=ordinary"], base)
    print(f"\nDQN CartPole-v1 (preset), 100,000 steps x {args.seeds} seeds, {os.cpu_count()} cores\n")
    print("| contender | wall s | reached 475 | ended >= 475 | median steps to 475 |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        print(describe(name, result))
    a, b = (r["wall"] for r in results.values())
    print(f"\n(a)/(b) = {a / b:.3f}")


def device_throughput(args: argparse.Namespace) -> None:
    """Populations of the given sizes in this process: aggregate env steps per training second."""
    import torch
    from hydra import compose, initialize_config_module

    from rlrun.config import register_schemas
    from rlrun.population.train import train_population

    register_schemas()
    print(f"\nPPO CartPole-v1 populations (RL Zoo settings, {args.steps:,} steps per member) on {args.device}:")
    print("| members | wall s | aggregate SPS | members >= 475 at the end |")
    print("|---|---|---|---|")
    for size in (int(m) for m in args.members.split(",")):
        with tempfile.TemporaryDirectory() as tmp, initialize_config_module("rlrun.conf", version_base=None):
            cfgs = [compose("config", overrides=[*ZOO[:-4], f"device={args.device}", "progress=false",
                                                 f"total_steps={args.steps}", f"eval.every_steps={args.steps}",
                                                 f"seed={s}", f"run_dir={tmp}/m{s}", "checkpoint.every_minutes=0"])
                    for s in range(size)]
            start = time.perf_counter()
            summaries = train_population(cfgs)
            wall = time.perf_counter() - start
        sps = sum(s["steps"] for s in summaries) / max(s["steps"] / s["sps"] for s in summaries)
        ended = sum((s["final_eval_return"] or 0) >= THRESHOLD for s in summaries)
        print(f"| {size:,} | {wall:.1f} | {sps:,.0f} | {ended}/{size} |", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print("\nPureJaxRL (Lu et al. 2022): 2,048 agents x 500k steps in ~98 s on an A100, ~10M aggregate steps/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16, help="seeds per contender (default 16)")
    parser.add_argument("--skip-sb3", action="store_true", help="leave out Stable-Baselines3")
    parser.add_argument("--keep", help="keep the rlrun sweeps in this folder (for rlrun plot) instead of a temporary one")
    parser.add_argument("--dqn", action="store_true", help="DQN's CartPole preset instead: population vs sweep")
    parser.add_argument("--members", help="population sizes for the throughput table, e.g. 1024,4096")
    parser.add_argument("--device", default="cpu", help="device of the throughput table (default cpu)")
    parser.add_argument("--steps", type=int, default=STEPS, help="env steps per member in the throughput table")
    args = parser.parse_args()
    if args.members:
        device_throughput(args)
    elif args.dqn:
        dqn_comparison(args)
    else:
        cpu_comparison(args)


if __name__ == "__main__":
    main()
