"""Tasks: the batched goal-env protocol, the built-in point task and the factory that picks one by id."""

from __future__ import annotations

from typing import Any

import torch

from her_lightning.envs.base import GoalEnv, GoalObs, StepResult
from her_lightning.envs.point import PointNavEnv

BUILTIN_ENVS = {"point2d": PointNavEnv}


def make_env(
    env_id: str, num_envs: int, seed: int, device: torch.device | str = "cpu", **kwargs: Any
) -> GoalEnv:
    """Build a batch of ``num_envs`` episodes of the task named ``env_id``.

    Raises:
        ValueError: If ``env_id`` names no known task.
    """
    if env_id not in BUILTIN_ENVS:
        raise ValueError(f"env id={env_id!r} is unknown: choose one of {sorted(BUILTIN_ENVS)}")
    return BUILTIN_ENVS[env_id](num_envs=num_envs, seed=seed, device=device, **kwargs)


__all__ = ["BUILTIN_ENVS", "GoalEnv", "GoalObs", "PointNavEnv", "StepResult", "make_env"]
