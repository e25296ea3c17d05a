"""The bit-flipping task against the spec (uniform bits, one flip per action, reward, termination, time limit,
refused actions) and an optimal policy that solves it."""

from __future__ import annotations

import pytest
import torch

from her_lightning.envs.base import GoalEnv
from her_lightning.envs.bit_flip import BitFlipEnv
from her_lightning.rollout import rollout


def test_the_protocol_and_the_discrete_action_space() -> None:
    env = BitFlipEnv(num_envs=3, seed=0, n_bits=7)
    assert isinstance(env, GoalEnv)
    assert (env.obs_dim, env.goal_dim, env.action_dim, env.num_actions) == (7, 7, 1, 7)
    assert (env.action_low, env.action_high) == ((0.0,), (6.0,))
    assert (env.max_episode_steps, env.terminate_on_success, env.reward_range) == (7, True, (-1.0, 0.0))
    assert env.device == torch.device("cpu") and env.generator.device == env.device


def test_reset_draws_uniform_bits_and_goals() -> None:
    env = BitFlipEnv(num_envs=4000, seed=1, n_bits=10)
    obs = env.reset()
    assert obs.observation.shape == obs.desired_goal.shape == (4000, 10)
    assert obs.observation.dtype == obs.desired_goal.dtype == torch.get_default_dtype()
    assert torch.equal(obs.achieved_goal, obs.observation)
    for bits in (obs.observation, obs.desired_goal):
        assert ((bits == 0.0) | (bits == 1.0)).all()
        assert abs(bits.mean().item() - 0.5) < 0.02
        assert (bits.mean(dim=0) - 0.5).abs().max() < 0.05  # every position, not only the total
    assert abs((obs.observation == obs.desired_goal).float().mean().item() - 0.5) < 0.02  # drawn independently
    assert not env.elapsed.any()


def test_a_step_flips_exactly_the_chosen_bit() -> None:
    env = BitFlipEnv(num_envs=5, seed=2, n_bits=6)
    before = env.reset().observation
    kept, goal = before.clone(), env.goal
    action = torch.tensor([[0.0], [5.0], [2.0], [2.0], [3.0]])
    result = env.step(action)
    after = result.obs.observation
    changed = after != before
    expected = torch.nn.functional.one_hot(action.long().squeeze(1), 6).bool()
    assert torch.equal(changed, expected)
    assert torch.equal(after[changed], 1.0 - before[changed])
    assert torch.equal(result.obs.achieved_goal, after) and torch.equal(result.obs.desired_goal, goal)
    assert torch.equal(before, kept)  # the handed-out state was replaced, not written in place
    assert env.elapsed.tolist() == [1] * 5


def test_reaching_the_goal_earns_zero_and_terminates() -> None:
    env = BitFlipEnv(num_envs=3, seed=0, n_bits=4)
    env.reset()
    env.bits = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    env.goal = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    result = env.step(torch.tensor([[2.0], [1.0], [0.0]]))  # the differing bit; a bit of a solved start; one of two
    assert result.reward.tolist() == [0.0, -1.0, -1.0]
    assert result.terminated.tolist() == [True, False, False]
    assert result.success.tolist() == [True, False, False]
    assert result.truncated.tolist() == [False, False, False]
    assert torch.equal(result.reward, env.compute_reward(result.obs.achieved_goal, result.obs.desired_goal))


def test_reaching_the_goal_on_the_last_step_is_a_terminal_not_a_truncation() -> None:
    env = BitFlipEnv(num_envs=1, seed=0, n_bits=2)
    env.reset()
    env.bits, env.goal = torch.zeros(1, 2), torch.ones(1, 2)
    first = env.step(torch.zeros(1, 1))
    assert (first.terminated.item(), first.truncated.item(), first.reward.item()) == (False, False, -1.0)
    last = env.step(torch.ones(1, 1))
    assert (last.terminated.item(), last.truncated.item(), last.success.item(), last.reward.item()) == (
        True, False, True, 0.0
    )


@pytest.mark.parametrize("n_bits", [1, 5])
def test_time_limit_truncates_at_n_bits_steps_and_is_not_a_terminal(n_bits: int) -> None:
    env = BitFlipEnv(num_envs=2, seed=0, n_bits=n_bits)
    env.reset()
    env.bits = torch.zeros(2, n_bits)
    env.goal = torch.ones(2, n_bits)
    env.goal[:, 0] = 0.0
    env.goal[1, -1] = 0.0  # slot 1 differs nowhere when n_bits is 1
    for step in range(1, n_bits + 1):
        result = env.step(torch.zeros(2, 1))  # bit 0, which the goal wants off: never closer
        assert result.truncated.tolist() == [step == n_bits] * 2
        assert not result.terminated.any() and not result.success.any()
        assert result.reward.tolist() == [-1.0, -1.0]
    env.reset()  # a new episode starts its clock anew
    assert not env.elapsed.any()
    assert env.step(torch.zeros(2, 1)).truncated.tolist() == [n_bits == 1] * 2


