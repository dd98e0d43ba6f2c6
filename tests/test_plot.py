"""`rlrun plot`: the statistics against hand-computed values, grouping and reading of run folders, a real
2x2 sweep drawn end to end (its table checked against means computed here from the event files), bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from rlrun import plot, stats
from rlrun.plot import PlotError
from rlrun.stats import bootstrap_ci, iqm, mean

METRIC = "eval/return_mean"


# ----------------------------------------------------------------- statistics, hand-computed
def test_mean():
    assert mean(np.array([1.0, 2.0, 3.0, 6.0])) == 3.0
    np.testing.assert_array_equal(mean(np.array([[1.0, 2.0], [3.0, 4.0]])), [2.0, 3.0])  # [n=2, T=2] -> [T]


def test_iqm_is_the_mean_of_the_middle_half_when_n_is_a_multiple_of_four():
    # sorted: 0 1 | 2 3 4 5 | 6 100 -> (2 + 3 + 4 + 5) / 4
    assert iqm(np.array([5.0, 100.0, 1.0, 3.0, 0.0, 6.0, 2.0, 4.0])) == 3.5
    assert iqm(np.array([1.0, 2.0, 3.0, 1000.0])) == 2.5


def test_iqm_weights_the_values_that_straddle_a_quartile():
    # n=3: the values hold [0, 1/3], [1/3, 2/3], [2/3, 1]; inside [1/4, 3/4]: 1/12, 1/3, 1/12 -> (a + 4b + c) / 6
    assert iqm(np.array([12.0, 0.0, 3.0])) == pytest.approx((0 + 4 * 3 + 12) / 6)
    # n=5: weights 0, 0.3, 0.4, 0.3, 0 -> 0.3*10 + 0.4*20 + 0.3*40 = 23 (scipy's trim_mean would give 70/3)
    assert iqm(np.array([0.0, 10.0, 20.0, 40.0, 1000.0])) == pytest.approx(23.0)
    assert iqm(np.array([1.0, 5.0])) == 3.0  # n=2: the mean
    assert iqm(np.array([7.0])) == 7.0


def test_iqm_along_the_runs_axis_of_curves():
    curves = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [100.0, 0.0]])  # [n=4, T=2]
    np.testing.assert_allclose(iqm(curves), [1.5, 15.0])  # per step: middle two of (0 1 2 100), (0 10 20 30)


def test_bootstrap_ci_of_two_values_spans_them():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # percentiles of 2000 of them are 0 and 1.
    low, high = bootstrap_ci(np.array([0.0, 1.0]), mean, n_boot=2000)
    assert (float(low), float(high)) == (0.0, 1.0)


def test_bootstrap_ci_one_run_constant_runs_and_seeding():
    assert bootstrap_ci(np.array([4.5])) == (4.5, 4.5)  # one run: the interval is the value
    low, high = bootstrap_ci(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(low, [1.0, 2.0])
    np.testing.assert_array_equal(high, [1.0, 2.0])
    assert bootstrap_ci(np.full(5, 3.0)) == (3.0, 3.0)
    x = np.arange(1.0, 11.0)  # mean 5.5, standard error 0.91: the interval is about 5.5 +- 1.8
    low, high = bootstrap_ci(x, mean, n_boot=2000, seed=0)
    assert 3.2 < low < 4.2 and 6.8 < high < 7.8
    assert bootstrap_ci(x, mean, seed=0) == bootstrap_ci(x, mean, seed=0)
    iqm_low, iqm_high = bootstrap_ci(x, iqm)
    assert iqm_low <= iqm(x) <= iqm_high


def test_bootstrap_ci_of_curves_is_per_step():
    curves = np.array([[0.0, 5.0, 5.0], [1.0, 5.0, 7.0]])  # [n=2, T=3]
    low, high = bootstrap_ci(curves, mean)
    np.testing.assert_array_equal(low, [0.0, 5.0, 5.0])
    np.testing.assert_array_equal(high, [1.0, 5.0, 7.0])


# ----------------------------------------------------------------- curves on a common grid
def test_smooth_is_a_trailing_moving_average():
    np.testing.assert_allclose(stats.smooth(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(stats.smooth(np.array([3.0, 6.0, 9.0]), 3), [3.0, 4.5, 6.0])
    np.testing.assert_array_equal(stats.smooth(np.array([1.0, 9.0]), 1), [1.0, 9.0])


def test_grid_is_the_union_of_steps_where_all_runs_overlap_and_values_are_interpolated():
    a = (np.array([0.0, 10.0, 20.0, 30.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    b = (np.array([5.0, 15.0, 25.0]), np.array([10.0, 20.0, 30.0]))
    grid = stats.common_grid([a[0], b[0]])
    np.testing.assert_array_equal(grid, [5.0, 10.0, 15.0, 20.0, 25.0])
    np.testing.assert_allclose(stats.align([a, b], grid), [[0.5, 1.0, 1.5, 2.0, 2.5], [10.0, 15.0, 20.0, 25.0, 30.0]])


# ----------------------------------------------------------------- run folders made by hand
def _write_run(folder: Path, points: dict[str, list[tuple[int, float]]], overrides: list[str] | None = None,
               config: dict | None = None) -> Path:
    """A run folder with the given scalars and, optionally, Hydra's ``.hydra/{overrides,config}.yaml``."""
    folder.mkdir(parents=True)
    writer = SummaryWriter(str(folder))
    for tag, series in points.items():
        for step, value in series:
            writer.add_scalar(tag, value, step)
    writer.close()
    if overrides is not None or config is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {}))
    return folder


