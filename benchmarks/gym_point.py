"""The point task as a single-episode Gymnasium GoalEnv, for agents from other libraries.

The dynamics are the package's own ``PointNavEnv`` (one slot), so both agents face exactly the same task.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from her_lightning.envs import PointNavEnv


class GymPointEnv(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, seed: int = 0) -> None:
        self.task = PointNavEnv(num_envs=1, seed=seed)
        self.max_episode_steps = self.task.max_episode_steps
        box = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        return self._dict(self.task.reset()), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        result = self.task.step(torch.as_tensor(action, dtype=torch.float32).reshape(1, 2))
        success = bool(result.success[0])
        info = {"is_success": success}
        return self._dict(result.obs), float(result.reward[0]), success, bool(result.truncated[0]), info

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        reward = self.task.compute_reward(torch.as_tensor(achieved_goal), torch.as_tensor(desired_goal))
        return reward.numpy()

    def compute_terminated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return self.task.is_success(torch.as_tensor(achieved_goal), torch.as_tensor(desired_goal)).numpy()

    def compute_truncated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return np.zeros(np.shape(achieved_goal)[:-1], dtype=bool)

    @staticmethod
    def _dict(obs: Any) -> dict[str, np.ndarray]:
        return {
            "observation": obs.observation[0].numpy(),
            "achieved_goal": obs.achieved_goal[0].numpy(),
            "desired_goal": obs.desired_goal[0].numpy(),
        }
