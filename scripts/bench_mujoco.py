"""MuJoCo yardstick: PPO and TRPO on HalfCheetah-v5 for 1M env steps with their shipped presets
(preset/ppo_mujoco.yaml, preset/trpo_mujoco.yaml), one after another in this process.

Not part of CI (hours of CPU time: ~400-500 env steps/s per run on a 2-core machine). Needs the
MuJoCo extra: ``pip install -e ".[mujoco]"``; runs headless. Reported per algorithm over the seeds:
final and best evaluation return (5 deterministic episodes every 50k steps), env steps per second,
training seconds; a JSON line per run goes to --out for plotting.

    python scripts/bench_mujoco.py                              # ppo and trpo, seed 0, 1M steps each
    python scripts/bench_mujoco.py --algos ppo trpo a2c --seeds 0 1 2 --steps 1000000
    python scripts/bench_mujoco.py --env Hopper --steps 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run(algo: str, env: str, seed: int, steps: int, workdir: str) -> dict:
    """One in-process training run with the (algo, env) preset."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlrun.train import train

    GlobalHydra.instance().clear()
    with initialize_config_module("rlrun.conf", version_base=None):
        cfg = compose("config", overrides=[
            f"algo={algo}", f"env={env}", f"seed={seed}", f"total_steps={steps}", "progress=false",
            "torch_threads=1", "device=cpu", f"run_dir={workdir}/{algo}_{env}_s{seed}_{time.time_ns()}",
        ])
    summary = train(cfg)
    return {"algo": algo, "env": env, "seed": seed, "steps": summary["steps"], "sps": summary["sps"],
            "train_seconds": round(summary["steps"] / summary["sps"], 1) if summary["sps"] else None,
            "final_eval_return": summary["final_eval_return"], "best_eval_return": summary["best_eval_return"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah", help="env config name (HalfCheetah, Hopper, Walker2d, Ant)")
    parser.add_argument("--algos", nargs="+", default=["ppo", "trpo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run here")
    args = parser.parse_args()
    try:
        import mujoco  # noqa: F401
    except ImportError:
        raise SystemExit('MuJoCo is not installed: pip install -e ".[mujoco]"') from None
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for algo in args.algos:
            for seed in args.seeds:
                row = run(algo, args.env, seed, args.steps, workdir)
                print(json.dumps(row), flush=True)
                results.setdefault(algo, []).append(row)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    print(f"\n{args.env}-v5, {args.steps} steps, seeds {args.seeds}")
    print(f"{'algo':<6} {'final return (median)':>22} {'best (median)':>14} {'steps/s':>9} {'train s':>9}")
    for algo, rows in results.items():
        med = lambda key: statistics.median(r[key] for r in rows if r[key] is not None)
        print(f"{algo:<6} {med('final_eval_return'):>22.1f} {med('best_eval_return'):>14.1f} "
              f"{med('sps'):>9.0f} {med('train_seconds'):>9.0f}")


if __name__ == "__main__":
    main()
