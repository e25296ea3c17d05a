"""A callback for the signal tests: the fit process sends itself a signal at a chosen moment of a chosen epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Literal

import lightning.pytorch as pl
import torch

from her_lightning.checkpoint import LAST_CHECKPOINT


class SignalAt(pl.Callback):
    """Sends signal ``signum`` to its own process once, at ``moment`` of epoch ``epoch`` (counted from 1), on DDP
    rank 0 only (as ``kill PID`` reaches only the launching process).

    Args:
        signum: The signal's number (15: SIGTERM, 2: SIGINT).
        epoch: The epoch, from 1.
        moment: ``epoch_start``: before the epoch's episodes are collected; ``in_write``: inside torch's write of
            the epoch's first checkpoint file, between two of its writes to the file; ``after_write``: just after
            the epoch's ``last.ckpt`` was written.
    """

    def __init__(self, signum: int, epoch: int, moment: Literal["epoch_start", "in_write", "after_write"]) -> None:
        self.signum = signum
        self.epoch = epoch
        self.moment = moment
        self._sent = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint

        def save_and_signal(checkpoint: dict[str, Any], path: str, storage_options: Any = None) -> None:
            if not self._due(trainer, "in_write"):
                save(checkpoint, path, storage_options)
            else:
                torch_save = torch.save
                torch.save = lambda obj, file, *args, **kwargs: torch_save(obj, self._signalling(file), *args, **kwargs)
                try:
                    save(checkpoint, path, storage_options)
                finally:
                    torch.save = torch_save
            if Path(path).name == LAST_CHECKPOINT and self._due(trainer, "after_write"):
                self._send()

        io.save_checkpoint = save_and_signal

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer, "epoch_start"):
            self._send()

    def _due(self, trainer: pl.Trainer, moment: str) -> bool:
        return (
            not self._sent
            and moment == self.moment
            and trainer.current_epoch + 1 == self.epoch
            and trainer.global_rank == 0
        )

    def _send(self) -> None:
        self._sent = True
        os.kill(os.getpid(), self.signum)

    def _signalling(self, file: BinaryIO) -> SignallingFile:
        return SignallingFile(file, self._send)


class SignallingFile:
    """A file whose second ``write`` first calls ``send``: a signal then lands in the middle of torch's write."""

    def __init__(self, file: BinaryIO, send: Any) -> None:
        self._file = file
        self._send = send
        self._writes = 0

    def write(self, data: bytes) -> int:
        self._writes += 1
        if self._writes == 2:
            self._send()
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)
