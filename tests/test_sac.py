"""SAC: the squashed Gaussian's densities, the soft target against a hand computation, the update's gradient
isolation and temperature, and a short seeded run that must learn the point task."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from her_lightning import EnvConfig, EpisodeCollector, Evaluator, HERDataModule
from her_lightning.her import HERBatch
from her_lightning.losses import soft_td_target
from her_lightning.networks import GaussianActor
from her_lightning.sac import HERSAC


def batch(size: int = 32, obs_dim: int = 3, goal_dim: int = 2, action_dim: int = 2, seed: int = 0) -> HERBatch:
    g = torch.Generator().manual_seed(seed)
    return HERBatch(
        observation=torch.randn(size, obs_dim, generator=g),
        goal=torch.randn(size, goal_dim, generator=g),
        action=torch.rand(size, action_dim, generator=g) * 2 - 1,
        reward=-(torch.rand(size, generator=g) < 0.7).float(),
        next_observation=torch.randn(size, obs_dim, generator=g),
        terminal=(torch.rand(size, generator=g) < 0.2).float(),
    )


def test_sampled_log_densities_are_the_squashed_gaussians() -> None:
    actor = GaussianActor(3, 2, 2, (16,))
    observation, goal = torch.randn(500, 3), torch.randn(500, 2)
    action, log_prob = actor.sample(observation, goal, torch.Generator().manual_seed(0))
    mean, log_std = actor.mean_log_std(observation, goal)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    expected = reference.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    assert action.shape == (500, 2) and log_prob.shape == (500,)
    assert action.abs().max() <= 1.0
    close = action.abs().amax(-1) < 0.999  # where tanh is not rounded to 1, the reference's inverse is exact
    assert torch.allclose(log_prob[close], expected[close], atol=1e-3)
    low, high = GaussianActor.LOG_STD_RANGE
    assert log_std.min() >= low and log_std.max() <= high
    assert torch.equal(actor(observation, goal), torch.tanh(mean))  # the deterministic policy is the mean action


def test_the_soft_target_is_the_hand_computation() -> None:
    model = HERSAC(3, 2, 2, hidden=(16,), gamma=0.9)
    b, alpha = batch(), torch.tensor(0.3)
    target = soft_td_target(b, model.actor, model.critic_targets, 0.9, alpha, torch.Generator().manual_seed(5))
    action, log_prob = model.actor.sample(b.next_observation, b.goal, torch.Generator().manual_seed(5))
    q = torch.minimum(*(critic(b.next_observation, b.goal, action) for critic in model.critic_targets))
    assert torch.allclose(target, b.reward + 0.9 * (1 - b.terminal) * (q - 0.3 * log_prob))
    clipped = soft_td_target(b, model.actor, model.critic_targets, 0.9, torch.tensor(100.0),
                             torch.Generator().manual_seed(5), (-10.0, 0.0))
    assert clipped.min() >= -10.0 and clipped.max() <= 0.0


def test_an_update_moves_each_part_by_its_own_loss() -> None:
    model = HERSAC(3, 2, 2, hidden=(16,), tau=0.5, initial_temperature=0.5, target_entropy=-2.0)
    actor_opt, critic_opt, temperature_opt = model.configure_optimizers()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    calls: list[torch.Tensor] = []
    critic_grads: list[torch.Tensor] = []

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        if len(calls) == 0:
            critic_grads.extend(p.grad.clone() for p in model.critics.parameters())
        if len(calls) == 1:  # the actor's loss adds nothing to the critics' gradients (frozen for its step)
            assert all(torch.equal(p.grad, g) for p, g in zip(model.critics.parameters(), critic_grads, strict=True))
        calls.append(loss)

    stats = model.update(batch(), actor_opt, critic_opt, temperature_opt, backward=backward)
    assert len(calls) == 3 and model.updates == 1
    after = model.state_dict()
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not move"
    # The targets moved tau of the way to the updated critics.
    for name, value in before.items():
        if name.startswith("critic_targets."):
            source = after[name.replace("critic_targets.", "critics.")]
            assert torch.allclose(after[name], value + 0.5 * (source - value))
    assert torch.isclose(stats.temperature, torch.tensor(0.5))
    entropy = float(stats.entropy)
    moved_down = float(after["temperature.log_alpha"]) < float(before["temperature.log_alpha"])
    assert moved_down == (entropy > -2.0)  # alpha falls while the policy's entropy is above the target


def test_exploration_samples_and_the_policy_is_deterministic() -> None:
    model = HERSAC(3, 2, 2, hidden=(16,))
    observation, goal = torch.zeros(64, 3), torch.zeros(64, 2)
    explore = model.exploring_policy(torch.Generator().manual_seed(0))
    first, second = explore(observation, goal), explore(observation, goal)
    assert not torch.equal(first, second) and first.abs().max() <= 1.0
    assert torch.equal(model.policy(observation, goal), model.policy(observation, goal))
    assert torch.equal(model.policy(observation, goal), model.actor(observation, goal))


def test_sizes_left_out_come_from_the_datamodule(tmp_path: Path) -> None:
    data = HERDataModule(env=EnvConfig(num_envs=2), batches_per_epoch=2, batch_size=16, eval_episodes=2, seed=0)
    model = HERSAC(hidden=(16,))
    assert not model.built
    quiet_trainer(1, [EpisodeCollector(warmup_episodes=4), Evaluator()], tmp_path).fit(model, data)
    assert model.built and model.hparams.obs_dim == 2 and model.hparams.action_dim == 2
    assert model.target_entropy == -2.0


@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_run_learns_to_reach_goals(tmp_path: Path, seed: int) -> None:
    pl.seed_everything(seed, verbose=False)
    data = HERDataModule(env=EnvConfig(num_envs=16), buffer_size=100_000, batches_per_epoch=64, eval_episodes=100,
                         seed=seed)
    model = HERSAC(data.obs_dim, data.goal_dim, data.action_dim, hidden=(64, 64), actor_lr=3e-3, critic_lr=3e-3,
                   temperature_lr=3e-3)
    collector = EpisodeCollector(warmup_episodes=200, warmup_policy="random", episodes_per_epoch=16)
    trainer = quiet_trainer(25, [collector, Evaluator()], tmp_path)
    trainer.fit(model, data)
    success = trainer.callback_metrics["eval/success_rate"].item()
    # A random policy never reaches a goal 3.5 or more away within 50 steps.
    assert success >= 0.9, f"eval success rate {success:.2f} after {model.updates} updates"