def _config(seed: int, lr: float, env: str = "CartPole") -> dict:
    return {"seed": seed, "algo": {"name": "ppo", "lr": lr}, "env": {"name": env, "id": f"{env}-v1"}}


def test_groups_by_overrides_minus_seed_with_runs_of_different_lengths(tmp_path):
    for seed, lr, last in [(0, 0.1, 30.0), (1, 0.1, 50.0), (0, 0.01, 4.0)]:
        n_points = 3 if seed == 0 else 2  # seed 1 stopped early
        points = [(100 * (i + 1), float(i)) for i in range(n_points - 1)] + [(100 * n_points, last)]
        _write_run(tmp_path / "sweep" / f"lr={lr},seed={seed}", {METRIC: points},
                   [f"algo.lr={lr}", f"seed={seed}", "total_steps=300", f"hydra.run.dir=x{seed}"], _config(seed, lr))
    runs, without = plot.load_runs([tmp_path / "sweep"], METRIC)
    assert len(runs) == 3 and without == []
    groups = plot.summarize(runs)
    assert [(g.label, g.env, len(g.runs)) for g in groups] == [("algo.lr=0.01", "CartPole", 1),
                                                                ("algo.lr=0.1", "CartPole", 2)]
    lr1 = groups[1]
    np.testing.assert_array_equal(lr1.steps, [100.0, 200.0])  # up to the shorter run's last step
    assert lr1.final == 40.0 and (lr1.final_low, lr1.final_high) == (30.0, 50.0)  # each run's own last value
    rows = plot.table_rows(groups)
    assert (rows[1]["last_step_min"], rows[1]["last_step_max"]) == (200, 300)
    assert "200-300" in plot.format_table(rows)
    by_lr = plot.summarize(plot.load_runs([tmp_path / "sweep"], METRIC, ["algo.lr", "algo.name"])[0])
    assert [g.label for g in by_lr] == ["algo.lr=0.01", "algo.lr=0.1"]  # only the key that varies is shown


def test_a_panel_per_env_and_fallback_keys(tmp_path):
    _write_run(tmp_path / "a", {METRIC: [(10, 1.0), (20, 2.0)]}, [], _config(0, 0.1, "CartPole"))
    _write_run(tmp_path / "b", {METRIC: [(10, 3.0), (20, 4.0)]}, [], _config(0, 0.1, "Acrobot"))
    _write_run(tmp_path / "c", {"charts/SPS": [(10, 1.0)]})  # no metric: left out, reported
    runs, without = plot.load_runs([tmp_path], METRIC)
    assert without == [tmp_path / "c"]
    assert {r.key for r in runs} == {(("algo.name", "ppo"), ("env.name", "CartPole")),
                                     (("algo.name", "ppo"), ("env.name", "Acrobot"))}
    fig = plot.draw(plot.summarize(runs), METRIC)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["Acrobot", "CartPole"]
    assert fig.axes[0].get_xlabel() == "environment steps" and fig.axes[0].get_ylabel() == METRIC


