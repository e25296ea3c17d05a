"""Goal envs of other conventions than Fetch's: labels found out from the env, checked on every collected batch.

One small env per convention (tests/goal_envs.py): integer observations, a 0/1 reward with ``info["success"]``,
episodes that end on a failure, a dense reward, a goal that moves within an episode, a step reward that
``compute_reward`` does not reproduce. Each shows the right labels, and a wrong setting gives a one-line error.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from her_lightning import HERDDPG, EnvConfig, HERDataModule
from her_lightning.conventions import ConventionError
from her_lightning.envs import make_env
from her_lightning.module import value_range
from her_lightning.rollout import Policy, uniform_policy

pytest.importorskip("gymnasium", reason="the Gymnasium adapter needs gymnasium (the dev and robotics extras)")


def to_goal(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Straight at the goal at full speed (0.1 per step in the toy envs)."""
    return ((goal - observation) / 0.1).clamp(-1.0, 1.0)


def collected(env_id: str, policy: Policy | None = None, episodes: int = 8, her_ratio: float = 0.8, **kwargs: object) -> HERDataModule:
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
    with pytest.raises(ConventionError, match=r"env goal_envs:OneZeroReach-v0: the env reports .* disagreeing on \d+; .*success_key"):
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
        ("ToyReach-v0", {"end_on_success": True}, "ended .* episodes on reaching the goal.*terminate_on_success: true"),
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
