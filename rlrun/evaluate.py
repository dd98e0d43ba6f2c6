"""``rlrun eval <run folder>``: score a run's checkpoint over N episodes, optionally record or show some.

The scored episodes run exactly as training's periodic evaluation does: the env and agent come from
:func:`rlrun.train.build` with the run's own config, the observation statistics come from the
checkpoint's env state (:func:`rlrun.envs.wrappers.wrap` shares them, frozen, with the evaluation env), and
:func:`rlrun.run.evaluate` plays the first episode of each env of the batch, reporting the raw game
score. ``--video`` and ``--render human`` play extra episodes on one gymnasium env that can draw itself
(:func:`make_rendered_env`), with the same observation preprocessing, so the scores never depend on
whether a video was asked for.

Checkpoints are read by :func:`rlrun.checkpoint.load`, i.e. ``torch.load(weights_only=True)``: tensors
and plain data only, so a tampered file is refused instead of running code.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch

from rlrun.checkpoint import PATTERN, CheckpointError, latest, list_checkpoints
from rlrun.checkpoint import load as load_checkpoint
from rlrun.config import ConfigError, TrainConfig, load
from rlrun.envs import is_game_id, resolve_backend
from rlrun.envs.base import VecEnv
from rlrun.envs.render import RenderError, has_display, make_rendered_env
from rlrun.envs.wrappers import observation_statistics, wrap
from rlrun.logger import write_json
from rlrun.run import evaluate
from rlrun.trackers import upload_videos
from rlrun.train import build, resolve_device, seed_everything

DEFAULT_SEED = 100_000
"""Env seed of the first episode (episode i gets seed + i): the same for every run, so runs and checkpoints are
compared on the same starts; training's seeds are hashed from (run seed, purpose, counter) and never this one."""
MAX_BATCH = 64
"""Episodes played at once (one env each); more are played in further batches."""
LIST_RETURNS = 20
"""Print each episode's return when there are at most this many."""


class EvalError(ValueError):
    """Bad input to ``rlrun eval``; the message is meant for the user as it is."""


# --------------------------------------------------------------------------- the run folder and its checkpoint
def _check_run_dir(run_dir: Path) -> None:
    """Refuse what is not a run folder written by `rlrun train`, saying what it is instead."""
    if not run_dir.exists():
        raise EvalError(f"{run_dir} does not exist: give the run folder that `rlrun train` wrote "
                        "(runs/<env>__<algo>__s<seed>__<time>).")
    if not run_dir.is_dir():
        hint = f" To evaluate that checkpoint, give its run folder and --checkpoint {run_dir}." \
            if run_dir.suffix == ".pt" else ""
        raise EvalError(f"{run_dir} is a file, not a run folder.{hint}")
    markers = ("checkpoints", "summary.json", ".hydra")
    if any((run_dir / name).exists() for name in markers):
        return
    runs = sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "checkpoints").is_dir())
    hint = (f" It holds {len(runs)} run folder(s), e.g. {runs[0]}: give one of them."
            if runs else " Give the folder that `rlrun train` wrote (runs/<env>__<algo>__s<seed>__<time>).")
    raise EvalError(f"{run_dir} is not a run folder: it has no checkpoints/, summary.json or .hydra/.{hint}")


def _step_of(path: Path) -> int:
    return int(PATTERN.match(path.name).group(1))


def find_checkpoint(run_dir: Path, which: str | None = None) -> Path:
    """The run's latest checkpoint, or the one ``which`` names: a step number or a path to a ``.pt`` file."""
    if which is None:
        return latest(run_dir)  # CheckpointError naming the folder it looked in
    found = list_checkpoints(run_dir)
    if which.isdigit():
        for path in found:
            if _step_of(path) == int(which):
                return path
    else:
        for path in (Path(which), run_dir / "checkpoints" / which):
            if path.is_file():
                return path
    steps = ", ".join(str(_step_of(p)) for p in found) or "none"
    raise EvalError(f"--checkpoint {which}: there is no such checkpoint in {run_dir / 'checkpoints'} "
                    f"(the steps there: {steps}); give one of those steps or the path of a step_<N>.pt file.")


