"""Configs x seeds with the real CLI, each run resumable over several sittings, and a report of all their evaluations.

    python benchmarks/fetch_suite.py configs/fetch_push.yaml configs/fetch_slide.yaml --seeds 1 2 3 \\
        --env-steps 500000 --out results/fetch_suite --jobs 2
    python benchmarks/fetch_suite.py --out results/fetch_suite --report-only     # while runs still go

Each run is ``python -m her_lightning.cli fit`` in its own process, with the config, the seed as
``seed_everything`` and the run folder ``OUT/<config stem>/seed<S>`` (TensorBoard logs and checkpoints); its output
is appended to ``OUT/<config stem>/seed<S>.log``. A run folder that holds ``checkpoints/last.ckpt`` is resumed from
it (``--ckpt_path last``), so running the suite again continues every run where it stopped, or on to a larger
``--env-steps``. A run folder that another process is fitting into is reported and skipped. ``--env-steps`` sets
``trainer.max_epochs``: enough epochs for that many env steps (``epoch_env_steps``), after the random warm-up, as
the configs count their own schedules. With ``--jobs`` above 1 every run trains on one torch thread; with one job,
on the config's ``torch_threads``. Arguments after ``--`` go to every fit command, after the suite's own.

The report covers every run folder under OUT, whichever sitting started it. It writes ``OUT/evaluations.csv`` (a
row per evaluation: task, seed, env_steps, success, wall_time), ``OUT/<task>.png`` (a thin line per seed and the
median across seeds, as ``benchmarks/seeds.py`` draws them) and ``OUT/fetch_suite.md`` (a table per task, printed
at the end). A task is its config's stem.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.util.tensor_util import make_ndarray

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from seeds import parse_seeds, plot  # noqa: E402

from her_lightning.checkpoint import LAST_CHECKPOINT  # noqa: E402
from her_lightning.envs import close_env, make_env  # noqa: E402
from her_lightning.resume import LOCK_FILE  # noqa: E402

TAG = "eval/success_rate"
FIELDS = ("task", "seed", "env_steps", "success", "wall_time")
THRESHOLDS = (0.5, 0.9)
RESUME_GAP = 3.0  # an interval this many times slower than typical spans a resume: see seconds_per_env_step
REPORT = "fetch_suite.md"
MACHINES = "machines.txt"  # where the suite's sittings trained: a line per distinct machine and setting
# Options the suite sets on every fit command, or reads from the config to size the budget: not to be given after --.
SUITE_OPTIONS = (
    "config", "seed_everything", "ckpt_path", "trainer.max_epochs", "trainer.logger",
    "collector.episodes_per_epoch", "data.env",
)


class Run(NamedTuple):
    config: Path
    seed: int

    @property
    def task(self) -> str:
        return self.config.stem


class Evaluation(NamedTuple):
    task: str
    seed: int
    env_steps: int
    success: float
    wall_time: float  # seconds since the epoch, when TensorBoard wrote the evaluation


class SeedSummary(NamedTuple):
    seed: int
    reached: dict[float, int | None]  # per threshold, env steps of the first evaluation at or above it
    latest: Evaluation | None
    seconds_per_env_step: float | None
    resume_gaps: int  # intervals left out of seconds_per_env_step


def epoch_env_steps(config: Path) -> int:
    """Env steps one epoch of ``config`` collects: its ``collector.episodes_per_epoch``, rounded up to whole batches
    of ``data.env.num_envs``, times the env's ``max_episode_steps`` (50 for every Fetch task), read from the env as
    the config builds it. For an env that ends episodes on success this is an upper bound.

    Raises:
        ValueError: If the config does not set these, or its env cannot be built.
    """
    settings = yaml.safe_load(config.read_text()) or {}
    try:
        episodes = settings["collector"]["episodes_per_epoch"]
        env = settings["data"]["env"]
        num_envs, env_id = env["num_envs"], env["id"]
    except (KeyError, TypeError):
        raise ValueError(
            f"config {config} does not set collector.episodes_per_epoch, data.env.id and data.env.num_envs: "
            "the suite needs them to turn --env-steps into epochs"
        ) from None
    probe = make_env(env_id, 1, 0, **env.get("kwargs", {}))
    close_env(probe)
    return math.ceil(episodes / num_envs) * num_envs * probe.max_episode_steps


def fit_command(run: Run, out: Path, epochs: int, one_thread: bool, passed: Sequence[str]) -> list[str]:
    """The CLI command that trains ``run`` to ``epochs`` in its run folder, resuming it if it has a checkpoint."""
    command = [sys.executable, "-m", "her_lightning.cli", "fit", "--config", str(run.config),
               "--seed_everything", str(run.seed)]
    if one_thread:
        command += ["--torch_threads", "1"]
    command += [
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", run.task,
        "--trainer.logger.init_args.version", f"seed{run.seed}",
        "--trainer.max_epochs", str(epochs),
    ]
    if (out / run.task / f"seed{run.seed}" / "checkpoints" / LAST_CHECKPOINT).exists():
        command += ["--ckpt_path", "last"]
    return command + list(passed)


class Outcome(NamedTuple):
    failed: bool  # the fit stopped with an error (a run skipped because another process is fitting it has not)
    message: str


def train(run: Run, command: list[str], out: Path) -> Outcome:
    """Runs ``command``, appending its output to the run's log."""
    log_path = out / run.task / f"seed{run.seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        start = log.tell()
        log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code == 0:
        return Outcome(False, "done")
    with log_path.open("rb") as log:
        log.seek(start)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if LOCK_FILE in last:  # the CLI refuses a run folder that another fit holds, in one line naming its lock
        return Outcome(False, f"skipped, another process is fitting it: {last}")
    return Outcome(True, f"failed (exit {code}): {last} (see {log_path})")


