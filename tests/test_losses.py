"""DDPG and TD3 losses and target networks: targets by hand, gradient isolation, Polyak at the extremes."""

from __future__ import annotations

import copy

import pytest
import torch

from her_lightning.her import HERBatch
from her_lightning.losses import TargetSmoothing, actor_loss, critic_loss, td_target
from her_lightning.networks import Actor, Critic, polyak_update


class ConstantCritic(torch.nn.Module):
    """Q(s, g, a) = sum(s) + 10 * sum(a): easy to compute by hand."""

    def forward(self, observation: torch.Tensor, goal: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return observation.sum(-1) + 10 * action.sum(-1)


class HalfActor(torch.nn.Module):
    """pi(s, g) = 0.5 everywhere."""

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return torch.full_like(observation, 0.5)


def make_batch(n: int = 8, seed: int = 0) -> HERBatch:
    g = torch.Generator().manual_seed(seed)
    return HERBatch(
        observation=torch.rand(n, 2, generator=g),
        goal=torch.rand(n, 2, generator=g),
        action=torch.rand(n, 2, generator=g) * 2 - 1,
        reward=-torch.randint(0, 2, (n,), generator=g).float(),
        next_observation=torch.rand(n, 2, generator=g),
        terminal=torch.randint(0, 2, (n,), generator=g).float(),
    )


def test_td_target_by_hand() -> None:
    batch = HERBatch(
        observation=torch.zeros(3, 2),
        goal=torch.zeros(3, 2),
        action=torch.zeros(3, 2),
        reward=torch.tensor([-1.0, 0.0, -1.0]),
        next_observation=torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]),
        terminal=torch.tensor([0.0, 1.0, 0.0]),
    )
    target = td_target(batch, HalfActor(), [ConstantCritic()], gamma=0.9)
    # Q'(s', pi'(s')) = sum(s') + 10 * (0.5 + 0.5) = sum(s') + 10
    expected = torch.tensor([-1.0 + 0.9 * 13.0, 0.0, -1.0 + 0.9 * 11.0])
    assert torch.allclose(target, expected)
    assert not target.requires_grad