def load_run(path: Path, device: torch.device) -> tuple[TrainConfig, dict[str, Any]]:
    """The typed config and the state of a checkpoint, read without unpickling objects."""
    state = load_checkpoint(path, device)  # weights_only=True; CheckpointError if corrupt or tampered with
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path} has no 'config' entry, so the run it belongs to cannot be rebuilt.")
    try:
        cfg = load(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"The config saved in {path} is no longer accepted: {err}") from None
    return cfg, state


def build_agent(cfg: TrainConfig, state: dict[str, Any], num_envs: int, device: torch.device,
                path: Path) -> tuple[VecEnv, Any]:
    """An evaluation env of ``num_envs`` envs and the checkpoint's agent, both as training built them.

    :func:`rlrun.train.build` makes a training env too: with one env it is cheap, and loading the checkpoint's
    env state into it fills the observation statistics that the evaluation env shares (frozen).
    """
    small = dataclasses.replace(
        cfg, env=dataclasses.replace(cfg.env, num_envs=1, vector_mode="sync"),
        eval=dataclasses.replace(cfg.eval, episodes=num_envs))
    env, eval_env, agent = build(small, device)
    try:
        env.load_state_dict(state.get("env", {}))
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        eval_env.close()
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit the config saved in it ({first}).") from None
    finally:
        env.close()
    agent.set_progress(min(1.0, int(state["step"]) / cfg.total_steps))  # DQN's epsilon for --stochastic
    return eval_env, agent


