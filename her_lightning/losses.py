"""DDPG losses (Lillicrap et al., ICLR 2016) with TD3's options (Fujimoto et al., ICML 2018), and SAC's (Haarnoja et
al., 2018).

TD3's options here: the minimum over twin target critics, and target policy
smoothing (clipped Gaussian noise on the target action). HER's options: an L2
penalty on the actor's actions, and clipping the target to the range of
returns a -1/0 reward can produce. SAC's targets and actor loss add the
entropy bonus ``-alpha log pi``; its temperature ``alpha`` is tuned so that the
policy's entropy stays near a target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F

from her_lightning.her import HERBatch
from her_lightning.networks import Actor, Critic, GaussianActor

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
    next_q = smallest_q(critic_targets, batch.next_observation, batch.goal, next_action)
    target = batch.reward + gamma * (1.0 - batch.terminal) * next_q
    return target.clamp_(*value_range) if value_range is not None else target


def smallest_q(
    critics: Sequence[Critic], observation: torch.Tensor, goal: torch.Tensor, action: torch.Tensor
) -> torch.Tensor:  # (B,)
    """The smallest of the critics' values of ``action``: TD3's and SAC's guard against overestimation."""
    q = critics[0](observation, goal, action)
    for critic in critics[1:]:
        q = torch.minimum(q, critic(observation, goal, action))
    return q


@torch.no_grad()
def soft_td_target(
    batch: HERBatch,
    actor: GaussianActor,
    critic_targets: Sequence[Critic],
    gamma: float,
    alpha: torch.Tensor,
    generator: torch.Generator,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:  # (B,)
    """SAC's ``r + gamma * (1 - terminal) * (min_i Q'_i(s', g, a') - alpha * log pi(a' | s', g))``, ``a' ~ pi``.

    With ``value_range``, the target is clipped to it: the soft value then keeps to the returns the rewards allow.
    """
    next_action, next_log_prob = actor.sample(batch.next_observation, batch.goal, generator)
    next_q = smallest_q(critic_targets, batch.next_observation, batch.goal, next_action)
    target = batch.reward + gamma * (1.0 - batch.terminal) * (next_q - alpha * next_log_prob)
    return target.clamp_(*value_range) if value_range is not None else target


def soft_actor_loss(
    batch: HERBatch,
    actor: GaussianActor,
    critics: Sequence[Critic],
    alpha: torch.Tensor,
    generator: torch.Generator,
    action_l2: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAC's ``alpha * log pi(a | s, g) - min_i Q_i(s, g, a)`` over the batch, ``a ~ pi`` reparameterized, plus an L2
    penalty on the actions; also returns the log densities ``(B,)``, which tune the temperature."""
    action, log_prob = actor.sample(batch.observation, batch.goal, generator)
    loss = (alpha * log_prob - smallest_q(critics, batch.observation, batch.goal, action)).mean()
    if action_l2 > 0:
        loss = loss + action_l2 * action.square().mean()
    return loss, log_prob


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Lowers ``alpha`` while the policy's entropy ``-log pi`` is above ``target_entropy``, raises it while below."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


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
