"""What the benchmark runners report: every evaluation of a run, read from its TensorBoard logs, a summary per seed
(env steps to success thresholds, the latest evaluation, the wall time per env step), Markdown tables, CSV files and
the success curves of several seeds."""

from __future__ import annotations

import csv
import math
import re
import statistics
import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.util.tensor_util import make_ndarray

from her_lightning.resume import EVENT_FILE_MARK

SUCCESS_TAG = "eval/success_rate"
RETURN_TAG = "eval/episode_return"
RECORD_HEADER = 12  # bytes before an event: its length (8) and the length's CRC (4)
RESUME_GAP = 3.0  # an interval this many times slower than typical spans a resume: see seconds_per_env_step


class Evaluation(NamedTuple):
    task: str
    seed: int
    env_steps: int
    success: float
    episode_return: float  # NaN where the log holds the success rate alone (a file cut between the two)
    wall_time: float  # seconds since the epoch, when TensorBoard wrote the success rate


class Scalar(NamedTuple):
    tag: str
    step: int
    wall_time: float
    value: float


class SeedSummary(NamedTuple):
    seed: int
    reached: dict[float, Evaluation | None]  # per threshold, the first evaluation at or above it
    latest: Evaluation | None
    seconds_per_env_step: float | None
    resume_gaps: int  # intervals left out of seconds_per_env_step


def event_files(folder: Path) -> list[Path]:
    """The TensorBoard event files of a run folder, by name; none where the folder does not exist yet."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if EVENT_FILE_MARK in path.name)


def records(path: Path) -> Iterator[bytes]:
    """The serialized events of one TensorBoard event file, in the order they were written.

    The file is a sequence of records (8-byte length, 4-byte CRC of it, the event, 4-byte CRC of the event), read
    here directly: TensorBoard's own readers (``EventAccumulator``, ``event_file_loader``) check every record's
    CRC in pure Python, at about 4 MB/s on this machine, and a Fetch run logs about 165 bytes per env step (a
    histogram every epoch), so 2,000,000 env steps would take over a minute to read for a few hundred evaluations.
    A record cut short at the end (a file still being written) ends the read.
    """
    with path.open("rb") as file:
        while len(header := file.read(RECORD_HEADER)) == RECORD_HEADER:
            (length,) = struct.unpack_from("<Q", header)
            record = file.read(length + 4)
            if len(record) < length + 4:
                return
            yield record[:length]


def scalar_events(path: Path, tags: Sequence[str]) -> list[Scalar]:
    """Every scalar of one event file whose tag is one of ``tags``. Only records that hold a tag's name are parsed."""
    names = re.compile(b"|".join(re.escape(tag.encode()) for tag in tags))
    found = []
    for record in records(path):
        if not names.search(record):
            continue
        event = Event.FromString(record)
        for value in event.summary.value:
            if value.tag in tags:
                number = value.simple_value if value.HasField("simple_value") else make_ndarray(value.tensor)
                found.append(Scalar(value.tag, event.step, event.wall_time, float(number)))
    return found


def file_evaluations(path: Path, task: str, seed: int) -> list[Evaluation]:
    """The evaluations of one event file: its success rates, each with the episode return of its step."""
    by_step: dict[int, dict[str, Scalar]] = {}
    for scalar in scalar_events(path, (SUCCESS_TAG, RETURN_TAG)):
        by_step.setdefault(scalar.step, {})[scalar.tag] = scalar
    # Logged as float32: 0.9 reads 0.8999999762; a rate of at most 10,000 episodes has 4 decimals.
    return [
        Evaluation(
            task, seed, step, round(scalars[SUCCESS_TAG].value, 4),
            round(scalars[RETURN_TAG].value, 4) if RETURN_TAG in scalars else math.nan, scalars[SUCCESS_TAG].wall_time,
        )
        for step, scalars in by_step.items()
        if SUCCESS_TAG in scalars
    ]


def read_run(folder: Path, task: str, seed: int) -> list[Evaluation]:
    """A run folder's evaluations, by env steps, from all its event files.

    A resumed run writes a new event file, and cuts the old ones back to its checkpoint; a run restarted without a
    checkpoint leaves the old file whole. Where several files hold a step, the evaluation written last counts.
    """
    latest: dict[int, Evaluation] = {}
    for path in event_files(folder):
        for evaluation in file_evaluations(path, task, seed):
            kept = latest.get(evaluation.env_steps)
            if kept is None or evaluation.wall_time >= kept.wall_time:
                latest[evaluation.env_steps] = evaluation
    return [latest[step] for step in sorted(latest)]


