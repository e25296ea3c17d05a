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
from her_lightning.files import atomic_write
from her_lightning.module import HERDDPG
from her_lightning.options import check_memory, check_number, check_seed
from her_lightning.rng import derive_seed
from her_lightning.rollout import Episodes, Policy, play, rollout


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
        check_number("solved_success_rate", solved_success_rate, 0, 1)
        for name, value in [("figure_every", figure_every), ("video_every", video_every)]:
            check_number(name, value, 0, integer=True, note="0: never")
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
        The summary also written to ``<checkpoint>.test.json``, with that file's path as ``output``. Where the
        file cannot be written (a read-only folder, a full disk), the summary is returned all the same, with
        ``output_error`` saying why.

    Raises:
        CheckpointError: If the checkpoint is unusable. ValueError: If an option is out of range.
    """
    check_number("episodes", episodes, 1, integer=True)
    if num_envs is not None:
        check_number("num_envs", num_envs, 1, integer=True)
    if seed is not None:
        check_seed("seed", seed)
    path = Path(path)
    state = read_checkpoint(path)
    policy, metadata = policy_from_checkpoint(state)
    task = state.get(DATA_STATE, {}).get("task")
    if task is None:
        raise ValueError(f"checkpoint {path} does not record its task (it predates task records): cannot test it")
    base_seed = (task.get("seed") or 0) if seed is None else seed
    env_config = task["env"]
    copies = min(num_envs or 100, episodes)
    act = _acting(policy)
    _check_play_fits(env_config, act, episodes, copies)
    env = make_env(env_config["id"], copies, derive_seed(base_seed, TEST_STREAM), **env_config["kwargs"])
    start = time.perf_counter()
    try:
        played = play(env, act, episodes)
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
    contents = (json.dumps(summary, indent=2) + "\n").encode()
    try:
        atomic_write(output, lambda file: file.write(contents))
    except OSError as error:
        summary["output_error"] = error.strerror
    summary["output"] = str(output)
    return summary


def _acting(policy: torch.nn.Module) -> Policy:
    """An exported policy module as a ``Policy``: its actions in ``[-1, 1]`` (``rollout`` records no gradients)."""

    def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return policy(observation, goal)["action_unit"]

    return act


def _check_play_fits(env_config: dict[str, Any], act: Policy, episodes: int, copies: int) -> None:
    """Refuse, before the env's copies are made, a test whose episodes do not fit in the host's available memory.

    ``play`` keeps every round's episodes and concatenates them (two of each), and a round is built from its
    steps' tensors (one more round): sized from one episode played on a single copy of the task.

    Raises:
        ValueError: Naming ``episodes``, the bytes needed and the bytes available.
    """
    probe = make_env(env_config["id"], 1, 0, **env_config["kwargs"])
    try:
        one = sum(field.nbytes for field in rollout(probe, act))
    finally:
        close_env(probe)
    held = (2 * math.ceil(episodes / copies) + 1) * copies
    check_memory("episodes", episodes, one * held, "cpu", "the episodes played")


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for ``z = 1.96``): sound near 0 and 1, unlike ``p ± z·se``."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
