"""The shipped presets on CartPole and Pendulum, seed by seed: steps and seconds to the threshold, final return.

Each run is `rlrun train algo=<a> env=<e> seed=<s>` with its preset, on the CPU with one torch thread, in a
process of its own. On CartPole a run stops at the first evaluation >= 475 (``eval.stop_at_threshold``);
Pendulum has no threshold and runs its preset's budget. With ``--before REV`` every run is repeated with
the rlrun of that git revision (checked out into a temporary worktree), in the same script run, so a change
in the code is measured against the code before it on the same machine at the same time. Env steps are
deterministic per seed on the CPU; seconds depend on what else the machine does.

    python scripts/bench_presets.py                                   # every algorithm, CartPole, seeds 0-2
    python scripts/bench_presets.py --algos ppo trpo --envs Pendulum --seeds 0 1 2
    python scripts/bench_presets.py --before cf342cb~1 --algos a2c vpg   # before/after a change
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from trees import ROOT, checkout, run_in_tree

ONE_RUN = """
import json, sys
from hydra import compose, initialize_config_module
import rlrun
from rlrun.train import train
algo, env, seed, run_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
overrides = [f"algo={algo}", f"env={env}", f"seed={seed}", "progress=false", "device=cpu", "torch_threads=1",
             f"run_dir={run_dir}"]
if env == "CartPole":
    overrides.append("eval.stop_at_threshold=true")
with initialize_config_module("rlrun.conf", version_base=None):
    cfg = compose("config", overrides=overrides)
summary = train(cfg)
summary["rlrun"] = rlrun.__file__
print("RESULT " + json.dumps(summary))
"""


def run(tree: Path, algo: str, env: str, seed: int, workdir: Path) -> dict:
    """One run of the (algo, env) preset with the rlrun found in ``tree``; its summary."""
    return run_in_tree(tree, ONE_RUN, algo, env, str(seed), str(workdir / f"{tree.name}_{algo}_{env}_s{seed}"))


def cell(summary: dict) -> str:
    if summary["reward_threshold"] is None or summary["env"].startswith("Pendulum"):
        return f"{summary['final_eval_return']:.0f} at {summary['steps'] // 1000}k"
    if summary["steps_to_threshold"] is None:
        return f"not solved in {summary['steps'] // 1000}k"
    return f"{summary['steps_to_threshold'] / 1000:.0f}k ({summary['seconds_to_threshold']:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "vpg", "a2c", "npg", "trpo", "dqn", "rainbow"])
    parser.add_argument("--envs", nargs="+", default=["CartPole"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--before", default=None, help="a git revision to measure against, in the same run")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        trees = {"now": ROOT}
        if args.before:
            trees = {f"before ({args.before})": stack.enter_context(checkout(args.before, Path(tmp) / "before")),
                     "now": ROOT}
        header = "| algo | env | code | " + " | ".join(f"seed {s}" for s in args.seeds) + " |"
        rows = [header, "|" + "---|" * (3 + len(args.seeds))]
        for env in args.envs:
            for algo in args.algos:
                for label, tree in trees.items():
                    summaries = [run(tree, algo, env, seed, Path(tmp)) for seed in args.seeds]
                    rows.append(f"| {algo} | {env} | {label} | " + " | ".join(map(cell, summaries)) + " |")
                    print(rows[-1], flush=True)
                    if args.out:
                        with args.out.open("a") as f:
                            for summary in summaries:
                                f.write(json.dumps({"code": label, **summary}) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
