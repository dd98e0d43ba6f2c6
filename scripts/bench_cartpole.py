"""CartPole yardstick: rlrun's PPO against Stable-Baselines3 on the same machine, in one run.

Protocol (the same for every contender): every 2,000 env steps, 10 deterministic episodes on a
separate env; evaluation time is excluded from the clock. Reported per contender over the seeds:
env steps and training seconds to the first evaluation with mean return >= 475 (median and range),
and the training seconds of the full same-work run.

    (a) rlrun's fastest CartPole preset on each env backend (stops once solved)
    (b) rlrun with RL Zoo's PPO CartPole hyperparameters (experiment=ppo_cartpole_zoo), 100k steps
    (c) Stable-Baselines3 with the same hyperparameters, 100k steps (pip install "rlrun[bench]")

It prints ratios rlrun/SB3 for time to solve ((a) best backend vs (c)) and for the same work
((b) vs (c)). Every contender runs with one torch thread, in this process, one after another.

    python scripts/bench_cartpole.py                 # 5 seeds, about 5 minutes on 2 cores
    python scripts/bench_cartpole.py --seeds 2 --skip-sb3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

THRESHOLD = 475.0
EVAL_EVERY = 2000
EVAL_EPISODES = 10
ZOO_STEPS = 100_000


def rlrun_run(overrides: list[str], seed: int, workdir: str) -> dict:
    """One in-process rlrun training run under the benchmark's evaluation protocol."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlrun.train import train

    GlobalHydra.instance().clear()
    with initialize_config_module("rlrun.conf", version_base=None):
        cfg = compose("config", overrides=[
            *overrides, f"seed={seed}", "progress=false", "torch_threads=1", "device=cpu",
            f"eval.every_steps={EVAL_EVERY}", f"eval.episodes={EVAL_EPISODES}", f"run_dir={workdir}/{time.time_ns()}",
        ])
    summary = train(cfg)
    return {"steps_to_solve": summary["steps_to_threshold"], "seconds_to_solve": summary["seconds_to_threshold"],
            "train_seconds": summary["steps"] / summary["sps"], "steps": summary["steps"]}


def sb3_run(seed: int) -> dict:
    """SB3 PPO with RL Zoo's CartPole hyperparameters and the same evaluation protocol."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start

    class Protocol(BaseCallback):
        def __init__(self):
            super().__init__()
            self.eval_env = gym.make("CartPole-v1")
            self.eval_seconds = 0.0
            self.next_eval = EVAL_EVERY
            self.solved: tuple[int, float] | None = None
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += EVAL_EVERY
                start = time.perf_counter()
                returns = []
                for ep in range(EVAL_EPISODES):
                    obs, _ = self.eval_env.reset(seed=10_000 + seed + ep)
                    done, total = False, 0.0
                    while not done:
                        action, _ = self.model.predict(obs, deterministic=True)
                        obs, r, term, trunc, _ = self.eval_env.step(int(action))
                        total += r
                        done = term or trunc
                    returns.append(total)
                self.eval_seconds += time.perf_counter() - start
                if self.solved is None and np.mean(returns) >= THRESHOLD:
                    self.solved = (self.num_timesteps, time.perf_counter() - self.t0 - self.eval_seconds)
            return True

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu")
    callback = Protocol()
    callback.t0 = time.perf_counter()
    model.learn(total_timesteps=ZOO_STEPS, callback=callback)
    train_seconds = time.perf_counter() - callback.t0 - callback.eval_seconds
    steps, seconds = callback.solved or (None, None)
    return {"steps_to_solve": steps, "seconds_to_solve": seconds, "train_seconds": train_seconds,
            "steps": model.num_timesteps}


def describe(values: list[float | None], fmt: str) -> str:
    """'median [min, max]' over the seeds that got there, and how many did."""
    got = [v for v in values if v is not None]
    if not got:
        return f"never ({len(values)} seeds)"
    text = f"{statistics.median(got):{fmt}} [{min(got):{fmt}}, {max(got):{fmt}}]"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)} seeds)"


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if len(got) == len(values) and got else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per contender (default 5)")
    parser.add_argument("--skip-sb3", action="store_true", help="leave out Stable-Baselines3")
    parser.add_argument("--fast-steps", type=int, default=200_000, help="step budget of the fastest presets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    contenders: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        fast = ["algo=ppo", "env=CartPole", f"total_steps={args.fast_steps}", "eval.stop_at_threshold=true"]
        for backend in ("torch", "gymnasium"):
            name = f"(a) rlrun fastest preset, {backend} backend"
            contenders[name] = [rlrun_run([*fast, f"env.backend={backend}"], s, workdir) for s in seeds]
        zoo = ["experiment=ppo_cartpole_zoo", "env.backend=torch"]
        contenders["(b) rlrun, RL Zoo settings, 100k"] = [rlrun_run(zoo, s, workdir) for s in seeds]
    if not args.skip_sb3:
        try:
            contenders["(c) SB3, RL Zoo settings, 100k"] = [sb3_run(s) for s in seeds]
        except ImportError:
            print('Stable-Baselines3 is not installed (pip install "rlrun[bench]"): no ratios.')

    print(f"\nCartPole-v1, PPO, {len(seeds)} seeds, eval {EVAL_EPISODES} episodes every {EVAL_EVERY} steps "
          f"(eval time excluded), torch {torch.__version__}, 1 thread\n")
    print("| contender | steps to 475 | seconds to 475 | training seconds (whole run) | SPS |")
    print("|---|---|---|---|---|")
    for name, runs in contenders.items():
        sps = [r["steps"] / r["train_seconds"] for r in runs]
        print(f"| {name} | {describe([r['steps_to_solve'] for r in runs], ',.0f')} | "
              f"{describe([r['seconds_to_solve'] for r in runs], '.2f')} | "
              f"{describe([r['train_seconds'] for r in runs], '.2f')} | {statistics.median(sps):,.0f} |")
    sb3 = contenders.get("(c) SB3, RL Zoo settings, 100k")
    if sb3:
        sb3_solve, sb3_work = median([r["seconds_to_solve"] for r in sb3]), median([r["train_seconds"] for r in sb3])
        fastest = [median([r["seconds_to_solve"] for r in runs]) for name, runs in contenders.items()
                   if name.startswith("(a)")]
        fastest = min((f for f in fastest if f is not None), default=None)
        zoo_work = median([r["train_seconds"] for r in contenders["(b) rlrun, RL Zoo settings, 100k"]])
        print()
        if fastest is not None and sb3_solve:
            print(f"time-to-solve ratio rlrun/SB3 (medians): {fastest / sb3_solve:.3f}   (target <= 0.2)")
        else:
            print("time-to-solve ratio: undefined (a contender did not solve on every seed)")
        print(f"same-work ratio rlrun/SB3 (medians, 100k steps): {zoo_work / sb3_work:.3f}   (target <= 0.25)")


if __name__ == "__main__":
    main()
