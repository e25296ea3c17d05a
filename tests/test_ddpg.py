"""The learner's options (input normalization, TD3's delayed updates) and what it logs about itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import tagged_episodes
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from her_lightning.collector import EpisodeCollector
from her_lightning.data import HERDataModule
from her_lightning.ddpg import HERDDPG
from her_lightning.her import HERBatch
from her_lightning.normalizer import RunningNormalizer

ROOT = Path(__file__).parents[1]


def test_running_statistics_equal_those_of_all_rows_seen() -> None:
    data = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 10.0, 0.1]) + 4.0
    normalizer = RunningNormalizer(3, clip=100.0, eps=1e-6)
    for chunk in data.split(137):
        normalizer.update(chunk)
    assert torch.allclose(normalizer.mean, data.mean(0), atol=1e-5)
    assert torch.allclose(normalizer.std, data.std(0, correction=0), rtol=1e-5)
    assert torch.allclose(normalizer(data).mean(0), torch.zeros(3), atol=1e-4)


def test_normalized_values_are_clipped_and_constant_features_do_not_blow_up() -> None:
    normalizer = RunningNormalizer(2, clip=5.0, eps=0.01)
    normalizer.update(torch.tensor([[0.0, 3.0], [2.0, 3.0]]))  # feature 1 is constant
    assert torch.equal(normalizer.std, torch.tensor([1.0, 0.01]))
    out = normalizer(torch.tensor([[100.0, 3.0], [-100.0, 3.5]]))
    assert torch.equal(out, torch.tensor([[5.0, 0.0], [-5.0, 5.0]]))


@pytest.mark.parametrize(("name", "value"), [("norm_clip", 0.0), ("policy_delay", 0), ("action_l2", -1.0)])
def test_invalid_options_name_themselves(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name}={value} is invalid"):
        HERDDPG(2, 2, 2, **{name: value})


def test_statistics_come_from_the_observations_and_goals_observed() -> None:
    model = HERDDPG(2, 2, 2, hidden=(8,), normalize_inputs=True)
    observations, goals = torch.tensor([[0.0, 1], [2, 3], [4, 5]]), torch.tensor([[1.0, -1], [3, -3]])
    model.observe(observations, goals)
    assert torch.allclose(model.obs_normalizer.mean, torch.tensor([2.0, 3]))
    assert torch.allclose(model.goal_normalizer.mean, torch.tensor([2.0, -2]))
    assert model.obs_normalizer.count.item() == 3 and model.goal_normalizer.count.item() == 2


def test_the_policy_and_the_update_see_normalized_inputs() -> None:
    torch.manual_seed(0)
    model = HERDDPG(2, 2, 2, hidden=(8,), normalize_inputs=True)
    episodes = tagged_episodes([5, 9], max_steps=10)
    model.observe(episodes.observation[episodes.valid_states], episodes.achieved_goal[episodes.valid_states])
    observation, goal = torch.rand(4, 2) * 9, torch.rand(4, 2) * 9
    expected = model.actor(model.obs_normalizer(observation), model.goal_normalizer(goal))
    assert torch.equal(model.act(observation, goal), expected)
    assert not torch.allclose(model.act(observation, goal), model.actor(observation, goal))
    batch = HERBatch(observation, goal, torch.zeros(4, 2), torch.zeros(4), observation + 1, torch.zeros(4))
    seen = model.normalize(batch)
    assert torch.equal(seen.next_observation, model.obs_normalizer(observation + 1))
    assert torch.equal(seen.action, batch.action) and torch.equal(seen.reward, batch.reward)


def test_without_normalization_inputs_pass_through_and_nothing_is_stored() -> None:
    model = HERDDPG(2, 2, 2, hidden=(8,))
    model.observe(torch.rand(5, 2), torch.rand(5, 2))
    assert not any("normalizer" in key for key in model.state_dict())
    observation, goal = torch.rand(4, 2), torch.rand(4, 2)
    assert torch.equal(model.act(observation, goal), model.actor(observation, goal))


def test_delayed_policy_updates_move_the_actor_and_targets_every_nth_critic_step() -> None:
    torch.manual_seed(0)
    model = HERDDPG(2, 2, 2, hidden=(8,), policy_delay=3, twin_critics=True)
    actor_opt, critic_opt = model.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    batch = HERBatch(*(torch.rand(16, 2, generator=g) for _ in range(3)), -torch.ones(16),
                     torch.rand(16, 2, generator=g), torch.zeros(16))

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    watched = [model.actor, model.actor_target, model.critic_target, model.critic_twin_target]
    for step in range(1, 7):
        before, critics_before = [snapshot(m) for m in watched], snapshot(model.critic_twin)
        stats = model.update(batch, actor_opt, critic_opt)
        moved = [any(not torch.equal(a, b) for a, b in zip(old, m.parameters())) for old, m in zip(before, watched)]
        assert moved == [step % 3 == 0] * 4, f"update {step}"
        assert any(not torch.equal(a, b) for a, b in zip(critics_before, model.critic_twin.parameters()))
        assert stats.actor_steps.item() == float(step % 3 == 0)


class MetricsRecorder(Logger):
    """Keeps every logged scalar in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, list[float]] = {}

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(float(value))


