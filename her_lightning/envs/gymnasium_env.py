"""Any Gymnasium GoalEnv (e.g. Gymnasium-Robotics' Fetch tasks) as a batch of episodes with tensors at the boundary."""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib
import io
import os
from typing import Any

import numpy as np
import torch

from her_lightning.conventions import discover_conventions
from her_lightning.envs.base import GoalObs, StepResult, scale_action

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
            f"env id={env_id!r} is not built in (point2d, bit_flip), and Gymnasium tasks need the robotics extra: "
            f"{ROBOTICS_EXTRA}"
        ) from error
    robotics = _import_robotics()
    if robotics is not None:
        gymnasium.register_envs(robotics)
    return gymnasium


def _import_robotics() -> Any | None:
    """Gymnasium-Robotics, or ``None`` where it is not installed.

    Without a display, MuJoCo's default renderer (GLFW) cannot draw: where ``MUJOCO_GL`` is not set and EGL or
    OSMesa is installed, it is set to that headless backend first (MuJoCo reads it when imported).
    """
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        backend = next((name for name in ("EGL", "OSMesa") if ctypes.util.find_library(name)), None)
        if backend is not None:
            os.environ["MUJOCO_GL"] = backend.lower()
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
    and ``desired_goal`` (vectors of any numeric dtype, ``MultiBinary`` too: they
    become float32 tensors), a bounded ``Box`` action space (actions in
    ``[-1, 1]`` are rescaled to it) or a ``Discrete`` one (``num_actions``
    actions: index ``i`` is the env's action ``start + i``; its bounds are
    ``start`` and ``start + n - 1``), and a
    ``compute_reward(achieved_goal, desired_goal, info)`` that accepts batches.
    Rewards of relabelled goals come from that function with ``info=None``.

    The env's conventions are found out (``conventions.discover_conventions``), not assumed:

    - the reward at the goal is ``compute_reward(g, g)``; a reward that takes
      only that value and one other on random goal pairs is sparse, and a goal
      counts as reached where the reward is the reward at the goal (Fetch: 0,
      PointMaze: 1). A dense reward needs a success criterion named by the user
      (``success_threshold`` or ``success_fn``), and is refused without one.
    - the success the env reports is ``info["is_success"]`` or ``info["success"]``
      (or the key named by ``success_key``); the check in ``conventions`` makes
      sure it agrees with the criterion above on every collected transition.
    - ``terminated`` is kept as the env reports it, apart from ``truncated``;
      ``terminate_on_success`` says whether reaching the goal is what ends an
      episode (checked too), and any other termination is a failure.

    Args:
        env_id: A registered Gymnasium id, e.g. ``FetchReach-v4`` (``module:Id`` imports ``module`` first).
        num_envs: Copies stepped at once.
        seed: Seeds the copies' random streams (copy ``i`` gets ``seed + i``).
        device: Where the tensors handed out live.
        vectorization_mode: ``sync`` (one process) or ``async`` (one process per copy).
        terminate_on_success: Whether reaching the goal ends an episode in this task (``False`` for Fetch,
            ``True`` for PointMaze and AntMaze). Left out of ``data.env.kwargs``, training takes it as ``True``
            once collected episodes show the env ending them on reaching the goal (``HERDataModule.collect``).
        success_key: The ``info`` key of the env's success flag; ``None`` finds ``is_success`` or ``success``.
        success_threshold: A goal is reached within this L2 distance (needed for dense rewards).
        success_fn: ``module:function`` mapping batches of achieved and desired goals (numpy) to booleans.
        **env_kwargs: Keyword arguments for ``gymnasium.make``, e.g. ``max_episode_steps`` or ``reward_type``.

    Raises:
        ValueError: If the id is unknown, the env is not goal-conditioned, its action space, time limit or
            reward is unusable, or its goal moves within an episode; the message says what is wrong.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        vectorization_mode: str = "sync",
        terminate_on_success: bool = False,
        success_key: str | None = None,
        success_threshold: float | None = None,
        success_fn: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        gym = import_gymnasium(env_id)
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is invalid: must be at least 1")
        if vectorization_mode not in ("sync", "async"):
            raise ValueError(f"vectorization_mode={vectorization_mode!r} is unknown: choose 'sync' or 'async'")
        if success_threshold is not None and success_threshold <= 0:
            raise ValueError(f"success_threshold={success_threshold} is invalid: must be positive")
        try:
            module, _, name = env_id.rpartition(":")
            if module:  # "module:Id": the module registers the env when imported
                importlib.import_module(module)
            spec = gym.spec(name)
        except (gym.error.Error, ModuleNotFoundError) as error:
            extra = f"; Fetch and other robotics tasks need the robotics extra: {ROBOTICS_EXTRA}"
            hint = "" if _import_robotics() else extra
            raise ValueError(
                f"env id={env_id!r} is unknown: it is not built in (point2d, bit_flip) nor a registered Gymnasium env "
                f"({error}){hint}"
            ) from error
        # One copy in this process answers compute_reward, whatever process the stepped copies live in.
        self._reference = _make(gym, spec, env_id, env_kwargs)
        self.env_id = env_id
        self.max_episode_steps = _time_limit(self._reference, env_id)
        self.obs_dim, self.goal_dim = _check_goal_env(self._reference, env_id)
        self._goal_dtype = self._reference.observation_space["achieved_goal"].dtype
        space = self._reference.action_space
        self.num_actions: int | None = None  # a Discrete action space's size
        if isinstance(space, gym.spaces.Discrete):
            self.num_actions = int(space.n)
            self._low, self._high = np.full(1, float(space.start)), np.full(1, float(space.start + space.n - 1))
        else:
            self._low, self._high = _action_bounds(space, env_id)
        self.action_dim = self._low.shape[0]
        self.action_low, self.action_high = tuple(self._low.tolist()), tuple(self._high.tolist())  # for checkpoints
        unwrapped = self._reference.unwrapped
        if getattr(unwrapped, "continuing_task", False) and getattr(unwrapped, "reset_target", False):
            raise ValueError(
                f"env id={env_id!r} is a continuing task whose goal moves once reached, within an episode, which "
                "HER's relabelling of whole episodes does not handle: set continuing_task: false in data.env.kwargs"
            )
        found = discover_conventions(self._reference, env_id, seed, success_key, success_threshold, success_fn)
        self.reward_at_goal, self.reward_range = found.reward_at_goal, found.reward_range
        self._success_fn, self.success_key = found.success_fn, found.success_key
        self.num_envs = num_envs
        self.terminate_on_success = terminate_on_success
        self.device = torch.device(device)
        self._envs = gym.make_vec(spec, num_envs=num_envs, vectorization_mode=vectorization_mode, **env_kwargs)
        self._envs.reset(seed=[seed + i for i in range(num_envs)])  # seeds each copy's stream once

    def reset(self) -> GoalObs:
        obs, _ = self._envs.reset()
        return self._to_obs(obs)

    def step(self, action: torch.Tensor) -> StepResult:
        if self.num_actions is not None:  # indices (N, 1) to the env's own integer actions (N,)
            index = action.squeeze(-1).round().long().clamp(0, self.num_actions - 1).cpu().numpy()
            env_action = index + int(self._low[0])
        else:
            env_action = scale_action(_array(action.clamp(-1.0, 1.0)), self._low, self._high)
        obs, reward, terminated, truncated, info = self._envs.step(env_action)
        goal_obs = self._to_obs(obs)
        if self.success_key is not None:
            success = self._tensor(info[self.success_key]).bool()
        else:
            success = self.is_success(goal_obs.achieved_goal, goal_obs.desired_goal)
        terminated = self._tensor(terminated).bool()
        truncated = self._tensor(truncated).bool()
        reward = self._tensor(reward).to(torch.float32)
        return StepResult(goal_obs, reward, terminated, truncated & ~terminated, success)

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        reward = self._reference.unwrapped.compute_reward(*self._goal_arrays(achieved_goal, desired_goal), None)
        return self._tensor(reward).to(torch.float32).reshape(achieved_goal.shape[:-1])

    def is_success(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        success = self._success_fn(*self._goal_arrays(achieved_goal, desired_goal))
        return self._tensor(success).bool().reshape(achieved_goal.shape[:-1])

    def state_dict(self) -> dict[str, Any]:
        """Each copy's random stream; episodes always start with a reset, so this is all the state between them."""
        streams = self._envs.get_attr("np_random")
        return {"np_random": [stream.bit_generator.state for stream in streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        streams = self._envs.get_attr("np_random")
        for stream, saved in zip(streams, state["np_random"], strict=True):
            stream.bit_generator.state = saved
        self._envs.set_attr("np_random", list(streams))

    def render(self) -> np.ndarray | None:
        """The first copy's current frame, ``(H, W, 3)`` uint8, where the env was made with
        ``render_mode="rgb_array"``."""
        frames = self._envs.render()
        # MuJoCo's frames are flipped views: a contiguous copy.
        return None if frames is None or frames[0] is None else np.ascontiguousarray(frames[0])

    def close(self) -> None:
        self._envs.close()
        self._reference.close()

    def _goal_arrays(self, *goals: torch.Tensor) -> list[np.ndarray]:
        """Goals of any batch shape as ``(rows, goal_dim)`` arrays of the env's own goal dtype."""
        return [_array(goal.reshape(-1, self.goal_dim)).astype(self._goal_dtype) for goal in goals]

    def _to_obs(self, obs: dict[str, np.ndarray]) -> GoalObs:
        return GoalObs(*(self._tensor(obs[key]).to(torch.float32) for key in GOAL_KEYS))

    def _tensor(self, array: Any) -> torch.Tensor:
        return torch.from_numpy(np.array(array)).to(self.device)  # a copy: rollouts keep every step's tensors


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 array, the precision Gymnasium envs compute with."""
    return tensor.cpu().numpy().astype(np.float64)


def _make(gym: Any, spec: Any, env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """``gymnasium.make``, with an unknown keyword argument as a one-line error."""
    try:
        return gym.make(spec, **env_kwargs)
    except TypeError as error:
        raise ValueError(f"env id={env_id!r} does not take data.env.kwargs {sorted(env_kwargs)}: {error}") from error


def _time_limit(env: Any, env_id: str) -> int:
    steps = env.spec.max_episode_steps if env.spec is not None else None
    if steps is None:
        raise ValueError(
            f"env id={env_id!r} has no time limit: add max_episode_steps to data.env.kwargs "
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
    if achieved is None or desired is None or space["observation"].shape is None:
        raise ValueError(
            f"env id={env_id!r}: its observation, achieved_goal and desired_goal must be vectors (Box spaces), "
            f"got {type(space['observation']).__name__}, {type(space['achieved_goal']).__name__} and "
            f"{type(space['desired_goal']).__name__}"
        )
    if len(achieved) != 1 or achieved != desired:
        raise ValueError(
            f"env id={env_id!r}: achieved_goal {achieved} and desired_goal {desired} must be vectors of one size"
        )
    if len(space["observation"].shape) != 1:
        raise ValueError(f"env id={env_id!r}: observation {space['observation'].shape} must be a vector")
    compute_reward = getattr(env.unwrapped, "compute_reward", None)
    if compute_reward is None:
        raise ValueError(f"env id={env_id!r} is not goal-conditioned: it has no compute_reward method")
    goals = np.stack([space["achieved_goal"].sample() for _ in range(3)])  # in the env's own goal dtype
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
            f"env id={env_id!r}: the action space {space} is not usable: it must be a bounded 1-D Box or a Discrete"
        )
    return low.astype(np.float64), high.astype(np.float64)
