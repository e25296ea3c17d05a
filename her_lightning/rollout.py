"""Run a batch of whole episodes with a policy and hand them back as padded tensors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from her_lightning.envs.base import GoalEnv

Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Maps ``(observation (N, obs_dim), desired_goal (N, goal_dim))`` to actions ``(N, action_dim)`` in ``[-1, 1]``."""


class Episodes(NamedTuple):
    """A batch of ``N`` finished episodes, padded to the time limit ``T``.

    Episode ``i`` has ``length[i]`` transitions: states ``0..length[i]`` and
    actions ``0..length[i]-1`` are valid; the rest is padding.
    """

    observation: torch.Tensor  # (N, T + 1, obs_dim)
    achieved_goal: torch.Tensor  # (N, T + 1, goal_dim)
    desired_goal: torch.Tensor  # (N, goal_dim)
    action: torch.Tensor  # (N, T, action_dim)
    reward: torch.Tensor  # (N, T), zero past the end
    length: torch.Tensor  # (N,) long, in [1, T]
    terminated: torch.Tensor  # (N,) bool: the env ended the episode (goal reached, or a failure)
    success: torch.Tensor  # (N,) bool: the env reports the goal reached in the final state
    step_success: torch.Tensor  # (N, T) bool: the env reports the goal reached after each step, false past the end
    goal_moved: torch.Tensor  # (N,) bool: the desired goal changed within the episode (a continuing task)

    @property
    def valid(self) -> torch.Tensor:  # (N, T) bool
        """Which transitions (and actions) belong to their episode; state ``t + 1`` is valid where transition ``t``
        is."""
        return within(self.length, self.action.shape[1])

    @property
    def valid_states(self) -> torch.Tensor:  # (N, T + 1) bool
        return within(self.length + 1, self.observation.shape[1])

    @property
    def episode_return(self) -> torch.Tensor:  # (N,)
        return self.reward.sum(dim=1)

    @property
    def goal_ends(self) -> tuple[torch.Tensor, torch.Tensor]:  # (N, goal_dim) each
        """The first and the last achieved goal of every episode."""
        states = self.achieved_goal.shape[1]
        start = torch.arange(self.length.numel(), device=self.length.device) * states
        return episode_ends(self.achieved_goal.flatten(0, 1), start, self.length)


