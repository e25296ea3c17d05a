"""DDPG losses (Lillicrap et al., "Continuous control with deep reinforcement learning", ICLR 2016)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from her_lightning.her import HERBatch
from her_lightning.networks import Actor, Critic


@torch.no_grad()
def td_target(
    batch: HERBatch, actor_target: Actor, critic_target: Critic, gamma: float
) -> torch.Tensor:  # (B,)
    """``r + gamma * (1 - terminal) * Q'(s', g, pi'(s', g))``: bootstraps everywhere but at true terminals."""
    next_action = actor_target(batch.next_observation, batch.goal)
    next_q = critic_target(batch.next_observation, batch.goal, next_action)
    return batch.reward + gamma * (1.0 - batch.terminal) * next_q


def critic_loss(batch: HERBatch, critic: Critic, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared TD error; also returns ``Q(s, g, a)`` for logging."""
    q = critic(batch.observation, batch.goal, batch.action)
    return F.mse_loss(q, target), q


def actor_loss(batch: HERBatch, actor: Actor, critic: Critic) -> torch.Tensor:
    """``-Q(s, g, pi(s, g))`` averaged over the batch."""
    return -critic(batch.observation, batch.goal, actor(batch.observation, batch.goal)).mean()
