"""GPU throughput: the same training runs on the CPU and on CUDA, in one process, as ratios.

Every case trains for a fixed number of env steps (evaluation time excluded, as in summary.json's
``sps``) once with ``device=cpu`` and once with ``device=cuda``, on the same machine in the same
run, and prints steps per second and the ratio cuda/cpu. The CPU reference uses
``--cpu-threads`` torch threads (1 suits the MLP cases; the CNN cases get ``--cnn-threads``).
The env-only rows step the tensor CartPole with random actions (no learning).

    python scripts/bench_gpu.py                  # about 10 minutes on a 16-core H100 machine
    python scripts/bench_gpu.py --only cartpole  # the CartPole rows alone

Needs a CUDA GPU; the Atari rows need ale-py.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

# name, overrides, steps on cuda, steps on cpu (the CPU gets fewer where it is slow: SPS is a rate)
CASES = [
    ("ppo CartPole 8 envs (preset)", ["algo=ppo", "env=CartPole"], 100_000, 100_000, "mlp"),
    ("ppo CartPole 1,024 envs x 16 steps", ["algo=ppo", "env=CartPole", "env.num_envs=1024", "algo.num_steps=16",
                                            "algo.minibatch_size=4096", "algo.update_epochs=4"], 2_000_000, 500_000,
     "mlp"),
    ("ppo CartPole 4,096 envs x 16 steps", ["algo=ppo", "env=CartPole", "env.num_envs=4096", "algo.num_steps=16",
                                            "algo.minibatch_size=16384", "algo.update_epochs=4"], 4_000_000, 1_000_000,
     "mlp"),
    ("dqn CartPole (preset)", ["algo=dqn", "env=CartPole"], 30_000, 30_000, "mlp"),
    ("rainbow CartPole (preset)", ["algo=rainbow", "env=CartPole"], 15_000, 15_000, "mlp"),
    ("ppo Pong 8 envs (preset)", ["algo=ppo", "env=Pong", "env.num_envs=8"], 40_960, 8_192, "cnn"),
    ("dqn Pong 4 envs (preset, updates from step 2k)", ["algo=dqn", "env=Pong", "algo.learning_starts=2000",
                                                       "algo.buffer_size=100000"], 40_000, 8_000, "cnn"),
    ("rainbow Pong 4 envs (preset, updates from step 2k)", ["algo=rainbow", "env=Pong", "algo.learning_starts=2000",
                                                           "algo.buffer_size=100000"], 20_000, 6_000, "cnn"),
]


def run(overrides: list[str], device: str, steps: int, threads: int, workdir: str) -> float:
    """Train ``steps`` env steps in-process; the training SPS (evaluation excluded)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlrun.train import train

    GlobalHydra.instance().clear()
    with initialize_config_module("rlrun.conf", version_base=None):
        cfg = compose("config", overrides=[
            *overrides, f"device={device}", f"total_steps={steps}", f"torch_threads={threads}", "progress=false",
            "eval.every_steps=0", "eval.episodes=1", "checkpoint.every_steps=0", f"run_dir={workdir}/{time.time_ns()}",
        ])
    return float(train(cfg)["sps"])


def env_only(device: str, num_envs: int, steps: int) -> float:
    """Random-action steps per second of the tensor CartPole (all envs together)."""
    from rlrun.envs.cartpole import CartPoleVecEnv

    env = CartPoleVecEnv(num_envs, torch.device(device))
    env.reset(seed=0)
    actions = torch.randint(0, 2, (steps // num_envs, num_envs), device=device)
    env.step(actions[0])
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    if device != "cpu":
        torch.cuda.synchronize()
    return actions.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads for the MLP cases")
    parser.add_argument("--cnn-threads", type=int, default=8, help="torch threads for the CNN cases (cpu and cuda)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this text")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False).")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads available: "
          f"{torch.get_num_threads()}")
    rows = []
    if "cartpole" in args.only.lower() or not args.only:
        for n in (4096, 65536):
            cpu, cuda = env_only("cpu", n, 50 * n), env_only("cuda", n, 200 * n)
            rows.append((f"env only: tensor CartPole, {n:,} envs", cpu, cuda))
            print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for name, overrides, cuda_steps, cpu_steps, kind in CASES:
            if args.only and args.only.lower() not in name.lower():
                continue
            threads = args.cpu_threads if kind == "mlp" else args.cnn_threads
            cpu = run(overrides, "cpu", cpu_steps, threads, workdir)
            cuda = run(overrides, "cuda", cuda_steps, threads, workdir)
            rows.append((name, cpu, cuda))
            print(rows[-1], flush=True)
    print(f"\n| case | cpu SPS | cuda SPS | cuda/cpu |\n|---|---:|---:|---:|")
    for name, cpu, cuda in rows:
        print(f"| {name} | {cpu:,.0f} | {cuda:,.0f} | {cuda / cpu:.2f} |")


if __name__ == "__main__":
    main()