def test_resumed_run_reads_every_event_file_and_honours_purge_step(tmp_path):
    # What a resume from a checkpoint at step 2 does: the first process logged past it (3, 4, 5) before it
    # stopped; the second writes a new event file with purge_step=3 and logs 3, 4 again. Step 5 is dropped.
    run = tmp_path / "run"
    first = SummaryWriter(str(run))
    for step in range(1, 6):
        first.add_scalar(METRIC, float(step), step)
    first.close()
    old = next(run.glob("events.out.tfevents*"))
    old.rename(run / "events.out.tfevents.1000000000.host.1.0")  # an older file sorts first
    second = SummaryWriter(str(run), purge_step=3)
    for step in (3, 4):
        second.add_scalar(METRIC, 10.0 * step, step)
    second.close()
    steps, values = plot.metric_curve(plot.read_scalars(run), METRIC)
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])
    np.testing.assert_array_equal(values, [1.0, 2.0, 30.0, 40.0])


# ----------------------------------------------------------------- a real 2x2 sweep, end to end
@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``rlrun train -m algo.lr=0.001,0.0003 seed=0,1`` on a tiny CartPole: 4 runs of 768 steps, 3 evaluations."""
    root = tmp_path_factory.mktemp("plot")
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    args = ["train", "-m", "algo.lr=0.001,0.0003", "seed=0,1", "total_steps=768", "eval.every_steps=256",
            "eval.episodes=2", "progress=false", "device=cpu", f"hydra.sweep.dir={root / 'sweep'}"]
    out = subprocess.run([sys.executable, "-m", "rlrun.cli", *args], cwd=root, capture_output=True, text=True,
                         timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "sweep"


def _final_means_from_event_files(sweep: Path) -> dict[str, float]:
    """Independently of rlrun.plot: the mean over seeds of each lr's last eval/return_mean."""
    finals: dict[str, list[float]] = {}
    for run in sweep.iterdir():
        if not run.is_dir():
            continue
        lr = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["algo"]["lr"]
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        events = acc.Scalars(METRIC)
        assert events[-1].step == 768
        finals.setdefault(f"algo.lr={lr}", []).append(events[-1].value)
    return {label: sum(values) / len(values) for label, values in finals.items()}


def test_plot_draws_a_2x2_sweep_and_its_table_matches_the_event_files(sweep, tmp_path, capsys):
    png, table = tmp_path / "figs" / "curves.png", tmp_path / "final.csv"
    assert plot.main([str(sweep), "--out", str(png), "--csv", str(table)]) == 0
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(table.open()))
    expected = _final_means_from_event_files(sweep)
    assert sorted(expected) == ["algo.lr=0.0003", "algo.lr=0.001"]
    assert sorted(row["group"] for row in rows) == sorted(expected)
    for row in rows:
        assert row["env"] == "CartPole" and row["runs"] == "2" and row["agg"] == "mean"
        assert float(row["final"]) == pytest.approx(expected[row["group"]], rel=1e-9)
        assert float(row["ci_low"]) <= float(row["final"]) <= float(row["ci_high"])
    printed = capsys.readouterr().out
    assert all(label in printed for label in expected) and str(png) in printed

    runs, _ = plot.load_runs([sweep], METRIC)
    fig = plot.draw(plot.summarize(runs), METRIC)
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["algo.lr=0.0003 (n=2)", "algo.lr=0.001 (n=2)"]


