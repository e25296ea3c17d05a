"""What goes to TensorBoard beyond scalars: histograms, figures, videos, the HParams tab and a success-rate chart.

Scalars go to every logger of the run (``log_scalars``) with an explicit step: environment steps for episode
metrics, gradient updates for losses. Everything else here needs a ``TensorBoardLogger`` and is skipped for other
loggers.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

SUCCESS_CHART = {
    "success": {
        "success rate (train: with noise; eval: noise-free)": [
            "Multiline", ["train/success_rate", "eval/success_rate"]
        ],
        "episode return": ["Multiline", ["train/episode_return", "eval/episode_return"]],
    }
}


def tensorboard(trainer: pl.Trainer) -> Any | None:
    """The run's TensorBoard ``SummaryWriter``, or ``None`` when the run logs elsewhere (or not at all)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


def log_scalars(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """``metrics`` at ``step`` to every logger of the run (``trainer.logger`` is only the first of them)."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def evaluation_epoch(trainer: pl.Trainer) -> bool:
    """Whether the current epoch is one that ends with an evaluation (every ``trainer.check_val_every_n_epoch``)."""
    return (trainer.current_epoch + 1) % (trainer.check_val_every_n_epoch or 1) == 0


def log_histogram(trainer: pl.Trainer, tag: str, values: torch.Tensor, step: int) -> None:
    """A histogram of ``values``, in epochs that end with an evaluation only.

    Histograms are the largest records in the log: drawn every epoch, they made up 97% of a FetchPush run's 39 MB
    after 170,000 env steps; drawn with the evaluations they cost as much as the scalars.
    """
    writer = tensorboard(trainer)
    if writer is not None and values.numel() > 0 and evaluation_epoch(trainer):
        writer.add_histogram(tag, values.detach().float().cpu(), step)


def log_figure(trainer: pl.Trainer, tag: str, figure: Any, step: int) -> None:
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_figure(tag, figure, step, close=True)
    else:
        import matplotlib.pyplot as plt

        plt.close(figure)


VIDEO_SIZE = 160  # pixels along the longer side: a 50-frame episode is then a GIF of a few hundred KB
VIDEO_FPS = 12


def log_video(trainer: pl.Trainer, tag: str, frames: torch.Tensor, step: int) -> None:
    """An episode's frames ``(T, H, W, 3)`` uint8 as an animated GIF in TensorBoard's Images tab.

    Written as an image summary of GIF bytes (what TensorBoard shows as an animation), which needs only Pillow
    (a matplotlib dependency), not the moviepy that ``SummaryWriter.add_video`` asks for.
    """
    writer = tensorboard(trainer)
    if writer is None:
        return
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    stride = max(1, -(-max(frames.shape[1:3]) // VIDEO_SIZE))  # ceil: the longer side ends at most VIDEO_SIZE
    frames = frames[:, ::stride, ::stride].cpu().numpy()
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // VIDEO_FPS, loop=0)
    height, width = frames.shape[1:3]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``section/key`` entries: numbers, strings and booleans as they are, anything else as text
    (TensorBoard's HParams tab takes no lists or ``None``). ``data.env.kwargs`` stays one entry."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "data/env/kwargs":
            flat.update(flat_settings(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


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
