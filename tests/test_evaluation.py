"""The evaluator: its schedule, the figures and videos it draws now and then, and the console it prints to."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning import HERDDPG, EnvConfig, EpisodeCollector, Evaluator, HERDataModule
from her_lightning.envs import make_env
from her_lightning.progress import RunProgressBar
from her_lightning.rng import derive_seed
from her_lightning.rollout import play

ROOT = Path(__file__).parents[1]


def run(
    tmp_path: Path, evaluator: Evaluator, epochs: int, env: EnvConfig | None = None, **trainer: object
) -> tuple[pl.Trainer, HERDataModule]:
    """A tiny run (4 warm-up episodes, 2 updates an epoch) that logs to TensorBoard under ``tmp_path``."""
    pl.seed_everything(0, verbose=False)
    data = HERDataModule(env=env, buffer_size=5_000, batch_size=16, batches_per_epoch=2, eval_episodes=3, seed=0)
    model = HERDDPG(data.obs_dim, data.goal_dim, data.action_dim, hidden=(8,))
    options = {"logger": TensorBoardLogger(tmp_path, name="run", version=0), "enable_progress_bar": False, **trainer}
    fitter = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", enable_checkpointing=False, enable_model_summary=False,
        callbacks=[EpisodeCollector(warmup_episodes=4, warmup_policy="random"), evaluator], **options,
    )
    fitter.fit(model, data)
    return fitter, data


def images(tmp_path: Path, tag: str) -> list:
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    return events.Images(tag) if tag in events.Tags()["images"] else []


def test_evaluations_follow_check_val_every_n_epoch_and_limit_val_batches_turns_them_off(tmp_path: Path) -> None:
    evaluator = Evaluator()
    trainer, _ = run(tmp_path / "a", evaluator, 5, check_val_every_n_epoch=2)
    assert evaluator.evaluations == 2 and "eval/success_rate" in trainer.callback_metrics
    evaluator = Evaluator()
    trainer, _ = run(tmp_path / "b", evaluator, 2, check_val_every_n_epoch=1, limit_val_batches=0)
    assert evaluator.evaluations == 0 and "eval/success_rate" not in trainer.callback_metrics


def histogram_steps(tmp_path: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"histograms": 0})
    events.Reload()
    return [event.step for event in events.Histograms(tag)] if tag in events.Tags()["histograms"] else []


@pytest.mark.parametrize("limit_val_batches", [None, 0])
def test_q_values_are_drawn_on_the_evaluation_schedule_against_updates(tmp_path: Path, limit_val_batches: int) -> None:
    options = {} if limit_val_batches is None else {"limit_val_batches": limit_val_batches}
    run(tmp_path, Evaluator(), 5, check_val_every_n_epoch=2, **options)
    assert histogram_steps(tmp_path, "train/q_values") == [4, 8]  # after epochs 2 and 4, of 2 updates each


def test_figures_are_drawn_every_nth_evaluation(tmp_path: Path) -> None:
    evaluator = Evaluator(figure_every=2)
    run(tmp_path, evaluator, 5)
    steps = [image.step for image in images(tmp_path, "eval/trajectories")]
    assert evaluator.evaluations == 5 and len(steps) == 3  # evaluations 1, 3 and 5
    assert steps == sorted(steps) and len(set(steps)) == 3


def test_an_env_that_renders_gets_evaluation_videos(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium", reason="the Gymnasium adapter needs gymnasium")
    from goal_envs import PaintedReach

    run(tmp_path, Evaluator(video_every=2), 3, env=EnvConfig(id="goal_envs:PaintedReach-v0"))
    assert PaintedReach.open_renderers == 0  # the video copy is closed when the fit ends
    videos = images(tmp_path, "eval/episode")
    assert len(videos) == 2  # evaluations 1 and 3
    gif = Image.open(io.BytesIO(videos[0].encoded_image_string))
    assert (gif.format, gif.size, gif.n_frames) == ("GIF", (32, 24), 21)  # the reset frame and 20 steps' frames


def test_a_renderer_that_fails_costs_the_videos_in_one_line_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gymnasium", reason="the Gymnasium adapter needs gymnasium")
    printed: list[str] = []
    monkeypatch.setattr("her_lightning.evaluation.rank_zero_info", printed.append)
    evaluator = Evaluator(video_every=1)
    trainer, _ = run(tmp_path, evaluator, 3, env=EnvConfig(id="goal_envs:BrokenRenderReach-v0"))
    assert len([line for line in printed if line.startswith("eval (")]) == 3
    lines = [line for line in printed if line.startswith("no evaluation videos")]
    assert lines == [
        "no evaluation videos: goal_envs:BrokenRenderReach-v0 cannot render here (an OpenGL platform library has "
        "not been loaded); for MuJoCo tasks install EGL or OSMesa and set MUJOCO_GL=egl or osmesa"
    ]
    assert evaluator.evaluations == 3 and trainer.current_epoch == 3 and not images(tmp_path, "eval/episode")


def test_piped_output_is_one_line_per_evaluation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "her_lightning.cli", "fit", "--config", str(ROOT / "configs" / "point2d.yaml"),
         "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "2", "--collector.warmup_episodes", "4",
         "--data.eval_episodes", "3", "--trainer.logger.init_args.save_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "\r" not in output and "Validation" not in output and "Epoch" not in output
    evaluations = [line for line in output.splitlines() if line.startswith("eval (3 episodes) after")]
    assert len(evaluations) == 2


def test_on_a_terminal_one_bar_runs_over_the_epochs_and_the_lines_stay_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    pl.seed_everything(0, verbose=False)
    data = HERDataModule(buffer_size=5_000, batch_size=16, batches_per_epoch=2, eval_episodes=3, seed=0)
    model = HERDDPG(data.obs_dim, data.goal_dim, data.action_dim, hidden=(8,))
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
        callbacks=[EpisodeCollector(warmup_episodes=4, warmup_policy="random"), Evaluator(), RunProgressBar()],
    )
    trainer.fit(model, data)
    err = capsys.readouterr().err
    assert "epochs: 100%" in err and "3/3" in err and "Epoch 0" not in err and "Validation" not in err
    lines = err.replace("\r", "\n").splitlines()
    evaluations = [line for line in lines if line.startswith("eval (3 episodes) after")]
    assert len(evaluations) == 3 and not any("epochs:" in line for line in evaluations)  # no bar glued to a line


def test_evaluation_in_rounds_plays_the_eval_streams_goals_on_every_call_and_after_a_new_setup() -> None:
    # Fewer env copies than evaluation episodes (to save memory): the episodes are played in rounds.
    data = HERDataModule(eval_episodes=10, eval_envs=4, seed=0)
    data.setup("fit")
    trainer, evaluator = SimpleNamespace(datamodule=data), Evaluator()
    evaluator.setup(trainer, None, "fit")
    def policy(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return (goal - observation[:, :2]).clamp(-1.0, 1.0)
    first, second = evaluator.play_goals(policy), evaluator.play_goals(policy)
    evaluator.teardown(trainer, None, "fit")
    evaluator.setup(trainer, None, "fit")
    again = evaluator.play_goals(policy)
    expected = play(make_env("point2d", 4, derive_seed(0, "eval")), policy, 10)
    assert first.desired_goal.shape == (10, 2)
    assert torch.equal(first.desired_goal, expected.desired_goal)
    assert torch.equal(first.desired_goal, second.desired_goal) and torch.equal(first.desired_goal, again.desired_goal)
    assert first.desired_goal.unique(dim=0).shape[0] == 10  # each round plays new goals
    assert first.success.all()
