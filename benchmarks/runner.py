"""Configs x seeds through the real command line: each run a ``her_lightning.cli fit`` process with its own run folder
``OUT/<config stem>/seed<S>`` (TensorBoard logs, checkpoints if the config writes them) and its output appended to
``OUT/<config stem>/seed<S>.log``; several runs at once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from her_lightning.checkpoint import LAST_CHECKPOINT
from her_lightning.resume import LOCK_FILE

CLI_MODULE = "her_lightning.cli"


class Run(NamedTuple):
    config: Path
    seed: int

    @property
    def task(self) -> str:
        return self.config.stem

    def folder(self, out: Path) -> Path:
        """The run folder: its TensorBoard logs and checkpoints."""
        return out / self.task / f"seed{self.seed}"

    def log(self, out: Path) -> Path:
        """Where the run's output goes, appended sitting after sitting."""
        return out / self.task / f"seed{self.seed}.log"


class Outcome(NamedTuple):
    failed: bool  # the fit stopped with an error (a run skipped because another process is fitting it has not)
    message: str


def parse_seeds(text: Sequence[str]) -> list[int]:
    """The seeds of a ``--seeds`` option, each once, in order: ``["0-3", "7", "2"]`` -> ``[0, 1, 2, 3, 7]``.

    Raises:
        ValueError: For a part that is neither a whole number nor a range of them, naming the option.
    """
    seeds: list[int] = []
    for part in text:
        low, _, high = part.partition("-")
        try:
            seeds += list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ValueError(f"--seeds {' '.join(text)} is invalid: give seeds and ranges, e.g. 1 2 3 or 0-4") from None
    return list(dict.fromkeys(seeds))


def check_jobs(jobs: int) -> None:
    """Refuse a ``--jobs`` below 1."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs} is invalid: must be at least 1")


def check_config(config: Path) -> None:
    """Refuse a config file that does not exist."""
    if not config.is_file():
        raise ValueError(f"config {config} does not exist")


def split_at_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """A script's own arguments, and those after ``--`` that go to every fit command."""
    if "--" not in argv:
        return list(argv), []
    dashes = argv.index("--")
    return list(argv[:dashes]), list(argv[dashes + 1:])


def option_value(args: Sequence[str], option: str) -> str | None:
    """The value ``args`` give ``option``, as ``--option value`` or ``--option=value`` (the last one counts)."""
    value = None
    for i, arg in enumerate(args):
        key, equals, text = arg.partition("=")
        if key == option:
            value = text if equals else (args[i + 1] if i + 1 < len(args) else None)
    return value


def fit_command(run: Run, out: Path, epochs: int | None, one_thread: bool, passed: Sequence[str]) -> list[str]:
    """The CLI command that trains ``run`` in its run folder, resuming it if it has a checkpoint.

    Args:
        run: The config and seed.
        out: The folder of all run folders.
        epochs: The epochs to train to; ``None`` keeps the config's.
        one_thread: Train on one torch thread rather than the config's ``torch_threads``.
        passed: Options after the command's own (the last of an option counts).
    """
    command = [sys.executable, "-m", CLI_MODULE, "fit", "--config", str(run.config),
               "--seed_everything", str(run.seed)]
    if one_thread:
        command += ["--torch_threads", "1"]
    command += [
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", run.task,
        "--trainer.logger.init_args.version", f"seed{run.seed}",
    ]
    if epochs is not None:
        command += ["--trainer.max_epochs", str(epochs)]
    if (run.folder(out) / "checkpoints" / LAST_CHECKPOINT).exists():
        command += ["--ckpt_path", "last"]
    return command + list(passed)


def train(run: Run, command: list[str], out: Path) -> Outcome:
    """Runs ``command``, appending its output to the run's log."""
    log_path = run.log(out)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        start = log.tell()
        log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code == 0:
        return Outcome(False, "done")
    with log_path.open("rb") as log:
        log.seek(start)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if LOCK_FILE in last:  # the CLI refuses a run folder that another fit holds, in one line naming its lock
        return Outcome(False, f"skipped, another process is fitting it: {last}")
    return Outcome(True, f"failed (exit {code}): {last} (see {log_path})")


def train_all(runs: Sequence[Run], out: Path, jobs: int, command: Callable[[Run], list[str]]) -> list[bool]:
    """Trains every run, ``jobs`` at a time, printing when each starts and ends; per run, whether it failed.

    Args:
        runs: The runs, started in this order.
        out: The folder of all run folders.
        jobs: Runs at once.
        command: A run's fit command, built when the run starts: a run folder that another process was fitting
            may have a checkpoint to resume by then.
    """

    def launch(run: Run) -> bool:
        fit = command(run)
        start = "resuming from its last checkpoint" if "--ckpt_path" in fit else "starting"
        epochs = option_value(fit, "--trainer.max_epochs")
        goal = f", to {epochs} epochs" if epochs is not None else ""
        print(f"{run.task} seed {run.seed}: {start}{goal}", flush=True)
        outcome = train(run, fit, out)
        print(f"{run.task} seed {run.seed}: {outcome.message}", flush=True)
        return outcome.failed

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(launch, runs))
