"""One config over many seeds: every evaluation of every seed, a plot of the success curves, a per-seed table.

Runs as many seeds at once as there are cores, each in its own process on one torch thread, with the config as a
user runs it except for what writes files (no logger, no checkpoints, no progress bar).

    python benchmarks/seeds.py configs/point2d.yaml --seeds 0-19 --out results/point2d
    python benchmarks/seeds.py configs/fetch_reach.yaml --seeds 0-9 -- --trainer.max_epochs 40

Writes ``OUT/evaluations.csv`` (a row per evaluation: seed, env_steps, updates, seconds, success, return),
``OUT/success.png`` (a thin line per seed, the median across seeds and a 95% bootstrap band of the median) and
``OUT/seeds.md`` (the table printed at the end). Arguments after ``--`` go to ``her-lightning fit``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Protocol

import lightning.pytorch as pl

from her_lightning.evaluation import Evaluator

FIELDS = ("seed", "env_steps", "updates", "seconds", "success", "return")
SOLVED = 0.95


class Evaluation(NamedTuple):
    seed: int
    env_steps: int
    updates: int
    seconds: float
    success: float
    episode_return: float


class EvaluationRecorder(pl.Callback):
    """Appends every evaluation of the run to a CSV file, as it happens (a crashed run keeps its rows).

    It must come after the run's ``Evaluator`` in the trainer's callbacks: it records an epoch whose end
    made the evaluator's count of evaluations grow.
    """

    def __init__(self, path: Path, seed: int) -> None:
        self.path, self.seed = path, seed
        self.start = time.perf_counter()
        self.seen = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        (evaluator,) = [callback for callback in trainer.callbacks if isinstance(callback, Evaluator)]
        if evaluator.evaluations == self.seen:
            return
        self.seen = evaluator.evaluations
        if not trainer.is_global_zero:  # under DDP every rank evaluates the same policy; one row is enough
            return
        metrics = trainer.callback_metrics
        row = Evaluation(
            self.seed,
            trainer.datamodule.env_steps,
            pl_module.updates,
            round(time.perf_counter() - self.start, 2),
            round(float(metrics["eval/success_rate"]), 4),
            round(float(metrics["eval/episode_return"]), 4),
        )
        with self.path.open("a", newline="") as file:
            csv.writer(file).writerow(row)


def run_seed(config: str, seed: int, path: Path, cli_args: list[str]) -> None:
    """One seed's run in this process (the worker side of ``main``)."""
    import torch

    from her_lightning.cli import HERLightningCLI
    from her_lightning.data import HERDataModule
    from her_lightning.module import HERDDPG

    torch.set_num_threads(1)
    quiet = ["--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    cli = HERLightningCLI(
        HERDDPG, HERDataModule, run=False, save_config_callback=None,
        args=["--config", config, "--seed_everything", str(seed), *quiet, "--torch_threads", "1", *cli_args],
    )
    cli.trainer.callbacks.append(EvaluationRecorder(path, seed))  # after the evaluator
    cli.trainer.fit(cli.model, cli.datamodule)