# --------------------------------------------------------------------------- evaluation
def evaluate_run(
    run_dir: str | Path,
    episodes: int = 10,
    deterministic: bool = True,
    seed: int = DEFAULT_SEED,
    checkpoint: str | None = None,
    device: str = "cpu",
    video: bool = False,
    video_dir: str | Path | None = None,
    render: str | None = None,
    render_episodes: int = 1,
    opponent: str | None = None,
    simulations: int | None = None,
    opening_moves: int | None = None,
) -> dict[str, Any]:
    """Score ``episodes`` episodes of a run's checkpoint (the latest, or ``checkpoint``: a step or a path).

    Episode i starts from env seed ``seed + i`` (as env i of a batch does in training's evaluation). With
    ``video`` (mp4s in ``video_dir``, default ``<run_dir>/videos/<step>``) or ``render="human"`` (a window),
    ``render_episodes`` more episodes are played on one rendering env, from seeds ``seed``, ``seed + 1``, ...
    Seeds torch and numpy (as training does), so ``--stochastic`` results repeat too. A board game's run plays
    ``opponent`` (default: the run's ``env.opponent``), the agent first in every other game; the result then has
    wins, draws, losses, a 95% interval of the score and the mistake rate on labelled positions; ``simulations``
    sets its search budget, ``opening_moves`` the random moves each game starts from.
    Raises :class:`EvalError`, :class:`~rlrun.checkpoint.CheckpointError` or :class:`~rlrun.config.ConfigError`
    with a message for the user.
    """
    run_dir = Path(run_dir)
    check_request(episodes, seed, video, render, render_episodes)
    _check_run_dir(run_dir)
    dev = resolve_device(device)
    path = find_checkpoint(run_dir, checkpoint)
    cfg, state = load_run(path, dev)
    step = int(state["step"])
    game = is_game_id(cfg.env.id)
    if opponent is not None:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, opponent=check_opponent(cfg, opponent)))
    if simulations is not None:
        if not game:
            raise EvalError(f"--simulations {simulations} is for the board games' search (algo=alphazero); this "
                            f"run is algo={cfg.algo.name} on {cfg.env.id}.")
        cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, eval_simulations=simulations))
    if opening_moves is not None:
        if not game or not 0 <= opening_moves <= 4:
            raise EvalError(f"--opening-moves {opening_moves} is not accepted: board games only, from 0 to 4.")
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, opening_moves=opening_moves))

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    eval_env = shown_env = None
    try:
        seed_everything(seed)
        batch = min(episodes, MAX_BATCH)
        eval_env, agent = build_agent(cfg, state, batch, dev, path)
        folder = (Path(video_dir) if video_dir else run_dir / "videos" / str(step)) if video else None
        if video or render:  # built first, so an env that cannot draw itself is refused before any episode
            shown_env = _shown_env(cfg, eval_env, "human" if render else "rgb_array", dev, folder)
        returns: list[float] = []
        for start in range(0, episodes, batch):  # env i of this batch starts from seed + start + i
            got = evaluate(agent.policy, eval_env, seed + start, deterministic)
            returns += got[: episodes - start].tolist()
        metrics = eval_env.evaluation_metrics(torch.tensor(returns), agent.policy) if game else {}
        rendered = None
        if shown_env is not None:
            rendered = play_shown(agent.policy, shown_env, seed, deterministic, render_episodes, folder)
            if folder is not None and cfg.logger.wandb:  # the run is tracked: its videos join its W&B run
                rendered["wandb"] = upload_videos(cfg.logger, run_dir, [Path(v) for v in rendered["videos"]], step)
    finally:
        for env in (shown_env, eval_env):
            if env is not None:
                env.close()
        torch.set_num_threads(threads)

    values = torch.tensor(returns, dtype=torch.float64)
    return {
        "run_dir": str(run_dir), "checkpoint": str(path), "step": step,
        "algo": cfg.algo.name, "env": cfg.env.id, "backend": resolve_backend(cfg.env),
        "episodes": episodes, "deterministic": deterministic, "seed": seed, "device": str(dev),
        "returns": returns, "mean": float(values.mean()), "std": float(values.std(unbiased=False)),
        "min": float(values.min()), "max": float(values.max()),
        "rendered": rendered,
        **(game_result(cfg.env.opponent, returns, metrics) if game else {}),
    }


def check_opponent(cfg: TrainConfig, spec: str) -> str:
    """``--opponent spec`` for a board game's run, or an EvalError saying what is accepted."""
    from rlrun.search.games import GAMES
    from rlrun.search.opponents import make_opponent

    if not is_game_id(cfg.env.id):
        raise EvalError(f"--opponent {spec} is for the two-player board games ({', '.join(GAMES)}); this run "
                        f"trained on {cfg.env.id}, a single-agent env.")
    try:
        make_opponent(spec, GAMES[cfg.env.id](), "cpu", 0)
    except ValueError as err:
        raise EvalError(f"--opponent {spec}: {err}.") from None
    return spec


