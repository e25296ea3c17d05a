"""The DQN learner for discrete actions (Mnih et al., 2015) with double Q-learning (van Hasselt et al., 2016): the
learner of the HER paper's bit-flipping experiment."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from her_lightning.her import HERBatch
from her_lightning.learner import HERLearner
from her_lightning.networks import GreedyPolicy, QNetwork, polyak_update
from her_lightning.options import check_number
from her_lightning.rollout import Policy


class DQNStats(NamedTuple):
    """What one DQN update (or a sum of updates) reports, as 0-d tensors kept on the device until an epoch ends."""

    q_loss: torch.Tensor
    q_mean: torch.Tensor  # the mean Q value of the batch's actions


class HERDQN(HERLearner):
    """Goal-conditioned double DQN trained on HER batches, for envs with a discrete action space.

    Actions are indices ``0 .. num_actions - 1``, carried as ``(N, 1)`` float tensors like any action. Each batch of
    a chunk is one gradient step of the Q network, then a Polyak update of its target. The target is double
    Q-learning's: the online network picks the next action, the target network values it. Collection is
    epsilon-greedy: epsilon falls linearly from ``epsilon_start`` to ``epsilon_end`` over ``epsilon_decay_updates``
    updates, and stays there.

    Args:
        obs_dim: Size of an observation; ``None`` (with ``goal_dim`` and ``action_dim``): the datamodule's.
        goal_dim: Size of a goal; ``None``: the datamodule's.
        action_dim: Size of an action (1: its index); ``None``: the datamodule's.
        num_actions: Number of discrete actions; ``None``: the datamodule's (its env's ``num_actions``).
        hidden: Hidden layer widths of the Q network.
        q_lr: Adam learning rate of the Q network.
        gamma: Discount factor.
        tau: Polyak rate of the target network, applied after every update.
        normalize_inputs: Normalize observations and goals with running mean and standard deviation.
        norm_clip: Normalized inputs are clipped to ``[-norm_clip, norm_clip]``.
        epsilon_start: Probability of a uniformly random action at the first update.
        epsilon_end: ... from ``epsilon_decay_updates`` updates on.
        epsilon_decay_updates: Updates over which epsilon falls (0: ``epsilon_end`` from the start).
        double_q: Double Q-learning's target; ``False``: the target network's own maximum (DQN's).
        clip_target: Clip the TD target to the returns that ``reward_range`` can produce.
        reward_range: ``(low, high)`` of the env's per-step reward where it is known.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    DISCRETE = True
    VALUE_LR = "q_lr"

    def __init__(
        self,
        obs_dim: int | None = None,
        goal_dim: int | None = None,
        action_dim: int | None = None,
        num_actions: int | None = None,
        hidden: Sequence[int] = (256,),
        q_lr: float = 1e-3,
        gamma: float = 0.98,
        tau: float = 0.05,
        normalize_inputs: bool = False,
        norm_clip: float = 5.0,
        epsilon_start: float = 0.5,
        epsilon_end: float = 0.05,
        epsilon_decay_updates: int = 10_000,
        double_q: bool = True,
        clip_target: bool = False,
        reward_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(
            obs_dim, goal_dim, action_dim, hidden, gamma, tau, normalize_inputs, norm_clip, clip_target, reward_range
        )
        if num_actions is not None:
            check_number("num_actions", num_actions, 1, integer=True)
        check_number("q_lr", q_lr, 0, low_open=True)
        check_number("epsilon_start", epsilon_start, 0, 1)
        check_number("epsilon_end", epsilon_end, 0, 1)
        check_number("epsilon_decay_updates", epsilon_decay_updates, 0, integer=True)
        self.save_hyperparameters()
        self.build_if_sized()

    def sized(self) -> bool:
        return super().sized() and self.hparams.num_actions is not None

    def take_sizes(self, data: Any) -> None:
        super().take_sizes(data)
        self.hparams.update(num_actions=data.num_actions)

    def build_networks(self, obs_dim: int, goal_dim: int, action_dim: int) -> None:
        self.q_network = QNetwork(obs_dim, goal_dim, self.hparams.num_actions, tuple(self.hparams.hidden))
        self.q_target = copy.deepcopy(self.q_network).requires_grad_(False)

    def epsilon(self) -> float:
        """The share of random actions at the current update (the schedule of ``epsilon_*``)."""
        hp = self.hparams
        progress = min(self.updates / hp.epsilon_decay_updates, 1.0) if hp.epsilon_decay_updates > 0 else 1.0
        return hp.epsilon_start + progress * (hp.epsilon_end - hp.epsilon_start)

    def random_policy(self, generator: torch.Generator) -> Policy:
        """Uniformly random action indices, drawn from ``generator``."""
        num_actions = self.hparams.num_actions

        def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
            shape = (observation.shape[0], 1)
            return torch.randint(num_actions, shape, generator=generator, device=observation.device).float()

        return act

    def exploring_policy(self, generator: torch.Generator) -> Policy:
        """Epsilon-greedy: the greedy action, or with probability ``epsilon()`` a uniformly random one."""
        epsilon, uniform = self.epsilon(), self.random_policy(generator)

        def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
            greedy, random = self.policy(observation, goal), uniform(observation, goal)
            pick = torch.rand(observation.shape[0], 1, generator=generator, device=observation.device) < epsilon
            return torch.where(pick, random, greedy)

        return act

    @torch.no_grad()
    def policy(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The greedy action's index, ``(N, 1)`` float: what evaluation plays and ``her-lightning export`` writes."""
        return self.policy_network()(*self.normalize_inputs(observation, goal))

    def policy_network(self) -> nn.Module:
        return GreedyPolicy(self.q_network)

    @property
    def policy_name(self) -> str:
        return "q_network (greedy action)"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.q_network.parameters(), lr=self.hparams.q_lr, fused=True)

    def update(
        self,
        batch: HERBatch,
        optimizer: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    ) -> DQNStats:
        """One gradient step of the Q network on the squared TD error, then a Polyak step of its target."""
        hp = self.hparams
        batch = self.normalize(batch)
        with torch.no_grad():
            chooser = self.q_network if hp.double_q else self.q_target
            next_action = chooser(batch.next_observation, batch.goal).argmax(dim=-1, keepdim=True)
            next_q = self.q_target(batch.next_observation, batch.goal).gather(-1, next_action).squeeze(-1)
            target = batch.reward + hp.gamma * (1.0 - batch.terminal) * next_q
            if self._value_range is not None:
                target.clamp_(*self._value_range)
        q = self.q_network(batch.observation, batch.goal).gather(-1, batch.action.long()).squeeze(-1)
        loss = F.mse_loss(q, target)
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        optimizer.step()
        polyak_update(self.q_target, self.q_network, hp.tau)
        self.updates += 1
        return DQNStats(loss.detach(), q.detach().mean())

    def health(self, sums: DQNStats) -> tuple[dict[str, float], dict[str, list[nn.Module]], dict[str, float]]:
        return {"q": float(sums.q_loss)}, {"q": [self.q_network, self.q_target]}, {"q": self.hparams.q_lr}

    def epoch_scalars(self, sums: DQNStats, updates: int) -> dict[str, float]:
        return {"loss/q": sums.q_loss / updates, "train/q_mean": sums.q_mean / updates, "train/epsilon": self.epsilon()}

    @torch.no_grad()
    def q_values(self) -> torch.Tensor | None:
        """The greedy actions' values on the last batch trained on, ``(batch_size,)``; ``None`` before the first
        update."""
        if self._last_batch is None:
            return None
        batch = self.normalize(self._last_batch)
        return self.q_network(batch.observation, batch.goal).amax(dim=-1)
