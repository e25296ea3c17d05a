"""Evaluation during training: the ``Evaluator`` callback plays the noise-free policy on fixed goals.

The final evaluation of a checkpoint (``her-lightning test``) is ``testing.evaluate_checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from her_lightning import monitor
from her_lightning.data import HERDataModule
from her_lightning.envs import GoalEnv, close_env
from her_lightning.learner import HERLearner
from her_lightning.options import check_number
from her_lightning.rollout import Episodes, Policy, film, play


def summarize(episodes: Episodes) -> dict[str, float]:
    """The metrics of a batch of evaluation episodes, by their TensorBoard names."""
    return {
        # Counted in Python floats: 95 of 100 must read as 0.95, not float32's 0.9499.
        "eval/success_rate": int(episodes.success.sum()) / episodes.success.numel(),
        "eval/episode_return": float(episodes.episode_return.mean()),
        "eval/episode_length": float(episodes.length.float().mean()),
    }


class Evaluator(Callback):
    """Plays the module's ``policy`` on fixed evaluation goals every ``check_val_every_n_epoch`` epochs (the trainer's
    setting; ``limit_val_batches: 0`` turns evaluation off).

    It owns its envs: in ``setup`` it has the datamodule make ``data.eval_envs`` copies of the task on the ``eval``
    stream of the run's seed (the same goals on every DDP rank), and every evaluation restarts them from that
    state, so that every evaluation plays the same ``data.eval_episodes`` goals. The video copy is made on the
    first video; ``teardown`` closes both.

    It logs ``eval/success_rate``, ``eval/episode_return`` and ``eval/episode_length`` against environment
    steps (also to the progress bar and ``trainer.callback_metrics``, where ``ModelCheckpoint`` and
    ``EarlyStopping`` can monitor them), prints one line per evaluation, and says once when the run reaches
    ``solved_success_rate``. Every ``figure_every``-th evaluation also draws the episodes where the task can
    (the point task's trajectories): a figure per evaluation would make the TensorBoard log tens of MB. Every
    ``video_every``-th evaluation films one more episode where the task renders images (Gymnasium envs with an
    ``rgb_array`` render mode), shown as an animation in TensorBoard's Images tab; where it cannot render (no
    OpenGL backend for MuJoCo), one line says so and the run goes on without videos. On the same schedule (even with
    ``limit_val_batches: 0``) it draws the learner's ``q_values()`` as the ``train/q_values`` histogram.

    Args:
        solved_success_rate: Evaluation success rate at which the run is reported solved.
        figure_every: Evaluations between two figures in TensorBoard (the first evaluation draws one); 0: none.
        video_every: Evaluations between two videos (the first evaluation films one); 0: none.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(self, solved_success_rate: float = 0.95, figure_every: int = 10, video_every: int = 10) -> None:
        check_number("solved_success_rate", solved_success_rate, 0, 1)
        for name, value in [("figure_every", figure_every), ("video_every", video_every)]:
            check_number(name, value, 0, integer=True, note="0: never")
        self.solved_success_rate = solved_success_rate
        self.figure_every = figure_every
        self.video_every = video_every
        self._can_film = True
        self._make_env: Callable[..., GoalEnv] | None = None  # the datamodule's factory
        self._env_id = ""
        self._episodes = 0
        self._env: GoalEnv | None = None
        self._env_start: dict[str, Any] = {}
        self._video_env: GoalEnv | None = None  # made on the first video
        self.evaluations = 0
        self.solved = False
        self._fit_start = time.perf_counter()

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._env is not None:
            return
        datamodule: HERDataModule = trainer.datamodule
        self._make_env, self._env_id, self._episodes = datamodule.make_env, datamodule.env_id, datamodule.eval_episodes
        self._env = self._make_env(datamodule.eval_envs, "eval")
        self._env_start = self._env.state_dict()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Close the envs: a MuJoCo renderer left to interpreter exit can fail noisily there."""
        for env in (self._env, self._video_env):
            close_env(env)
        self._env = self._video_env = None  # a later fit makes them again, on the same goals

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: HERLearner) -> None:
        if not monitor.evaluation_epoch(trainer):
            return
        if trainer.limit_val_batches != 0:
            self.evaluate(trainer, pl_module)
        if monitor.tensorboard(trainer) is not None:
            q_values = pl_module.q_values()
            if q_values is not None:
                monitor.log_histogram(trainer, "train/q_values", q_values, pl_module.updates)

    def evaluate(self, trainer: pl.Trainer, pl_module: HERLearner) -> dict[str, float]:
        """One evaluation, logged and printed; returns its metrics."""
        datamodule: HERDataModule = trainer.datamodule
        episodes = self.play_goals(pl_module.policy)
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
            figure = self._figure(episodes)
            if figure is not None:
                monitor.log_figure(trainer, "eval/trajectories", figure, step)
        if _due(self.video_every, self.evaluations) and self._can_film and monitor.tensorboard(trainer):
            self._film(trainer, pl_module, step)
        self.evaluations += 1
        return metrics

    def play_goals(self, policy: Policy) -> Episodes:
        """``data.eval_episodes`` episodes of ``policy`` on the fixed evaluation goals, ``data.eval_envs`` at a time."""
        self._env.load_state_dict(self._env_start)  # every evaluation plays the same goals
        return play(self._env, policy, self._episodes)

    def _figure(self, episodes: Episodes) -> Any | None:
        """A matplotlib figure of evaluation episodes where the task draws one (the point task does), else ``None``."""
        plot = getattr(self._env, "plot_episodes", None)
        return plot(episodes) if plot is not None else None

    def _frames(self, policy: Policy) -> torch.Tensor | None:
        """One episode of ``policy`` as frames ``(T + 1, H, W, 3)`` uint8; ``None`` where the task does not render
        images (the point task draws figures instead).

        It plays on a copy of the task made once with ``render_mode="rgb_array"``, on goals of its own stream.

        Raises:
            Exception: Whatever the renderer raises where it cannot draw (no OpenGL backend, for MuJoCo).
        """
        if not hasattr(self._env, "render"):
            return None
        if self._video_env is None:
            self._video_env = self._make_env(1, "video", render_mode="rgb_array")
        return film(self._video_env, policy)

    def _film(self, trainer: pl.Trainer, pl_module: HERLearner, step: int) -> None:
        try:
            frames = self._frames(pl_module.policy)
        except Exception as error:  # any renderer failure (OpenGL, EGL, ...) costs the videos, never the run
            self._can_film = False
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            say(trainer, f"no evaluation videos: {self._env_id} cannot render here ({reason}); "
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
