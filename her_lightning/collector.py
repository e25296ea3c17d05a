"""The collector: has the datamodule play warm-up episodes, then fresh episodes every epoch, with the learner's
exploring policy."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import MeanMetric
from typing_extensions import override

from her_lightning import monitor
from her_lightning.data import HERDataModule
from her_lightning.distributed import gather_rank_states, rank_stream, select_rank_state
from her_lightning.learner import HERLearner
from her_lightning.options import check_number
from her_lightning.rng import make_generator
from her_lightning.rollout import Policy


class WarmupPolicy(StrEnum):
    """How warm-up episodes act."""

    actor = "actor"  # the untrained learner's exploring policy (the HER paper's setting)
    random = "random"  # uniformly random actions, covering more of the goal space


class EpisodeCollector(Callback):
    """Triggers collection: the datamodule plays episodes of the learner's exploring policy.

    Before the first epoch it has ``warmup_episodes`` played, ``warmup_batch`` at
    a time (the policy does not change during warm-up, so playing them side by
    side changes nothing but the wall time). At the start of every epoch it has
    ``episodes_per_epoch`` played, ``env.num_envs`` at a time. Both counts are
    rounded up to a multiple of the batch. The datamodule stores and counts
    them; the learner adds their states and goals to its input statistics
    (``HERLearner.observe``). How the learner explores is its own
    (``HERLearner.exploring_policy``); the collector owns the random stream
    that exploration draws from, and logs ``train/episode_return``,
    ``train/episode_length`` and ``train/success_rate`` against environment
    steps.

    Args:
        warmup_episodes: Episodes collected before training starts.
        warmup_policy: ``actor`` (the untrained learner, exploring) or ``random`` (uniform actions).
        episodes_per_epoch: Episodes collected at the start of every epoch.
        warmup_batch: Warm-up episodes played at once; ``None`` plays them all at once.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(
        self,
        warmup_episodes: int = 200,
        warmup_policy: WarmupPolicy = WarmupPolicy.actor,
        episodes_per_epoch: int = 1,
        warmup_batch: int | None = None,
    ) -> None:
        check_number("warmup_episodes", warmup_episodes, 0, integer=True)
        check_number("episodes_per_epoch", episodes_per_epoch, 1, integer=True)
        if warmup_batch is not None:
            check_number("warmup_batch", warmup_batch, 1, integer=True, note="or null for all at once")
        allowed = [p.value for p in WarmupPolicy]
        if warmup_policy not in allowed:
            raise ValueError(f"warmup_policy={warmup_policy!r} is unknown: choose one of {allowed}")
        self.warmup_episodes = warmup_episodes
        self.warmup_policy = WarmupPolicy(warmup_policy)
        self.episodes_per_epoch = episodes_per_epoch
        self.warmup_batch = warmup_batch
        self.generator: torch.Generator | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.generator is None:
            self.generator = make_generator(trainer.datamodule.seed, rank_stream("noise"), pl_module.device)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: HERLearner) -> None:
        datamodule: HERDataModule = trainer.datamodule
        if datamodule.stored_episodes > 0 or self.warmup_episodes == 0:
            return
        if self.warmup_policy is WarmupPolicy.random:
            policy = pl_module.random_policy(self.generator)
        else:
            policy = pl_module.exploring_policy(self.generator)
        self._collect(trainer, pl_module, policy, self.warmup_episodes, self.warmup_batch or self.warmup_episodes)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: HERLearner) -> None:
        policy = pl_module.exploring_policy(self.generator)
        self._collect(trainer, pl_module, policy, self.episodes_per_epoch, to_progress_bar=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return gather_rank_states({"noise_generator": self.generator.get_state()}) if self.generator is not None else {}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.generator.set_state(select_rank_state(state_dict, "exploration noise stream")["noise_generator"])

    def _collect(
        self,
        trainer: pl.Trainer,
        pl_module: HERLearner,
        policy: Policy,
        episodes: int,
        num_envs: int | None = None,
        to_progress_bar: bool = False,
    ) -> None:
        start = time.perf_counter()
        collection = trainer.datamodule.collect(policy, episodes, num_envs)
        pl_module.observe(collection.observations, collection.goals)
        batches, device = collection.episodes, pl_module.device
        values = {
            "train/episode_return": _mean([batch.episode_return for batch in batches], device),
            "train/episode_length": _mean([batch.length.float() for batch in batches], device),
            "train/success_rate": _mean([batch.success.float() for batch in batches], device),
            "train/displaced_rate": _mean([displaced.float() for displaced in collection.displaced], device),
        }
        if to_progress_bar:  # Lightning allows self.log in epoch hooks only, not before fitting
            pl_module.log("train/episode_return", values["train/episode_return"], prog_bar=True, logger=False)
        if trainer.loggers:
            values |= {
                "perf/env_steps_per_s": collection.env_steps / (time.perf_counter() - start),
                "buffer/transitions": float(collection.stored),
                "buffer/achieved_goal_spread": collection.achieved_goal_spread,
            }
            monitor.log_scalars(trainer, values, collection.total_env_steps)
        actions = torch.cat([batch.action[batch.valid] for batch in batches])
        monitor.log_histogram(trainer, "train/actions", actions, collection.total_env_steps)


def _mean(parts: list[torch.Tensor], device: torch.device) -> float:
    """The mean of all values of ``parts``, over every DDP rank's (``MeanMetric`` syncs them)."""
    metric = MeanMetric().to(device)
    for values in parts:
        metric.update(values)
    return float(metric.compute())
