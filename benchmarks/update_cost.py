"""Gradient updates per second of the full training loop against the bare DDPG update, on this machine, in one run.

The bare update is ``HERDDPG.update`` on one pre-sampled batch with plain optimizers: the limit on this
hardware. The full loop is ``her-lightning fit`` with the given config (collection, HER sampling, Lightning and
logging included; warm-up and evaluation left out), timed from the first to the last epoch.

    python benchmarks/update_cost.py --config configs/point2d.yaml --epochs 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from her_lightning.cli import HERLightningCLI  # noqa: E402
from her_lightning.data import HERDataModule  # noqa: E402
from her_lightning.ddpg import HERDDPG  # noqa: E402


class EpochClock(pl.Callback):
    """Wall time from the start of the first training epoch to the end of the last."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.updates_at_start = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: HERDDPG) -> None:
        if self.start is None:
            self.start, self.updates_at_start = time.perf_counter(), pl_module.updates

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: HERDDPG) -> None:
        self.end = time.perf_counter()


def build(config: str, epochs: int) -> HERLightningCLI:
    return HERLightningCLI(
        HERDDPG,
        HERDataModule,
        run=False,
        save_config_callback=None,
        args=["--config", config, "--trainer.logger", "false", "--trainer.callbacks", "[]",
              "--trainer.enable_progress_bar", "false",
              "--trainer.enable_checkpointing", "false", "--trainer.check_val_every_n_epoch", "1000000",
              "--trainer.max_epochs", str(epochs), "--trainer.enable_model_summary", "false"],
    )


def full_loop_rate(config: str, epochs: int) -> tuple[float, int]:
    """Updates per second of the full loop, and how many updates it timed."""
    cli = build(config, epochs)
    clock = EpochClock()
    cli.trainer.callbacks.insert(0, clock)  # before the collector: its collection is part of the loop
    cli.trainer.fit(cli.model, cli.datamodule)
    updates = cli.model.updates - clock.updates_at_start
    return updates / (clock.end - clock.start), updates


def bare_rate(config: str, updates: int) -> float:
    cli = build(config, 1)
    cli.datamodule.setup("fit")
    model, data = cli.model, cli.datamodule
    collector = next(c for c in cli.trainer.callbacks if type(c).__name__ == "EpisodeCollector")
    env = data.make_env(collector.warmup_batch or collector.warmup_episodes, "warmup")
    from her_lightning.rollout import exploring, rollout

    data.buffer.add(rollout(env, exploring(model.act, 0.1, 0.0, torch.Generator().manual_seed(0))))
    batch = data.sampler.sample(data.batch_size)
    optimizers = model.configure_optimizers()
    for _ in range(20):
        model.update(batch, *optimizers)
    start = time.perf_counter()
    for _ in range(updates):
        model.update(batch, *optimizers)
    return updates / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/point2d.yaml")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the full loop per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements of each; medians shown")
    args = parser.parse_args()
    loop, bare = [], []
    for _ in range(args.repeats):  # alternate, so that a slow spell of a shared machine hits both
        rate, updates = full_loop_rate(args.config, args.epochs)
        loop.append(rate)
        bare.append(bare_rate(args.config, updates))  # as many updates as the loop: about as long a measurement
    print(f"machine: {machine()}")
    print(f"config: {args.config}")
    print(f"bare update:  {statistics.median(bare):7.1f} updates/s  (runs: {', '.join(f'{r:.0f}' for r in bare)})")
    print(f"full loop:    {statistics.median(loop):7.1f} updates/s  (runs: {', '.join(f'{r:.0f}' for r in loop)})")
    # Each loop run is paired with the bare run right after it, so that the machine's drift cancels in the ratio.
    ratios = [full / limit for full, limit in zip(loop, bare)]
    print(f"full loop / bare update, per pair: {', '.join(f'{r:.0%}' for r in ratios)}")
    print(f"full loop / bare update: {statistics.median(ratios):.0%} (median of the pairs)")


if __name__ == "__main__":
    main()
