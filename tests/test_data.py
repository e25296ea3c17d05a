"""The datamodule's record of its settings and of its task, as checkpoints hold them."""

from __future__ import annotations

import io

import pytest
import torch

from her_lightning.checkpoint import DATA_STATE
from her_lightning.data import EnvConfig, HERDataModule, recorded_task
from her_lightning.her import GoalStrategy


def test_the_data_settings_are_recorded_as_plain_values_that_load_weights_only() -> None:
    data = HERDataModule(env=EnvConfig(id="point2d", kwargs={"threshold": 0.3}), her_strategy=GoalStrategy.final,
                         buffer_size=2_000, seed=None)
    file = io.BytesIO()
    torch.save(dict(data.hparams), file)
    file.seek(0)
    loaded = torch.load(file, weights_only=True)
    assert loaded["env"] == {"id": "point2d", "num_envs": 1, "kwargs": {"threshold": 0.3}}
    assert loaded["her_strategy"] == "final" and type(loaded["her_strategy"]) is str
    assert loaded["seed"] is None and loaded["buffer_size"] == 2_000


def test_the_recorded_seed_is_the_one_the_run_took(monkeypatch: pytest.MonkeyPatch) -> None:
    data = HERDataModule(buffer_size=2_000, seed=None)
    monkeypatch.setenv("PL_GLOBAL_SEED", "17")
    data.setup("fit")
    assert data.seed == data.hparams.seed == 17


def test_the_recorded_task_adds_the_terminate_on_success_the_run_found() -> None:
    data = HERDataModule(env=EnvConfig(id="point2d", num_envs=2), buffer_size=2_000, seed=5)
    data.setup("fit")
    checkpoint = {"datamodule_hyper_parameters": dict(data.hparams), DATA_STATE: data.state_dict()}
    task = recorded_task(checkpoint)
    assert task.env == {"id": "point2d", "num_envs": 2, "kwargs": {}} and task.seed == 5
    assert task.action_low == [-1.0, -1.0] and task.action_high == [1.0, 1.0]
    checkpoint[DATA_STATE]["task"]["found_terminate_on_success"] = True
    assert recorded_task(checkpoint).env["kwargs"] == {"terminate_on_success": True}


def test_a_collection_carries_what_the_collector_logs_of_it() -> None:
    data = HERDataModule(buffer_size=2_000, seed=0)
    data.setup("fit")

    def stay(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:  # never displaces its achieved goal
        return torch.zeros(observation.shape[0], 2)
    first = data.collect(stay, 2, num_envs=2)
    assert [displaced.tolist() for displaced in first.displaced] == [[False, False]]
    assert first.achieved_goal_spread == 0.0 and first.total_env_steps == first.env_steps == 100

    def away(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:  # walks off the start
        return torch.ones(observation.shape[0], 2)
    second = data.collect(away, 3)
    assert [displaced.tolist() for displaced in second.displaced] == [[True]] * 3
    assert second.total_env_steps == 250 == data.env_steps
    assert second.achieved_goal_spread == data.buffer.achieved_goal_spread() > 0.0


def test_other_goal_share_reaches_both_samplers_and_takes_goals_from_other_episodes() -> None:
    data = HERDataModule(buffer_size=2_000, seed=0, her_ratio=1.0, other_goal_share=1.0)
    data.setup("fit")
    assert data.sampler.other_goal_share == data.goal_sampler.other_goal_share == 1.0
    along = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]  # one round walks along x, the other along y
    for direction in along:
        data.collect(lambda observation, goal, direction=direction: direction.expand(observation.shape[0], 2), 2)
    batch = data.sampler.sample(4_000)
    moved = batch.observation[:, :2].abs().sum(dim=1) > 0  # the start state belongs to neither axis
    other_round = batch.goal.argmax(dim=1) != batch.observation[:, :2].argmax(dim=1)
    assert 0.4 < other_round[moved].float().mean().item() < 0.6  # half the stored states are the other round's