def log_start(folder: Path) -> float | None:
    """When the run's first event file was opened (the wall time of its first record), in seconds since the epoch;
    ``None`` before it has one. For a run never resumed, this is the start of its fit."""
    firsts = [first for path in event_files(folder) if (first := next(records(path), None)) is not None]
    return min((Event.FromString(first).wall_time for first in firsts), default=None)


def seconds_per_env_step(evaluations: Sequence[Evaluation]) -> tuple[float | None, int]:
    """Wall time per env step between consecutive evaluations, leaving out the intervals that span a resume.

    An interval that spans a resume also holds the time the run was stopped, its restart and the retraining of
    what it had done after its last checkpoint. Such an interval is recognised by its pace: it counts only if
    its seconds per env step are at most ``RESUME_GAP`` (3) times the typical interval's, the lower median of all
    of them (so that up to half the intervals can be resumes). A stop of less than about two evaluation intervals
    therefore stays in, and a slowdown of up to 3 times (the machine shared with other runs) is not taken for one.

    Returns:
        Seconds per env step over the intervals kept (``None`` with fewer than two evaluations), and the number of
        intervals left out.
    """
    intervals = [(b.wall_time - a.wall_time, b.env_steps - a.env_steps) for a, b in pairwise(evaluations)]
    if not intervals:
        return None, 0
    typical = statistics.median_low(seconds / steps for seconds, steps in intervals)
    kept = [(seconds, steps) for seconds, steps in intervals if seconds / steps <= RESUME_GAP * typical]
    return sum(seconds for seconds, _ in kept) / sum(steps for _, steps in kept), len(intervals) - len(kept)


def summarize(seed: int, evaluations: Sequence[Evaluation], thresholds: Sequence[float]) -> SeedSummary:
    """One run's summary, from its evaluations in env-step order."""
    reached = {threshold: next((e for e in evaluations if e.success >= threshold), None) for threshold in thresholds}
    pace, gaps = seconds_per_env_step(evaluations)
    return SeedSummary(seed, reached, evaluations[-1] if evaluations else None, pace, gaps)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of right-aligned columns."""
    lines = [f"| {' | '.join(header)} |", "|" + "---:|" * len(header)]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows])


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """``fields`` as the header, then a line per row."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        writer.writerows(rows)


def plot(evaluations: Sequence[Evaluation], seeds: Sequence[int], title: str, path: Path) -> None:
    """Success against env steps: a thin line per seed, the median and a 95% bootstrap band of the median; one seed
    alone is drawn as its own line (a median of one has no band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves, drawn = [], []
    for seed in seeds:
        own = sorted((e for e in evaluations if e.seed == seed), key=lambda e: e.env_steps)
        if own:
            curves.append((np.array([e.env_steps for e in own]), np.array([e.success for e in own])))
            drawn.append(seed)
    figure, axes = plt.subplots(figsize=(7, 4))
    if len(curves) == 1:
        axes.plot(*curves[0], color="tab:orange", linewidth=2, label=f"seed {drawn[0]}")
    elif curves:
        for steps, success in curves:
            axes.plot(steps, success, color="tab:blue", alpha=0.25, linewidth=0.8)
        # Each seed's curve as a step function on a common grid: the latest evaluation at or before each point.
        grid = np.linspace(max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves), 200)
        values = np.stack([success[np.searchsorted(steps, grid, side="right") - 1] for steps, success in curves])
        rng = np.random.default_rng(0)
        resampled = values[rng.integers(0, len(values), (2000, len(values)))]  # (2000, seeds, grid)
        low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5], axis=0)
        axes.fill_between(grid, low, high, color="tab:orange", alpha=0.3, label="95% bootstrap band of the median")
        median = f"median of {len(curves)} seeds"
        axes.plot(grid, np.median(values, axis=0), color="tab:orange", linewidth=2, label=median)
    axes.set(xlabel="environment steps", ylabel="eval success rate", ylim=(-0.02, 1.02), title=title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
