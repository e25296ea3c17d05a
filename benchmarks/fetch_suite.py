"""Configs x seeds with the real CLI, each run resumable over several sittings, and a report of all their evaluations.

    python benchmarks/fetch_suite.py configs/fetch_push.yaml configs/fetch_slide.yaml --seeds 1 2 3 \\
        --env-steps 500000 --out results/fetch_suite --jobs 2
    python benchmarks/fetch_suite.py --out results/fetch_suite --report-only     # while runs still go

Each run is ``python -m her_lightning.cli fit`` in its own process (``runner.py``), with the config, the seed as
``seed_everything`` and the run folder ``OUT/<config stem>/seed<S>`` (TensorBoard logs and checkpoints); its output
is appended to ``OUT/<config stem>/seed<S>.log``. A run folder that holds ``checkpoints/last.ckpt`` is resumed from
it (``--ckpt_path last``), so running the suite again continues every run where it stopped, or on to a larger
``--env-steps``. A run folder that another process is fitting into is reported and skipped. ``--env-steps`` sets
``trainer.max_epochs``: enough epochs for that many env steps (``epoch_env_steps``), after the random warm-up, as
the configs count their own schedules. With ``--jobs`` above 1 every run trains on one torch thread; with one job,
on the config's ``torch_threads``. Arguments after ``--`` go to every fit command, after the suite's own.

The report covers every run folder under OUT, whichever sitting started it. It writes ``OUT/evaluations.csv`` (a
row per evaluation: task, seed, env_steps, success, wall_time), ``OUT/<task>.png`` (a thin line per seed and the
median across seeds, drawn by ``report.py`` as for ``seeds.py``) and ``OUT/fetch_suite.md`` (a table per task,
printed at the end). A task is its config's stem.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath

import torch
import yaml
from common import machine
from report import (
    RESUME_GAP,
    SUCCESS_TAG,
    Evaluation,
    SeedSummary,
    markdown_table,
    plot,
    read_run,
    summarize,
    write_csv,
)
from runner import (
    CLI_MODULE,
    Run,
    check_config,
    check_jobs,
    fit_command,
    option_value,
    parse_seeds,
    split_at_dashes,
    train_all,
)

from her_lightning.envs import close_env, make_env

FIELDS = ("task", "seed", "env_steps", "success", "wall_time")
THRESHOLDS = (0.5, 0.9)
REPORT = "fetch_suite.md"
MACHINES = "machines.txt"  # where the suite's sittings trained: a line per distinct machine and setting
# Options the suite sets on every fit command, or reads from the config to size the budget: not to be given after --.
SUITE_OPTIONS = (
    "config", "seed_everything", "ckpt_path", "trainer.max_epochs", "trainer.logger",
    "collector.episodes_per_epoch", "data.env",
)
ENTRY_POINT = "her-lightning"  # the CLI's command, as pyproject.toml installs it


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


def names_the_cli(args: Sequence[str], i: int) -> bool:
    """Whether argument ``i`` of a Python command line names the her_lightning CLI: the ``her-lightning`` entry point
    (a script the interpreter runs), the module after ``-m`` (``-m her_lightning.cli``, ``-mher_lightning.cli``) or
    the module's file."""
    arg, path = args[i], PurePath(args[i])
    module = arg == f"-m{CLI_MODULE}" or (arg == CLI_MODULE and i > 0 and args[i - 1] == "-m")
    module_file = PurePath(*CLI_MODULE.split(".")).with_suffix(".py")
    return module or path.name == ENTRY_POINT or path.parts[-2:] == module_file.parts


def is_fit(command_line: Sequence[str]) -> bool:
    """Whether a process's command line (its program, then its arguments) is a ``fit`` of the her_lightning CLI.

    The program is the ``her-lightning`` entry point, or a Python interpreter that runs the CLI (itself or through
    another module, such as ``-m cProfile``); ``fit`` follows. A wrapper that starts one (``timeout 60 her-lightning
    fit``, ``bash -c "..."``) is not a fit: its child is.
    """
    if not command_line:
        return False
    program = PurePath(command_line[0]).name
    if program == ENTRY_POINT:
        return "fit" in command_line[1:]
    if not program.startswith("python"):
        return False
    cli = next((i for i in range(1, len(command_line)) if names_the_cli(command_line, i)), None)
    return cli is not None and "fit" in command_line[cli + 1:]


def count_fits(command_lines: Iterable[Sequence[str]]) -> int:
    """How many of the processes with these command lines train with the her_lightning CLI."""
    return sum(is_fit(command_line) for command_line in command_lines)


def process_command_lines() -> list[list[str]]:
    """Every process's command line on this machine, read from ``/proc``; none where there is no ``/proc``."""
    command_lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = path.read_bytes().decode(errors="replace")
        except OSError:  # the process ended while being read
            continue
        if text:  # a kernel thread has none
            command_lines.append(text.rstrip("\0").split("\0"))
    return command_lines


def fits_running_elsewhere() -> int:
    """How many training commands (``her-lightning fit``, ``python -m her_lightning.cli fit``) other processes on
    this machine run now: they share its cores with the suite's runs."""
    return count_fits(process_command_lines())


