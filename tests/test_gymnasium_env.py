"""The Gymnasium adapter on small test envs (no mujoco): tensors, rescaling, episode ends, seeding, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from her_lightning.envs import GymnasiumGoalEnv, make_env
from her_lightning.rollout import rollout

pytest.importorskip("gymnasium", reason="the Gymnasium adapter needs gymnasium (the dev and robotics extras)")
TOY = "goal_envs:ToyReach-v0"


def test_observations_are_float32_tensors_of_the_declared_sizes() -> None:
    env = make_env(TOY, num_envs=3, seed=0)
    assert isinstance(env, GymnasiumGoalEnv)
    assert (env.obs_dim, env.goal_dim, env.action_dim, env.max_episode_steps) == (2, 2, 2, 20)
    obs = env.reset()
    for tensor in obs:
        assert tensor.dtype == torch.float32 and tensor.shape == (3, 2)
    result = env.step(torch.zeros(3, 2))
    assert result.reward.shape == result.terminated.shape == result.truncated.shape == result.success.shape == (3,)
    assert result.terminated.dtype == result.truncated.dtype == result.success.dtype == torch.bool


def test_actions_in_unit_range_are_rescaled_to_the_action_space() -> None:
    env = GymnasiumGoalEnv(TOY, num_envs=2, seed=0)
    env.reset()
    env.step(torch.tensor([[1.0, -1.0], [0.5, 3.0]]))  # 3.0 is clipped to 1.0 first
    received = np.stack(env._envs.get_attr("last_action"))
    assert np.allclose(received, [[2.0, -2.0], [1.0, 2.0]])


def test_termination_and_truncation_stay_apart() -> None:
    terminating = GymnasiumGoalEnv(TOY, num_envs=1, seed=0, terminate_on_success=True, end_on_success=True)
    obs = terminating.reset()
    # Straight at the goal, 0.05 * 2 = 0.1 per step at most: it gets there well within 20 steps.
    for _ in range(20):
        step = (obs.desired_goal - obs.achieved_goal) / 0.1
        result = terminating.step(step.clamp(-1, 1))
        obs = result.obs
        if result.terminated.item():
            break
    assert result.terminated.item() and result.success.item() and not result.truncated.item()
    assert result.reward.item() == 0.0

    idle = GymnasiumGoalEnv(TOY, num_envs=2, seed=0)
    idle.reset()
    for _ in range(20):
        result = idle.step(torch.zeros(2, 2))
    assert result.truncated.all() and not result.terminated.any()


def test_rollout_records_time_limited_episodes_as_not_terminated() -> None:
    env = make_env(TOY, num_envs=4, seed=1)
    episodes = rollout(env, lambda obs, goal: torch.zeros(obs.shape[0], 2))
    assert episodes.length.tolist() == [20] * 4 and not episodes.terminated.any()
    assert torch.equal(episodes.reward, torch.full((4, 20), -1.0))


def test_relabelled_rewards_come_from_the_envs_own_batched_function() -> None:
    env = make_env(TOY, num_envs=1, seed=0)
    achieved = torch.zeros(4, 5, 2)
    desired = torch.zeros(4, 5, 2)
    desired[1, 2] = 1.0
    reward = env.compute_reward(achieved, desired)
    expected = torch.zeros(4, 5)
    expected[1, 2] = -1.0
    assert torch.equal(reward, expected)
    assert torch.equal(env.is_success(achieved, desired), expected == 0)


def test_seeds_give_reproducible_goals_and_the_state_restores_them() -> None:
    first, same, other = (make_env(TOY, num_envs=3, seed=s) for s in (5, 5, 6))
    assert torch.equal(first.reset().desired_goal, same.reset().desired_goal)
    assert not torch.equal(first.reset().desired_goal, other.reset().desired_goal)
    state = first.state_dict()
    upcoming = first.reset().desired_goal
    first.reset()
    first.load_state_dict(state)
    assert torch.equal(first.reset().desired_goal, upcoming)


def test_copies_in_subprocesses_behave_as_in_process() -> None:
    local = make_env(TOY, num_envs=2, seed=3)
    remote = make_env(TOY, num_envs=2, seed=3, vectorization_mode="async")
    try:
        state = remote.state_dict()
        goals = remote.reset().desired_goal
        assert torch.equal(goals, local.reset().desired_goal)
        remote.load_state_dict(state)
        assert torch.equal(remote.reset().desired_goal, goals)
    finally:
        remote.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        ("goal_envs:ToyReachNoGoal-v0", {}, "is not goal-conditioned: its observation lacks ['desired_goal']"),
        ("CartPole-v1", {}, "is not goal-conditioned: its observation lacks"),
        ("goal_envs:ToyReachUnbatched-v0", {}, "compute_reward returned shape () for a batch of 3 goals"),
        ("goal_envs:ToyReachNoLimit-v0", {}, "has no time limit: add max_episode_steps to data.env.kwargs"),
        ("goal_envs:Nope-v0", {}, "env id='goal_envs:Nope-v0' is unknown"),
        ("no_such_module:Nope-v0", {}, "env id='no_such_module:Nope-v0' is unknown"),
        (TOY, {"vectorization_mode": "threads"}, "vectorization_mode='threads' is unknown"),
    ],
)
def test_unusable_envs_are_clear_errors(env_id: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        make_env(env_id, num_envs=1, seed=0, **kwargs)
    assert message in str(error.value)


def test_a_missing_time_limit_can_be_given_in_the_kwargs() -> None:
    env = make_env("goal_envs:ToyReachNoLimit-v0", num_envs=1, seed=0, max_episode_steps=7)
    assert env.max_episode_steps == 7


def test_without_gymnasium_a_gymnasium_id_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'her_lightning\[robotics\]'"):
        make_env("FetchReach-v4", num_envs=1, seed=0)
    assert make_env("point2d", num_envs=1, seed=0).obs_dim == 2  # the built-in task needs none of it


def test_a_discrete_action_space_takes_indices_counted_from_its_start() -> None:
    env = GymnasiumGoalEnv("goal_envs:DiscreteBitFlip-v0", num_envs=3, seed=0)  # Discrete(4, start=1)
    assert (env.num_actions, env.action_dim, env.action_low, env.action_high) == (4, 1, (1.0,), (4.0,))
    assert GymnasiumGoalEnv(TOY).num_actions is None  # a Box: continuous
    before = env.reset().observation
    after = env.step(torch.tensor([[0.0], [2.0], [3.0]])).obs.observation  # indices 0, 2, 3: the env's 1, 3, 4
    flipped = (before != after).float()
    assert torch.equal(flipped, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    episodes = rollout(env, lambda obs, goal: torch.zeros(obs.shape[0], 1))  # integer actions reach the env
    assert episodes.action.shape == (3, env.max_episode_steps, 1)
