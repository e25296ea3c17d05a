"""Evaluation: the noise-free policy on fixed goals, during training (``Evaluator``) and of a checkpoint (``test``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from her_lightning import monitor
from her_lightning.checkpoint import DATA_STATE, read_checkpoint, trained
from her_lightning.data import HERDataModule
from her_lightning.envs import close_env, make_env
from her_lightning.export import policy_from_checkpoint
from her_lightning.module import HERDDPG
from her_lightning.rng import derive_seed
from her_lightning.rollout import Episodes, play


def summarize(episodes: Episodes) -> dict[str, float]:
    """The metrics of a batch of evaluation episodes, by their TensorBoard names."""
    return {
        # Counted in Python floats: 95 of 100 must read as 0.95, not float32's 0.9499.
        "eval/success_rate": int(episodes.success.sum()) / episodes.success.numel(),
        "eval/episode_return": float(episodes.episode_return.mean()),
        "eval/episode_length": float(episodes.length.float().mean()),
    }


class Evaluator(Callback):
    """Plays the module's ``policy`` on the datamodule's fixed evaluation goals every ``check_val_every_n_epoch``
    epochs (the trainer's setting; ``limit_val_batches: 0`` turns evaluation off).

    It logs ``eval/success_rate``, ``eval/episode_return`` and ``eval/episode_length`` against environment
    steps (also to the progress bar and ``trainer.callback_metrics``, where ``ModelCheckpoint`` and
    ``EarlyStopping`` can monitor them), prints one line per evaluation, and says once when the run reaches
    ``solved_success_rate``. Every ``figure_every``-th evaluation also draws the episodes where the task can
    (the point task's trajectories): a figure per evaluation would make the TensorBoard log tens of MB. Every
    ``video_every``-th evaluation films one more episode where the task renders images (Gymnasium envs with an
    ``rgb_array`` render mode), shown as an animation in TensorBoard's Images tab; where it cannot render (no
    OpenGL backend for MuJoCo), one line says so and the run goes on without videos.

    Args:
        solved_success_rate: Evaluation success rate at which the run is reported solved.
        figure_every: Evaluations between two figures in TensorBoard (the first evaluation draws one); 0: none.
        video_every: Evaluations between two videos (the first evaluation films one); 0: none.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(self, solved_success_rate: float = 0.95, figure_every: int = 10, video_every: int = 10) -> None:
        if not 0.0 <= solved_success_rate <= 1.0:
            raise ValueError(f"solved_success_rate={solved_success_rate} is invalid: must be within [0, 1]")
        for name, value in [("figure_every", figure_every), ("video_every", video_every)]:
            if value < 0:
                raise ValueError(f"{name}={value} is invalid: must be at least 0 (0: never)")
        self.solved_success_rate = solved_success_rate
        self.figure_every = figure_every
        self.video_every = video_every
        self._can_film = True
        self.evaluations = 0
        self.solved = False
        self._fit_start = time.perf_counter()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: HERDDPG) -> None:
        if monitor.evaluation_epoch(trainer) and trainer.limit_val_batches != 0:
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: HERDDPG) -> dict[str, float]:
        """One evaluation, logged and printed; returns its metrics."""
        datamodule: HERDataModule = trainer.datamodule
        episodes = datamodule.evaluate(pl_module.policy)
        metrics = summarize(episodes)
        step = datamodule.env_steps
        pl_module.log_dict(metrics, prog_bar=True, logger=False, batch_size=1)
        monitor.log_scalars(trainer, metrics, step)
        progress = (
            f"{step:,} env steps, {datamodule.episodes:,} episodes, {pl_module.updates:,} updates, "
            f"{time.perf_counter() - self._fit_start:.0f} s"
        )
        success_rate, episode_return = metrics["eval/success_rate"], metrics["eval/episode_return"]
        result = f"success rate {success_rate:.2f}, mean return {episode_return:.2f}"
        say(trainer, f"eval ({episodes.success.numel()} episodes) after {progress}: {result}")
        if not self.solved and success_rate >= self.solved_success_rate:
            self.solved = True
            say(trainer, f"solved: {result} after {progress}")
        if _due(self.figure_every, self.evaluations) and monitor.tensorboard(trainer):
            figure = datamodule.figure(episodes)
            if figure is not None:
                monitor.log_figure(trainer, "eval/trajectories", figure, step)
        if _due(self.video_every, self.evaluations) and self._can_film and monitor.tensorboard(trainer):
            self._film(trainer, pl_module, step)
        self.evaluations += 1
        return metrics

    def _film(self, trainer: pl.Trainer, pl_module: HERDDPG, step: int) -> None:
        datamodule: HERDataModule = trainer.datamodule
        try:
            frames = datamodule.film(pl_module.policy)
        except Exception as error:  # any renderer failure (OpenGL, EGL, ...) costs the videos, never the run
            self._can_film = False
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            say(trainer, f"no evaluation videos: {datamodule.env_config.id} cannot render here ({reason}); "
                         "for MuJoCo tasks install EGL or OSMesa and set MUJOCO_GL=egl or osmesa")
            return
        if frames is None:
            self._can_film = False  # the task renders no images: never try again
            return
        monitor.log_video(trainer, "eval/episode", frames, step)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"solved": self.solved, "evaluations": self.evaluations}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.solved = bool(state_dict.get("solved", False))
        self.evaluations = int(state_dict.get("evaluations", 0))