def record_machine(out: Path, jobs: int, passed: Sequence[str], elsewhere: int = 0) -> None:
    """Adds this sitting's machine, accelerator, runs at once (``jobs`` of the suite's, ``elsewhere`` of other
    commands') and threads per run to ``OUT/machines.txt`` if it is not there yet: the report may be written on
    another machine, and a suite may span several."""
    if option_value(passed, "--trainer.accelerator") in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()}"
    else:
        device = "no GPU"
    threads = "1" if jobs > 1 else option_value(passed, "--torch_threads") or "the config's"
    threads = f"{threads} torch thread{'' if threads == '1' else 's'} per run"
    runs = jobs + elsewhere
    at_once = f"{runs} run{'s' if runs > 1 else ''} at once"
    at_once += f" ({elsewhere} started elsewhere)" if elsewhere else ""
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


def read_suite(out: Path) -> dict[str, dict[int, list[Evaluation]]]:
    """Every run folder ``OUT/<task>/seed<S>``: task -> seed -> its evaluations (none yet for a run just started)."""
    runs: dict[str, dict[int, list[Evaluation]]] = {}
    for folder in sorted(out.glob("*/seed*")):
        seed_text = folder.name.removeprefix("seed")
        if folder.is_dir() and seed_text.isdigit():
            task, seed = folder.parent.name, int(seed_text)
            runs.setdefault(task, {})[seed] = read_run(folder, task, seed)
    return {task: dict(sorted(seeds.items())) for task, seeds in sorted(runs.items())}


def table(summaries: Sequence[SeedSummary]) -> str:
    """A Markdown table, a row per seed: env steps to each of ``THRESHOLDS``, the latest success, the pace."""
    header = ["seed", *(f"env steps to {threshold}" for threshold in THRESHOLDS), "latest success",
              "wall time per 100k env steps"]
    return markdown_table(header, [table_row(summary) for summary in summaries])


def table_row(s: SeedSummary) -> list[str]:
    """One seed's cells of ``table``."""
    if s.latest is None:
        return [str(s.seed)] + ["no evaluation yet"] * (len(THRESHOLDS) + 2)
    reached = [
        f"{first.env_steps:,}" if first is not None else f"not yet ({s.latest.env_steps:,} env steps run)"
        for first in s.reached.values()
    ]
    latest = f"{s.latest.success:.2f} at {s.latest.env_steps:,} env steps"
    pace = "-" if s.seconds_per_env_step is None else f"{s.seconds_per_env_step * 100_000 / 60:.1f} min"
    if s.resume_gaps:
        pace += f" ({s.resume_gaps} interval{'s' if s.resume_gaps > 1 else ''} across a resume left out)"
    return [str(s.seed), *reached, latest, pace]


def report(out: Path) -> str:
    """Writes the CSV, a plot per task and the Markdown report from every run folder under ``out``; returns the
    report."""
    runs = read_suite(out)
    evaluations = [e for seeds in runs.values() for own in seeds.values() for e in own]
    csv_rows = [(e.task, e.seed, e.env_steps, e.success, e.wall_time) for e in evaluations]
    write_csv(out / "evaluations.csv", FIELDS, csv_rows)
    machines = (out / MACHINES).read_text().splitlines() if (out / MACHINES).exists() else []
    trained_on = "; ".join(machines) or f"{machine(with_threads=False)} (where this report ran)"
    sections = [
        f"# Evaluation success rate of every run under {out}",
        "",
        (
            f"Trained on: {trained_on}. Evaluations are read from the runs' TensorBoard logs (`{SUCCESS_TAG}`); the "
            "wall time per 100k env steps is that between consecutive evaluations (training and evaluating), leaving "
            f"out intervals across a resume (more than {RESUME_GAP:g} times slower than the run's typical interval)."
        ),
    ]
    for task, seeds in runs.items():
        sections += ["", f"## {task}", ""]
        if any(seeds.values()):
            plot([e for e in evaluations if e.task == task], sorted(seeds), task, out / f"{task}.png")
            sections += [f"![{task}]({task}.png)", ""]
        sections.append(table([summarize(seed, own, THRESHOLDS) for seed, own in seeds.items()]))
    text = "\n".join(sections) + "\n"
    (out / REPORT).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """The command line: ``argv`` (default: this process's arguments), as the module's docstring shows."""
    argv, passed = split_at_dashes(sys.argv[1:] if argv is None else argv)
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
    check_jobs(options.jobs)
    seeds = parse_seeds(options.seeds)
    for config in options.configs:
        check_config(config)
    stems = [config.stem for config in options.configs]
    if len(set(stems)) < len(stems):
        names = " ".join(map(str, options.configs))
        raise ValueError(f"configs {names} share a file name: the suite keeps runs by it (OUT/<name>/seed<S>)")
    check_passed_args(passed)
    epochs = {config: math.ceil(options.env_steps / epoch_env_steps(config)) for config in options.configs}
    runs = [Run(config, seed) for config in options.configs for seed in seeds]

    record_machine(out, options.jobs, passed, fits_running_elsewhere())
    return train_all(
        runs, out, options.jobs, lambda run: fit_command(run, out, epochs[run.config], options.jobs > 1, passed)
    )


if __name__ == "__main__":
    main()
