"""What the benchmarks share: a machine description, the point task's fixed evaluation, and a solve timer."""

from __future__ import annotations

import os
import platform
import time

import lightning.pytorch as pl
import torch

from her_lightning.envs import PointNavEnv
from her_lightning.rollout import Policy, rollout

SOLVED = 0.95
EVAL_EPISODES = 100
EVAL_SEED = 12345


def machine(with_threads: bool = True) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    described = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    return f"{described}, {torch.get_num_threads()} torch threads" if with_threads else described


def point_success_rate(policy: Policy) -> float:
    """Noise-free success rate on the same 100 point-task goals for every agent."""
    episodes = rollout(PointNavEnv(num_envs=EVAL_EPISODES, seed=EVAL_SEED), policy)
    return int(episodes.success.sum()) / EVAL_EPISODES


class Stopwatch:
    """Wall time that can be paused (evaluation is not training time)."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._since: float | None = None

    def start(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None


class SolveTimer(pl.Callback):
    """Evaluates after every epoch on the shared goals and stops the run once it is solved.

    Training time runs from the start of fitting (warm-up included) and leaves out the evaluations.
    """

    def __init__(self) -> None:
        self.watch = Stopwatch()
        self.solved_at: tuple[float, int, int] | None = None  # seconds, env steps, updates

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.watch.start()  # callbacks run in order: put this one before the collector

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.watch.pause()
        if point_success_rate(pl_module.act) >= SOLVED:
            self.solved_at = (self.watch.elapsed, trainer.datamodule.env_steps, pl_module.updates)
            trainer.should_stop = True
        self.watch.start()
