"""Connect Four's labelled test set (``data/connect_four_positions.csv``), for the mistake rate of an agent
(:func:`rlrun.search.positions.mistakes`).

A move is a mistake when it loses game-theoretic value: the outcome of the position after it (win / draw / loss for
the side to move, from :mod:`rlrun.search.solver`) is worse than the best outcome available, e.g. a win turned into
a draw or a loss, or a draw into a loss. Playing a slower win than the fastest one is not a mistake.

Every test position offers a mistake: each has at least one legal move that loses value
(``scripts/make_connect_four_positions.py`` skips the others), so a perfect player scores 0 and the rate is the
share of real decisions got wrong.

CSV columns: ``position`` (columns played, 1-7), ``stones``, ``best_outcome`` (+1 / 0 / -1 for the side to move) and
``values``: the solver's score of each of the 7 columns (0-indexed order; Pascal Pons' convention, see
:mod:`rlrun.search.solver`) joined by single spaces, an empty field for a full column (``"2  -3 1 1 -1 -4"``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

BUCKETS = ((14, 20), (21, 27), (28, 34))
"""Stone-count ranges (inclusive) reported apart: the test set holds the same number of positions per stone count,
14 to 34, so each bucket is a third of it."""
CSV_PATH = "data/connect_four_positions.csv"
"""The test set, inside the package ``rlrun.search``."""
CSV_FIELDS = ("position", "stones", "best_outcome", "values")


@dataclass(frozen=True)
class Position:
    """One labelled test position."""

    position: str
    """The columns played, 1-indexed (``"4453"``)."""
    stones: int
    """Stones on the board: ``len(position)``."""
    best_outcome: int
    """+1 / 0 / -1: the outcome for the side to move with perfect play."""
    values: tuple[int | None, ...]
    """The score of playing each column 0..6 for the side to move; None for a full column."""


def format_values(values: list[int | None] | tuple[int | None, ...]) -> str:
    """The CSV ``values`` field: the 7 scores joined by spaces, an empty field for None."""
    return " ".join("" if v is None else str(v) for v in values)


def parse_values(text: str) -> tuple[int | None, ...]:
    """The inverse of :func:`format_values`."""
    fields = text.split(" ")
    if len(fields) != 7:
        raise ValueError(f"values {text!r}: expected 7 space-separated fields, got {len(fields)}")
    return tuple(None if f == "" else int(f) for f in fields)


def read_positions(text: str) -> list[Position]:
    """Positions from CSV text with the columns :data:`CSV_FIELDS`."""
    rows = csv.DictReader(io.StringIO(text))
    return [Position(row["position"], int(row["stones"]), int(row["best_outcome"]), parse_values(row["values"]))
            for row in rows]


def load_positions() -> list[Position]:
    """The packaged Connect Four test set (module docstring), in file order."""
    text = resources.files("rlrun.search").joinpath(CSV_PATH).read_text(encoding="utf-8")
    return read_positions(text)
