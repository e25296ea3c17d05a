"""Any Gymnasium GoalEnv (e.g. Gymnasium-Robotics' Fetch tasks) as a batch of episodes with tensors at the boundary."""

from __future__ import annotations

import contextlib
import importlib
import io
from typing import Any

import numpy as np
import torch

from her_lightning.envs.base import GoalObs, StepResult

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
ROBOTICS_EXTRA = "pip install 'her_lightning[robotics]'"


def import_gymnasium(env_id: str) -> Any:
    """Gymnasium, with Gymnasium-Robotics' tasks registered when it is installed.

    Raises:
        ValueError: If gymnasium is not installed; the message names the extra to install.
    """
    try:
        import gymnasium
    except ImportError as error:
        raise ValueError(
            f"env id={env_id!r} is not built in (point2d), and Gymnasium tasks need the robotics extra: "
            f"{ROBOTICS_EXTRA}"
        ) from error
    robotics = _import_robotics()
    if robotics is not None:
        gymnasium.register_envs(robotics)
    return gymnasium


def _import_robotics() -> Any | None:
    """Gymnasium-Robotics, or ``None`` where it is not installed."""
    try:
        # Its import prints a notice about the Adroit hand tasks' reward history; it does not concern training here.
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics
    except ImportError:
        return None
    return gymnasium_robotics


