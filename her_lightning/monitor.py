"""What goes to TensorBoard beyond scalars: histograms, figures, the HParams tab and a success-rate chart.

Scalars go through ``logger.log_metrics`` with an explicit step (environment steps for episode metrics,
gradient updates for losses). Everything here needs a ``TensorBoardLogger`` and is skipped for other loggers.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

SUCCESS_CHART = {
    "success": {
        "success rate (train: with noise; eval: noise-free)": ["Multiline", ["train/success_rate", "eval/success_rate"]],
        "episode return": ["Multiline", ["train/episode_return", "eval/episode_return"]],
    }
}


def tensorboard(trainer: pl.Trainer) -> Any | None:
    """The run's TensorBoard ``SummaryWriter``, or ``None`` when the run logs elsewhere (or not at all)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


def log_histogram(trainer: pl.Trainer, tag: str, values: torch.Tensor, step: int) -> None:
    writer = tensorboard(trainer)
    if writer is not None and values.numel() > 0:
        writer.add_histogram(tag, values.detach().float().cpu(), step)


def log_figure(trainer: pl.Trainer, tag: str, figure: Any, step: int) -> None:
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_figure(tag, figure, step, close=True)
    else:
        import matplotlib.pyplot as plt

        plt.close(figure)


def log_run_start(trainer: pl.Trainer, hparams: dict[str, Any]) -> None:
    """The HParams tab (with ``eval/success_rate`` as its metric) and the success chart, once per run.

    The HParams entry is written directly: ``TensorBoardLogger.log_hyperparams`` would also log the metric
    as a scalar at step 0, a value that was never measured.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    writer = tensorboard(trainer)
    if writer is None:
        return
    file_writer = writer._get_file_writer()
    for summary in hparams_summary(hparams, {"eval/success_rate": 0.0}):
        file_writer.add_summary(summary)
    writer.add_custom_scalars(SUCCESS_CHART)
