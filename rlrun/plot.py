"""``rlrun plot``: learning curves across runs and seeds, one band per group, one panel per env, and a table.

Each run's scalars are read with TensorBoard's own reader, runs are grouped by their command-line
overrides minus the seed (or by ``--group-by`` config keys), and each group is drawn as the mean (or
interquartile mean) over its runs with a percentile-bootstrap 95% confidence band against environment
steps. The table gives the same statistic of each run's last logged value. See docs/plotting.md.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.stats import AGGREGATES, align, bootstrap_ci, common_grid, smooth

METRIC = "eval/return_mean"
EVENT_PREFIX = "events.out.tfevents"
FORMATS = (".png", ".svg", ".pdf")
# Overrides that do not define a setting: the seed is what a group averages over; the rest say where a run went.
NOT_A_SETTING = ("seed", "run_dir", "resume")
MAX_TAGS_SHOWN = 15
UNSET = "unset"  # the group-by value of a run whose config lacks the key

Key = tuple[tuple[str, str], ...]  # the (name, value) pairs that define a group, e.g. (("algo.lr", "0.001"),)


class PlotError(Exception):
    """Bad input to ``rlrun plot``: the message says what was looked for and what was found."""


# ----------------------------------------------------------------- reading run folders
@dataclass(frozen=True)
class Run:
    """One run folder's metric curve and what it is grouped by."""

    path: Path
    env: str
    key: Key
    steps: np.ndarray   # [T] environment steps, increasing
    values: np.ndarray  # [T] the metric at those steps


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders (folders with ``events.out.tfevents*`` files) among ``paths`` and anywhere below them."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise PlotError(f"{path} does not exist; `rlrun plot` takes run folders written by `rlrun train` "
                            "or folders that hold them, e.g. runs/ or runs/multirun/<date>/<time>.")
        if path.is_file():
            path = path.parent
        for folder, dirs, files in os.walk(path):
            if any(f.startswith(EVENT_PREFIX) for f in files):
                runs.append(Path(folder))
                dirs.clear()  # a run's own subfolders are not other runs
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    runs = list(dict.fromkeys(runs))  # a path given twice, or inside another one
    if not runs:
        searched = ", ".join(str(p) for p in paths)
        raise PlotError(f"No TensorBoard event files ({EVENT_PREFIX}*) were found in or under {searched}; "
                        "`rlrun plot` takes run folders written by `rlrun train` or folders that hold them, "
                        "e.g. runs/ or runs/multirun/<date>/<time>.")
    return runs


def read_scalars(run_dir: Path) -> EventAccumulator:
    """TensorBoard's reader over every event file in the folder (after a resume the later file's
    ``purge_step`` drops the points the earlier one logged past the checkpoint)."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    return accumulator


def metric_curve(accumulator: EventAccumulator, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``metric``, sorted by step; a step logged twice keeps its last value."""
    points = {event.step: event.value for event in accumulator.Scalars(metric)}
    steps = np.array(sorted(points), dtype=float)
    return steps, np.array([points[s] for s in sorted(points)], dtype=float)


def _read(path: Path) -> Any:
    """A run's ``.hydra/*.yaml`` or ``summary.json`` (JSON is YAML), or None when it is not there."""
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PlotError(f"{path} cannot be read ({type(err).__name__}); fix or remove it.") from None


def lookup(config: dict[str, Any] | None, dotted: str) -> Any:
    """``config["algo"]["lr"]`` for ``"algo.lr"``; ``KeyError`` when any part is missing."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _config_value(config: dict[str, Any] | None, name: str) -> str:
    try:
        return str(lookup(config, name))
    except KeyError:
        return UNSET


def _override_name(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def default_key(overrides: list[str] | None, config: dict[str, Any] | None, summary: dict[str, Any] | None,
                run_dir: Path) -> Key:
    """The run's command-line overrides minus the seed and where it was written (``hydra.*``, ``run_dir``,
    ``resume``), with the algorithm and env as the config names them (so ``env=CartPole`` given and the default
    ``env=CartPole`` are one group), sorted; runs without a config fall back to the summary's names."""
    pairs = []
    for override in overrides or []:
        name = _override_name(override)
        if "=" in override and name not in NOT_A_SETTING and name not in ("algo", "env") \
                and not name.startswith(("hydra.", "hydra/")):
            pairs.append((name, override.split("=", 1)[1]))
    if config is not None:
        pairs += [("algo.name", _config_value(config, "algo.name")), ("env.name", _config_value(config, "env.name"))]
    if pairs:
        return tuple(sorted(pairs))
    if summary is not None:
        return (("algo", str(summary.get("algo"))), ("env", str(summary.get("env"))))
    return (("run", run_dir.name),)


