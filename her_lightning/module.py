"""The DDPG learner: actor, critic, their targets and the update step."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from her_lightning import monitor
from her_lightning.her import HERBatch
from her_lightning.losses import actor_loss, critic_loss, td_target
from her_lightning.networks import Actor, Critic, polyak_update
from her_lightning.rollout import rollout

UPDATE_METRICS = ("loss/critic", "loss/actor", "train/q_mean")


class HERDDPG(pl.LightningModule):
    """Goal-conditioned DDPG trained on HER batches, with manual optimization of its two networks.

    Each training batch is one gradient step of the critic, then of the actor,
    then a Polyak update of both targets. Lightning's ``global_step`` counts two
    optimizer steps per batch, so the module keeps its own counters:
    ``env_steps`` and ``episodes`` (advanced by the collector) and ``updates``.
    Losses and the mean Q value are logged as epoch means against ``updates``.

    Args:
        obs_dim: Size of an observation (linked from the data by the CLI).
        goal_dim: Size of a goal (linked from the data by the CLI).
        action_dim: Size of an action (linked from the data by the CLI).
        hidden: Hidden layer widths of both networks.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        gamma: Discount factor.
        tau: Polyak rate of the target networks, applied after every gradient step.
        solved_success_rate: Evaluation success rate at which the run is reported solved.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(
        self,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (128, 128),
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        gamma: float = 0.98,
        tau: float = 0.005,
        solved_success_rate: float = 0.95,
    ) -> None:
        super().__init__()
        for name, value in [("obs_dim", obs_dim), ("goal_dim", goal_dim), ("action_dim", action_dim)]:
            if value < 1:
                raise ValueError(f"{name}={value} is invalid: must be at least 1")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden={list(hidden)} is invalid: need one or more positive widths")
        for name, value in [("actor_lr", actor_lr), ("critic_lr", critic_lr)]:
            if value <= 0:
                raise ValueError(f"{name}={value} is invalid: must be positive")
        for name, value in [("gamma", gamma), ("tau", tau), ("solved_success_rate", solved_success_rate)]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is invalid: must be within [0, 1]")
        self.save_hyperparameters()
        self.automatic_optimization = False
        hidden = tuple(hidden)
        self.actor = Actor(obs_dim, goal_dim, action_dim, hidden)
        self.critic = Critic(obs_dim, goal_dim, action_dim, hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.env_steps = 0
        self.episodes = 0
        self.updates = 0
        self._solved = False
        self._update_stats: torch.Tensor | None = None  # (3,) running sums of UPDATE_METRICS
        self._updates_in_epoch = 0
        self._epoch_start = time.perf_counter()
        self._last_batch: HERBatch | None = None
        self._fit_start = time.perf_counter()

    @torch.no_grad()
    def act(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The deterministic policy: actions in ``[-1, 1]`` for a batch of observations and goals."""
        return self.actor(observation, goal)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # The fused kernel updates all parameters in one call: 35% faster than the default on a small CPU net.
        return [
            torch.optim.Adam(self.actor.parameters(), lr=self.hparams.actor_lr, fused=True),
            torch.optim.Adam(self.critic.parameters(), lr=self.hparams.critic_lr, fused=True),
        ]

    def training_step(self, batch: HERBatch, batch_idx: int) -> None:
        actor_opt, critic_opt = self.optimizers()
        step_stats = self.update(batch, actor_opt, critic_opt, self.manual_backward)
        # Summed on the device and logged once per epoch: a per-step self.log costs more than the update.
        self._update_stats = step_stats if self._update_stats is None else self._update_stats + step_stats
        self._updates_in_epoch += 1
        self._last_batch = batch

    def update(
        self,
        batch: HERBatch,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    ) -> torch.Tensor:  # (3,): the values of UPDATE_METRICS
        """One DDPG gradient step: the critic, then the actor, then a Polyak update of both targets.

        ``backward`` is Lightning's ``manual_backward`` in training; the default plain
        ``backward`` lets the same step run without a Trainer (benchmarks).
        """
        target = td_target(batch, self.actor_target, self.critic_target, self.hparams.gamma)
        loss_c, q = critic_loss(batch, self.critic, target)
        critic_opt.zero_grad(set_to_none=True)
        backward(loss_c)
        critic_opt.step()

        # The critic is frozen for the actor's step: the actor loss must not leave gradients in it.
        self.critic.requires_grad_(False)
        loss_a = actor_loss(batch, self.actor, self.critic)
        actor_opt.zero_grad(set_to_none=True)
        backward(loss_a)
        actor_opt.step()
        self.critic.requires_grad_(True)

        polyak_update(self.actor_target, self.actor, self.hparams.tau)
        polyak_update(self.critic_target, self.critic, self.hparams.tau)
        self.updates += 1
        return torch.stack([loss_c.detach(), loss_a.detach(), q.detach().mean()])

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self._update_stats is None:
            return
        means = dict(zip(UPDATE_METRICS, (self._update_stats / self._updates_in_epoch).tolist()))
        means["perf/updates_per_s"] = self._updates_in_epoch / (time.perf_counter() - self._epoch_start)
        self._update_stats, self._updates_in_epoch = None, 0
        if self.logger is not None:
            self.logger.log_metrics(means, step=self.updates)
        if monitor.tensorboard(self.trainer) is not None:
            batch = self._last_batch
            with torch.no_grad():
                q = self.critic(batch.observation, batch.goal, self.actor(batch.observation, batch.goal))
            monitor.log_histogram(self.trainer, "train/q_values", q, self.updates)

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()
        if self.trainer.ckpt_path is None:  # a resumed run keeps the HParams entry of its start
            monitor.log_run_start(self.trainer, self._run_hparams())

    def _run_hparams(self) -> dict[str, Any]:
        """The settings shown in TensorBoard's HParams tab."""
        params: dict[str, Any] = {f"model/{key}": value for key, value in self.hparams.items()}
        params["model/hidden"] = str(list(self.hparams.hidden))
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "describe"):
            params.update({f"data/{key}": value for key, value in datamodule.describe().items()})
        for callback in self.trainer.callbacks:
            if hasattr(callback, "describe"):
                params.update({f"collector/{key}": value for key, value in callback.describe().items()})
        return params

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """A deterministic (noise-free) evaluation on the datamodule's fixed evaluation goals."""
        env = self.trainer.datamodule.evaluation_env()
        episodes = rollout(env, self.act)
        # Counted in Python floats: 95 of 100 must read as 0.95, not float32's 0.9499.
        success_rate = int(episodes.success.sum()) / episodes.success.numel()
        episode_return = float(episodes.episode_return.mean())
        metrics = {
            "eval/success_rate": success_rate,
            "eval/episode_return": episode_return,
            "eval/episode_length": float(episodes.length.float().mean()),
        }
        self.log_dict(metrics, prog_bar=True, logger=False, batch_size=1)
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.env_steps)
        if hasattr(env, "plot_episodes"):
            monitor.log_figure(self.trainer, "eval/trajectories", env.plot_episodes(episodes), self.env_steps)
        progress = (
            f"{self.env_steps:,} env steps, {self.episodes:,} episodes, {self.updates:,} updates, "
            f"{time.perf_counter() - self._fit_start:.0f} s"
        )
        result = f"success rate {success_rate:.2f}, mean return {episode_return:.2f}"
        rank_zero_info(f"eval ({episodes.success.numel()} episodes) after {progress}: {result}")
        if not self._solved and success_rate >= self.hparams.solved_success_rate:
            self._solved = True
            rank_zero_info(f"solved: {result} after {progress}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["counters"] = {
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": self.updates,
            "solved": int(self._solved),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        counters = checkpoint.get("counters", {})
        self.env_steps = counters.get("env_steps", 0)
        self.episodes = counters.get("episodes", 0)
        self.updates = counters.get("updates", 0)
        self._solved = bool(counters.get("solved", 0))
