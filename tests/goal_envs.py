"""Small Gymnasium goal-conditioned envs for the adapter's tests: no mujoco, microseconds per step.

Importing this module registers them; ``goal_envs:ToyReach-v0`` names one from anywhere this folder is importable.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ToyReach(gym.Env):
    """Move a point in the plane to a goal: ``position += 0.05 * action`` with actions in ``[-2, 2]``.

    Success within 0.1 of the goal; with ``end_on_success`` reaching it ends the episode.
    The last action received is kept in ``last_action`` (to check rescaling).
    """

    def __init__(self, end_on_success: bool = False) -> None:
        box = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.observation_space = spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.end_on_success = end_on_success
        self.position = np.zeros(2)
        self.goal = np.zeros(2)
        self.last_action = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.position = np.zeros(2)
        self.goal = self.np_random.uniform(-0.5, 0.5, 2)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.last_action = np.asarray(action, dtype=np.float64)
        self.position = self.position + 0.05 * self.last_action
        reward = float(self.compute_reward(self.position, self.goal, None))
        success = reward == 0.0
        return self._obs(), reward, self.end_on_success and success, False, {"is_success": float(success)}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return -(np.linalg.norm(achieved_goal - desired_goal, axis=-1) > 0.1).astype(np.float64)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.position.copy(), "achieved_goal": self.position.copy(), "desired_goal": self.goal.copy()}


class UnbatchedReward(ToyReach):
    """A goal env whose reward function only takes one goal at a time."""

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> float:
        return -float(np.linalg.norm(achieved_goal - desired_goal) > 0.1)


class NoDesiredGoal(ToyReach):
    """An env with a dict observation that is not goal-conditioned."""

    def __init__(self) -> None:
        super().__init__()
        box = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.observation_space = spaces.Dict({"observation": box, "achieved_goal": box})


gym.register("ToyReach-v0", entry_point=ToyReach, max_episode_steps=20)
gym.register("ToyReachUnbatched-v0", entry_point=UnbatchedReward, max_episode_steps=20)
gym.register("ToyReachNoGoal-v0", entry_point=NoDesiredGoal, max_episode_steps=20)
gym.register("ToyReachNoLimit-v0", entry_point=ToyReach)