def passed_value(passed: Sequence[str], option: str) -> str | None:
    """The value the fit commands get for ``option`` from the arguments after ``--`` (the last one counts)."""
    value = None
    for i, arg in enumerate(passed):
        key, equals, text = arg.partition("=")
        if key == option:
            value = text if equals else (passed[i + 1] if i + 1 < len(passed) else None)
    return value


def fits_running_elsewhere() -> int:
    """How many training commands (``her_lightning.cli fit``) other processes on this machine run now: they share
    its cores with the suite's runs. 0 where there is no ``/proc`` to read."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while being read
            continue
        count += b"her_lightning.cli" in args and b"fit" in args
    return count


def record_machine(out: Path, jobs: int, passed: Sequence[str], elsewhere: int = 0) -> None:
    """Adds this sitting's machine, accelerator, runs at once (``jobs`` of the suite's, ``elsewhere`` of other
    commands') and threads per run to ``OUT/machines.txt`` if it is not there yet: the report may be written on
    another machine, and a suite may span several."""
    if passed_value(passed, "--trainer.accelerator") in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()}"
    else:
        device = "no GPU"
    threads = "1" if jobs > 1 else passed_value(passed, "--torch_threads") or "the config's"
    threads = f"{threads} torch thread{'' if threads == '1' else 's'} per run"
    runs = jobs + elsewhere
    at_once = f"{runs} run{'s' if runs > 1 else ''} at once" + (f" ({elsewhere} started elsewhere)" if elsewhere else "")
    line = f"{machine(with_threads=False)}, {device}; {at_once}, {threads}"
    path = out / MACHINES
    known = path.read_text().splitlines() if path.exists() else []
    if line not in known:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*known, line]) + "\n")


def check_passed_args(passed: Sequence[str]) -> None:
    """Refuse, in one line, an option after ``--`` that the suite sets itself or sizes the budget from."""
    for arg in passed:
        key = arg.partition("=")[0].removeprefix("--")
        if arg.startswith("--") and any(key == option or key.startswith(f"{option}.") for option in SUITE_OPTIONS):
            raise ValueError(
                f"{arg} after -- is not allowed: the suite sets {', '.join('--' + option for option in SUITE_OPTIONS)} "
                "itself, from its own options and the config"
            )


def scalar_events(path: Path, tag: str) -> list[tuple[int, float, float]]:
    """``(step, wall time, value)`` of every ``tag`` scalar in one TensorBoard event file.

    The file is a sequence of records (8-byte length, 4-byte CRC of it, the event, 4-byte CRC of the event), read
    here directly: TensorBoard's own readers (``EventAccumulator``, ``event_file_loader``) check every record's
    CRC in pure Python, at about 4 MB/s on this machine, and a Fetch run logs about 165 bytes per env step (a
    histogram every epoch), so 2,000,000 env steps would take over a minute to read for a few hundred evaluations.
    Only records that hold the tag's name are parsed. A record cut short at the end (a file still being written)
    ends the read.
    """
    needle = tag.encode()
    found = []
    with path.open("rb") as file:
        while len(header := file.read(12)) == 12:
            (length,) = struct.unpack_from("<Q", header)
            record = file.read(length + 4)
            if len(record) < length + 4:
                break
            if needle not in record:
                continue
            event = Event.FromString(record[:length])
            for value in event.summary.value:
                if value.tag == tag:
                    number = value.simple_value if value.HasField("simple_value") else make_ndarray(value.tensor)
                    found.append((event.step, event.wall_time, float(number)))
    return found


def read_run(folder: Path, task: str, seed: int) -> list[Evaluation]:
    """A run folder's evaluations, by env steps, from all its event files.

    A resumed run writes a new event file, and cuts the old ones back to its checkpoint; a run restarted without a
    checkpoint leaves the old file whole. Where several files hold a step, the evaluation written last counts.
    """
    latest: dict[int, tuple[float, float]] = {}
    for path in folder.iterdir():
        if "tfevents" not in path.name:
            continue
        for step, wall_time, value in scalar_events(path, TAG):
            if step not in latest or wall_time >= latest[step][1]:
                # Logged as float32: 0.9 reads 0.8999999762; a rate of at most 10,000 episodes has 4 decimals.
                latest[step] = (round(value, 4), wall_time)
    return [Evaluation(task, seed, step, success, wall_time) for step, (success, wall_time) in sorted(latest.items())]


def read_suite(out: Path) -> dict[str, dict[int, list[Evaluation]]]:
    """Every run folder ``OUT/<task>/seed<S>``: task -> seed -> its evaluations (none yet for a run just started)."""
    runs: dict[str, dict[int, list[Evaluation]]] = {}
    for folder in sorted(out.glob("*/seed*")):
        seed_text = folder.name.removeprefix("seed")
        if folder.is_dir() and seed_text.isdigit():
            task, seed = folder.parent.name, int(seed_text)
            runs.setdefault(task, {})[seed] = read_run(folder, task, seed)
    return {task: dict(sorted(seeds.items())) for task, seeds in sorted(runs.items())}


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
    intervals = [(b.wall_time - a.wall_time, b.env_steps - a.env_steps) for a, b in zip(evaluations, evaluations[1:])]
    if not intervals:
        return None, 0
    typical = statistics.median_low(seconds / steps for seconds, steps in intervals)
    kept = [(seconds, steps) for seconds, steps in intervals if seconds / steps <= RESUME_GAP * typical]
    return sum(seconds for seconds, _ in kept) / sum(steps for _, steps in kept), len(intervals) - len(kept)


def summarize(seed: int, evaluations: Sequence[Evaluation]) -> SeedSummary:
    """One run's row of the report, from its evaluations in env-step order."""
    reached = {
        threshold: next((e.env_steps for e in evaluations if e.success >= threshold), None) for threshold in THRESHOLDS
    }
    pace, gaps = seconds_per_env_step(evaluations)
    return SeedSummary(seed, reached, evaluations[-1] if evaluations else None, pace, gaps)