class ShiftedCritic(ConstantCritic):
    """ConstantCritic plus a constant."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, observation: torch.Tensor, goal: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return super().forward(observation, goal, action) + self.shift


def test_twin_target_takes_the_smaller_value_per_row() -> None:
    batch = make_batch()
    low, high = ShiftedCritic(-1.0), ShiftedCritic(2.0)
    expected = td_target(batch, HalfActor(), [low], gamma=0.9)
    assert torch.equal(td_target(batch, HalfActor(), [high, low], gamma=0.9), expected)
    assert torch.equal(td_target(batch, HalfActor(), [low, high], gamma=0.9), expected)


def test_target_clipping_bounds_the_target() -> None:
    batch = make_batch()._replace(terminal=torch.zeros(8))
    target = td_target(batch, HalfActor(), [ShiftedCritic(100.0)], gamma=0.9, value_range=(-10.0, 0.0))
    assert torch.equal(target, torch.zeros(8))
    target = td_target(batch, HalfActor(), [ShiftedCritic(-1000.0)], gamma=0.9, value_range=(-10.0, 0.0))
    assert torch.equal(target, torch.full((8,), -10.0))


def test_target_smoothing_adds_clipped_seeded_noise_to_the_target_action() -> None:
    batch = make_batch()._replace(terminal=torch.zeros(8), next_observation=torch.zeros(8, 2))
    plain = td_target(batch, HalfActor(), [ConstantCritic()], gamma=1.0)

    def smoothed(std: float, clip: float, seed: int = 0) -> torch.Tensor:
        smoothing = TargetSmoothing(std, clip, torch.Generator().manual_seed(seed))
        return td_target(batch, HalfActor(), [ConstantCritic()], gamma=1.0, smoothing=smoothing)

    # Q' = 10 * sum(action): the noise on each of the 2 action dims moves the target by 10 times its value.
    shift = smoothed(1.0, 0.1) - plain
    assert 0 < shift.abs().max() <= 10 * 2 * 0.1 + 1e-5
    assert torch.equal(smoothed(1.0, 0.1), smoothed(1.0, 0.1))
    assert not torch.equal(smoothed(1.0, 0.1), smoothed(1.0, 0.1, seed=1))
    # The noisy action stays in [-1, 1]: from 0.5 it rises by 0.5 at most, so each dim adds at most 5.
    assert (smoothed(100.0, 100.0) - plain).max() <= 10.0 + 1e-5


def test_action_l2_penalty_adds_the_mean_squared_action() -> None:
    torch.manual_seed(0)
    actor, critic, batch = Actor(2, 2, 2, hidden=(16,)), Critic(2, 2, 2, hidden=(16,)), make_batch()
    action = actor(batch.observation, batch.goal)
    expected = actor_loss(batch, actor, critic) + 0.5 * action.square().mean()
    assert torch.allclose(actor_loss(batch, actor, critic, action_l2=0.5), expected)


def fixed_critic(values: list[float]):
    """A stand-in critic whose Q values are ``values`` whatever the batch."""
    return lambda observation, goal, action: torch.tensor(values)


def test_critic_loss_is_the_mean_squared_td_error_by_hand() -> None:
    loss, q = critic_loss(make_batch(3), [fixed_critic([1.0, 2.0, 3.0])], torch.tensor([0.0, 2.0, 1.0]))
    assert loss.item() == pytest.approx((1 + 0 + 4) / 3)
    assert q.tolist() == [1.0, 2.0, 3.0]


def test_twin_critic_loss_sums_both_errors_and_reports_the_first_critics_q() -> None:
    critics = [fixed_critic([1.0, 2.0, 3.0]), fixed_critic([0.0, 0.0, 3.0])]
    loss, q = critic_loss(make_batch(3), critics, torch.tensor([0.0, 2.0, 1.0]))
    assert loss.item() == pytest.approx((1 + 0 + 4) / 3 + (0 + 4 + 4) / 3)
    assert q.tolist() == [1.0, 2.0, 3.0]


def test_actor_loss_moves_only_the_actor_when_the_critic_is_frozen() -> None:
    torch.manual_seed(0)
    actor, critic = Actor(2, 2, 2, hidden=(16,)), Critic(2, 2, 2, hidden=(16,))
    critic.requires_grad_(False)
    loss = actor_loss(make_batch(), actor, critic)
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


def test_critic_loss_does_not_reach_the_actor_or_the_targets() -> None:
    torch.manual_seed(0)
    actor, critic = Actor(2, 2, 2, hidden=(16,)), Critic(2, 2, 2, hidden=(16,))
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    batch = make_batch()
    loss, _ = critic_loss(batch, [critic], td_target(batch, actor_target, [critic_target], 0.98))
    loss.backward()
    for module in (actor, actor_target, critic_target):
        assert all(p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in critic.parameters())


@pytest.mark.parametrize("tau", [0.0, 1.0, 0.25])
def test_polyak_update(tau: float) -> None:
    torch.manual_seed(0)
    source, target = Actor(2, 2, 2, hidden=(8,)), Actor(2, 2, 2, hidden=(8,))
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, source, tau)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        assert torch.allclose(new, (1 - tau) * old + tau * src)
    if tau == 0.0:
        assert all(torch.equal(old, new) for old, new in zip(before, target.parameters()))
    if tau == 1.0:
        assert all(torch.equal(src, new) for src, new in zip(source.parameters(), target.parameters()))


def test_network_shapes_and_action_bounds() -> None:
    actor, critic = Actor(3, 2, 4, hidden=(32, 32)), Critic(3, 2, 4, hidden=(32, 32))
    obs, goal = torch.randn(5, 3) * 100, torch.randn(5, 2) * 100
    action = actor(obs, goal)
    assert action.shape == (5, 4) and action.abs().max() <= 1.0
    assert critic(obs, goal, action).shape == (5,)


def test_a_layer_normalized_critic_normalizes_every_hidden_layer_and_only_with_the_option() -> None:
    torch.manual_seed(0)
    plain, normed = Critic(3, 2, 2, (16, 8)), Critic(3, 2, 2, (16, 8), layer_norm=True)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert [m.normalized_shape for m in norms] == [(16,), (8,)]
    # Each hidden layer's features, before the ReLU, have zero mean and unit variance per row.
    inputs = torch.randn(5, 7) * 10
    hidden = normed.net[:2](inputs)
    assert torch.allclose(hidden.mean(dim=-1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(hidden.var(dim=-1, unbiased=False), torch.ones(5), atol=1e-3)
    assert normed(torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 2)).shape == (5,)
