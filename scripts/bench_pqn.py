"""PQN against rlrun's own DQN on CartPole: training seconds to solve with each shipped preset, in one script.

Protocol (scripts/bench_cartpole.py's, the same for both): every 2,000 env steps, 10 deterministic
episodes on a separate env; evaluation time is excluded from the clock (summary.json's
``seconds_to_threshold``). Each contender trains with its preset (preset/pqn_CartPole.yaml,
preset/dqn_CartPole.yaml) for at most 100k env steps and stops at the first evaluation >= 475.
Both run in this process with one torch thread, one after the other, alternating per seed so that
a change in the machine's load hits both alike.

It prints env steps and seconds to 475 per seed and the ratio PQN / DQN of the median seconds
(the issue's target: <= 0.2). CleanRL's published pqn.py time, 0.83 min for a whole 500k-step run,
is the outside reference.

    python scripts/bench_pqn.py              # seeds 0, 1, 2: about 2 minutes on 2 cores
    python scripts/bench_pqn.py --seeds 5
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from bench_cartpole import EVAL_EPISODES, EVAL_EVERY, THRESHOLD, describe, median, rlrun_run

BUDGET = 100_000
CONTENDERS = {"dqn": ["algo=dqn", "env=CartPole"], "pqn": ["algo=pqn", "env=CartPole"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per contender (default 3)")
    parser.add_argument("--steps", type=int, default=BUDGET, help="step budget of each run (default 100k)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    common = ["env.backend=torch", f"total_steps={args.steps}", "eval.stop_at_threshold=true"]
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            for name, overrides in CONTENDERS.items():
                runs[name].append(rlrun_run([*overrides, *common], seed, workdir))

    print(f"\nCartPole-v1, shipped presets, {args.seeds} seeds, eval {EVAL_EPISODES} episodes every {EVAL_EVERY} "
          f"steps (eval time excluded), budget {args.steps:,} steps, torch {torch.__version__}, 1 thread\n")
    print("| seed | " + " | ".join(f"{n} steps to {THRESHOLD:.0f} | {n} seconds" for n in CONTENDERS) + " |")
    print("|---|" + "---|---|" * len(CONTENDERS))
    for seed in range(args.seeds):
        cells = []
        for name in CONTENDERS:
            r = runs[name][seed]
            cells += [f"{r['steps_to_solve']:,}" if r["steps_to_solve"] is not None else "never",
                      f"{r['seconds_to_solve']:.2f}" if r["seconds_to_solve"] is not None else "-"]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    for name in CONTENDERS:
        print(f"{name}: steps to {THRESHOLD:.0f} {describe([r['steps_to_solve'] for r in runs[name]], ',.0f')}, "
              f"seconds {describe([r['seconds_to_solve'] for r in runs[name]], '.2f')}")
    pqn, dqn = (median([r["seconds_to_solve"] for r in runs[n]]) for n in ("pqn", "dqn"))
    if pqn is not None and dqn:
        print(f"\ntime-to-solve ratio PQN/DQN (medians): {pqn:.2f} s / {dqn:.2f} s = {pqn / dqn:.3f}   (target <= 0.2)")
    else:
        print("\ntime-to-solve ratio: undefined (a contender did not solve on every seed)")


if __name__ == "__main__":
    main()
