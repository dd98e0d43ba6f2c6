"""What ``algo.fused`` is worth: RL Zoo's PPO CartPole run (experiment=ppo_cartpole_zoo, 100k env steps,
7,820 gradient steps of two 64x64 MLPs) with the plain path and with the fused path, in one script run.

Each run is a process of its own with one torch thread; the contenders take turns, round after round, so
that a busy machine slows them alike. Reported: the median training seconds of each contender over the
rounds and the ratio to the plain path (< 1: faster). With ``--before REV`` the rlrun of that git revision
runs too (its own defaults), to compare against the code before a change.

    python scripts/bench_fused.py                      # 3 rounds
    python scripts/bench_fused.py --rounds 5 --before HEAD~1
    python scripts/bench_fused.py --algo a2c           # a2c's CartPole preset instead
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

from trees import ROOT, checkout, run_in_tree

ONE_RUN = """
import json, sys
from hydra import compose, initialize_config_module
import rlrun
from rlrun.train import train
run_dir, *overrides = sys.argv[1:]
with initialize_config_module("rlrun.conf", version_base=None):
    cfg = compose("config", overrides=[*overrides, "progress=false", "device=cpu", "torch_threads=1",
                                       "eval.every_steps=0", f"run_dir={run_dir}"])
summary = train(cfg)
print("RESULT " + json.dumps({"seconds": summary["steps"] / summary["sps"], "rlrun": rlrun.__file__,
                              "final": summary["final_eval_return"]}))
"""


def run(tree: Path, overrides: list[str], run_dir: Path) -> dict:
    return run_in_tree(tree, ONE_RUN, str(run_dir), *overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algo", default="ppo", help="ppo (RL Zoo's settings) or another algo's CartPole preset")
    parser.add_argument("--before", default=None, help="a git revision to run as well, with its own defaults")
    args = parser.parse_args()
    base = ["experiment=ppo_cartpole_zoo"] if args.algo == "ppo" else [f"algo={args.algo}", "env=CartPole",
                                                                        "eval.stop_at_threshold=false"]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        contenders = {"plain": (ROOT, [*base, "algo.fused=false"]), "fused": (ROOT, [*base, "algo.fused=true"])}
        if args.before:
            contenders[f"before ({args.before})"] = (stack.enter_context(checkout(args.before, Path(tmp) / "before")),
                                                    base)
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(args.rounds):
            for name, (tree, overrides) in contenders.items():
                result = run(tree, overrides, Path(tmp) / f"{name.split()[0]}_{r}")
                seconds[name].append(result["seconds"])
                print(f"round {r}: {name:<24} {result['seconds']:6.2f} s  final eval {result['final']:.0f}",
                      flush=True)
    reference = statistics.median(seconds["plain"])
    print(f"\n| contender | median training seconds ({args.rounds} rounds) | ratio to plain |\n|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} [{min(values):.2f}, {max(values):.2f}] | {median / reference:.2f} |")


if __name__ == "__main__":
    main()