def load_runs(paths: Sequence[str | Path], metric: str = METRIC,
              group_by: Sequence[str] = ()) -> tuple[list[Run], list[Path]]:
    """The runs under ``paths`` that logged ``metric``, and the run folders that did not.

    A run's env (its panel) is ``env.name`` from ``.hydra/config.yaml`` (``summary.json``'s env id
    without one). Its group key is :func:`default_key`, or with ``group_by`` the values of those dotted
    keys in ``.hydra/config.yaml``.
    """
    folders = find_runs(paths)
    runs, without, tags = [], [], set()
    for folder in folders:
        accumulator = read_scalars(folder)
        found = accumulator.Tags()["scalars"]
        tags.update(found)
        if metric not in found:
            without.append(folder)
            continue
        config = _read(folder / ".hydra" / "config.yaml")
        summary = _read(folder / "summary.json")
        try:
            env = str(lookup(config, "env.name"))
        except KeyError:
            env = str(summary.get("env")) if summary else "unknown env"
        if group_by:
            key = tuple((name, _config_value(config, name)) for name in group_by)
        else:
            key = default_key(_read(folder / ".hydra" / "overrides.yaml"), config, summary, folder)
        steps, values = metric_curve(accumulator, metric)
        runs.append(Run(folder, env, key, steps, values))
    if not runs:
        shown = sorted(tags)[:MAX_TAGS_SHOWN]
        more = f" (and {len(tags) - len(shown)} more)" if len(tags) > len(shown) else ""
        close = difflib.get_close_matches(metric, tags, n=1)
        hint = f" Did you mean --metric {close[0]}?" if close else " Choose one with --metric."
        found_text = f"the tags they logged are: {', '.join(shown)}{more}." if tags else "they logged no scalars."
        raise PlotError(f"No run logged the metric {metric!r}: looked in {len(folders)} run folder(s) under "
                        f"{', '.join(str(p) for p in paths)}; {found_text}{hint}")
    for name in group_by:
        if all(value == UNSET for run in runs for n, value in run.key if n == name):
            raise PlotError(f"--group-by {name}: no run's .hydra/config.yaml has the key {name!r} (looked in "
                            f"{len(runs)} run folder(s)); use dotted config keys such as algo.lr or env.name.")
    return runs, without


# ----------------------------------------------------------------- groups
@dataclass
class Group:
    """The runs of one setting on one env, aggregated on their common step grid."""

    env: str
    key: Key
    label: str
    runs: list[Run]
    steps: np.ndarray   # [T] the common grid
    curve: np.ndarray   # [T] mean (or IQM) over runs
    low: np.ndarray     # [T] lower end of the bootstrap CI
    high: np.ndarray    # [T] upper end
    final: float        # mean (or IQM) of each run's last logged value
    final_low: float
    final_high: float


def _natural(key: Key) -> tuple:
    """Sort numbers as numbers: lr=0.0003 before lr=0.001, seed=2 before seed=10."""
    def part(value: str) -> tuple:
        try:
            return (0, float(value), "")
        except ValueError:
            return (1, 0.0, value)
    return tuple((name, part(value)) for name, value in key)


def labels(keys: Sequence[Key]) -> list[str]:
    """Readable group names: only the ``name=value`` pairs that differ between the groups (all of them when
    none differ); a name a group does not set reads ``name=default``."""
    settings = [dict(key) for key in keys]
    names = list(dict.fromkeys(name for key in keys for name, _ in key))
    varying = [name for name in names if len({s.get(name) for s in settings}) > 1]
    shown = varying or names
    return [", ".join(f"{name}={s.get(name, 'default')}" for name in shown) or "all runs" for s in settings]


