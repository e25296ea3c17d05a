"""The protocol every task implements: a batch of goal-conditioned episodes stepped at once."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch


class GoalObs(NamedTuple):
    """One observation of a batch of episodes, keyed as Gymnasium-Robotics spells it."""

    observation: torch.Tensor  # (N, obs_dim)
    achieved_goal: torch.Tensor  # (N, goal_dim)
    desired_goal: torch.Tensor  # (N, goal_dim)


class StepResult(NamedTuple):
    """What one step of a batch of episodes returns."""

    obs: GoalObs
    reward: torch.Tensor  # (N,)
    terminated: torch.Tensor  # (N,) bool: the episode truly ended (goal reached, or a failure): no bootstrap
    truncated: torch.Tensor  # (N,) bool: the time limit was hit (not a terminal: bootstrap)
    success: torch.Tensor  # (N,) bool: the goal is reached, as the env itself reports it


@runtime_checkable
class GoalEnv(Protocol):
    """A batch of ``num_envs`` episodes of a goal-conditioned task.

    Actions are in ``[-1, 1]`` per dimension. ``reset`` starts all episodes anew;
    ``step`` advances all of them (episodes that already ended keep being stepped
    and their output is ignored by the caller). The reward and success functions
    are vectorized over any leading batch shape, so that HER can recompute them
    for relabelled goals. ``is_success`` must agree with the success the env
    reports in ``step``, and ``compute_reward`` with its reward; training checks
    both on every collected batch.

    ``terminate_on_success`` says whether reaching the goal ends an episode;
    any other ``terminated`` is a failure, terminal whatever the goal.
    ``reward_range`` is ``(low, high)`` of the per-step reward where it is
    known (sparse rewards: the two values), ``None`` where it is not.
    ``action_low`` and ``action_high`` are the env's own action bounds, onto
    which ``step`` maps ``[-1, 1]`` (``scale_action``).

    A task with a discrete action space has ``num_actions`` besides (an int;
    ``None`` or absent for continuous actions): its actions are the indices
    ``0 .. num_actions - 1``, one per episode, as ``(N, 1)`` floats
    (``action_dim`` is 1); ``action_low`` is the env's own number of the
    first action (0 for the built-in tasks) and ``action_high`` of the last.
    """

    num_envs: int
    obs_dim: int
    goal_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int
    terminate_on_success: bool
    reward_range: tuple[float, float] | None
    device: torch.device

    def reset(self) -> GoalObs: ...

    def step(self, action: torch.Tensor) -> StepResult: ...

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor: ...

    def is_success(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def scale_action(unit: Any, low: Any, high: Any) -> Any:
    """An action in ``[-1, 1]`` mapped linearly onto the env's own bounds ``[low, high]`` (arrays or tensors)."""
    return low + (unit + 1.0) * 0.5 * (high - low)
