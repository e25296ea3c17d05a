"""The collector: fills the episode buffer with warm-up episodes and then with fresh episodes every epoch."""

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
from her_lightning.distributed import gather_rank_states, rank_stream, select_rank_state, sum_over_ranks
from her_lightning.module import HERDDPG
from her_lightning.rng import make_generator
from her_lightning.rollout import Episodes, Policy, exploring, uniform_policy


class WarmupPolicy(StrEnum):
    """How warm-up episodes act."""

    actor = "actor"  # the untrained actor plus exploration noise (the HER paper's setting)
    random = "random"  # uniformly random actions, covering more of the goal space


class EpisodeCollector(Callback):
    """Collects episodes with the current actor plus Gaussian noise into the datamodule's buffer.

    Before the first epoch it collects ``warmup_episodes``, ``warmup_batch`` at a
    time (the policy does not change during warm-up, so playing them side by
    side changes nothing but the wall time). At the start of every epoch it
    collects ``episodes_per_epoch``, ``env.num_envs`` at a time. Both counts are
    rounded up to a multiple of the batch. It advances the
    module's ``env_steps`` and ``episodes`` counters and logs
    ``train/episode_return``, ``train/episode_length`` and ``train/success_rate``
    against environment steps.

    Args:
        warmup_episodes: Episodes collected before training starts.
        warmup_policy: ``actor`` (untrained actor plus noise) or ``random`` (uniform actions).
        episodes_per_epoch: Episodes collected at the start of every epoch.
        noise_std: Standard deviation of the Gaussian exploration noise, in action units.
        random_action_prob: Probability that an action is replaced by a uniformly random one
            (HER's Fetch setting: 0.3).
        warmup_batch: Warm-up episodes played at once; ``None`` plays them all at once.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(
        self,
        warmup_episodes: int = 200,
        warmup_policy: WarmupPolicy = WarmupPolicy.actor,
        episodes_per_epoch: int = 1,
        noise_std: float = 0.1,
        warmup_batch: int | None = None,
        random_action_prob: float = 0.0,
    ) -> None:
        if warmup_episodes < 0:
            raise ValueError(f"warmup_episodes={warmup_episodes} is invalid: must be at least 0")
        if episodes_per_epoch < 1:
            raise ValueError(f"episodes_per_epoch={episodes_per_epoch} is invalid: must be at least 1")
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std} is invalid: must be at least 0")
        if not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(f"random_action_prob={random_action_prob} is invalid: must be within [0, 1]")
        if warmup_batch is not None and warmup_batch < 1:
            raise ValueError(f"warmup_batch={warmup_batch} is invalid: must be at least 1, or null for all at once")
        allowed = [p.value for p in WarmupPolicy]
        if warmup_policy not in allowed:
            raise ValueError(f"warmup_policy={warmup_policy!r} is unknown: choose one of {allowed}")
        self.warmup_episodes = warmup_episodes
        self.warmup_policy = WarmupPolicy(warmup_policy)
        self.episodes_per_epoch = episodes_per_epoch
        self.noise_std = noise_std
        self.warmup_batch = warmup_batch
        self.random_action_prob = random_action_prob
        self.generator: torch.Generator | None = None
        self._metrics: dict[str, MeanMetric] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.generator is not None:
            return
        datamodule = self._datamodule(trainer)
        device = pl_module.device
        self.generator = make_generator(datamodule.seed, rank_stream("noise"), device)
        keys = ("train/episode_return", "train/episode_length", "train/success_rate")
        self._metrics = {key: MeanMetric().to(device) for key in keys}

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: HERDDPG) -> None:
        datamodule = self._datamodule(trainer)
        if datamodule.buffer.num_episodes > 0 or self.warmup_episodes == 0:
            return
        policy = pl_module.act
        if self.warmup_policy is WarmupPolicy.random:
            policy = uniform_policy(datamodule.action_dim, self.generator)
        self._collect(trainer, pl_module, policy, self.warmup_episodes, self.warmup_batch or self.warmup_episodes)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: HERDDPG) -> None:
        self._collect(trainer, pl_module, pl_module.act, self.episodes_per_epoch, to_progress_bar=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return gather_rank_states({"noise_generator": self.generator.get_state()}) if self.generator is not None else {}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.generator.set_state(select_rank_state(state_dict, "exploration noise stream")["noise_generator"])

    def describe(self) -> dict[str, Any]:
        """The collector's settings as flat values, for TensorBoard's HParams tab."""
        return {
            "warmup_episodes": self.warmup_episodes,
            "warmup_policy": self.warmup_policy.value,
            "episodes_per_epoch": self.episodes_per_epoch,
            "noise_std": self.noise_std,
            "random_action_prob": self.random_action_prob,
        }

    def _collect(
        self,
        trainer: pl.Trainer,
        pl_module: HERDDPG,
        policy: Policy,
        episodes: int,
        num_envs: int | None = None,
        to_progress_bar: bool = False,
    ) -> None:
        datamodule = self._datamodule(trainer)
        start = time.perf_counter()
        policy = exploring(policy, self.noise_std, self.random_action_prob, self.generator)
        collection = datamodule.collect(policy, episodes, num_envs)
        pl_module.observe(collection.observations, collection.goals)
        for batch in collection.episodes:
            self._record(batch)
        played = torch.cat([batch.length for batch in collection.episodes])
        counts = torch.stack([played.sum(), torch.tensor(played.numel()), torch.tensor(datamodule.buffer.num_transitions)])
        steps, done, stored = sum_over_ranks(counts.to(pl_module.device)).tolist()  # every rank's episodes
        pl_module.env_steps += steps
        pl_module.episodes += done
        extra = {
            "perf/env_steps_per_s": steps / (time.perf_counter() - start),
            "buffer/transitions": float(stored),
            "buffer/achieved_goal_spread": datamodule.buffer.achieved_goal_spread(),
        }
        self._log(trainer, pl_module, to_progress_bar, extra)
        actions = torch.cat([batch.action[batch.valid] for batch in collection.episodes])
        monitor.log_histogram(trainer, "train/actions", actions, pl_module.env_steps)

    def _record(self, batch: Episodes) -> None:
        self._metrics["train/episode_return"].update(batch.episode_return)
        self._metrics["train/episode_length"].update(batch.length.float())
        self._metrics["train/success_rate"].update(batch.success.float())

    def _log(self, trainer: pl.Trainer, pl_module: HERDDPG, to_progress_bar: bool, extra: dict[str, float]) -> None:
        values = {key: float(metric.compute()) for key, metric in self._metrics.items()}  # synced over DDP ranks
        for metric in self._metrics.values():
            metric.reset()
        if to_progress_bar:  # Lightning allows self.log in epoch hooks only, not before fitting
            pl_module.log("train/episode_return", values["train/episode_return"], prog_bar=True, logger=False)
        if trainer.logger is not None:
            trainer.logger.log_metrics({**values, **extra}, step=pl_module.env_steps)

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> HERDataModule:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, HERDataModule):
            raise TypeError(f"EpisodeCollector needs a HERDataModule, got {type(datamodule).__name__}")
        return datamodule