def test_reward_and_success_are_vectorized_and_agree_with_step() -> None:
    env = BitFlipEnv(num_envs=64, seed=3, n_bits=3)
    generator = torch.Generator().manual_seed(0)
    achieved = torch.randint(2, (4, 3, 3), generator=generator).float()
    desired = torch.randint(2, (4, 3, 3), generator=generator).float()
    desired[0, 0] = achieved[0, 0]
    expected = (achieved == desired).all(dim=-1)
    assert env.is_success(achieved, desired).shape == (4, 3)
    assert torch.equal(env.is_success(achieved, desired), expected) and expected.any() and not expected.all()
    assert torch.equal(env.compute_reward(achieved, desired), expected.float() - 1.0)
    assert env.compute_reward(achieved.double(), desired.double()).dtype == torch.float64
    noisy = achieved + 0.3 * (torch.rand(achieved.shape, generator=generator) - 0.5)  # within the 0.5 tolerance
    assert torch.equal(env.is_success(noisy, desired), expected)

    env.reset()
    for _ in range(3):
        action = torch.randint(3, (64, 1), generator=generator).float()
        result = env.step(action)
        obs = result.obs
        assert torch.equal(result.reward, env.compute_reward(obs.achieved_goal, obs.desired_goal))
        assert torch.equal(result.success, env.is_success(obs.achieved_goal, obs.desired_goal))
    assert result.success.any()


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (torch.tensor([[0.0], [1.5]]), r"action=1.5 is invalid: must be an integer from 0 to 3 \("),
        (torch.tensor([[-1.0], [0.0]]), r"action=-1.0 is invalid: must be an integer from 0 to 3"),
        (torch.tensor([[3.0], [4.0]]), r"action=4.0 is invalid: must be an integer from 0 to 3"),
        (torch.tensor([[float("nan")], [0.0]]), r"action=nan is invalid"),
        (torch.zeros(2), r"action of shape \(2,\) is invalid: must be \(num_envs, 1\) = \(2, 1\)"),
        (torch.zeros(2, 4), r"action of shape \(2, 4\) is invalid"),
        (torch.zeros(3, 1), r"action of shape \(3, 1\) is invalid"),
    ],
)
def test_invalid_actions_are_refused_and_named(action: torch.Tensor, message: str) -> None:
    env = BitFlipEnv(num_envs=2, seed=0, n_bits=4)
    before = env.reset().observation
    with pytest.raises(ValueError, match=message) as raised:
        env.step(action)
    assert "\n" not in str(raised.value)
    assert torch.equal(env.bits, before) and not env.elapsed.any()  # nothing was stepped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bits": 0}, "n_bits=0 is invalid"),
        ({"n_bits": 2.5}, "n_bits=2.5 is invalid: must be an integer"),
        ({"n_bits": True}, "n_bits=True is invalid"),
        ({"num_envs": 0}, "num_envs=0 is invalid"),
    ],
)
def test_invalid_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BitFlipEnv(**kwargs)


def test_same_seed_same_episode_and_state_round_trip() -> None:
    a, b = BitFlipEnv(num_envs=8, seed=7), BitFlipEnv(num_envs=8, seed=7)
    first_a, first_b = a.reset(), b.reset()
    assert torch.equal(first_a.observation, first_b.observation)
    assert torch.equal(first_a.desired_goal, first_b.desired_goal)
    action = torch.arange(8.0).unsqueeze(1)
    assert torch.equal(a.step(action).obs.observation, b.step(action).obs.observation)

    state = a.state_dict()
    following = a.reset()
    a.load_state_dict(state)
    again = a.reset()
    assert torch.equal(again.observation, following.observation)
    assert torch.equal(again.desired_goal, following.desired_goal)
    other = BitFlipEnv(num_envs=8, seed=8).reset()
    assert not torch.equal(other.observation, first_b.observation)


def lowest_differing_bit(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Flip the first bit that differs from the goal (bit 0 where none does)."""
    differs = observation != goal
    return differs.to(torch.uint8).argmax(dim=-1, keepdim=True).to(observation.dtype)


@pytest.mark.parametrize("n_bits", [4, 10])
def test_flipping_the_lowest_differing_bit_solves_every_episode(n_bits: int) -> None:
    env = BitFlipEnv(num_envs=512, seed=4, n_bits=n_bits)
    start = BitFlipEnv(num_envs=512, seed=4, n_bits=n_bits).reset()
    differing = (start.observation != start.desired_goal).sum(dim=-1)
    episodes = rollout(env, lowest_differing_bit)
    assert episodes.success.all() and episodes.terminated.all()
    # A start already on the goal takes two steps: away and back.
    assert torch.equal(episodes.length, torch.where(differing == 0, 2, differing))
    assert torch.equal(episodes.episode_return, 1.0 - episodes.length.float())
    if n_bits == 4:
        assert (differing == 0).any()  # the two-step case is exercised (1 in 16 starts)