def _due(every: int, count: int) -> bool:
    """Whether the evaluation numbered ``count`` (from 0) is one of every ``every``-th; never for 0."""
    return every > 0 and count % every == 0


def say(trainer: pl.Trainer, line: str) -> None:
    """Print a line once (rank zero), through the progress bar where one is drawn, so that it stays intact."""
    bar = trainer.progress_bar_callback
    if bar is not None and bar.is_enabled:
        if trainer.is_global_zero:
            bar.print(line)
    else:
        rank_zero_info(line)


TEST_STREAM = "test"  # its goals are other than the training evaluations' ("eval")


def evaluate_checkpoint(
    path: str | Path, episodes: int = 1000, seed: int | None = None, num_envs: int | None = None
) -> dict[str, Any]:
    """A final evaluation of a checkpoint's policy on ``episodes`` fresh goals; writes it as JSON beside the file.

    The goals come from a stream of their own (``test``) of the run's seed, or of ``seed``: none of them is
    one of the goals the run was evaluated on while training. The policy is the one ``her-lightning export``
    writes (the averaged actor where the run used ``average_policy``), played without exploration noise.

    Args:
        path: A training checkpoint.
        episodes: Episodes to play.
        seed: Seed of the test goals; ``None``: the run's seed.
        num_envs: Copies of the env that play side by side; ``None``: all episodes at once (at most 100).

    Returns:
        The summary also written to ``<checkpoint>.test.json``.

    Raises:
        CheckpointError: If the checkpoint is unusable. ValueError: If an option is out of range.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} is invalid: must be at least 1")
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"num_envs={num_envs} is invalid: must be at least 1")
    path = Path(path)
    state = read_checkpoint(path)
    policy, metadata = policy_from_checkpoint(state)
    task = state.get(DATA_STATE, {}).get("task")
    if task is None:
        raise ValueError(f"checkpoint {path} does not record its task (it predates task records): cannot test it")
    base_seed = (task.get("seed") or 0) if seed is None else seed
    env_config = task["env"]
    env = make_env(
        env_config["id"], min(num_envs or 100, episodes), derive_seed(base_seed, TEST_STREAM), **env_config["kwargs"]
    )
    start = time.perf_counter()
    try:
        with torch.no_grad():
            played = play(env, lambda observation, goal: policy(observation, goal)["action_unit"], episodes)
    finally:
        close_env(env)
    metrics = summarize(played)
    success = metrics["eval/success_rate"]
    low, high = wilson_interval(int(played.success.sum()), episodes)
    summary = {
        "checkpoint": str(path),
        "env_id": env_config["id"],
        "seed": base_seed,
        "episodes": episodes,
        "success_rate": success,
        "success_rate_95ci": [round(low, 4), round(high, 4)],
        "episode_return_mean": metrics["eval/episode_return"],
        "episode_return_std": float(played.episode_return.std()) if episodes > 1 else 0.0,
        "episode_length_mean": metrics["eval/episode_length"],
        "policy": metadata["policy"],
        "trained": trained(state),
        "seconds": round(time.perf_counter() - start, 2),
    }
    output = path.with_name(f"{path.name}.test.json")
    output.write_text(json.dumps(summary, indent=2) + "\n")
    summary["output"] = str(output)
    return summary


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for ``z = 1.96``): sound near 0 and 1, unlike ``p ± z·se``."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
