"""End to end: a short seeded run must learn, and two runs with one seed must be identical."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from her_lightning import HERDDPG, EnvConfig, EpisodeCollector, Evaluator, HERDataModule
from her_lightning.cli import HERLightningCLI


def train(
    tmp_path: Path, epochs: int, seed: int = 0, num_envs: int = 16, **collector: object
) -> tuple[HERDDPG, HERDataModule, pl.Trainer]:
    """A small point-task run: random warm-up, 16 episodes and 64 updates per epoch, evaluation every epoch."""
    pl.seed_everything(seed, verbose=False)
    data = HERDataModule(
        env=EnvConfig(num_envs=num_envs), buffer_size=100_000, batches_per_epoch=64, eval_episodes=100, seed=seed
    )
    model = HERDDPG(data.obs_dim, data.goal_dim, data.action_dim, hidden=(64, 64))
    options = {"warmup_episodes": 200, "warmup_policy": "random", "episodes_per_epoch": num_envs, **collector}
    trainer = quiet_trainer(epochs, [EpisodeCollector(**options), Evaluator()], tmp_path)
    trainer.fit(model, data)
    return model, data, trainer


def test_a_short_run_learns_to_reach_goals(tmp_path: Path) -> None:
    model, data, trainer = train(tmp_path, epochs=25)
    success = trainer.callback_metrics["eval/success_rate"].item()
    # A random policy never reaches a goal 3.5 or more away within 50 steps; the trained one nearly always does.
    assert success >= 0.9, f"eval success rate {success:.2f} after {model.updates} updates"
    assert trainer.callback_metrics["eval/episode_return"].item() > -10
    assert model.updates == 25 * 64
    assert data.episodes == 200 + 25 * 16
    assert data.env_steps == data.buffer.num_transitions  # the buffer never wrapped in this run


def test_two_runs_with_one_seed_are_identical(tmp_path: Path) -> None:
    first, first_data, _ = train(tmp_path / "a", epochs=2)
    second, second_data, _ = train(tmp_path / "b", epochs=2)
    weights, other_weights = first.state_dict(), second.state_dict()
    assert weights.keys() == other_weights.keys()
    assert all(torch.equal(weights[name], other_weights[name]) for name in weights)
    stored, other_stored = first_data.buffer.state_dict(), second_data.buffer.state_dict()
    assert stored.keys() == other_stored.keys()
    for name, value in stored.items():
        other = other_stored[name]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    third, _, _ = train(tmp_path / "c", epochs=2, seed=1)
    assert not torch.equal(first.actor.net[0].weight, third.actor.net[0].weight)


@pytest.mark.parametrize("seed", [1, 6])
def test_the_reference_config_learns_on_seeds_where_the_spec_settings_froze(seed: int) -> None:
    # With the spec's untrained-actor warm-up these seeds saturated the actor at the action bounds and never solved.
    cli = HERLightningCLI(
        HERDDPG, HERDataModule, run=False, save_config_callback=None,
        args=["--config", str(Path(__file__).parents[1] / "configs" / "point2d.yaml"), "--seed_everything", str(seed),
              "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.max_epochs", "60", "--trainer.check_val_every_n_epoch", "60"],
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    success = cli.trainer.callback_metrics["eval/success_rate"].item()
    assert success >= 0.9, f"seed {seed}: eval success rate {success:.2f} after {cli.model.updates} updates"
