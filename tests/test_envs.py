"""The point task against the spec (dynamics, bounds, goal range, threshold, time limit) and rollout exploration."""

from __future__ import annotations

import pytest
import torch

from her_lightning.envs import GoalEnv, PointNavEnv, make_env
from her_lightning.rollout import exploring, rollout


def test_reset_starts_at_origin_with_goals_in_range() -> None:
    env = PointNavEnv(num_envs=5000, seed=1)
    obs = env.reset()
    assert isinstance(env, GoalEnv)
    assert torch.equal(obs.observation, torch.zeros(5000, 2))
    assert torch.equal(obs.achieved_goal, torch.zeros(5000, 2))
    goal = obs.desired_goal
    assert goal.min() >= 3.5 and goal.max() <= 4.5
    # Uniform on [3.5, 4.5]: mean 4, variance 1/12 per axis.
    assert torch.allclose(goal.mean(0), torch.tensor([4.0, 4.0]), atol=0.02)
    assert torch.allclose(goal.var(0), torch.full((2,), 1 / 12), atol=0.005)


def test_actions_are_clipped_and_positions_stay_in_the_arena() -> None:
    env = PointNavEnv(num_envs=3, seed=0)
    env.reset()
    result = env.step(torch.tensor([[3.0, -2.0], [0.5, 0.25], [-1.0, 1.0]]))
    assert torch.equal(result.obs.observation, torch.tensor([[1.0, 0.0], [0.5, 0.25], [0.0, 1.0]]))
    assert torch.equal(result.obs.achieved_goal, result.obs.observation)
    for _ in range(10):
        result = env.step(torch.ones(3, 2))
    assert torch.equal(result.obs.observation, torch.full((3, 2), 5.0))


def test_reward_threshold_and_termination() -> None:
    env = PointNavEnv(num_envs=2, seed=0)
    goal = torch.tensor([[0.0, 0.0], [4.0, 4.0]])
    inside = torch.tensor([[0.0, 0.15], [4.1, 4.1]])  # distance 0.15 (the boundary counts) and 0.141
    outside = torch.tensor([[0.0, 0.16], [4.2, 4.2]])
    assert torch.equal(env.compute_reward(inside, goal), torch.zeros(2))
    assert torch.equal(env.compute_reward(outside, goal), -torch.ones(2))
    # Vectorized over any leading shape, as HER needs.
    assert env.compute_reward(torch.zeros(4, 3, 2), torch.ones(4, 3, 2)).shape == (4, 3)

    env.reset()
    env.goal = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    result = env.step(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert result.reward.tolist() == [0.0, -1.0]
    assert result.terminated.tolist() == [True, False]
    assert result.truncated.tolist() == [False, False]


def test_time_limit_truncates_and_is_not_a_terminal() -> None:
    env = PointNavEnv(num_envs=1, seed=0)
    env.reset()
    for step in range(1, 51):
        result = env.step(torch.zeros(1, 2))
        assert result.truncated.item() == (step == 50)
        assert not result.terminated.item()
        assert result.reward.item() == -1.0


def test_optimal_return_matches_the_spec() -> None:
    """A straight-line policy reaches every goal in 4 or 5 steps: expected return about -3.58."""

    env = PointNavEnv(num_envs=20000, seed=3)
    episodes = rollout(env, lambda obs, goal: (goal - obs).clamp(-1.0, 1.0))
    assert episodes.terminated.all()
    assert set(episodes.length.unique().tolist()) == {4, 5}
    assert episodes.episode_return.mean().item() == pytest.approx(-3.58, abs=0.03)


def test_same_seed_same_goals_and_state_round_trip() -> None:
    a, b = PointNavEnv(num_envs=4, seed=7), PointNavEnv(num_envs=4, seed=7)
    assert torch.equal(a.reset().desired_goal, b.reset().desired_goal)
    state = a.state_dict()
    first = a.reset().desired_goal
    a.load_state_dict(state)
    assert torch.equal(a.reset().desired_goal, first)
    assert not torch.equal(PointNavEnv(num_envs=4, seed=8).reset().desired_goal, b.reset().desired_goal)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs=0"),
        ({"max_episode_steps": 0}, "max_episode_steps=0"),
        ({"threshold": 0.0}, "threshold=0.0"),
        ({"goal_low": 4.0, "goal_high": 3.0}, "goal_low=4.0"),
    ],
)
def test_invalid_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PointNavEnv(**kwargs)


def test_unknown_env_id_names_the_built_in_ones() -> None:
    with pytest.raises(ValueError, match=r"env id='nope' is unknown: it is not built in \(point2d, bit_flip\)"):
        make_env("nope", 1, 0)


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_random_actions_replace_the_policys_at_the_given_rate(prob: float) -> None:
    env = PointNavEnv(num_envs=64, seed=0)

    def half(obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 2), 0.5)

    policy = exploring(half, 0.0, prob, torch.Generator().manual_seed(0))
    episodes = rollout(env, policy)
    valid = torch.arange(50) < episodes.length[:, None]
    actions = episodes.action[valid]
    replaced = (actions != 0.5).all(dim=-1)
    assert torch.equal(replaced, (actions != 0.5).any(dim=-1))  # a whole action is replaced, never one coordinate
    assert abs(replaced.float().mean().item() - prob) < 0.03  # over about 3,000 actions
    if prob == 1.0:
        assert actions.abs().max() <= 1.0 and actions.mean().abs() < 0.05


def test_exploring_without_a_generator_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs a generator"):
        exploring(lambda obs, goal: torch.zeros(obs.shape[0], 2), 0.0, 0.3, None)