class GymnasiumGoalEnv:
    """``num_envs`` copies of a Gymnasium goal-conditioned env, stepped as one batch.

    The env must have a dict observation with ``observation``, ``achieved_goal``
    and ``desired_goal``, a bounded ``Box`` action space (actions in ``[-1, 1]``
    are rescaled to it) and a ``compute_reward(achieved_goal, desired_goal,
    info)`` that accepts batches; both are checked here. Rewards of relabelled
    goals come from that function with ``info=None``. Success is the env's
    ``info["is_success"]`` after a step and, for relabelled goals, a reward of
    ``0`` (the sparse-reward convention). ``terminated`` and ``truncated``
    are kept apart as the env reports them.

    Args:
        env_id: A registered Gymnasium id, e.g. ``FetchReach-v4`` (``module:Id`` imports ``module`` first).
        num_envs: Copies stepped at once.
        seed: Seeds the copies' random streams (copy ``i`` gets ``seed + i``).
        device: Where the tensors handed out live.
        vectorization_mode: ``sync`` (one process) or ``async`` (one process per copy).
        terminate_on_success: Whether reaching the goal ends an episode in this task (``False`` for Fetch).
        **env_kwargs: Keyword arguments for ``gymnasium.make``, e.g. ``max_episode_steps`` or ``reward_type``.

    Raises:
        ValueError: If the id is unknown, the env is not goal-conditioned, or its
            action space or time limit is unusable; the message says what is missing.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        vectorization_mode: str = "sync",
        terminate_on_success: bool = False,
        **env_kwargs: Any,
    ) -> None:
        gym = import_gymnasium(env_id)
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is invalid: must be at least 1")
        if vectorization_mode not in ("sync", "async"):
            raise ValueError(f"vectorization_mode={vectorization_mode!r} is unknown: choose 'sync' or 'async'")
        try:
            module, _, name = env_id.rpartition(":")
            if module:  # "module:Id": the module registers the env when imported
                importlib.import_module(module)
            spec = gym.spec(name)
        except (gym.error.Error, ModuleNotFoundError) as error:
            hint = "" if _import_robotics() else f"; Fetch and other robotics tasks need the robotics extra: {ROBOTICS_EXTRA}"
            raise ValueError(
                f"env id={env_id!r} is unknown: it is not built in (point2d) nor a registered Gymnasium env "
                f"({error}){hint}"
            ) from error
        # One copy in this process answers compute_reward, whatever process the stepped copies live in.
        self._reference = gym.make(spec, **env_kwargs)
        self.max_episode_steps = _time_limit(self._reference, env_id)
        self.obs_dim, self.goal_dim = _check_goal_env(self._reference, env_id)
        self._low, self._high = _action_bounds(self._reference.action_space, env_id)
        self.action_dim = self._low.shape[0]
        self.env_id = env_id
        self.num_envs = num_envs
        self.terminate_on_success = terminate_on_success
        self.device = torch.device(device)
        self._envs = gym.make_vec(spec, num_envs=num_envs, vectorization_mode=vectorization_mode, **env_kwargs)
        self._envs.reset(seed=[seed + i for i in range(num_envs)])  # seeds each copy's stream once

    def reset(self) -> GoalObs:
        obs, _ = self._envs.reset()
        return self._to_obs(obs)

    def step(self, action: torch.Tensor) -> StepResult:
        unit = _array(action.clamp(-1.0, 1.0))
        obs, reward, terminated, truncated, info = self._envs.step(self._low + (unit + 1.0) * 0.5 * (self._high - self._low))
        goal_obs = self._to_obs(obs)
        if "is_success" in info:
            success = self._tensor(info["is_success"]).bool()
        else:
            success = self.is_success(goal_obs.achieved_goal, goal_obs.desired_goal)
        terminated = self._tensor(terminated)
        return StepResult(goal_obs, self._tensor(reward), terminated, self._tensor(truncated) & ~terminated, success)

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        shape = achieved_goal.shape[:-1]
        achieved, desired = (_array(goal.reshape(-1, self.goal_dim)) for goal in (achieved_goal, desired_goal))
        reward = self._reference.unwrapped.compute_reward(achieved, desired, None)
        return self._tensor(reward).reshape(shape)

    def is_success(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        return self.compute_reward(achieved_goal, desired_goal) == 0

    def state_dict(self) -> dict[str, Any]:
        """Each copy's random stream; episodes always start with a reset, so this is all the state between them."""
        streams = self._envs.get_attr("np_random")
        return {"np_random": [stream.bit_generator.state for stream in streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        streams = self._envs.get_attr("np_random")
        for stream, saved in zip(streams, state["np_random"], strict=True):
            stream.bit_generator.state = saved
        self._envs.set_attr("np_random", list(streams))

    def close(self) -> None:
        self._envs.close()
        self._reference.close()

    def _to_obs(self, obs: dict[str, np.ndarray]) -> GoalObs:
        return GoalObs(*(self._tensor(obs[key]) for key in GOAL_KEYS))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(array))  # a copy: rollouts keep every step's tensors
        return tensor.to(self.device, torch.float32) if tensor.is_floating_point() else tensor.to(self.device)


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as the float64 array Gymnasium envs compute with."""
    return tensor.cpu().numpy().astype(np.float64)


def _time_limit(env: Any, env_id: str) -> int:
    steps = env.spec.max_episode_steps if env.spec is not None else None
    if steps is None:
        raise ValueError(
            f"env id={env_id!r} has no time limit: add max_episode_steps to env.kwargs "
            "(episodes are stored whole and need a bound on their length)"
        )
    return int(steps)


def _check_goal_env(env: Any, env_id: str) -> tuple[int, int]:
    """``(obs_dim, goal_dim)`` of a goal-conditioned env, or a ``ValueError`` that names what it lacks."""
    space = env.observation_space
    keys = list(getattr(space, "spaces", {}))
    missing = [key for key in GOAL_KEYS if key not in keys]
    if missing:
        raise ValueError(
            f"env id={env_id!r} is not goal-conditioned: its observation lacks {missing} "
            f"(it needs a dict observation with {list(GOAL_KEYS)}; it has {keys or type(space).__name__})"
        )
    achieved, desired = space["achieved_goal"].shape, space["desired_goal"].shape
    if len(achieved) != 1 or achieved != desired:
        raise ValueError(
            f"env id={env_id!r}: achieved_goal {achieved} and desired_goal {desired} must be vectors of one size"
        )
    if len(space["observation"].shape) != 1:
        raise ValueError(f"env id={env_id!r}: observation {space['observation'].shape} must be a vector")
    compute_reward = getattr(env.unwrapped, "compute_reward", None)
    if compute_reward is None:
        raise ValueError(f"env id={env_id!r} is not goal-conditioned: it has no compute_reward method")
    goals = np.stack([space["achieved_goal"].sample() for _ in range(3)]).astype(np.float64)
    try:
        reward = np.asarray(compute_reward(goals, goals[::-1].copy(), None))
    except Exception as error:  # noqa: BLE001 - any failure means the same thing to the user
        raise ValueError(
            f"env id={env_id!r}: compute_reward(achieved_goal, desired_goal, info) fails on a batch of 3 goals "
            f"with info=None ({type(error).__name__}: {error}); HER recomputes rewards in batches"
        ) from error
    if reward.shape != (3,):
        raise ValueError(
            f"env id={env_id!r}: compute_reward returned shape {reward.shape} for a batch of 3 goals, "
            "expected (3,); HER recomputes rewards in batches"
        )
    return space["observation"].shape[0], achieved[0]


def _action_bounds(space: Any, env_id: str) -> tuple[np.ndarray, np.ndarray]:
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or len(space.shape) != 1 or not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"env id={env_id!r}: the action space {space} is not usable: it must be a bounded 1-D Box"
        )
    return low.astype(np.float64), high.astype(np.float64)