def game_result(opponent: str, returns: list[float], metrics: dict[str, float]) -> dict[str, Any]:
    """Wins, draws and losses against ``opponent``; the score (win 1, draw 1/2) with its 95% Wilson interval."""
    n = len(returns)
    wins, draws = sum(r > 0 for r in returns), sum(r == 0 for r in returns)
    score = (wins + draws / 2) / n
    return {"opponent": opponent, "wins": wins, "draws": draws, "losses": n - wins - draws, "score": score,
            "score_interval": list(wilson_interval(score, n)), "metrics": metrics}


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed in ``n`` trials:

        (p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)

    z = 1.96: 95%. Unlike p -+ z sqrt(p (1 - p) / n), it stays inside [0, 1] and is not empty at p = 0 or 1.
    """
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)  # exact 0 and 1 despite rounding


def check_request(episodes: int, seed: int, video: bool, render: str | None, render_episodes: int) -> None:
    """Refuse, in one paragraph, what :func:`evaluate_run` cannot do, before any file is read."""
    if episodes < 1:
        raise EvalError(f"episodes={episodes} is not accepted: expected an integer >= 1.")
    if render_episodes < 1:
        raise EvalError(f"render_episodes={render_episodes} is not accepted: expected an integer >= 1.")
    top = 2**31 - max(episodes, render_episodes)  # env seeds are 31-bit; episode i uses seed + i
    if not 0 <= seed < top:
        raise EvalError(f"seed={seed} is not accepted: expected an integer in [0, {top}).")
    if render not in (None, "human"):
        raise EvalError(f"render={render!r} is not accepted: the one window mode is 'human' (use video for mp4s).")
    if render == "human" and video:
        raise EvalError("--render human and --video cannot be combined (an env draws either to a window or to "
                        "images): run rlrun eval twice.")
    if render == "human" and not has_display():
        raise EvalError("--render human needs a display, but neither $DISPLAY nor $WAYLAND_DISPLAY is set (a "
                        "headless machine or an ssh session without X forwarding). Record the episodes instead "
                        "with --video: mp4 files you can watch anywhere.")


def play_shown(policy, shown_env: VecEnv, seed: int, deterministic: bool, episodes: int,
               folder: Path | None) -> dict[str, Any]:
    """Play ``episodes`` episodes on the rendering env (a window, or mp4s in ``folder``); what was shown."""
    shown = [float(evaluate(policy, shown_env, seed + i, deterministic)[0]) for i in range(episodes)]
    shown_env.close()  # RecordVideo writes the last episode's mp4 here
    return {"mode": "rgb_array" if folder else "human", "episodes": episodes, "returns": shown,
            "video_dir": str(folder) if folder else None,
            "videos": [str(v) for i in range(episodes) if folder and (v := folder / f"eval-episode-{i}.mp4").is_file()]}


def _shown_env(cfg: TrainConfig, eval_env: VecEnv, mode: str, device: torch.device,
               video_dir: Path | None) -> VecEnv:
    """The rendering env with the evaluation env's observation wrappers and statistics."""
    env = make_rendered_env(cfg.env, mode, device, video_dir)
    expected, got = eval_env.single_observation_space, env.single_observation_space
    if got.shape != expected.shape or env.single_action_space != eval_env.single_action_space:
        env.close()
        raise EvalError(
            f"The rendering env for {cfg.env.id} does not match the one the agent was trained on (observations "
            f"{got.shape} vs {expected.shape}, actions {env.single_action_space} vs {eval_env.single_action_space}); "
            "evaluate without --video / --render.")
    return wrap(env, cfg.algo.env_switches(), training=False, obs_rms=observation_statistics(eval_env))


