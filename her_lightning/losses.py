"""DDPG losses (Lillicrap et al., ICLR 2016) with TD3's options (Fujimoto et al., ICML 2018).

TD3's options here: the minimum over twin target critics, and target policy
smoothing (clipped Gaussian noise on the target action). HER's options: an L2
penalty on the actor's actions, and clipping the target to the range of
returns a -1/0 reward can produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F

from her_lightning.her import HERBatch
from her_lightning.networks import Actor, Critic

SATURATION_PREACTIVATION = 3.0
"""Pre-``tanh`` values beyond this are saturated: ``tanh(3) = 0.995``, and its slope there is 1% of its slope at 0."""


class TargetSmoothing(NamedTuple):
    """TD3's target policy smoothing: ``clip(N(0, std), -clip, clip)`` added to the target action."""

    std: float
    clip: float
    generator: torch.Generator


@torch.no_grad()
def td_target(
    batch: HERBatch,
    actor_target: Actor,
    critic_targets: Sequence[Critic],
    gamma: float,
    smoothing: TargetSmoothing | None = None,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:  # (B,)
    """``r + gamma * (1 - terminal) * min_i Q'_i(s', g, pi'(s', g))``: bootstraps everywhere but at true terminals.

    With ``smoothing``, noise is added to the target action; with ``value_range``, the target is clipped to it.
    """
    next_action = actor_target(batch.next_observation, batch.goal)
    if smoothing is not None:
        noise = torch.randn(next_action.shape, generator=smoothing.generator, device=next_action.device)
        next_action = (next_action + (noise * smoothing.std).clamp_(-smoothing.clip, smoothing.clip)).clamp_(-1.0, 1.0)
    next_q = critic_targets[0](batch.next_observation, batch.goal, next_action)
    for critic in critic_targets[1:]:
        next_q = torch.minimum(next_q, critic(batch.next_observation, batch.goal, next_action))
    target = batch.reward + gamma * (1.0 - batch.terminal) * next_q
    return target.clamp_(*value_range) if value_range is not None else target


def critic_loss(
    batch: HERBatch, critics: Sequence[Critic], target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the critics of the mean squared TD error; also returns the first critic's ``Q(s, g, a)`` for logging."""
    qs = [critic(batch.observation, batch.goal, batch.action) for critic in critics]
    return sum(F.mse_loss(q, target) for q in qs), qs[0]


def actor_loss(
    batch: HERBatch, actor: Actor, critic: Critic, action_l2: float = 0.0, preactivation_l2: float = 0.0
) -> torch.Tensor:
    """``-Q(s, g, pi(s, g))`` averaged over the batch, plus L2 penalties on the actions and their pre-activations.

    ``action_l2`` weighs the mean squared action (HER's penalty); ``preactivation_l2`` the mean squared
    excess of the pre-``tanh`` values over ``SATURATION_PREACTIVATION``. The second keeps the actor out of
    the ``tanh``'s flat tails: there the gradient of ``Q`` through the ``tanh`` vanishes, Adam's steps
    shrink to nothing, and a saturated policy never changes again. Its gradient grows with the saturation
    instead of vanishing, and it is zero for actions up to ``tanh(3) = 0.995``, so it does not bend them.
    """
    preactivation = actor.preactivation(batch.observation, batch.goal)
    action = torch.tanh(preactivation)
    loss = -critic(batch.observation, batch.goal, action).mean()
    if action_l2 > 0:
        loss = loss + action_l2 * action.square().mean()
    if preactivation_l2 > 0:
        excess = (preactivation.abs() - SATURATION_PREACTIVATION).clamp_(min=0.0)
        loss = loss + preactivation_l2 * excess.square().mean()
    return loss