def parse_seeds(text: list[str]) -> list[int]:
    """``["0-3", "7"]`` -> ``[0, 1, 2, 3, 7]``."""
    seeds: list[int] = []
    for part in text:
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def read_rows(path: Path) -> list[Evaluation]:
    with path.open() as file:
        return [Evaluation(int(r[0]), int(r[1]), int(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in csv.reader(file)]


class SeedSummary(NamedTuple):
    seed: int
    solved_at: Evaluation | None  # the first evaluation at or above SOLVED
    lowest_after: float | None  # the lowest success rate of the evaluations after that one
    final: Evaluation | None


def summarize(rows: list[Evaluation], seed: int) -> SeedSummary:
    own = sorted((r for r in rows if r.seed == seed), key=lambda r: r.updates)
    first = next((i for i, r in enumerate(own) if r.success >= SOLVED), None)
    solved = own[first] if first is not None else None
    after = [r.success for r in own[first + 1:]] if first is not None else []
    return SeedSummary(seed, solved, min(after) if after else None, own[-1] if own else None)


def table(summaries: list[SeedSummary]) -> str:
    lines = ["| seed | solved at (env steps) | solved at (s) | lowest eval after solving | final success | final return |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        solved = f"{s.solved_at.env_steps:,} | {s.solved_at.seconds:.0f}" if s.solved_at else "never | -"
        lowest = f"{s.lowest_after:.2f}" if s.lowest_after is not None else "-"
        final = f"{s.final.success:.2f} | {s.final.episode_return:.2f}" if s.final else "- | -"
        lines.append(f"| {s.seed} | {solved} | {lowest} | {final} |")
    solved = sum(s.solved_at is not None for s in summaries)
    stayed = sum(s.solved_at is not None and (s.lowest_after is None or s.lowest_after >= 0.9) for s in summaries)
    good_end = sum(s.final is not None and s.final.success >= SOLVED for s in summaries)
    lines.append("")
    lines.append(f"{solved}/{len(summaries)} seeds reached {SOLVED}; {stayed} never fell below 0.90 after that; "
                 f"{good_end} end at >= {SOLVED}.")
    return "\n".join(lines)


class CurvePoint(Protocol):
    """What ``plot`` reads of an evaluation."""

    @property
    def seed(self) -> int: ...

    @property
    def env_steps(self) -> int: ...

    @property
    def success(self) -> float: ...


def plot(rows: Sequence[CurvePoint], seeds: list[int], title: str, path: Path) -> None:
    """Success against env steps: a thin line per seed, the median and a 95% bootstrap band of the median; one seed
    alone is drawn as its own line (a median of one has no band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves, drawn = [], []
    for seed in seeds:
        own = sorted((r for r in rows if r.seed == seed), key=lambda r: r.env_steps)
        if own:
            curves.append((np.array([r.env_steps for r in own]), np.array([r.success for r in own])))
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
        axes.plot(grid, np.median(values, axis=0), color="tab:orange", linewidth=2, label=f"median of {len(curves)} seeds")
    axes.set(xlabel="environment steps", ylabel="eval success rate", ylim=(-0.02, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    argv = sys.argv[1:]
    cli_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", nargs="+", default=["0-9"], help="seeds and ranges, e.g. 0-19 or 1 6")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: seeds/<config name>)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="seeds run at once (default: cores)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one seed, in this process
    options = parser.parse_args(argv)
    out = options.out or Path("seeds") / Path(options.config).stem
    out.mkdir(parents=True, exist_ok=True)
    if options.worker is not None:
        run_seed(options.config, options.worker, out / f"seed_{options.worker}.csv", cli_args)
        return
    seeds = parse_seeds(options.seeds)

    def launch(seed: int) -> int:
        (out / f"seed_{seed}.csv").unlink(missing_ok=True)
        command = [sys.executable, __file__, options.config, "--out", str(out), "--worker", str(seed), "--", *cli_args]
        with (out / f"seed_{seed}.log").open("w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        print(f"seed {seed}: {'done' if code == 0 else f'failed (exit {code}), see {out}/seed_{seed}.log'}", flush=True)
        return code

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        codes = list(pool.map(launch, seeds))
    rows = [row for seed in seeds if (out / f"seed_{seed}.csv").exists() for row in read_rows(out / f"seed_{seed}.csv")]
    with (out / "evaluations.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    title = f"{Path(options.config).name} {' '.join(cli_args)}".strip()
    plot(rows, seeds, title, out / "success.png")
    report = f"{title}, seeds {options.seeds}, {time.perf_counter() - start:.0f} s with {options.jobs} at once\n\n"
    report += table([summarize(rows, seed) for seed in seeds])
    (out / "seeds.md").write_text(report + "\n")
    print(report)
    if any(codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