def format_result(result: dict[str, Any]) -> str:
    """The table ``rlrun eval`` prints."""
    policy = "deterministic" if result["deterministic"] else "stochastic"
    stats = [result[k] for k in ("mean", "std", "min", "max")]
    lines = [
        f"checkpoint  {result['checkpoint']} (step {result['step']})",
        (f"env         {result['env']} ({result['backend']} backend), algo {result['algo']}, {policy} policy, "
         f"seed {result['seed']}, device {result['device']}"),
        "",
        f"{'episodes':>8}" + "".join(f"{name:>12}" for name in ("mean", "std", "min", "max")),
        f"{result['episodes']:>8}" + "".join(f"{value:>12.2f}" for value in stats),
    ]
    if len(result["returns"]) <= LIST_RETURNS:
        lines.append("returns     " + " ".join(f"{r:g}" for r in result["returns"]))
    if "opponent" in result:
        lo, hi = result["score_interval"]
        lines.append(f"games       vs {result['opponent']} (the agent first in every other game): {result['wins']} won, "
                     f"{result['draws']} drawn, {result['losses']} lost; score {result['score']:.3f} "
                     f"(95% interval {lo:.3f}-{hi:.3f})")
        if "eval/mistake_rate" in result["metrics"]:
            by = ", ".join(f"{k.rsplit('_', 2)[-2]}-{k.rsplit('_', 1)[-1]} stones {v:.3f}"
                           for k, v in result["metrics"].items() if k.startswith("eval/mistake_rate_"))
            lines.append(f"mistakes    {result['metrics']['eval/mistake_rate']:.3f} of labelled positions ({by})")
    rendered = result.get("rendered")
    if rendered:
        label, where = ("video", f" -> {rendered['video_dir']}") if rendered["video_dir"] else ("window", "")
        shown = " ".join(f"{r:g}" for r in rendered["returns"])
        lines.append(f"{label:<12}{rendered['episodes']} more episode(s){where}, returns {shown}")
        if rendered.get("wandb"):
            lines.append(f"{'W&B':<12}{rendered['wandb']}")
    return "\n".join(lines)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one `rlrun: error:` paragraph and status 2, not argparse's usage dump
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlrun eval",
        description="Evaluate a run's checkpoint: play N episodes and print the mean, std, min and max return "
                    "(raw game scores). Optionally record some episodes as mp4 or show them in a window.",
    )
    parser.add_argument("run_dir", help="the run folder that `rlrun train` wrote (runs/<env>__<algo>__s<seed>__<time>)")
    parser.add_argument("--checkpoint", metavar="STEP|PATH",
                        help="a step of the run's checkpoints/, or a .pt file (a path, or a name in checkpoints/); "
                             "default: the latest")
    parser.add_argument("--episodes", "--games", type=_positive_int, default=10, metavar="N",
                        help="episodes (board games: games) to score (10)")
    parser.add_argument("--opponent", metavar="SPEC",
                        help="board games: who the agent plays, each colour in half the games: random, "
                             "alphabeta:<depth>, mcts:<simulations>, perfect (TicTacToe); default: the run's "
                             "env.opponent")
    parser.add_argument("--opening-moves", type=int, metavar="K",
                        help="board games: start each game from K random moves, 0-4 (default: the run's "
                             "env.opening_moves)")
    parser.add_argument("--simulations", type=_positive_int, metavar="N",
                        help="board games: the agent's search simulations per move (default: the run's "
                             "algo.eval_simulations, else algo.num_simulations)")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions from the policy (DQN: epsilon-greedy with the epsilon of the training "
                             "schedule at the checkpoint's step) instead of taking the most likely one")
    parser.add_argument("--seed", type=_int, default=DEFAULT_SEED,
                        help=f"env seed of the first episode; episode i gets seed + i ({DEFAULT_SEED}, the same for "
                             "every run)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    parser.add_argument("--video", action="store_true",
                        help="also record --render-episodes episodes as mp4 (to <run_dir>/videos/<step>/)")
    parser.add_argument("--video-dir", metavar="DIR", help="where --video writes its mp4 files (implies --video)")
    parser.add_argument("--render", choices=["human"], help="also show --render-episodes episodes in a window")
    parser.add_argument("--render-episodes", type=_positive_int, default=1, metavar="K",
                        help="episodes to record or show, from the same seeds as the first scored ones (1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rlrun eval ...``: 0 on success, 2 on bad input (one ``rlrun: error:`` paragraph on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as err:
        print(f"rlrun: error: {err} (see `rlrun eval --help`).", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    try:
        result = evaluate_run(args.run_dir, episodes=args.episodes, deterministic=not args.stochastic,
                              seed=args.seed, checkpoint=args.checkpoint, device=args.device,
                              video=args.video or args.video_dir is not None,
                              video_dir=args.video_dir, render=args.render, render_episodes=args.render_episodes,
                              opponent=args.opponent, simulations=args.simulations,
                              opening_moves=args.opening_moves)
    except (EvalError, RenderError, CheckpointError, ConfigError) as err:
        print(f"rlrun: error: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), result)
    return 0