def episode_ends(
    states: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``start`` and ``start + length`` of ``states`` ``(R, ...)``, wrapping past its end: the first and the last
    state of each episode of ``length`` transitions stored from row ``start``."""
    return states[start], states[(start + length) % states.shape[0]]


def within(length: torch.Tensor, steps: int) -> torch.Tensor:
    """``(N, steps)`` bool: which of ``steps`` positions fall within each of ``N`` episodes of ``length`` positions."""
    return torch.arange(steps, device=length.device) < length.unsqueeze(1)


def exploring(
    policy: Policy, noise_std: float, random_action_prob: float, generator: torch.Generator | None
) -> Policy:
    """``policy`` with exploration: Gaussian noise on its actions, and a share of them replaced by uniform ones.

    Args:
        policy: The acting policy.
        noise_std: Standard deviation of the Gaussian noise added to the action (the sum is clipped to ``[-1, 1]``).
        random_action_prob: Probability that an episode's action at a step is replaced by a uniformly
            random one (HER's ``random_eps``).
        generator: The exploration stream; required when exploring.
    """
    if (noise_std > 0 or random_action_prob > 0) and generator is None:
        raise ValueError("exploration (noise_std or random_action_prob > 0) needs a generator")

    def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        action = policy(observation, goal)
        if noise_std > 0:
            noise = torch.randn(action.shape, generator=generator, device=action.device)
            action = (action + noise_std * noise).clamp_(-1.0, 1.0)
        if random_action_prob > 0:
            replace = torch.rand(action.shape[0], 1, generator=generator, device=action.device) < random_action_prob
            uniform = torch.rand(action.shape, generator=generator, device=action.device) * 2.0 - 1.0
            action = torch.where(replace, uniform, action)
        return action

    return act


def uniform_policy(action_dim: int, generator: torch.Generator) -> Policy:
    """Uniformly random actions in ``[-1, 1]``, drawn from ``generator``."""

    def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        shape = (observation.shape[0], action_dim)
        return torch.rand(shape, generator=generator, device=observation.device) * 2.0 - 1.0

    return act


@torch.no_grad()
def rollout(env: GoalEnv, policy: Policy) -> Episodes:
    """Play one episode in each of the env's ``num_envs`` slots, all at once.

    Args:
        env: The batch of episodes to run; it is reset first.
        policy: The acting policy (wrap it with ``exploring`` to explore).

    Returns:
        The finished episodes. Slots whose episode has ended keep being stepped
        until every episode has ended; past its end, an episode's actions and
        rewards are zeroed and its states are not to be read.
    """
    n, steps, device = env.num_envs, env.max_episode_steps, env.device
    obs = env.reset()
    desired_goal = obs.desired_goal
    # Each step's tensors are kept as they come and stacked once at the end (tasks hand out fresh tensors).
    observations, achieved_goals = [obs.observation], [obs.achieved_goal]
    actions, rewards, successes, terminals, ends = [], [], [], [], []
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    goal_moved = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(steps):
        act = policy(obs.observation, desired_goal)
        result = env.step(act)
        obs = result.obs
        goal_moved |= ~ended & (obs.desired_goal != desired_goal).any(dim=-1)
        # Every slot is recorded; what a slot records after its episode ended is cut off below.
        observations.append(obs.observation)
        achieved_goals.append(obs.achieved_goal)
        actions.append(act)
        rewards.append(result.reward)
        successes.append(result.success)
        terminals.append(result.terminated)
        end = result.terminated | result.truncated
        ends.append(end)
        ended |= end
        if ended.all():
            break
    played = len(actions)
    end = torch.stack(ends, dim=1)  # (N, played)
    # The transition that ended each episode: its first end (the time limit ends every episode by then).
    last = torch.where(end.any(dim=1), end.to(torch.uint8).argmax(dim=1), played - 1).unsqueeze(1)
    length = last.squeeze(1) + 1
    terminated = torch.stack(terminals, dim=1).gather(1, last).squeeze(1)
    valid = within(length, steps)  # (N, T)
    step_success = _padded(successes, steps) & valid
    return Episodes(
        observation=_padded(observations, steps + 1),
        achieved_goal=_padded(achieved_goals, steps + 1),
        desired_goal=desired_goal,
        action=_padded(actions, steps) * valid.unsqueeze(-1),
        reward=_padded(rewards, steps) * valid,
        length=length,
        terminated=terminated,
        success=step_success.gather(1, last).squeeze(1),
        step_success=step_success,
        goal_moved=goal_moved,
    )


@torch.no_grad()
def film(env: GoalEnv, policy: Policy) -> torch.Tensor | None:
    """The frames of one episode of ``policy`` in the env's first copy, ``(T + 1, H, W, 3)`` uint8.

    ``env`` must have a ``render()`` that returns the first copy's frame (see ``GymnasiumGoalEnv.render``);
    ``None`` where it returns none.
    """
    obs = env.reset()
    frames = [env.render()]
    for _ in range(env.max_episode_steps):
        result = env.step(policy(obs.observation, obs.desired_goal))
        obs = result.obs
        frames.append(env.render())
        if bool(result.terminated[0] | result.truncated[0]):
            break
    if any(frame is None for frame in frames):
        return None
    return torch.stack([torch.as_tensor(frame) for frame in frames])


def play(env: GoalEnv, policy: Policy, num_episodes: int) -> Episodes:
    """The first ``num_episodes`` episodes of as many ``rollout`` rounds of ``env`` as they take, as one batch."""
    rounds = [rollout(env, policy) for _ in range(math.ceil(num_episodes / env.num_envs))]
    return Episodes(*(torch.cat(values)[:num_episodes] for values in zip(*rounds, strict=True)))


def _padded(parts: list[torch.Tensor], time: int) -> torch.Tensor:
    """``parts`` (one tensor per step) stacked along a time dimension and zero-padded to ``time`` steps."""
    stacked = torch.stack(parts, dim=1)
    out = stacked.new_zeros((stacked.shape[0], time, *stacked.shape[2:]))
    out[:, : stacked.shape[1]] = stacked
    return out

