"""The console during training: one progress bar for the whole run, and the evaluation lines above it."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm
from typing_extensions import override


class RunProgressBar(ProgressBar):
    """A single bar over the run's epochs, showing env steps, the latest evaluation and the training return.

    Lightning's own bar draws a new bar per epoch (and one per evaluation); with thousands of epochs of a few
    milliseconds, a log is then mostly redraws. This one is drawn only on a terminal: where the output goes to
    a file or a pipe, the evaluation lines alone are printed (see ``evaluation.say``), and the file stays
    readable.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: tqdm | None = None

    @property
    @override
    def is_enabled(self) -> bool:
        return self._enabled and self._bar is not None

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not sys.stderr.isatty():
            return
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        self._bar = tqdm(
            total=total, initial=trainer.current_epoch, desc="epochs", unit="epoch", dynamic_ncols=True,
            file=sys.stderr, smoothing=0.1,
        )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix(self._postfix(trainer), refresh=False)
        self._bar.update(1)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    @override
    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            tqdm.write(" ".join(str(arg) for arg in args), file=sys.stderr)
        else:
            print(*args, **kwargs)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @staticmethod
    def _postfix(trainer: pl.Trainer) -> dict[str, str]:
        metrics = trainer.callback_metrics
        postfix = {"env steps": f"{getattr(trainer.datamodule, 'env_steps', 0):,}"}
        if "eval/success_rate" in metrics:
            postfix["eval success"] = f"{float(metrics['eval/success_rate']):.2f}"
        if "train/episode_return" in metrics:
            postfix["train return"] = f"{float(metrics['train/episode_return']):.2f}"
        return postfix
