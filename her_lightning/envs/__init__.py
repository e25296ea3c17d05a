"""Tasks: the batched goal-env protocol, the built-in point and bit-flipping tasks, the Gymnasium adapter and the
factory that picks one."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from her_lightning.envs.base import GoalEnv, GoalObs, StepResult
from her_lightning.envs.bit_flip import BitFlipEnv
from her_lightning.envs.gymnasium_env import GymnasiumGoalEnv
from her_lightning.envs.point import PointNavEnv

BUILTIN_ENVS = {"point2d": PointNavEnv, "bit_flip": BitFlipEnv}


def make_env(
    env_id: str, num_envs: int, seed: int, device: torch.device | str = "cpu", **kwargs: Any
) -> GoalEnv:
    """Build a batch of ``num_envs`` episodes of the task named ``env_id``.

    ``env_id`` is a built-in task (``point2d``, ``bit_flip``) or any registered Gymnasium goal-conditioned env
    (e.g. ``FetchReach-v4`` with the ``robotics`` extra installed); ``kwargs`` go to its constructor.

    Raises:
        ValueError: If ``env_id`` names no known task, or the task is not usable; the message says why.
    """
    if env_id in BUILTIN_ENVS:
        env_class = BUILTIN_ENVS[env_id]
        own = ("num_envs", "seed", "device")
        allowed = [name for name in inspect.signature(env_class).parameters if name not in own]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"env id={env_id!r} does not take data.env.kwargs {unknown}: it takes {allowed}")
        return env_class(num_envs=num_envs, seed=seed, device=device, **kwargs)
    return GymnasiumGoalEnv(env_id, num_envs=num_envs, seed=seed, device=device, **kwargs)


def close_env(env: GoalEnv | None) -> None:
    """Release what ``env`` holds where it holds something (Gymnasium copies: simulators, renderers, subprocesses);
    the point task holds nothing and has no ``close``."""
    if env is not None and hasattr(env, "close"):
        env.close()


__all__ = [
    "BUILTIN_ENVS", "BitFlipEnv", "GoalEnv", "GoalObs", "GymnasiumGoalEnv", "PointNavEnv", "StepResult", "close_env",
    "make_env",
]
