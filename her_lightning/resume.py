"""What resuming a run checks and keeps straight: its settings, its run folder's single writer, its TensorBoard logs.

- A checkpoint records the settings of its run (``checkpoint.RECORDS``); a resume whose config or command line
  changes the model, the data or the collector is refused, naming every differing key (``check_resume``).
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
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from her_lightning import monitor
from her_lightning.checkpoint import (
    LAST_CHECKPOINT,
    RECORDS,
    RUN_RECORD,
    CheckpointError,
    find_last_checkpoint,
    plain_values,
    recorded_settings,
)

LOCK_FILE = "fit.lock"
EVENT_FILE_MARK = "tfevents"  # TensorBoard reads every file whose name holds it
# Settings a resume takes from the command line and config although the checkpoint's run had other values. Every
# other setting of the sections a checkpoint records (``checkpoint.RECORDS``) must be the checkpoint's.
HONOURED = ("trainer", "evaluation", "torch_threads", "data.save_buffer")
# The model settings that the CLI links from the data's: they follow data.env, which is compared.
LINKED_FROM_DATA = ("obs_dim", "goal_dim", "action_dim", "reward_range")
# Model settings that a learner takes from the data itself (HERDQN's number of actions): not compared either.
TAKEN_FROM_DATA = ("num_actions",)


def configured_settings(config: Namespace) -> dict[str, Any]:
    """The settings of a run's config that a checkpoint records (the sections of ``checkpoint.RECORDS``), as plain
    values."""
    sections = {key: config[key] for key in RECORDS if key in config}
    if "model" in sections and "init_args" in sections["model"]:  # the learner's options (its class is compared apart)
        sections["model"] = sections["model"].init_args
    return plain_values({key: v.as_dict() if isinstance(v, Namespace) else v for key, v in sections.items()})


def check_resume(checkpoint: dict[str, Any], path: str, settings: dict[str, Any], max_epochs: int | None) -> None:
    """Refuse a config that changes what the checkpoint trained, or a ``max_epochs`` it has passed.

    Args:
        checkpoint: The contents of the checkpoint at ``path``.
        path: The checkpoint, as the messages name it.
        settings: The config's settings (``configured_settings``).
        max_epochs: The config's ``trainer.max_epochs``.

    Raises:
        CheckpointError: Naming every differing setting, or the epochs trained.
    """
    differences = settings_differences(recorded_settings(checkpoint), settings)
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was trained with other settings: {'; '.join(differences)}. A resume keeps them "
            f"(it honours changes to {', '.join(HONOURED)}): give the run's own config (config.yaml in its version "
            "folder), or leave out --ckpt_path to start a new run"
        )
    done = epochs_done(checkpoint)
    if max_epochs is not None and 0 <= max_epochs < done:
        raise CheckpointError(
            f"trainer.max_epochs={max_epochs} is below the {done} epochs that checkpoint {path} has trained: "
            f"give at least {done + 1} to train on"
        )


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Epochs a checkpoint has finished (its epoch counter is of the epoch that wrote it)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return progress.get("processed", checkpoint.get("epoch", -1) + 1)


def resolve_last(trainer: Namespace) -> str:
    """The ``last.ckpt`` that ``--ckpt_path last`` means; the resumed run logs into that run's version folder
    (``trainer.logger``'s ``version`` is set to it).

    Raises:
        CheckpointError: If the trainer's config names no run folder, or that folder holds no ``last.ckpt``.
    """
    for callback in trainer.get("callbacks") or []:
        dirpath = callback.get("init_args", {}).get("dirpath") if isinstance(callback, Namespace) else None
        if callback.get("class_path", "").endswith("ModelCheckpoint") and dirpath:
            return str(Path(dirpath) / LAST_CHECKPOINT)  # checked by the caller like any checkpoint path
    logger = trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if init_args is None or init_args.get("save_dir") is None:
        raise CheckpointError(
            "--ckpt_path last needs trainer.logger with a save_dir and name (as in configs/*.yaml) "
            "or a ModelCheckpoint with a dirpath; otherwise give the checkpoint file"
        )
    run_root = Path(init_args.save_dir) / (init_args.get("name") or "")
    checkpoint, version = find_last_checkpoint(run_root, init_args.get("version"))
    init_args.version = version  # keep logging into the same run folder
    return str(checkpoint)


def settings_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key (saved value in the checkpoint, wanted value here)`` for every setting that differs.

    Settings are compared leaf by leaf (``data.env.kwargs`` as one), in ``wanted``'s order, but for the ``HONOURED``
    ones and those ``LINKED_FROM_DATA`` and ``TAKEN_FROM_DATA``. A key that only one side has is not compared: an
    option added after the checkpoint was written has no recorded value, and an option the run no longer has cannot
    be set.
    """
    return _differences("", plain_values(saved), plain_values(wanted))


def _differences(key: str, saved: Any, wanted: Any) -> list[str]:
    if key in HONOURED or key in {f"model.{name}" for name in (*LINKED_FROM_DATA, *TAKEN_FROM_DATA)}:
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
    """Writes into every checkpoint the settings that Lightning has no place for (those ``checkpoint.RECORDS``
    keeps in ``run_settings``) and the sizes of the run's TensorBoard event files; shows all its settings in
    TensorBoard's HParams tab when a run starts (a resumed run keeps the entry of its start).

    Args:
        settings: The run's settings (``configured_settings``).
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
        checkpoint[RUN_RECORD] = {key: value for key, value in self.settings.items() if RECORDS[key] == RUN_RECORD}
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
