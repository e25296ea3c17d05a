"""Goal envs of other conventions than Fetch's: labels found out from the env, checked on every collected batch.

One small env per convention (tests/goal_envs.py): integer observations, a 0/1 reward with ``info["success"]``,
episodes that end on a failure, a dense reward, a goal that moves within an episode, a step reward that
``compute_reward`` does not reproduce. Each shows the right labels, and a wrong setting gives a one-line error.
Envs that end their episodes on reaching the goal, given by id alone (Stable-Baselines3's BitFlippingEnv,
PointMaze), train with ``terminate_on_success`` found from their episodes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from test_faults import fit, fit_command, refused, run_folder

from her_lightning import HERDDPG, EnvConfig, HERDataModule
from her_lightning.cli import main
from her_lightning.conventions import ConventionError
from her_lightning.data import recorded_task
from her_lightning.envs import make_env
from her_lightning.learner import value_range
from her_lightning.rollout import Policy, uniform_policy

gymnasium = pytest.importorskip(
    "gymnasium", reason="the Gymnasium adapter needs gymnasium (the dev and robotics extras)"
)
ToyReach = importlib.import_module("goal_envs").ToyReach  # imported once gymnasium, which it needs, is there


def to_goal(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Straight at the goal at full speed (0.1 per step in the toy envs)."""
    return ((goal - observation) / 0.1).clamp(-1.0, 1.0)


def collected(
    env_id: str, policy: Policy | None = None, episodes: int = 8, her_ratio: float = 0.8, **kwargs: object
) -> HERDataModule:
    data = HERDataModule(env=EnvConfig(id=f"goal_envs:{env_id}", num_envs=4, kwargs=kwargs), buffer_size=2_000,
                         her_ratio=her_ratio, seed=0)
    data.setup("fit")
    data.collect(policy or uniform_policy(data.action_dim, torch.Generator().manual_seed(0)), episodes)
    return data


def test_integer_observations_and_goals_become_float32_and_are_labelled_by_the_env() -> None:
    data = collected("BitFlip-v0")
    assert data.buffer.observation.dtype == torch.float32
    batch = data.sampler.sample(512)
    # BitFlip's observation is its achieved goal: the reward is 0 exactly where the next state matches the goal.
    reached = (batch.next_observation == batch.goal).all(dim=-1)
    assert torch.equal(batch.reward, reached.float() - 1.0) and reached.any() and not reached.all()


def test_a_one_zero_reward_is_detected_and_its_success_key_used() -> None:
    env = make_env("goal_envs:OneZeroReach-v0", num_envs=2, seed=0)
    assert (env.reward_at_goal, env.reward_range, env.success_key) == (1.0, (0.0, 1.0), "success")
    data = collected("OneZeroReach-v0", to_goal, her_ratio=0.0)
    batch = data.sampler.sample(512)
    reached = env.is_success(batch.next_observation, batch.goal)
    assert torch.equal(batch.reward, reached.float()) and reached.any()  # 1 at the goal, never inverted
    assert not batch.terminal.any()  # the toy env does not end on success
    first = data.collect(to_goal, 4).episodes[0]
    assert first.success.all() and (first.episode_return > 0).all()


def test_a_success_criterion_that_disagrees_with_the_envs_flag_stops_the_run() -> None:
    expected = r"env goal_envs:OneZeroReach-v0: the env reports .* disagreeing on \d+; .*success_key"
    with pytest.raises(ConventionError, match=expected):
        collected("OneZeroReach-v0", to_goal, success_threshold=0.3)


def test_a_failure_ends_the_episode_and_stays_terminal_under_every_goal() -> None:
    right = lambda obs, goal: torch.ones(obs.shape[0], 2)  # noqa: E731 - leaves the unit square at step 11
    data = collected("FallingReach-v0", right, her_ratio=1.0)
    assert data.buffer.failed[: data.buffer.num_episodes].all()
    batch = data.sampler.sample(1024)
    fell = batch.next_observation.abs().amax(dim=-1) > 1.0  # only an episode's last state lies outside
    assert fell.any() and torch.equal(batch.terminal.bool(), fell)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        ("ToyReach-v0", {"terminate_on_success": True}, "without ending the episode .*terminate_on_success: false"),
        (
            "ToyReach-v0",
            {"end_on_success": True, "terminate_on_success": False},
            ("ended .* episodes on reaching the goal, but terminate_on_success is false: set "
             "data.env.kwargs.terminate_on_success: true, or leave it out"),
        ),
    ],
)
def test_a_wrong_termination_setting_stops_the_run(env_id: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConventionError, match=message):
        collected(env_id, to_goal, **kwargs)


def test_a_right_termination_setting_makes_reached_goals_terminal() -> None:
    data = collected("ToyReach-v0", to_goal, her_ratio=1.0, end_on_success=True, terminate_on_success=True)
    batch = data.sampler.sample(512)
    assert torch.equal(batch.terminal, batch.reward + 1.0) and batch.terminal.any()


