"""The lecture's DQN ablation on CartPole as one Hydra multirun, then a table of the results.

    python scripts/ablate_dqn.py                       # 14 variants x seeds 0,1,2, 100k steps each
    python scripts/ablate_dqn.py --seeds 0 --steps 30000 --variants naive dqn rainbow
    python scripts/ablate_dqn.py --variants naive replay target dqn rainbow many_envs many_envs_ln pqn
    python scripts/ablate_dqn.py hydra/launcher=joblib hydra.launcher.n_jobs=2   # 2 jobs at a time (~25 min, 2 cores)

Variants: naive online Q-learning (no replay, no target network), +replay, +target network, dqn
(both), dqn plus each Rainbow component alone, and all six (rainbow); then PQN's answer to the same
problems, switch by switch: naive Q-learning on many envs (algo=pqn without LayerNorm and with
lambda = 0: one-step targets from the online network, no replay, no target network), + LayerNorm,
+ Q(lambda) returns (= pqn). Each variant is a small config file (``# @package _global_``, which also
picks its algorithm) written to a temporary folder that the sweep adds to Hydra's search path, so the
whole study is one `rlrun train -m +ablation=...,... seed=...` command whose jobs land in one sweep
folder (compare them with `tensorboard --logdir <that folder>`). The DQN variants start from algo=dqn
env=CartPole (preset/dqn_CartPole.yaml), the PQN ones from algo=pqn env=CartPole
(preset/pqn_CartPole.yaml); every variant evaluates every 5k steps (the DQN preset's interval).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONLINE = {"train_frequency": 4, "gradient_steps": 1, "learning_starts": 0}  # without replay: one step per env step
C51_CARTPOLE = {"distributional": True, "v_min": 0.0, "v_max": 100.0}  # returns <= 1 / (1 - gamma) = 100
NO_EPSILON = {"noisy": True, "eps_start": 0.0, "eps_end": 0.0}  # noisy nets explore by themselves
VARIANTS: dict[str, dict] = {
    "naive": {"replay": False, "target_network": False, **ONLINE},
    "replay": {"target_network": False},
    "target": {"replay": False, **ONLINE},
    "dqn": {},
    "double": {"double": True},
    "prioritized": {"prioritized": True, "per_alpha": 0.5},
    "dueling": {"dueling": True},
    "n_step": {"n_step": 3},
    "distributional": C51_CARTPOLE,
    "noisy": NO_EPSILON,
    "rainbow": {"double": True, "prioritized": True, "per_alpha": 0.5, "dueling": True, "n_step": 3,
                **C51_CARTPOLE, **NO_EPSILON, "adam_eps": 1.5e-4},
    # PQN (algo=pqn): many envs instead of replay, LayerNorm instead of a target network, Q(lambda)
    "many_envs": {"layer_norm": False, "q_lambda": 0.0},
    "many_envs_ln": {"q_lambda": 0.0},
    "pqn": {},
}
PQN_VARIANTS = ("many_envs", "many_envs_ln", "pqn")
EVAL_EVERY = 5000  # preset/dqn_CartPole.yaml's; the PQN preset's 2000 would give its variants a finer grid


def write_variants(folder: Path, names: list[str]) -> None:
    group = folder / "ablation"
    group.mkdir(parents=True)
    for name in names:
        algo = "pqn" if name in PQN_VARIANTS else "dqn"
        lines = ["# @package _global_", "defaults:", f"  - override /algo: {algo}", "algo:"]
        lines += [f"  {k}: {json.dumps(v)}" for k, v in VARIANTS[name].items()]
        if not VARIANTS[name]:
            lines[-1] = "algo: {}"
        (group / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def table(sweep: Path) -> str:
    rows: dict[str, list[dict]] = {}
    for path in sorted(sweep.rglob("summary.json")):
        overrides = (path.parent / ".hydra" / "overrides.yaml").read_text()
        variant = next(line.split("=", 1)[1].strip() for line in overrides.splitlines() if "+ablation=" in line)
        rows.setdefault(variant, []).append(json.loads(path.read_text()))
    out = ["| variant | seeds | final eval (mean +- sd) | best eval | solved | steps to 475 (median) | SPS |",
           "|---|---|---|---|---|---|---|"]
    for name in [v for v in VARIANTS if v in rows]:
        runs = rows[name]
        final = [r["final_eval_return"] or 0.0 for r in runs]
        solved = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        sd = statistics.stdev(final) if len(final) > 1 else 0.0
        out.append(f"| {name} | {len(runs)} | {statistics.mean(final):.1f} +- {sd:.1f} | "
                   f"{statistics.mean(r['best_eval_return'] or 0.0 for r in runs):.1f} | {len(solved)}/{len(runs)} | "
                   f"{statistics.median(solved) if solved else '-'} | {statistics.mean(r['sps'] for r in runs):.0f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default="runs/ablate_dqn", help="sweep folder")
    parser.add_argument("extra", nargs="*", help="more overrides for every job, e.g. eval.episodes=5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_variants(Path(tmp), args.variants)
        # no algo= here: a command-line choice would win over each variant's `override /algo`
        cmd = [sys.executable, "-m", "rlrun.cli", "train", "-m", "env=CartPole", f"eval.every_steps={EVAL_EVERY}",
               f"hydra.searchpath=[file://{tmp}]", f"+ablation={','.join(args.variants)}",
               f"seed={','.join(args.seeds)}", f"total_steps={args.steps}", "progress=false",
               f"hydra.sweep.dir={args.out}", *args.extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(table(Path(args.out)))


if __name__ == "__main__":
    main()