def summarize(runs: Sequence[Run], agg: str = "mean", n_boot: int = 2000, smooth_window: int = 1,
              seed: int = 0) -> list[Group]:
    """Group ``runs`` by (env, key), put each group's curves on its common grid (:func:`common_grid`,
    linear interpolation, after an optional trailing moving average) and aggregate over runs with
    ``agg`` and a percentile-bootstrap CI; ``final`` uses each run's last raw value, whatever its step."""
    statistic = AGGREGATES[agg]
    by_group: dict[tuple[str, Key], list[Run]] = {}
    for run in runs:
        by_group.setdefault((run.env, run.key), []).append(run)
    groups = []
    for env in sorted({env for env, _ in by_group}):
        keys = sorted((key for e, key in by_group if e == env), key=_natural)
        for key, label in zip(keys, labels(keys)):
            members = sorted(by_group[env, key], key=lambda r: str(r.path))
            grid = common_grid([r.steps for r in members])
            values = align([(r.steps, smooth(r.values, smooth_window)) for r in members], grid)  # [n, T]
            low, high = bootstrap_ci(values, statistic, n_boot, seed=seed)
            finals = np.array([r.values[-1] for r in members])  # [n]
            final_low, final_high = bootstrap_ci(finals, statistic, n_boot, seed=seed)
            groups.append(Group(env, key, label, members, grid, statistic(values), low, high,
                                float(statistic(finals)), float(final_low), float(final_high)))
    return groups


# ----------------------------------------------------------------- figure and table
LEGEND_CHARS, LEGEND_ROWS = 48, 24
"""Legend labels wrap at this many characters; a legend column holds at most this many lines."""