def test_a_dense_reward_needs_a_success_criterion() -> None:
    with pytest.raises(ValueError, match="dense reward .* success_threshold .* success_fn"):
        make_env("goal_envs:DenseReach-v0", num_envs=1, seed=0)
    data = collected("DenseReach-v0", to_goal, her_ratio=1.0, success_threshold=0.1)
    batch = data.sampler.sample(512)
    distance = torch.linalg.vector_norm(batch.next_observation - batch.goal, dim=-1)
    assert torch.allclose(batch.reward, -distance, atol=1e-6)
    assert data.env.reward_range is None
    with pytest.raises(ConventionError, match="disagreeing"):
        collected("DenseReach-v0", to_goal, success_threshold=0.3)


def test_a_goal_that_moves_within_an_episode_is_refused() -> None:
    with pytest.raises(ConventionError, match="desired goal changed within an episode"):
        collected("MovingGoalReach-v0")


def test_a_step_reward_that_compute_reward_does_not_reproduce_is_refused() -> None:
    with pytest.raises(ConventionError, match=r"step\(\) gave reward -1.0\d* where compute_reward"):
        collected("PenalizedReach-v0")


def test_a_success_key_that_the_env_lacks_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"success_key='done' is not in its step info, which has \['is_success'\]"):
        make_env("goal_envs:ToyReach-v0", num_envs=1, seed=0, success_key="done")


def test_target_clipping_follows_the_reward_range() -> None:
    assert value_range((-1.0, 0.0), 0.98) == pytest.approx((-50.0, 0.0))
    assert value_range((0.0, 1.0), 0.98) == pytest.approx((0.0, 50.0))
    with pytest.raises(ValueError, match="clip_target needs the env's reward range"):
        HERDDPG(2, 2, 2, clip_target=True, reward_range=None)


def test_goal_statistics_come_from_relabelled_goals_of_the_new_transitions() -> None:
    data = HERDataModule(buffer_size=100_000, seed=0)
    data.setup("fit")
    data.collect(uniform_policy(2, torch.Generator().manual_seed(0)), 16)
    collection = data.collect(uniform_policy(2, torch.Generator().manual_seed(1)), 16)
    desired = torch.stack([episodes.desired_goal for episodes in collection.episodes]).reshape(-1, 2)
    achieved = torch.cat([e.achieved_goal[:, 1:][e.valid] for e in collection.episodes])
    assert collection.goals.shape[0] == achieved.shape[0] == sum(int(e.length.sum()) for e in collection.episodes)
    is_desired = (collection.goals[:, None] == desired[None]).all(-1).any(-1)
    is_new_achieved = (collection.goals[:, None] == achieved[None]).all(-1).any(-1)
    assert (is_desired | is_new_achieved).all()  # from this round's episodes only
    assert abs(is_desired.float().mean().item() - 0.2) < 0.05  # her_ratio 0.8 relabels the rest


def test_seed_none_takes_the_seed_of_seed_everything() -> None:
    pl.seed_everything(7, verbose=False)
    data = HERDataModule(seed=None)
    data.setup("fit")
    assert data.seed == 7


FOUND = "terminate_on_success is taken as true"  # the line that says it was found from the episodes


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines the data module prints (with ``rank_zero_info``), collected."""
    printed: list[str] = []
    monkeypatch.setattr("her_lightning.data.rank_zero_info", printed.append)
    return printed


def found_line(printed: list[str], env_id: str) -> str:
    """The one line saying that ``env_id``'s terminate_on_success was found from its episodes."""
    lines = [line for line in printed if FOUND in line]
    assert len(lines) == 1 and f"env {env_id} ends its episodes on reaching the goal" in lines[0], printed
    return lines[0]


def test_an_env_that_ends_episodes_on_reaching_the_goal_is_trained_as_such_without_the_setting(said: list[str]) -> None:
    data = collected("ToyReach-v0", to_goal, her_ratio=1.0, end_on_success=True)
    found_line(said, "goal_envs:ToyReach-v0")
    batch = data.sampler.sample(512)
    assert torch.equal(batch.terminal, batch.reward + 1.0) and batch.terminal.any()  # reached goals are terminal
    assert data.env_config.kwargs == {"end_on_success": True, "terminate_on_success": True}
    assert data.task_record()["found_terminate_on_success"]
    assert data.env.terminate_on_success


def test_an_env_that_goes_on_past_the_goal_keeps_terminate_on_success_false(said: list[str]) -> None:
    data = collected("ToyReach-v0", to_goal, her_ratio=1.0)
    assert not [message for message in said if FOUND in message]
    assert not data.sampler.sample(512).terminal.any() and data.env_config.kwargs == {}


