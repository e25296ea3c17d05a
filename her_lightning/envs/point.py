"""The built-in task: 2-D point navigation to a random goal (see the package README)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from her_lightning.envs.base import GoalObs, StepResult
from her_lightning.options import check_number

if TYPE_CHECKING:
    from her_lightning.rollout import Episodes


class PointNavEnv:
    """A batch of 2-D point-navigation episodes, stepped with one tensor operation per step.

    The point starts at ``(0, 0)``; the goal is drawn uniformly from
    ``[goal_low, goal_high]`` on each axis. An action (clipped to ``[-1, 1]`` per
    axis) is added to the position, which is clipped to ``[0, arena_size]``.
    Each step earns ``-1``, or ``0`` when the point ends within ``threshold``
    (L2) of the goal; reaching the goal terminates the episode, and
    ``max_episode_steps`` truncates it.

    Args:
        num_envs: Episodes stepped at once.
        seed: Seed of the goal stream.
        device: Where the state lives.
        max_episode_steps: Time limit.
        threshold: Success distance.
        goal_low: Lower bound of the goal on each axis.
        goal_high: Upper bound of the goal on each axis.
        arena_size: The position is clipped to ``[0, arena_size]``.

    Raises:
        ValueError: If a size or bound is out of range.
    """

    obs_dim = 2
    goal_dim = 2
    action_dim = 2
    action_low = (-1.0, -1.0)  # an action is the move itself: the env's units are the protocol's
    action_high = (1.0, 1.0)
    terminate_on_success = True
    reward_range = (-1.0, 0.0)

    def __init__(
        self,
        num_envs: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        max_episode_steps: int = 50,
        threshold: float = 0.15,
        goal_low: float = 3.5,
        goal_high: float = 4.5,
        arena_size: float = 5.0,
    ) -> None:
        for name, value in [("num_envs", num_envs), ("max_episode_steps", max_episode_steps)]:
            check_number(name, value, 1, integer=True)
        check_number("threshold", threshold, 0, low_open=True)
        for name, value in [("goal_low", goal_low), ("goal_high", goal_high), ("arena_size", arena_size)]:
            check_number(name, value, 0)
        if not goal_low <= goal_high <= arena_size:
            raise ValueError(
                f"goal_low={goal_low}, goal_high={goal_high} are invalid: "
                f"need 0 <= goal_low <= goal_high <= arena_size={arena_size}"
            )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.threshold = threshold
        self.goal_low = goal_low
        self.goal_high = goal_high
        self.arena_size = arena_size
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.position = torch.zeros(num_envs, 2, device=self.device)
        self.goal = torch.zeros(num_envs, 2, device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def reset(self) -> GoalObs:
        self.position = torch.zeros_like(self.position)
        self.elapsed.zero_()
        goal = torch.rand(self.goal.shape, generator=self.generator, device=self.device)
        self.goal = goal * (self.goal_high - self.goal_low) + self.goal_low
        return self._obs()

    def step(self, action: torch.Tensor) -> StepResult:
        self.position = (self.position + action.clamp(-1.0, 1.0)).clamp_(0.0, self.arena_size)
        self.elapsed += 1
        success = self.is_success(self.position, self.goal)
        truncated = (self.elapsed >= self.max_episode_steps) & ~success
        return StepResult(self._obs(), success.to(self.position.dtype) - 1.0, success, truncated, success)

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        return self.is_success(achieved_goal, desired_goal).to(achieved_goal.dtype) - 1.0

    def is_success(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(achieved_goal - desired_goal, dim=-1) <= self.threshold

    def plot_episodes(self, episodes: Episodes) -> Any:
        """A matplotlib figure of the episodes' paths (start, goal, path, reached or not)."""
        from her_lightning.plots import point_trajectories

        return point_trajectories(episodes, self.arena_size, self.threshold)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def _obs(self) -> GoalObs:
        # Position and goal are replaced, never written in place, so handing them out without copies is safe.
        return GoalObs(self.position, self.position, self.goal)