def draw(groups: Sequence[Group], metric: str = METRIC, agg: str = "mean", title: str | None = None) -> Figure:
    """A panel per env, a line (mean or IQM over runs) and a shaded 95% bootstrap band per group.

    The Figure is made without pyplot, so no display and no global state is involved; ``savefig``
    renders a PNG with Agg (SVG, PDF with their own backends).
    """
    envs = list(dict.fromkeys(g.env for g in groups))
    ncols = min(3, len(envs))
    nrows = -(-len(envs) // ncols)
    names = list(dict.fromkeys(g.label for g in groups))
    shown = {name: textwrap.fill(name, LEGEND_CHARS) for name in names}  # long labels wrap instead of widening
    lines = sum(shown[name].count("\n") + 1 for name in names)
    legend_cols = -(-lines // LEGEND_ROWS)  # many groups: more legend columns, not an ever taller figure
    longest = max(len(line) for name in names for line in f"{shown[name]} (n=00)".splitlines())
    legend_width = legend_cols * (0.3 + 0.075 * longest)  # inches, beside the panels
    height = max(4.0 * nrows, 0.22 * min(lines, LEGEND_ROWS) + 1.0)
    fig = Figure(figsize=(5.5 * ncols + legend_width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {name: palette(i % palette.N) for i, name in enumerate(names)}
    alpha = 0.2 if len(names) <= 4 else 0.1  # many overlapping bands stay readable when fainter
    handles, markers = {}, False
    for i, (ax, env) in enumerate(zip(axes, envs)):
        for g in (g for g in groups if g.env == env):
            color = colors[g.label]
            single = len(g.steps) == 1  # one evaluation point: a line of one point would not show
            (line,) = ax.plot(g.steps, g.curve, color=color, lw=1.8, marker="o" if single else None,
                              label=f"{shown[g.label]} (n={len(g.runs)})")
            if single:
                ax.errorbar(g.steps, g.curve, yerr=[g.curve - g.low, g.high - g.curve], color=color, capsize=4)
                markers = True
            else:
                ax.fill_between(g.steps, g.low, g.high, color=color, alpha=alpha, lw=0)
            handles.setdefault(g.label, line)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        if i % ncols == 0:
            ax.set_ylabel(metric)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
    for ax in axes[len(envs):]:
        ax.set_visible(False)
    # One legend for all panels (a group has one colour everywhere), outside them so it hides no curve.
    fig.legend(handles=[handles[name] for name in names if name in handles], loc="outside right center",
               fontsize="small", frameon=False, ncols=legend_cols)
    what = "interquartile mean" if agg == "iqm" else "mean"
    width_chars = int(14 * (5.5 * ncols + legend_width))  # about what fits across the figure at this size
    text = title or f"{metric}: {what} over runs, 95% bootstrap CI"
    if markers:
        text += " (a group evaluated once is a marker with its CI)"
    fig.suptitle(textwrap.fill(text, width_chars), fontsize="medium")
    return fig


COLUMNS = ("group", "env", "runs", "metric", "agg", "final", "ci_low", "ci_high", "last_step_min", "last_step_max")


def table_rows(groups: Sequence[Group], metric: str = METRIC, agg: str = "mean") -> list[dict[str, Any]]:
    """One row per group: the statistic of each run's last logged value, its CI, and those last steps."""
    rows = []
    for g in groups:
        last = [int(r.steps[-1]) for r in g.runs]
        rows.append({"group": g.label, "env": g.env, "runs": len(g.runs), "metric": metric, "agg": agg,
                     "final": g.final, "ci_low": g.final_low, "ci_high": g.final_high,
                     "last_step_min": min(last), "last_step_max": max(last)})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as aligned text: group, env, runs, final value [95% CI], steps of the last values."""
    if not rows:
        return ""
    agg = "IQM" if rows[0]["agg"] == "iqm" else "mean"
    header = ("group", "env", "runs", f"final {agg}", "95% CI", "at step")
    lines = [header] + [(r["group"], r["env"], str(r["runs"]), f"{r['final']:.6g}",
                         f"[{r['ci_low']:.6g}, {r['ci_high']:.6g}]",
                         str(r["last_step_min"]) if r["last_step_min"] == r["last_step_max"]
                         else f"{r['last_step_min']}-{r['last_step_max']}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    return f"{rows[0]['metric']}, each run's last value:\n" + "\n".join(text)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """The table as CSV with the columns of ``COLUMNS`` (full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------- command line
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlrun plot",
        description="Learning curves across runs and seeds: the mean (or IQM) over each group's runs with a "
                    "percentile-bootstrap 95% confidence band against environment steps, a panel per env, "
                    "and a table of each group's final value.",
        epilog="example: rlrun plot runs/multirun/2026-11-25/10-00-00 --out curves.png --csv final.csv")
    parser.add_argument("paths", nargs="+", help="run folders, or folders searched recursively for run folders")
    parser.add_argument("--metric", default=METRIC, help=f"the scalar tag to plot (default {METRIC})")
    parser.add_argument("--agg", choices=sorted(AGGREGATES), default="mean",
                        help="statistic over runs: mean, or iqm = interquartile mean (default mean)")
    parser.add_argument("--group-by", default=None, metavar="KEY[,KEY]",
                        help="group by these dotted config keys (e.g. algo.lr,algo.norm_adv) instead of the "
                             "overrides minus the seed")
    parser.add_argument("--out", default=None, help="figure path, .png, .svg or .pdf (default <first path>/curves.png)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--smooth", type=_positive_int, default=1, metavar="N",
                        help="trailing moving average over N logged points per run before averaging (default 1: off)")
    parser.add_argument("--bootstrap", type=_positive_int, default=2000, metavar="N",
                        help="bootstrap resamples for the 95%% CI (default 2000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rlrun plot PATH ... [options]``: draw the figure, print the table; 0 on success, 2 on bad input."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return int(exit_.code or 0)
    out = Path(args.out) if args.out else Path(args.paths[0]) / "curves.png"
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else []
    try:
        if out.suffix.lower() not in FORMATS:
            raise PlotError(f"--out {out}: the figure is written as {', '.join(FORMATS)}, chosen by the suffix.")
        runs, without = load_runs(args.paths, args.metric, group_by)
        groups = summarize(runs, args.agg, args.bootstrap, args.smooth)
    except PlotError as err:
        print(f"rlrun: error: {err}", file=sys.stderr)
        return 2
    if without:
        names = ", ".join(str(p) for p in without[:5]) + (" ..." if len(without) > 5 else "")
        print(f"rlrun: note: {len(without)} run(s) did not log {args.metric} and are left out: {names}",
              file=sys.stderr)
    rows = table_rows(groups, args.metric, args.agg)
    print(format_table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(groups, args.metric, args.agg, args.title).savefig(out, dpi=150)
    print(f"rlrun: wrote {out}")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"rlrun: wrote {args.csv}")
    return 0
