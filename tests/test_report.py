"""benchmarks/report.py: evaluations read from TensorBoard event files, per-seed summaries, tables and the plot."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
report = importlib.import_module("report")


def evaluation(seed: int, env_steps: int, success: float, wall_time: float) -> report.Evaluation:
    return report.Evaluation("task", seed, env_steps, success, -1.0, wall_time)


def write_events(folder: Path, suffix: str, evaluations: list[tuple[int, float, float, float]]) -> Path:
    """An event file as a run writes it: per ``(env steps, wall time, success, return)`` an evaluation among other
    scalars and a histogram. Its first record holds the time it opened (``time.time()``)."""
    writer = SummaryWriter(str(folder), filename_suffix=suffix)
    for step, wall_time, success, episode_return in evaluations:
        writer.add_scalar("train/success_rate", 0.123, step, walltime=wall_time)
        writer.add_histogram("train/actions", np.array([0.1, 0.5]), step, walltime=wall_time)
        writer.add_scalar(report.SUCCESS_TAG, success, step, walltime=wall_time)
        writer.add_scalar(report.RETURN_TAG, episode_return, step, walltime=wall_time + 0.5)
    writer.close()
    (path,) = [path for path in folder.iterdir() if path.name.endswith(suffix)]
    return path


def test_a_run_reads_the_evaluation_written_last_of_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: 1_000.0)  # when each event file opens
    # The first sitting evaluated at 100-300 env steps; a resume from its checkpoint at 100 evaluated 200 and 300 again.
    first = [(100, 1_010.0, 0.1, -40.0), (200, 1_020.0, 0.2, -30.0), (300, 1_030.0, 0.3, -20.0)]
    write_events(tmp_path, ".first", first)
    monkeypatch.setattr("time.time", lambda: 2_000.0)
    write_events(tmp_path, ".second", [(200, 2_020.0, 0.9, -5.0), (300, 2_030.0, 0.8999999762, -6.0)])
    (tmp_path / "fit.lock").write_text("1\n")  # not an event file
    evaluations = report.read_run(tmp_path, "reach", 4)
    assert evaluations == [
        report.Evaluation("reach", 4, 100, 0.1, -40.0, 1_010.0),
        report.Evaluation("reach", 4, 200, 0.9, -5.0, 2_020.0),
        report.Evaluation("reach", 4, 300, 0.9, -6.0, 2_030.0),  # float32 0.9 rounded back to 4 decimals
    ]
    assert report.log_start(tmp_path) == 1_000.0
    assert report.read_run(tmp_path / "not yet", "reach", 4) == [] and report.log_start(tmp_path / "not yet") is None


def test_a_file_cut_short_ends_its_read_and_a_lone_success_rate_has_no_return(tmp_path: Path) -> None:
    path = write_events(tmp_path, ".cut", [(100, 10.0, 0.5, -3.0), (200, 20.0, 0.75, -2.0)])
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record, the return at 200, half written
    evaluations = report.read_run(tmp_path, "task", 0)
    assert [(e.env_steps, e.success) for e in evaluations] == [(100, 0.5), (200, 0.75)]
    assert evaluations[0].episode_return == -3.0 and math.isnan(evaluations[1].episode_return)


def test_summary_finds_thresholds_latest_success_and_pace_across_a_resume() -> None:
    # 100 s per 10,000 env steps, except one interval that spans a stop of over an hour.
    times = [0, 100, 200, 4_000, 4_100, 4_200]
    successes = [0.1, 0.5, 0.7, 0.95, 0.9, 0.8]
    rows = [evaluation(0, 10_000 * (i + 1), success, t) for i, (success, t) in enumerate(zip(successes, times))]
    summary = report.summarize(0, rows, (0.5, 0.9))
    assert summary.reached == {0.5: rows[1], 0.9: rows[3]}
    assert summary.latest == rows[-1]
    assert summary.seconds_per_env_step == pytest.approx(400 / 40_000)
    assert summary.resume_gaps == 1
    # Two intervals, one a resume: the typical interval is the faster one, so the resume is still left out.
    short = [evaluation(1, 10_000, 0.6, 0), evaluation(1, 20_000, 0.3, 100), evaluation(1, 30_000, 0.4, 9_000)]
    summary = report.summarize(1, short, (0.5, 0.9))
    assert (summary.reached, summary.seconds_per_env_step, summary.resume_gaps) == ({0.5: short[0], 0.9: None}, 0.01, 1)
    # A slower machine (twice the typical pace) is not taken for a resume.
    uneven = report.summarize(2, [evaluation(2, 10_000 * i, 0.0, t) for i, t in enumerate([0, 100, 300, 400], 1)], ())
    assert uneven.resume_gaps == 0 and uneven.seconds_per_env_step == pytest.approx(400 / 30_000)
    assert report.summarize(3, [], (0.5,)) == report.SeedSummary(3, {0.5: None}, None, None, 0)


def test_markdown_table_aligns_every_column_right() -> None:
    assert report.markdown_table(["seed", "success"], [["0", "0.50"], ["1", "-"]]).splitlines() == [
        "| seed | success |", "|---:|---:|", "| 0 | 0.50 |", "| 1 | - |",
    ]


def test_plot_draws_a_median_band_over_seeds_and_one_seed_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = pytest.importorskip("matplotlib.figure")
    legends: list[list[str]] = []

    def record(figure: object, path: Path, **_: object) -> None:
        legends.append([text.get_text() for text in figure.axes[0].get_legend().get_texts()])

    monkeypatch.setattr(figures.Figure, "savefig", record)
    rows = [evaluation(seed, steps, 0.5, 0.0) for seed in (1, 2) for steps in (10_000, 20_000)]
    report.plot(rows, [1, 2], "task", tmp_path / "two.png")
    report.plot(rows[2:], [1, 2], "task", tmp_path / "one.png")  # seed 1 has no evaluations yet
    assert legends == [["95% bootstrap band of the median", "median of 2 seeds"], ["seed 2"]]