class HalfEndingReach(ToyReach):
    """Ends an episode on reaching the goal only where the goal lies right of the origin: its endings do not match
    its success."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, _, truncated, info = super().step(action)
        return obs, reward, bool(info["is_success"]) and bool(self.goal[0] > 0), truncated, info


gymnasium.register("HalfEndingReach-v0", entry_point=HalfEndingReach, max_episode_steps=20)


def test_endings_that_do_not_match_success_are_refused_whatever_the_setting() -> None:
    for kwargs in ({}, {"terminate_on_success": True}):
        env = EnvConfig(id="HalfEndingReach-v0", num_envs=8, kwargs=kwargs)
        data = HERDataModule(env=env, buffer_size=2_000, seed=0)
        data.setup("fit")
        with pytest.raises(ConventionError, match=r"env HalfEndingReach-v0 ended \d+ episodes on reaching the goal but "
                                                  r"went on past it on \d+ transitions: its endings do not match"):
            data.collect(to_goal, 8)


def test_a_resume_keeps_the_terminate_on_success_found_by_the_checkpoints_run(said: list[str]) -> None:
    state = collected("ToyReach-v0", to_goal, end_on_success=True).state_dict()
    resumed = HERDataModule(env=EnvConfig(id="goal_envs:ToyReach-v0", num_envs=4, kwargs={"end_on_success": True}),
                            buffer_size=2_000, seed=0)
    resumed.setup("fit")
    said.clear()
    resumed.load_state_dict(state)
    assert "the checkpoint's run trained so" in found_line(said, "goal_envs:ToyReach-v0")
    assert resumed.sampler.terminate_on_success and resumed.env.terminate_on_success
    assert resumed.env_config.kwargs["terminate_on_success"] is True


BIT_FLIPPING = "BitFlipping-v0"


@pytest.fixture(scope="module")
def bit_flipping() -> str:
    """Stable-Baselines3's BitFlippingEnv (4 bits, continuous actions), registered under ``BIT_FLIPPING``."""
    envs = pytest.importorskip("stable_baselines3.common.envs", reason="BitFlippingEnv is Stable-Baselines3's")
    gymnasium.register(BIT_FLIPPING, entry_point=envs.BitFlippingEnv, kwargs={"n_bits": 4, "continuous": True},
                       max_episode_steps=4)
    return BIT_FLIPPING


def test_bit_flipping_given_by_id_alone_trains_with_terminate_on_success_found(
    bit_flipping: str, tmp_path: Path, said: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    fit(tmp_path, 2, "--data.env.id", bit_flipping, "--collector.warmup_episodes", "32")
    found_line(said, bit_flipping)
    checkpoint = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    assert recorded_task(contents).env["kwargs"] == {"terminate_on_success": True}  # what test and export read
    assert contents["datamodule_hyper_parameters"]["env"]["kwargs"] == {}  # the config as given
    main(["test", str(checkpoint), "--episodes", "8"])
    assert f"test of {checkpoint} ({bit_flipping}, " in capsys.readouterr().out


def test_point_maze_given_by_id_trains_with_terminate_on_success_found(tmp_path: Path, said: list[str]) -> None:
    pytest.importorskip("gymnasium_robotics", reason="PointMaze needs the robotics extra: pip install -e '.[robotics]'")
    fit(tmp_path, 1, "--data.env.id", "PointMaze_UMaze-v3", "--data.env.kwargs", "{continuing_task: false}",
        "--collector.warmup_episodes", "8", "--data.eval_episodes", "2")
    found_line(said, "PointMaze_UMaze-v3")
    contents = torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert recorded_task(contents).env["kwargs"] == {"continuing_task": False, "terminate_on_success": True}


def test_a_run_that_found_terminate_on_success_resumes_exactly(tmp_path: Path, said: list[str]) -> None:
    """On the toy env, whose episodes are short: BitFlippingEnv draws its start states from a space's own random
    stream, which no checkpoint holds, so its runs do not resume exactly whatever the setting."""
    task = ("--data.env.id", "goal_envs:ToyReach-v0", "--data.env.kwargs", "{end_on_success: true}",
            "--collector.warmup_episodes", "32")
    fit(tmp_path / "straight", 3, *task)
    found_line(said, "goal_envs:ToyReach-v0")
    fit(tmp_path / "resumed", 2, *task)
    said.clear()
    fit(tmp_path / "resumed", 3, *task, "--ckpt_path", "last")
    assert "the checkpoint's run trained so" in found_line(said, "goal_envs:ToyReach-v0")
    straight, resumed = (
        torch.load(run_folder(tmp_path / run) / "checkpoints" / "last.ckpt", weights_only=True)
        for run in ("straight", "resumed")
    )
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for name, weights in straight["state_dict"].items():
        assert torch.equal(weights, resumed["state_dict"][name]), name


def test_an_explicit_false_for_an_env_that_ends_on_the_goal_is_one_line(
    bit_flipping: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refused(capsys, fit_command(tmp_path, 2, "--data.env.id", bit_flipping, "--collector.warmup_episodes", "32",
                                        "--data.env.kwargs", "{terminate_on_success: false}"))
    assert f"env {bit_flipping} ended" in error
    assert "episodes on reaching the goal, but terminate_on_success is false" in error
