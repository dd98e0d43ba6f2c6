"""AlphaZero against the clock: train a board game for a fixed training time, then score the checkpoints it wrote
along the way against fixed opponents (each colour in half the games) and on the labelled positions.

    python scripts/bench_alphazero.py --game TicTacToe --minutes 2 --every 0.25 --opponents perfect,random
    python scripts/bench_alphazero.py --game ConnectFour --minutes 30 --every 5 \
        --opponents random,alphabeta:5 --final-opponents mcts:1000 --games 100 -- algo.num_simulations=16

Training runs as ``rlrun train`` in a child process, stopped with SIGTERM after ``--minutes`` (it saves a
checkpoint and exits, as a preempted run does); checkpoints are written every ``--every`` minutes. Prints one row
per (checkpoint, opponent): training minutes, wins/draws/losses as first and as second player, score; the
mistake rate per checkpoint; self-play throughput (simulations/s, games/s) from the run's curves. ``--figure``
draws win rate against training minutes, one line per opponent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rlrun import checkpoint
from rlrun.evaluate import evaluate_run
from rlrun.plot import read_scalars


def train_for(game: str, minutes: float, every: float, run_dir: Path, extra: list[str]) -> None:
    """``rlrun train algo=alphazero env=<game>`` for ``minutes`` of wall time, checkpoints every ``every``."""
    cmd = [sys.executable, "-m", "rlrun.cli", "train", "algo=alphazero", f"env={game}", "total_steps=1000000000",
           "progress=false", f"checkpoint.every_minutes={every}", "checkpoint.keep=1000", f"hydra.run.dir={run_dir}",
           *extra]
    print("training:", " ".join(cmd[3:]), flush=True)
    child = subprocess.Popen(cmd)
    try:
        child.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)  # saves a last checkpoint and exits 143
        child.wait()


def colour_split(returns: list[float]) -> dict[str, str]:
    """W/D/L as first player (even games) and as second (odd games)."""
    out = {}
    for name, part in (("first", returns[0::2]), ("second", returns[1::2])):
        out[name] = f"{sum(r > 0 for r in part)}/{sum(r == 0 for r in part)}/{sum(r < 0 for r in part)}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="TicTacToe")
    parser.add_argument("--minutes", type=float, default=2.0, help="training wall time")
    parser.add_argument("--every", type=float, default=0.25, help="minutes between checkpoints")
    parser.add_argument("--opponents", default="perfect,random")
    parser.add_argument("--final-opponents", default="", help="opponents to score on the last checkpoint only")
    parser.add_argument("--games", type=int, default=100, help="games per opponent and checkpoint (even)")
    parser.add_argument("--opening-moves", type=int, default=None, help="random moves each game starts from")
    parser.add_argument("--simulations", type=int, default=None,
                        help="the agent's simulations per move when scoring (default: the run's algo.eval_simulations)")
    parser.add_argument("--last-only", action="store_true", help="score only the last checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/bench_alphazero_<game>_<time>")
    parser.add_argument("--skip-training", action="store_true", help="score the checkpoints already in --run-dir")
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="after --: more rlrun train overrides")
    args = parser.parse_args()
    run_dir = args.run_dir or Path("runs") / f"bench_alphazero_{args.game}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if not args.skip_training:
        train_for(args.game, args.minutes, args.every, run_dir, args.overrides)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

    paths = checkpoint.list_checkpoints(run_dir)
    paths = paths[-1:] if args.last_only else paths
    rows, curves = [], {}
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        minutes = state["train_seconds"] / 60
        last = path == paths[-1]
        for opponent in [*args.opponents.split(","), *(args.final_opponents.split(",") if last else [])]:
            if not opponent:
                continue
            t0 = time.perf_counter()
            result = evaluate_run(run_dir, episodes=args.games, checkpoint=str(path), opponent=opponent,
                                  opening_moves=args.opening_moves, simulations=args.simulations)
            split = colour_split(result["returns"])
            win_rate = result["wins"] / args.games
            row = {"step": result["step"], "train_minutes": round(minutes, 2), "opponent": opponent,
                   "first_wdl": split["first"], "second_wdl": split["second"], "win_rate": win_rate,
                   "score": round(result["score"], 3),
                   "mistake_rate": result["metrics"].get("eval/mistake_rate"), "eval_s": round(time.perf_counter() - t0)}
            rows.append(row)
            curves.setdefault(opponent, []).append((minutes, win_rate))
            print(json.dumps(row), flush=True)

    events = read_scalars(run_dir)
    throughput = {tag: sum(e.value for e in events.Scalars(tag)) / len(events.Scalars(tag))
                  for tag in ("charts/simulations_per_s", "charts/games_per_s", "charts/SPS")
                  if tag in events.Tags()["scalars"]}
    print("self-play throughput (mean over the logged iterations):",
          ", ".join(f"{k.split('/')[1]} {v:,.0f}" for k, v in throughput.items()))
    print("\n| step | training min | opponent | first W/D/L | second W/D/L | win rate | score | mistake rate |")
    print("|---:|---:|---|---|---|---:|---:|---:|")
    for r in rows:
        mistakes = "-" if r["mistake_rate"] is None else f"{r['mistake_rate']:.3f}"
        print(f"| {r['step']:,} | {r['train_minutes']:.1f} | {r['opponent']} | {r['first_wdl']} | {r['second_wdl']} "
              f"| {r['win_rate']:.2f} | {r['score']:.3f} | {mistakes} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "throughput": throughput}, indent=2))
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for opponent, points in curves.items():
            ax.plot(*zip(*points), marker="o", label=opponent)
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.set_ylabel(f"win rate ({args.games} games, both colours)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"AlphaZero on {args.game}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)
        print("figure:", args.figure)


if __name__ == "__main__":
    main()
