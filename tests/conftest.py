"""Shared test helpers: hand-built episodes whose every state names its episode and step."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from her_lightning.rollout import Episodes


def tagged_episodes(lengths: list[int], first_id: int = 0, max_steps: int = 10, terminated: bool = False) -> Episodes:
    """Episodes whose state ``s`` of episode ``k`` has observation and achieved goal ``(k, s)``.

    The desired goal of episode ``k`` is ``(k, -1)``: no achieved goal ever equals it, so
    any goal that does not end in ``-1`` was relabelled and names the state it came from.
    Actions are ``(k, s)`` too, rewards a sentinel ``-7``.
    """
    n = len(lengths)
    ids = torch.arange(first_id, first_id + n, dtype=torch.float32)
    steps = torch.arange(max_steps + 1, dtype=torch.float32)
    tag = torch.stack(torch.broadcast_tensors(ids[:, None], steps[None, :]), dim=-1)  # (n, T + 1, 2)
    return Episodes(
        observation=tag.clone(),
        achieved_goal=tag.clone(),
        desired_goal=torch.stack([ids, torch.full_like(ids, -1.0)], dim=-1),
        action=tag[:, :-1].clone(),
        reward=torch.full((n, max_steps), -7.0),
        length=torch.tensor(lengths),
        terminated=torch.full((n,), terminated),
        success=torch.full((n,), terminated),
        step_success=(torch.arange(max_steps) == torch.tensor(lengths)[:, None] - 1) & terminated,
        goal_moved=torch.zeros(n, dtype=torch.bool),
    )


def exact_match_reward(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
    """0 where the goals are equal, else -1."""
    return exact_match(achieved_goal, desired_goal).float() - 1.0


def exact_match(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
    return (achieved_goal == desired_goal).all(dim=-1)


def quiet_trainer(max_epochs: int, callbacks: list[pl.Callback], root: Path) -> pl.Trainer:
    """A CPU trainer that writes nothing (no logger, checkpoints, progress bar or summary)."""
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
    )
