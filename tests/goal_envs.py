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
        position = self.position.copy()
        return {"observation": position, "achieved_goal": position.copy(), "desired_goal": self.goal.copy()}


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


class BitFlip(gym.Env):
    """Flip bits to match a target: int8 ``MultiBinary`` observations and goals; a positive action flips its bit."""

    def __init__(self, bits: int = 4) -> None:
        binary = spaces.MultiBinary(bits)
        self.observation_space = spaces.Dict({"observation": binary, "achieved_goal": binary, "desired_goal": binary})
        self.action_space = spaces.Box(-1.0, 1.0, (bits,), np.float32)
        self.state = np.zeros(bits, dtype=np.int8)
        self.goal = np.zeros(bits, dtype=np.int8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.state = self.np_random.integers(0, 2, self.state.shape).astype(np.int8)
        self.goal = self.np_random.integers(0, 2, self.goal.shape).astype(np.int8)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.state = np.where(np.asarray(action) > 0.5, 1 - self.state, self.state).astype(np.int8)
        reward = float(self.compute_reward(self.state, self.goal, None))
        return self._obs(), reward, False, False, {"is_success": reward == 0.0}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        assert achieved_goal.dtype == np.int8, "goals reach compute_reward in the env's own dtype"
        return -(achieved_goal != desired_goal).any(axis=-1).astype(np.float64)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.state.copy(), "achieved_goal": self.state.copy(), "desired_goal": self.goal.copy()}


class DiscreteBitFlip(BitFlip):
    """``BitFlip`` with a ``Discrete(bits, start=1)`` action space: action ``a`` flips bit ``a - 1``."""

    def __init__(self, bits: int = 4) -> None:
        super().__init__(bits)
        self.action_space = spaces.Discrete(bits, start=1)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        assert np.issubdtype(np.asarray(action).dtype, np.integer), "a discrete action reaches the env as an integer"
        flip = np.zeros(self.state.shape, dtype=np.float32)
        flip[int(action) - 1] = 1.0
        return super().step(flip)


class OneZeroReach(ToyReach):
    """PointMaze's convention: reward 1 at the goal and 0 elsewhere, success in ``info["success"]``."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, _, terminated, truncated, _ = super().step(action)
        reward = float(self.compute_reward(self.position, self.goal, None))
        return obs, reward, terminated, truncated, {"success": reward == 1.0}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return (np.linalg.norm(achieved_goal - desired_goal, axis=-1) <= 0.1).astype(np.float64)


class FallingReach(ToyReach):
    """Episodes end, without reaching the goal, when the point leaves the unit square (a fall)."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or bool(np.abs(self.position).max() > 1.0), truncated, info


class DenseReach(ToyReach):
    """A dense reward, minus the distance to the goal; success within 0.1, reported as ``is_success``."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, _, terminated, truncated, _ = super().step(action)
        success = bool(np.linalg.norm(self.position - self.goal) <= 0.1)
        reward = float(self.compute_reward(self.position, self.goal, None))
        return obs, reward, terminated, truncated, {"is_success": success}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return -np.linalg.norm(achieved_goal - desired_goal, axis=-1)


class MovingGoalReach(ToyReach):
    """A continuing task: the goal jumps elsewhere every 5 steps, within the episode."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps % 5 == 0:
            self.goal = self.np_random.uniform(-0.5, 0.5, 2)
        return super().step(action)


class PenalizedReach(ToyReach):
    """A step reward with an action cost that ``compute_reward`` lacks: relabelled rewards would be wrong."""

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward - 0.01 * float(np.square(action).sum()), terminated, truncated, info


gym.register("BitFlip-v0", entry_point=BitFlip, max_episode_steps=8)
gym.register("DiscreteBitFlip-v0", entry_point=DiscreteBitFlip, max_episode_steps=8)
gym.register("OneZeroReach-v0", entry_point=OneZeroReach, max_episode_steps=20)
gym.register("FallingReach-v0", entry_point=FallingReach, max_episode_steps=20)
gym.register("DenseReach-v0", entry_point=DenseReach, max_episode_steps=20)
gym.register("MovingGoalReach-v0", entry_point=MovingGoalReach, max_episode_steps=20)
gym.register("PenalizedReach-v0", entry_point=PenalizedReach, max_episode_steps=20)


class PaintedReach(ToyReach):
    """``ToyReach`` that renders ``rgb_array`` frames: a 24x32 black image with the point's cell lit, and the
    episode's step count lit in the top row (so that no two frames of an episode are the same)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    open_renderers = 0  # copies made to render and not yet closed

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__()
        self.render_mode = render_mode
        self.steps = 0
        PaintedReach.open_renderers += render_mode == "rgb_array"

    def close(self) -> None:
        PaintedReach.open_renderers -= self.render_mode == "rgb_array"
        self.render_mode = None  # closing twice counts once
        super().close()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.steps += 1
        return super().step(action)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((24, 32, 3), dtype=np.uint8)
        row, column = (np.clip(self.position, -1, 1) * [11, 15] + [12, 16]).astype(int)
        frame[row, column] = 255
        frame[0, self.steps % 32, 0] = 255
        return frame


class BrokenRenderReach(PaintedReach):
    """``PaintedReach`` on a machine without a renderer: drawing a frame fails."""

    def render(self) -> np.ndarray | None:
        raise RuntimeError("an OpenGL platform library has not been loaded")


gym.register("PaintedReach-v0", entry_point=PaintedReach, max_episode_steps=20)
gym.register("BrokenRenderReach-v0", entry_point=BrokenRenderReach, max_episode_steps=20)
