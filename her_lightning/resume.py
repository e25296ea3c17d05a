"""What resuming a run checks and keeps straight: its settings, its run folder's single writer, its TensorBoard logs.

- A checkpoint records the settings of its run (``run_settings``); a resume whose config or command line changes
  the model, the data or the collector is refused, naming every differing key (``settings_differences``).
- One process at a time writes a run folder: ``RunFolderLock`` holds an ``flock`` on ``fit.lock`` in it; the OS
  drops it when the process ends, however it ends, so a killed run never blocks its resume.
- A checkpoint records the size of every TensorBoard event file of its run folder (``tensorboard_events``),
  flushed just before. Whatever a killed run logged after its last checkpoint is a stretch the resumed run
  trains again; ``cut_event_logs`` removes it, so each curve keeps one point per step.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from her_lightning import monitor

LOCK_FILE = "fit.lock"
EVENT_FILE_MARK = "tfevents"  # TensorBoard reads every file whose name holds it
# Settings a resume takes from the command line and config although they differ from the checkpoint's run.
HONOURED = (
    "trainer options (max_epochs, check_val_every_n_epoch, logger, progress bar, ...), evaluation, torch_threads, "
    "data.save_buffer"
)
# Settings whose change a resume refuses: each changes the model, the data or the task.
COMPARED = ("seed_everything", "model", "data", "collector")
NOT_COMPARED = {"data.save_buffer"}
LINKED_FROM_DATA = {"model.obs_dim", "model.goal_dim", "model.action_dim", "model.reward_range"}  # follow data.env


def settings_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key (saved value in the checkpoint, wanted value here)`` for every setting that differs.

    Settings are compared leaf by leaf (``data.env.kwargs`` as one), in ``wanted``'s order. A key that only one
    side has is not compared: an option added after the checkpoint was written has no recorded value, and an
    option the run no longer has cannot be set.
    """
    return _differences("", plain_values(saved), plain_values(wanted))


def _differences(key: str, saved: Any, wanted: Any) -> list[str]:
    if key in NOT_COMPARED or key in LINKED_FROM_DATA or key.rpartition(".")[2].startswith("_"):
        return []
    if isinstance(saved, dict) and isinstance(wanted, dict) and key != "data.env.kwargs":
        return [
            difference
            for name in wanted
            if name in saved
            for difference in _differences(f"{key}.{name}".lstrip("."), saved[name], wanted[name])
        ]
    if saved == wanted:
        return []
    return [f"{key} ({saved!r} in the checkpoint, {wanted!r} here)"]


def plain_values(value: Any) -> Any:
    """Tuples as lists and enums as their values: what a checkpoint can hold (it loads with ``weights_only``),
    and what compares equal between a config and a checkpoint's record."""
    if isinstance(value, Mapping):
        return {str(key): plain_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_values(item) for item in value]
    return value.value if isinstance(value, Enum) else value


class RunFolderLock:
    """An exclusive ``flock`` on ``<folder>/fit.lock``, holding the writer's pid, until ``release`` or process exit.

    Raises:
        RunFolderBusy: If another process holds it; the message names its pid.
        RunFolderError: If ``fit.lock`` is a directory.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except IsADirectoryError:
            raise RunFolderError(
                f"cannot lock run folder {self.path.parent}: {self.path} is a directory, not a file; remove it "
                "(fit keeps its pid in that file while it runs, so that no second fit writes into the folder)"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise RunFolderBusy(
                f"run folder {self.path.parent} is being written by another her-lightning fit (pid {holder}, "
                f"holding {self.path}): wait for it to end or stop it, then resume; two writers would mix their "
                "checkpoints and logs"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = -1


class RunFolderError(RuntimeError):
    """The run folder cannot be written by this ``fit``; the message says why and what to do."""


class RunFolderBusy(RunFolderError):
    """Another process is fitting into the run folder."""


class RunRecord(Callback):
    """Writes into every checkpoint the run's settings and the sizes of its TensorBoard event files; shows the
    settings in TensorBoard's HParams tab when a run starts (a resumed run keeps the entry of its start).

    Args:
        settings: The run's ``seed_everything``, ``model``, ``data`` and ``collector`` settings, as plain values.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            monitor.log_run_start(trainer, monitor.flat_settings(self.settings))

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["run_settings"] = self.settings
        log_dir = _tensorboard_log_dir(trainer)
        if log_dir is not None:
            checkpoint["tensorboard_events"] = event_file_sizes(log_dir)


def _tensorboard_log_dir(trainer: pl.Trainer) -> Path | None:
    """The TensorBoard run folder, with everything logged so far flushed to it; ``None`` without one (or off rank 0)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            logger.experiment.flush()
            return Path(logger.log_dir)
    return None


def event_file_sizes(log_dir: str | Path) -> dict[str, int]:
    """Each TensorBoard event file of a run folder (by name) and its size in bytes."""
    return {path.name: path.stat().st_size for path in Path(log_dir).iterdir() if EVENT_FILE_MARK in path.name}


def cut_event_logs(log_dir: str | Path, recorded: Mapping[str, int] | None) -> list[str]:
    """Cut a run folder's event files back to a checkpoint's record of them: what was logged after it goes.

    A recorded file longer than recorded is truncated there (its end is a record boundary: the file was
    flushed when the size was taken); a file the record does not know was started after the checkpoint and is
    removed. Nothing happens unless the record names a file of this folder (the checkpoint comes from this run).

    Returns:
        What was changed, one entry per file, for the log.
    """
    log_dir = Path(log_dir)
    if not recorded or not log_dir.is_dir() or not any((log_dir / name).is_file() for name in recorded):
        return []
    changed = []
    for name, size in event_file_sizes(log_dir).items():
        path = log_dir / name
        if name not in recorded:
            path.unlink()
            changed.append(f"removed {name} (logged after the checkpoint)")
        elif size > recorded[name]:
            os.truncate(path, recorded[name])
            changed.append(f"cut {name} from {size} to {recorded[name]} bytes")
    return changed