@pytest.mark.parametrize("bias, saturated", [(0.0, 0.0), (10.0, 1.0)])
def test_a_saturated_actor_shows_in_the_logged_saturation_share(bias: float, saturated: float) -> None:
    # The failure this key exists for: an actor pinned at the action bounds has no gradient and stops learning.
    pl.seed_everything(0, verbose=False)
    data = HERDataModule(buffer_size=10_000, batches_per_epoch=4, eval_episodes=4, seed=0)
    model = HERDDPG(data.obs_dim, data.goal_dim, data.action_dim, hidden=(16,), actor_lr=1e-6)
    with torch.no_grad():
        model.actor.net[-1].weight.zero_()
        model.actor.net[-1].bias.fill_(bias)
    recorder = MetricsRecorder()
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=recorder, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[EpisodeCollector(warmup_episodes=4, warmup_policy="random")],
    )
    trainer.fit(model, data)
    assert recorder.metrics["train/actor_saturation"] == [saturated, saturated]
    assert recorder.metrics["buffer/achieved_goal_spread"][-1] > 0.1  # random warm-up episodes spread out


@pytest.mark.parametrize("average_policy", [True, False])
def test_evaluation_plays_the_averaged_actor_and_collection_the_latest(average_policy: bool) -> None:
    torch.manual_seed(0)
    model = HERDDPG(2, 2, 2, hidden=(8,), average_policy=average_policy)
    actor_opt, critic_opt = model.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    batch = HERBatch(*(torch.rand(16, 2, generator=g) for _ in range(3)), -torch.ones(16),
                     torch.rand(16, 2, generator=g), torch.zeros(16))
    for _ in range(3):
        model.update(batch, actor_opt, critic_opt)
    observation, goal = torch.rand(4, 2), torch.rand(4, 2)
    latest, average = model.actor(observation, goal), model.actor_target(observation, goal)
    assert not torch.allclose(latest, average)  # the average lags the latest iterate
    assert torch.equal(model.act(observation, goal), latest)
    assert torch.equal(model.policy(observation, goal), average if average_policy else latest)


def fit_tiny(model: HERDDPG, data: HERDataModule, epochs: int, tmp_path: Path, ckpt_path: str | None = None) -> None:
    """A run of ``epochs`` epochs of 2 updates, checkpointed to ``tmp_path / "last.ckpt"``."""
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[EpisodeCollector(warmup_episodes=4, warmup_policy="random"),
                   ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)],
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)


def test_sizes_left_out_are_the_datamodules_recorded_in_the_checkpoint_and_restored_into(tmp_path: Path) -> None:
    data = HERDataModule(buffer_size=5_000, batch_size=16, batches_per_epoch=2, seed=0)
    model = HERDDPG(hidden=(8,), clip_target=True)  # clip_target needs the reward range: taken from the data too
    assert not model.built
    fit_tiny(model, data, 2, tmp_path)
    sizes = {"obs_dim": data.obs_dim, "goal_dim": data.goal_dim, "action_dim": data.action_dim}
    assert {key: model.hparams[key] for key in sizes} == sizes and model.hparams["reward_range"] == data.reward_range
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert {key: saved["hyper_parameters"][key] for key in sizes} == sizes
    loaded = HERDDPG.load_from_checkpoint(tmp_path / "last.ckpt")
    pairs = zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    resumed = HERDDPG(hidden=(8,), clip_target=True)  # its networks are built before the checkpoint's state loads
    fit_tiny(resumed, HERDataModule(buffer_size=5_000, batch_size=16, batches_per_epoch=2, seed=0), 3, tmp_path,
             ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.updates == 6


def test_sizes_are_given_all_together_or_taken_from_a_datamodule() -> None:
    with pytest.raises(ValueError, match="obs_dim, goal_dim and action_dim go together"):
        HERDDPG(obs_dim=4, goal_dim=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="takes them from the datamodule"):
        trainer.fit(HERDDPG(hidden=(8,)), train_dataloaders=[HERBatch(*(torch.zeros(1, 2),) * 6)])


def test_the_python_example_trains_the_point_task() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_python.py"), "2"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("eval/success_rate ")
