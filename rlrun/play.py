"""``rlrun play``: a person plays a trained board-game agent in the terminal, or asks for its move in a position.

Moves are written as in position strings: tic-tac-toe cells 1-9 (row by row), Connect Four columns 1-7. The
agent searches with its evaluation settings (``algo.eval_simulations``, no exploration noise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from rlrun.checkpoint import CheckpointError
from rlrun.config import ConfigError
from rlrun.envs import is_game_id
from rlrun.evaluate import EvalError, build_agent, find_checkpoint, load_run


def load_player(run_dir: str, checkpoint: str | None, simulations: int | None):
    """The run's game and agent (``simulations`` overriding the search budget), or EvalError for a run that is
    not a board game's."""
    import dataclasses

    from rlrun.search.games import GAMES

    path = find_checkpoint(Path(run_dir), checkpoint)
    cfg, state = load_run(path, torch.device("cpu"))
    if not is_game_id(cfg.env.id):
        raise EvalError(f"rlrun play is for the two-player board games ({', '.join(GAMES)}); {run_dir} trained on "
                        f"{cfg.env.id}: use rlrun eval.")
    if simulations is not None:
        cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, eval_simulations=simulations))
    env, agent = build_agent(cfg, state, 2, torch.device("cpu"), path)
    env.close()
    return agent.game, agent, int(state["step"])


def agent_move(game, agent, state: torch.Tensor) -> tuple[int, float]:
    """The agent's move (0-indexed) at ``state`` [1, D] and its search's value for the side to move."""
    result = agent.search(state, agent.cfg.search_config(evaluation=True), explore=False)
    return int(result.action[0]), float(result.value[0])


def play(game, agent, human_first: bool, read: Callable[[str], str] = input, write: Callable[[str], None] = print,
         state: torch.Tensor | None = None) -> int:
    """A game between a person (moves from ``read``) and the agent, from ``state`` (default: the empty board).
    Returns +1 if the person won, 0 for a draw, -1 if the agent won; ``q`` as a move ends it early (0)."""
    state = game.initial(1) if state is None else state
    human = game.to_play(state).item() if human_first else 1 - game.to_play(state).item()
    while not bool(game.terminal(state)[0]):
        write(game.show(state[0]))
        if game.to_play(state).item() == human:
            move = ask_move(game, state, read, write)
            if move is None:
                write("game abandoned")
                return 0
        else:
            move, value = agent_move(game, agent, state)
            write(f"agent plays {move + 1} (its search values the position at {value:+.2f} for itself)")
        state = game.step(state, torch.tensor([move]))
    write(game.show(state[0]))
    if game.terminal_value(state).item() == 0:
        write("draw")
        return 0
    winner = 1 - game.to_play(state).item()
    write("you win" if winner == human else "the agent wins")
    return 1 if winner == human else -1


def ask_move(game, state: torch.Tensor, read: Callable[[str], str], write: Callable[[str], None]) -> int | None:
    """A legal move typed by the person (1-indexed), asked again until one is given; None for ``q``."""
    legal = [i + 1 for i in game.legal(state)[0].nonzero().flatten().tolist()]
    while True:
        try:
            text = read(f"your move ({', '.join(map(str, legal))}; q quits): ").strip()
        except EOFError:
            return None
        if text.lower() in ("q", "quit"):
            return None
        if text.isdigit() and int(text) in legal:
            return int(text) - 1
        write(f"{text!r} is not a legal move here: type one of {', '.join(map(str, legal))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlrun play",
        description="Play a trained board-game agent (algo=alphazero) in the terminal, or print its move for a "
                    "position. Moves: tic-tac-toe cells 1-9 row by row, Connect Four columns 1-7.")
    parser.add_argument("run_dir", help="the run folder that `rlrun train algo=alphazero env=<game>` wrote")
    parser.add_argument("--position", metavar="MOVES",
                        help="the moves played so far (e.g. 4453 in Connect Four): print the agent's move there")
    parser.add_argument("--second", action="store_true", help="let the agent move first (you play second)")
    parser.add_argument("--simulations", type=int, metavar="N",
                        help="search simulations per agent move (default: the run's algo.eval_simulations)")
    parser.add_argument("--checkpoint", metavar="STEP|PATH", help="a step of the run's checkpoints (default: latest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rlrun play ...``: 0 on success, 2 on bad input (one ``rlrun: error:`` paragraph on stderr)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.simulations is not None and args.simulations < 1:
            raise EvalError(f"--simulations {args.simulations} is not accepted: expected an integer >= 1.")
        game, agent, step = load_player(args.run_dir, args.checkpoint, args.simulations)
        if args.position is not None:
            try:
                state = game.parse(args.position)
            except ValueError as err:
                raise EvalError(f"--position: {err}.") from None
            if bool(game.terminal(state)[0]):
                raise EvalError(f"--position {args.position}: the game is already over.")
            move, value = agent_move(game, agent, state)
            print(game.show(state[0]))
            print(f"agent's move: {move + 1} (checkpoint step {step:,}; its search values the position at "
                  f"{value:+.2f} for the side to move)")
            return 0
        play(game, agent, human_first=not args.second)
        return 0
    except (EvalError, CheckpointError, ConfigError) as err:
        print(f"rlrun: error: {err}", file=sys.stderr)
        return 2