def test_plot_iqm_svg_and_default_out(sweep, tmp_path, capsys):
    svg = tmp_path / "curves.svg"
    assert plot.main([str(sweep), "--agg", "iqm", "--metric", "charts/episodic_return", "--smooth", "2",
                      "--bootstrap", "200", "--title", "lr ablation", "--out", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith("<?xml") and "lr ablation" in svg.read_text()
    assert "final IQM" in capsys.readouterr().out
    assert plot.main([str(sweep)]) == 0
    assert (sweep / "curves.png").is_file()  # default: <first path>/curves.png


# ----------------------------------------------------------------- bad input
def test_missing_path_is_an_error(tmp_path, capsys):
    assert plot.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrun: error: ") and "nope does not exist" in err


def test_folder_without_event_files_names_what_was_searched(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(PlotError) as info:
        plot.find_runs([tmp_path / "empty"])
    message = str(info.value)
    assert "events.out.tfevents" in message and str(tmp_path / "empty") in message and "\n" not in message
    assert plot.main([str(tmp_path / "empty")]) == 2
    assert "No TensorBoard event files" in capsys.readouterr().err


def test_unknown_metric_lists_the_tags_found(tmp_path, capsys):
    _write_run(tmp_path / "run", {"charts/episodic_return": [(1, 1.0)], "losses/value_loss": [(1, 0.5)]})
    with pytest.raises(PlotError) as info:
        plot.load_runs([tmp_path], "charts/episodic_retrun")
    message = str(info.value)
    assert "'charts/episodic_retrun'" in message and "1 run folder" in message and "\n" not in message
    assert "charts/episodic_return, losses/value_loss" in message
    assert "Did you mean --metric charts/episodic_return?" in message
    assert plot.main([str(tmp_path), "--metric", "nothing/like/it"]) == 2
    assert "the tags they logged are" in capsys.readouterr().err


def test_group_by_a_key_no_run_has_and_a_bad_suffix_are_errors(tmp_path, capsys):
    _write_run(tmp_path / "run", {METRIC: [(1, 1.0)]}, ["seed=0"], _config(0, 0.1))
    assert plot.main([str(tmp_path), "--group-by", "algo.nope"]) == 2
    assert "algo.nope" in capsys.readouterr().err
    assert plot.main([str(tmp_path), "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


def test_help(capsys):
    assert plot.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rlrun plot") and "--metric" in out and "--agg" in out


def test_env_given_and_env_by_default_are_one_group(tmp_path):
    """`env=CartPole` on the command line and the default env=CartPole: the same runs, one group."""
    _write_run(tmp_path / "a", {METRIC: [(10, 1.0), (20, 2.0)]}, ["env=CartPole", "seed=0"], _config(0, 0.1))
    _write_run(tmp_path / "b", {METRIC: [(10, 3.0), (20, 4.0)]}, ["seed=1"], _config(1, 0.1))
    groups = plot.summarize(plot.load_runs([tmp_path], METRIC)[0])
    assert len(groups) == 1 and len(groups[0].runs) == 2


def test_a_group_evaluated_once_is_a_marker_and_the_figure_says_so(tmp_path):
    for seed in (0, 1):
        _write_run(tmp_path / f"s{seed}", {METRIC: [(100, 10.0 + seed)]}, [f"seed={seed}"], _config(seed, 0.1))
    fig = plot.draw(plot.summarize(plot.load_runs([tmp_path], METRIC)[0]), METRIC)
    line = fig.axes[0].get_lines()[0]
    assert line.get_marker() == "o" and list(line.get_xdata()) == [100.0]
    assert "evaluated once is a marker" in fig._suptitle.get_text()


def test_many_groups_keep_a_sane_figure_size(tmp_path):
    """40 groups with long labels: wrapped labels in legend columns, a bounded height (the legend used to run off
    a 4-inch figure) and width."""
    for i in range(40):
        overrides = [f"algo.some_rather_long_setting_name={i}e-4", f"algo.another_long_setting_name={i % 7}"]
        _write_run(tmp_path / f"g{i}", {METRIC: [(10, float(i)), (20, float(i))]}, overrides, _config(0, 0.1))
    fig = plot.draw(plot.summarize(plot.load_runs([tmp_path], METRIC)[0]), METRIC)
    width, height = fig.get_size_inches()
    assert width <= 24 and height <= 7, (width, height)
