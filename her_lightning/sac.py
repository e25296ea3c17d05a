"""The SAC learner (Haarnoja et al., 2018): a squashed-Gaussian actor, twin critics and their targets, and an entropy
temperature tuned to a target entropy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from her_lightning.her import HERBatch
from her_lightning.learner import HERLearner
from her_lightning.losses import critic_loss, soft_actor_loss, soft_td_target, temperature_loss
from her_lightning.networks import Critic, GaussianActor, Temperature, polyak_update
from her_lightning.options import check_number
from her_lightning.rollout import Policy


class SACStats(NamedTuple):
    """What one SAC update (or a sum of updates) reports, as 0-d tensors kept on the device until an epoch ends."""

    critic_loss: torch.Tensor
    actor_loss: torch.Tensor
    temperature_loss: torch.Tensor
    q_mean: torch.Tensor  # the mean Q value of the batch's actions
    temperature: torch.Tensor  # alpha
    entropy: torch.Tensor  # the batch's mean -log pi(a | s, g) of sampled actions


class HERSAC(HERLearner):
    """Goal-conditioned SAC trained on HER batches, with manual optimization of actor, critics and temperature.

    Each batch of a chunk is one gradient step of the two critics, then of the
    actor, then of the temperature, then a Polyak update of the target critics.
    Collection samples the stochastic policy (its exploration); evaluation and
    export play a mean action, ``tanh(mean)``: of the Polyak average of the
    actor's iterates with ``average_policy``. The temperature ``alpha`` weighs
    the entropy bonus and is tuned so that the policy's entropy stays near
    ``target_entropy``.

    Args:
        obs_dim: Size of an observation; ``None`` (with ``goal_dim`` and ``action_dim``): the datamodule's, taken in
            ``configure_model`` (the CLI links all three from the data).
        goal_dim: Size of a goal; ``None``: the datamodule's.
        action_dim: Size of an action; ``None``: the datamodule's.
        hidden: Hidden layer widths of the actor and the critics.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critics.
        temperature_lr: Adam learning rate of ``log alpha``.
        gamma: Discount factor.
        tau: Polyak rate of the target critics, applied after every update.
        normalize_inputs: Normalize observations and goals with running mean and standard deviation (saved in
            checkpoints and in exported policies); the standard for the Fetch tasks.
        norm_clip: Normalized inputs are clipped to ``[-norm_clip, norm_clip]``.
        critic_layer_norm: Layer normalization after each hidden layer of the critics (before the ReLU).
        initial_temperature: ``alpha`` before training. Against rewards of -1 per step, an ``alpha`` of 1 makes the
            entropy bonus (up to ``action_dim * log 2`` a step) outweigh the task until it is tuned down.
        target_entropy: The entropy the temperature holds the policy to; ``None``: ``-action_dim``, the usual choice.
        action_l2: Weight of an L2 penalty on the actor's sampled actions (HER's Fetch penalty).
        clip_target: Clip the soft TD target to the returns that ``reward_range`` can produce,
            ``[min(low, 0), max(high, 0)] / (1 - gamma)``.
        reward_range: ``(low, high)`` of the env's per-step reward where it is known (linked from the data by the
            CLI); ``None`` for a dense reward, or, where the sizes are the datamodule's, the datamodule's.
        average_policy: Evaluate and export the Polyak average of the actor's iterates (moved ``tau`` of the way
            after every update) rather than the latest iterate, which chases the critics and jitters: on the point
            task the latest one's evaluations fell from 1.00 to near 0 now and then after solving, on 10 of 10 seeds.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    UPDATE_STREAM = "policy_noise"

    def __init__(
        self,
        obs_dim: int | None = None,
        goal_dim: int | None = None,
        action_dim: int | None = None,
        hidden: Sequence[int] = (128, 128),
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        temperature_lr: float = 1e-3,
        gamma: float = 0.98,
        tau: float = 0.005,
        normalize_inputs: bool = False,
        norm_clip: float = 5.0,
        critic_layer_norm: bool = False,
        initial_temperature: float = 0.1,
        target_entropy: float | None = None,
        action_l2: float = 0.0,
        clip_target: bool = False,
        reward_range: tuple[float, float] | None = None,
        average_policy: bool = True,
    ) -> None:
        super().__init__(
            obs_dim, goal_dim, action_dim, hidden, gamma, tau, normalize_inputs, norm_clip, clip_target, reward_range
        )
        for name, value in [("actor_lr", actor_lr), ("critic_lr", critic_lr), ("temperature_lr", temperature_lr),
                            ("initial_temperature", initial_temperature)]:
            check_number(name, value, 0, low_open=True)
        check_number("action_l2", action_l2, 0)
        if target_entropy is not None:
            check_number("target_entropy", target_entropy, note="or null for -action_dim")
        self.save_hyperparameters()
        self.build_if_sized()

    def build_networks(self, obs_dim: int, goal_dim: int, action_dim: int) -> None:
        hp = self.hparams
        hidden, layer_norm = tuple(hp.hidden), hp.critic_layer_norm
        self.actor = GaussianActor(obs_dim, goal_dim, action_dim, hidden)
        self.actor_average = copy.deepcopy(self.actor).requires_grad_(False) if hp.average_policy else None
        self.critics = nn.ModuleList([Critic(obs_dim, goal_dim, action_dim, hidden, layer_norm) for _ in range(2)])
        self.critic_targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.temperature = Temperature(hp.initial_temperature)
        self.target_entropy = -float(action_dim) if hp.target_entropy is None else float(hp.target_entropy)

    def exploring_policy(self, generator: torch.Generator) -> Policy:
        """Actions sampled from the stochastic policy, drawn from ``generator``."""

        @torch.no_grad()
        def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
            return self.actor.sample(*self.normalize_inputs(observation, goal), generator)[0]

        return act

    @torch.no_grad()
    def policy(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The mean action ``tanh(mean)``, deterministic: what evaluation plays and ``her-lightning export`` writes."""
        return self.policy_network()(*self.normalize_inputs(observation, goal))

    def policy_network(self) -> nn.Module:
        """The averaged actor with ``average_policy``, else the latest."""
        return self.actor if self.actor_average is None else self.actor_average

    @property
    def policy_name(self) -> str:
        return f"{'actor' if self.actor_average is None else 'actor_average'} (mean action)"

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [
            torch.optim.Adam(self.actor.parameters(), lr=hp.actor_lr, fused=True),
            torch.optim.Adam(self.critics.parameters(), lr=hp.critic_lr, fused=True),
            torch.optim.Adam(self.temperature.parameters(), lr=hp.temperature_lr),
        ]

    def update(
        self,
        batch: HERBatch,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        temperature_opt: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    ) -> SACStats:
        """One gradient step of the critics, the actor and the temperature, then of the target critics."""
        hp = self.hparams
        batch = self.normalize(batch)
        generator = self.update_stream(batch.reward)
        alpha = self.temperature().detach()
        target = soft_td_target(batch, self.actor, self.critic_targets, hp.gamma, alpha, generator, self._value_range)
        loss_c, q = critic_loss(batch, self.critics, target)
        critic_opt.zero_grad(set_to_none=True)
        backward(loss_c)
        critic_opt.step()

        # The critics are frozen for the actor's step: the actor loss must not leave gradients in them.
        self.critics.requires_grad_(False)
        loss_a, log_prob = soft_actor_loss(batch, self.actor, self.critics, alpha, generator, hp.action_l2)
        actor_opt.zero_grad(set_to_none=True)
        backward(loss_a)
        actor_opt.step()
        self.critics.requires_grad_(True)

        loss_t = temperature_loss(self.temperature.log_alpha, log_prob, self.target_entropy)
        temperature_opt.zero_grad(set_to_none=True)
        backward(loss_t)
        temperature_opt.step()

        polyak_update(self.critic_targets, self.critics, hp.tau)
        if self.actor_average is not None:
            polyak_update(self.actor_average, self.actor, hp.tau)
        self.updates += 1
        return SACStats(
            loss_c.detach(), loss_a.detach(), loss_t.detach(), q.detach().mean(), alpha, -log_prob.detach().mean()
        )

    def health(self, sums: SACStats) -> tuple[dict[str, float], dict[str, list[nn.Module]], dict[str, float]]:
        critic_sum, actor_sum, temperature_sum = torch.stack(list(sums[:3])).tolist()  # one sync per chunk
        hp = self.hparams
        return (
            {"critic": critic_sum, "actor": actor_sum, "temperature": temperature_sum},
            {"critic": [self.critics, self.critic_targets], "actor": [self.actor, self.policy_network()],
             "temperature": [self.temperature]},
            {"critic": hp.critic_lr, "actor": hp.actor_lr, "temperature": hp.temperature_lr},
        )

    def epoch_scalars(self, sums: SACStats, updates: int) -> dict[str, float]:
        return {
            "loss/critic": sums.critic_loss / updates,
            "loss/actor": sums.actor_loss / updates,
            "loss/temperature": sums.temperature_loss / updates,
            "train/q_mean": sums.q_mean / updates,
            "train/temperature": sums.temperature / updates,
            "train/entropy": sums.entropy / updates,
        }

    @torch.no_grad()
    def q_values(self) -> torch.Tensor | None:
        """The first critic's values of the mean actions on the last batch trained on, ``(batch_size,)``; ``None``
        before the first update. The ``Evaluator`` draws them as a histogram with its evaluations."""
        if self._last_batch is None:
            return None
        batch = self.normalize(self._last_batch)
        return self.critics[0](batch.observation, batch.goal, self.actor(batch.observation, batch.goal))
