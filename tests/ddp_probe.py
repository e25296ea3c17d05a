"""A callback for the DDP tests: at the end of training every rank writes its weights to ``$DDP_PROBE_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch


class SaveWeightsPerRank(pl.Callback):
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = Path(os.environ["DDP_PROBE_DIR"]) / f"rank{trainer.global_rank}.pt"
        torch.save({key: value.clone() for key, value in pl_module.state_dict().items()}, path)