def table(summaries: Sequence[SeedSummary]) -> str:
    """A Markdown table, a row per seed."""
    reach = " | ".join(f"env steps to {threshold}" for threshold in THRESHOLDS)
    lines = [f"| seed | {reach} | latest success | wall time per 100k env steps |",
             "|---:|" + "---:|" * (len(THRESHOLDS) + 2)]
    for s in summaries:
        if s.latest is None:
            lines.append(f"| {s.seed} |" + " no evaluation yet |" * (len(THRESHOLDS) + 2))
            continue
        reached = " | ".join(
            f"{steps:,}" if steps is not None else f"not yet ({s.latest.env_steps:,} env steps run)"
            for steps in s.reached.values()
        )
        latest = f"{s.latest.success:.2f} at {s.latest.env_steps:,} env steps"
        pace = "-" if s.seconds_per_env_step is None else f"{s.seconds_per_env_step * 100_000 / 60:.1f} min"
        if s.resume_gaps:
            pace += f" ({s.resume_gaps} interval{'s' if s.resume_gaps > 1 else ''} across a resume left out)"
        lines.append(f"| {s.seed} | {reached} | {latest} | {pace} |")
    return "\n".join(lines)


def report(out: Path) -> str:
    """Writes the CSV, a plot per task and the Markdown report from every run folder under ``out``; returns the
    report."""
    runs = read_suite(out)
    with (out / "evaluations.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FIELDS)
        writer.writerows(row for seeds in runs.values() for rows in seeds.values() for row in rows)
    machines = (out / MACHINES).read_text().splitlines() if (out / MACHINES).exists() else []
    trained_on = "; ".join(machines) or f"{machine(with_threads=False)} (where this report ran)"
    sections = [
        f"# Evaluation success rate of every run under {out}",
        "",
        f"Trained on: {trained_on}. Evaluations are read from the runs' TensorBoard logs (`{TAG}`); the wall time per "
        "100k env steps is that between consecutive evaluations (training and evaluating), leaving out intervals "
        f"across a resume (more than {RESUME_GAP:g} times slower than the run's typical interval).",
    ]
    for task, seeds in runs.items():
        sections += ["", f"## {task}", ""]
        rows = [row for evaluations in seeds.values() for row in evaluations]
        if rows:
            plot(rows, sorted(seeds), task, out / f"{task}.png")
            sections += [f"![{task}]({task}.png)", ""]
        sections.append(table([summarize(seed, evaluations) for seed, evaluations in seeds.items()]))
    text = "\n".join(sections) + "\n"
    (out / REPORT).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """The command line: ``argv`` (default: this process's arguments), as the module's docstring shows."""
    argv = sys.argv[1:] if argv is None else argv
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", type=Path, help="configs to train, e.g. configs/fetch_push.yaml")
    parser.add_argument("--seeds", nargs="+", default=["0"], help="seeds and ranges, e.g. 1 2 3 or 0-4 (default: 0)")
    parser.add_argument("--env-steps", type=int, help="the budget of every run, warm-up not counted")
    parser.add_argument("--out", type=Path, default=Path("results/fetch_suite"), help="default: %(default)s")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: write the report from OUT")
    options = parser.parse_args(argv)
    try:
        failed = [] if options.report_only else train_suite(options, options.out.resolve(), passed)
    except ValueError as error:
        raise SystemExit(f"fetch_suite.py: error: {error}") from None
    if not options.out.is_dir():
        raise SystemExit(f"fetch_suite.py: error: --out {options.out} does not exist: there is nothing to report")
    print(report(options.out))
    if any(failed):
        raise SystemExit(1)


def train_suite(options: argparse.Namespace, out: Path, passed: list[str]) -> list[bool]:
    """Trains every config x seed, ``options.jobs`` at a time; per run, whether it failed.

    Raises:
        ValueError: For bad options, before anything runs.
    """
    if not options.configs:
        raise ValueError("no config given: name the configs to train, or give --report-only")
    if options.env_steps is None or options.env_steps < 1:
        raise ValueError(f"--env-steps {options.env_steps} is invalid: give the env steps of each run, at least 1")
    if options.jobs < 1:
        raise ValueError(f"--jobs {options.jobs} is invalid: must be at least 1")
    try:
        seeds = list(dict.fromkeys(parse_seeds(options.seeds)))
    except ValueError:
        seeds_text = " ".join(options.seeds)
        raise ValueError(f"--seeds {seeds_text} is invalid: give seeds and ranges, e.g. 1 2 3 or 0-4") from None
    for config in options.configs:
        if not config.is_file():
            raise ValueError(f"config {config} does not exist")
    stems = [config.stem for config in options.configs]
    if len(set(stems)) < len(stems):
        names = " ".join(map(str, options.configs))
        raise ValueError(f"configs {names} share a file name: the suite keeps runs by it (OUT/<name>/seed<S>)")
    check_passed_args(passed)
    epochs = {config: math.ceil(options.env_steps / epoch_env_steps(config)) for config in options.configs}
    runs = [Run(config, seed) for config in options.configs for seed in seeds]

    record_machine(out, options.jobs, passed, fits_running_elsewhere())

    def launch(run: Run) -> bool:
        command = fit_command(run, out, epochs[run.config], options.jobs > 1, passed)
        start = "resuming from its last checkpoint" if "--ckpt_path" in command else "starting"
        print(f"{run.task} seed {run.seed}: {start}, to {epochs[run.config]:,} epochs", flush=True)
        outcome = train(run, command, out)
        print(f"{run.task} seed {run.seed}: {outcome.message}", flush=True)
        return outcome.failed

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        return list(pool.map(launch, runs))


if __name__ == "__main__":
    main()
