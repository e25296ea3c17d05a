"""SIGTERM and SIGINT during ``fit``: finish the epoch, write ``last.ckpt``, stop, and exit 128 + the signal's number.

The handler only records the signal: nothing is interrupted, a checkpoint write included. At the end of every
epoch, after the run's checkpoints were written, ``StopOnSignal`` reads the record (of every DDP rank, so that
all ranks stop at the same epoch), writes ``last.ckpt`` if the checkpoint schedule skips this epoch, and stops
the run. The CLI reads the record again once the fit has returned and the handlers are restored, and exits
with 128 + the signal's number: a signal that came after the last epoch's check decides the exit status too, so
none is ever lost.

Lightning's own SIGTERM handler has the run stop after the current batch, mid-epoch, without a checkpoint, and
the process exit 0; ``StopOnSignal`` replaces it once training starts. Lightning's SLURM requeue handler (SIGUSR1 by
default) is left as it is.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from typing_extensions import override

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(Checkpoint):
    """Records SIGTERM and SIGINT, and stops the run at the end of the epoch in which one came, with a checkpoint.

    It is a ``Checkpoint`` so that Lightning runs its epoch-end hook after the module's and every other callback's,
    the ``ModelCheckpoint``'s included (Lightning calls checkpoint callbacks last, in the order they were added):
    the epoch's checkpoints are written, or known to be skipped, when it decides.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # the first signal that came
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Record the stop signals from now on, in place of their handlers (``restore`` puts those back)."""
        for signum in STOP_SIGNALS:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._record)

    def restore(self) -> None:
        """Put back the handlers that ``install`` replaced; signals are no longer recorded."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()  # over the SIGTERM handler that Lightning installed when the fit started

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        received = self._received_on_any_rank(trainer)
        if received is None:
            return
        self.received = self.received or received
        write_last_checkpoints(trainer)
        trainer.should_stop = True

    def _received_on_any_rank(self, trainer: pl.Trainer) -> signal.Signals | None:
        """The recorded signal of any rank (the highest number where ranks differ); ``None`` if none came."""
        number = torch.tensor(self.received or 0, device=trainer.strategy.root_device)
        number = int(trainer.strategy.reduce(number, reduce_op="max"))
        return signal.Signals(number) if number else None


def write_last_checkpoints(trainer: pl.Trainer) -> None:
    """Have every ``ModelCheckpoint`` with ``save_last`` write this epoch's checkpoints, unless it has already.

    Its schedule (``every_n_epochs``) may skip this epoch. The calls are the ones ``ModelCheckpoint`` makes for a
    save it deferred to the end of validation: its top-k file, then ``last.ckpt`` (a copy, or a link to it).
    """
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.save_last:
            continue
        if not callback._should_skip_saving_checkpoint(trainer):  # it skips a step it has saved at already
            candidates = callback._monitor_candidates(trainer)
            callback._save_topk_checkpoint(trainer, candidates)
            callback._save_last_checkpoint(trainer, candidates)


def exit_status(signum: signal.Signals) -> int:
    """The exit status of a process ended by ``signum``, as a shell reports it (SIGTERM: 143, SIGINT: 130)."""
    return 128 + signum
