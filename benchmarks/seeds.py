"""One config over many seeds: every evaluation of every seed, a plot of the success curves, a per-seed table.

Runs as many seeds at once as there are cores, each ``python -m her_lightning.cli fit`` in its own process on one
torch thread (``runner.py``), with the config as a user runs it except for its callbacks (no checkpoints) and the
progress bar. Each seed starts over: its run folder ``OUT/<config stem>/seed<S>`` loses its TensorBoard logs of
an earlier sitting, and gets the new ones, from which the evaluations are read.

    python benchmarks/seeds.py configs/point2d.yaml --seeds 0-19 --out results/point2d
    python benchmarks/seeds.py configs/fetch_reach.yaml --seeds 0-9 -- --trainer.max_epochs 40

Writes ``OUT/evaluations.csv`` (a row per evaluation: seed, env_steps, seconds since the run's TensorBoard log began
at the start of its fit, success, return), ``OUT/success.png`` (a thin line per seed, the median across seeds and a
95% bootstrap band of the median) and ``OUT/seeds.md`` (the table printed at the end). Arguments after ``--`` go to
every fit command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from report import Evaluation, SeedSummary, event_files, log_start, markdown_table, plot, read_run, summarize, write_csv
from runner import Run, check_config, check_jobs, fit_command, parse_seeds, split_at_dashes, train_all

FIELDS = ("seed", "env_steps", "seconds", "success", "return")
SOLVED = 0.95
STAYED = 0.9  # a solved seed stayed solved if no later evaluation fell below this
# No checkpoints (they would cost training time), and nothing else of the config's callbacks.
QUIET = [
    "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false", "--trainer.enable_model_summary", "false",
]


class SeedResult(NamedTuple):
    evaluations: list[Evaluation]  # in env-step order
    summary: SeedSummary
    start: float | None  # when the run's TensorBoard log began, in seconds since the epoch
    lowest_after: float | None  # the lowest success rate of the evaluations after the first at SOLVED

    @property
    def solved_at(self) -> Evaluation | None:
        return self.summary.reached[SOLVED]

    def seconds(self, evaluation: Evaluation) -> float:
        """Seconds from the run's start to ``evaluation``."""
        return round(evaluation.wall_time - (self.start or evaluation.wall_time), 2)


def seed_result(run: Run, out: Path) -> SeedResult:
    """One seed's evaluations and row of the table, read from its run folder."""
    folder = run.folder(out)
    evaluations = read_run(folder, run.task, run.seed)
    summary = summarize(run.seed, evaluations, [SOLVED])
    solved = summary.reached[SOLVED]
    after = [e.success for e in evaluations if solved is not None and e.env_steps > solved.env_steps]
    return SeedResult(evaluations, summary, log_start(folder), min(after, default=None))


def table(results: Sequence[SeedResult]) -> str:
    """A Markdown table, a row per seed, and a line that counts the seeds that solved the task and stayed solved."""
    rows = []
    for result in results:
        solved, final = result.solved_at, result.summary.latest
        rows.append([
            str(result.summary.seed),
            *((f"{solved.env_steps:,}", f"{result.seconds(solved):.0f}") if solved else ("never", "-")),
            f"{result.lowest_after:.2f}" if result.lowest_after is not None else "-",
            *((f"{final.success:.2f}", f"{final.episode_return:.2f}") if final else ("-", "-")),
        ])
    header = ["seed", "solved at (env steps)", "solved at (s)", "lowest eval after solving", "final success",
              "final return"]
    solved = sum(r.solved_at is not None for r in results)
    stayed = sum(r.solved_at is not None and (r.lowest_after is None or r.lowest_after >= STAYED) for r in results)
    good_end = sum(r.summary.latest is not None and r.summary.latest.success >= SOLVED for r in results)
    return (f"{markdown_table(header, rows)}\n\n{solved}/{len(results)} seeds reached {SOLVED}; {stayed} never fell "
            f"below {STAYED:.2f} after that; {good_end} end at >= {SOLVED}.")


def start_over(folder: Path) -> None:
    """Removes the TensorBoard logs of an earlier sitting from a run folder, so that only the new run is read."""
    for path in event_files(folder):
        path.unlink()


def report(out: Path, results: Sequence[SeedResult], title: str, heading: str) -> str:
    """Writes the CSV, the plot titled ``title`` and the Markdown report (``heading``, then the table) to ``out``;
    returns the report."""
    rows = ((e.seed, e.env_steps, r.seconds(e), e.success, e.episode_return) for r in results for e in r.evaluations)
    write_csv(out / "evaluations.csv", FIELDS, rows)
    seeds = [r.summary.seed for r in results]
    plot([e for r in results for e in r.evaluations], seeds, title, out / "success.png")
    text = f"{heading}\n\n{table(results)}"
    (out / "seeds.md").write_text(text + "\n")
    return text


def main() -> None:
    """The command line, as the module's docstring shows."""
    argv, passed = split_at_dashes(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", nargs="+", default=["0-9"], help="seeds and ranges, e.g. 0-19 or 1 6")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: seeds/<config name>)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="seeds run at once (default: cores)")
    options = parser.parse_args(argv)
    try:
        check_config(options.config)
        check_jobs(options.jobs)
        seeds = parse_seeds(options.seeds)
    except ValueError as error:
        raise SystemExit(f"seeds.py: error: {error}") from None
    out = (options.out or Path("seeds") / options.config.stem).resolve()
    runs = [Run(options.config, seed) for seed in seeds]
    for run in runs:
        start_over(run.folder(out))

    start = time.perf_counter()
    failed = train_all(runs, out, options.jobs, lambda run: fit_command(run, out, None, True, [*QUIET, *passed]))
    title = f"{options.config.name} {' '.join(passed)}".strip()
    heading = f"{title}, seeds {options.seeds}, {time.perf_counter() - start:.0f} s with {options.jobs} at once"
    print(report(out, [seed_result(run, out) for run in runs], title, heading))
    if any(failed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
