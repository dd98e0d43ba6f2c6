"""Writes the Connect Four test set ``rlrun/search/data/connect_four_positions.csv`` (format: rlrun.search.mistakes).

Each position comes from a game played from the empty board to a fixed number of stones (the same number of
positions for every stone count in [--min-stones, --max-stones]) by a random-ish policy: win at once if it can,
block the opponent's single immediate win, never fill the cell below an opponent's winning cell, otherwise a random
column weighted towards the centre (1 2 3 4 3 2 1). From --perfect-from stones on, each move is instead, with
probability --perfect, a solver-perfect one (a random column among those with the best outcome), so the later part
of a game looks more like real play.

A position is kept when the game is not over and a mistake is possible there: some legal move has a worse outcome
than the best one. About half of the positions random play reaches are not like that (the side to move has lost
whatever it plays, or every move wins or every move draws); they would only dilute the mistake rate. Games are
seeded by (--seed, stones, index, attempt), so the file does not depend on --workers; a position reached twice is
replaced by the next attempt.

The labels are exact scores from rlrun.search.solver. About 2 minutes on 2 cores with the defaults; the labelling
time per stone count is printed at the end.

    python scripts/make_connect_four_positions.py
    python scripts/make_connect_four_positions.py --per-stone 5 --out /tmp/positions.csv
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from collections import Counter, defaultdict
from multiprocessing import Pool
from pathlib import Path

from rlrun.search.mistakes import CSV_FIELDS, format_values
from rlrun.search.solver import (
    BOARD,
    BOTTOM,
    COLUMN,
    WIDTH,
    Board,
    Table,
    best_moves,
    is_over,
    move_values,
    outcome,
    winning_cells,
)

OUT = Path(__file__).resolve().parents[1] / "rlrun" / "search" / "data" / "connect_four_positions.csv"
CENTRE_WEIGHTS = (1, 2, 3, 4, 3, 2, 1)


def random_ish(board: Board, rng: random.Random) -> int:
    """A column: an immediate win, else a block of the opponent's immediate win, else a centre-weighted random
    column that does not fill the cell below an opponent's winning cell (any column if every one does)."""
    columns = [c for c in range(WIDTH) if board.playable(c)]
    wins = [c for c in columns if board.wins(c)]
    if wins:
        return rng.choice(wins)
    threats = winning_cells(board.position ^ board.mask, board.mask)  # the opponent's winning cells
    next_cells = (board.mask + BOTTOM) & BOARD
    blocks = [c for c in columns if next_cells & threats & COLUMN[c]]
    if blocks:
        return rng.choice(blocks)
    safe = [c for c in columns if not ((next_cells & COLUMN[c]) << 1) & threats] or columns
    return rng.choices(safe, weights=[CENTRE_WEIGHTS[c] for c in safe])[0]


def play_to(stones: int, rng: random.Random, perfect: float, perfect_from: int) -> tuple[str, Board] | None:
    """A game played to ``stones`` stones (module docstring); None if it ended before."""
    board, position = Board(0, 0, 0), ""
    while board.moves < stones:
        if board.moves >= perfect_from and rng.random() < perfect:
            column = rng.choice(best_moves(move_values(board, weak=True)))
        else:
            column = random_ish(board, rng)
        board, position = board.play(column), position + str(column + 1)
        if is_over(board):
            return None
    return position, board


def label(task: tuple[int, int, int, int, float, int]) -> dict:
    """One kept position for (seed, stones, index), trying attempts from ``attempt`` on; its CSV row, the key of its
    board, the attempt that made it and the seconds its labelling took."""
    seed, stones, index, attempt, perfect, perfect_from = task
    while True:
        rng = random.Random(f"{seed}-{stones}-{index}-{attempt}")
        game = play_to(stones, rng, perfect, perfect_from)
        if game is not None:
            position, board = game
            start = time.perf_counter()
            table = Table()
            weak = [v for v in move_values(board, weak=True, table=table) if v is not None]
            if min(weak) < max(weak):  # some legal move loses value
                values = move_values(board, table=table)
                seconds = time.perf_counter() - start
                best = outcome(max(v for v in values if v is not None))
                row = {"position": position, "stones": stones, "best_outcome": best, "values": format_values(values)}
                return {"row": row, "key": board.position + board.mask, "task": task[:3], "attempt": attempt,
                        "seconds": seconds}
        attempt += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-stone", type=int, default=15, help="positions per stone count")
    parser.add_argument("--min-stones", type=int, default=14)
    parser.add_argument("--max-stones", type=int, default=34)
    parser.add_argument("--perfect", type=float, default=0.3, help="probability of a solver-perfect move")
    parser.add_argument("--perfect-from", type=int, default=18, help="stones from which perfect moves are mixed in")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    pending = [(args.seed, stones, index, 0, args.perfect, args.perfect_from)
               for stones in range(args.min_stones, args.max_stones + 1) for index in range(args.per_stone)]
    kept: dict[tuple[int, int, int], dict] = {}
    seen: set[int] = set()
    with Pool(args.workers) as pool:
        while pending:
            retry = []
            # In task order, so which of two equal positions is kept does not depend on scheduling.
            for result in pool.imap(label, pending, chunksize=1):
                if result["key"] in seen:
                    seed, stones, index = result["task"]
                    retry.append((seed, stones, index, result["attempt"] + 1, args.perfect, args.perfect_from))
                else:
                    seen.add(result["key"])
                    kept[result["task"]] = result
            pending = retry

    results = [kept[task] for task in sorted(kept)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r["row"] for r in results)

    outcomes = Counter(r["row"]["best_outcome"] for r in results)
    print(f"{len(results)} positions -> {args.out} in {time.perf_counter() - start:.0f} s; "
          f"best outcome for the side to move: win {outcomes[1]}, draw {outcomes[0]}, loss {outcomes[-1]}")
    seconds = defaultdict(list)
    for r in results:
        seconds[r["row"]["stones"]].append(r["seconds"])
    print("stones  labelling seconds per position (weak + exact move_values): mean  median  max")
    for stones, s in sorted(seconds.items()):
        print(f"{stones:6d}  {statistics.mean(s):8.3f}  {statistics.median(s):8.3f}  {max(s):8.3f}")


if __name__ == "__main__":
    main()
