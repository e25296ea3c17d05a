"""The DDPG learner: actor, critic, their targets, their optimizers and the update step."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from her_lightning import checkpoint as checkpoint_format
from her_lightning import health, monitor, threads
from her_lightning.her import HERBatch
from her_lightning.losses import SATURATION_PREACTIVATION, TargetSmoothing, actor_loss, critic_loss, td_target
from her_lightning.networks import Actor, Critic, polyak_update
from her_lightning.normalizer import RunningNormalizer
from her_lightning.options import check_number
from her_lightning.rng import make_generator, run_seed


def policy_weights(hparams: dict[str, Any]) -> str:
    """The module holding a checkpoint's evaluated policy: ``actor_target`` with ``average_policy``, else ``actor``."""
    return "actor_target" if hparams["average_policy"] else "actor"


class UpdateStats(NamedTuple):
    """What one update (or a sum of updates) reports, as 0-d tensors kept on the device until an epoch ends."""

    critic_loss: torch.Tensor
    actor_loss: torch.Tensor  # zero for a step without an actor update (TD3's policy_delay)
    q_mean: torch.Tensor  # the mean Q value of the batch's actions
    actor_steps: torch.Tensor  # 1 where the actor was updated, else 0

    def __add__(self, other: UpdateStats) -> UpdateStats:  # type: ignore[override]
        return UpdateStats(*(mine + theirs for mine, theirs in zip(self, other, strict=True)))


def value_range(reward_range: tuple[float, float], gamma: float) -> tuple[float, float]:
    """The discounted returns that per-step rewards in ``reward_range`` can produce, over any horizon."""
    low, high = reward_range
    return min(low, 0.0) / (1.0 - gamma), max(high, 0.0) / (1.0 - gamma)


class HERDDPG(pl.LightningModule):
    """Goal-conditioned DDPG trained on HER batches, with manual optimization of actor and critic.

    Lightning hands ``training_step`` a chunk of batches (see ``HERDataset``);
    each batch is one gradient step of the critic, then of the actor, then a
    Polyak update of the targets (TD3's options change this: see the
    arguments). Lightning's ``global_step`` counts optimizer steps, not
    batches, so the module counts its own ``updates``. Losses and the mean Q
    value are logged as epoch means against ``updates``. Experience (envs,
    buffer, env-step counters) is the datamodule's; evaluation is the
    ``Evaluator`` callback's, which plays ``policy``.

    Args:
        obs_dim: Size of an observation; ``None`` (with ``goal_dim`` and ``action_dim``): the datamodule's, taken in
            ``configure_model`` (the CLI links all three from the data).
        goal_dim: Size of a goal; ``None``: the datamodule's.
        action_dim: Size of an action; ``None``: the datamodule's.
        hidden: Hidden layer widths of both networks.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        gamma: Discount factor.
        tau: Polyak rate of the target networks, applied after every actor step.
        normalize_inputs: Normalize observations and goals with running mean and standard
            deviation (updated from every collected episode, saved in checkpoints and in
            exported policies); the standard for the Fetch tasks.
        norm_clip: Normalized inputs are clipped to ``[-norm_clip, norm_clip]``.
        twin_critics: TD3's two critics; the target takes the smaller of their target values.
        critic_layer_norm: Layer normalization after each hidden layer of the critics (before the ReLU), reported
            to steady critics trained on sparse rewards; the actor is left as it is.
        target_policy_noise: Standard deviation of TD3's smoothing noise on the target action (0: none).
        target_noise_clip: The smoothing noise is clipped to ``[-target_noise_clip, target_noise_clip]``.
        policy_delay: TD3's delayed updates: the actor and the targets are updated every
            ``policy_delay`` critic steps.
        action_l2: Weight of the L2 penalty on the actor's actions (HER's Fetch setting: 1.0).
        preactivation_l2: Weight of the L2 penalty on the actor's pre-``tanh`` values beyond 3; keeps the policy from
            saturating at the action bounds, where its gradient vanishes and it stops changing.
        clip_target: Clip the TD target to the returns that ``reward_range`` can produce,
            ``[min(low, 0), max(high, 0)] / (1 - gamma)`` (for -1/0 rewards: ``[-1 / (1 - gamma), 0]``).
        reward_range: ``(low, high)`` of the env's per-step reward where it is known (linked from the
            data by the CLI); ``None`` for a dense reward, or, where the sizes are the datamodule's, the datamodule's.
        average_policy: Evaluate and export the Polyak average of the actor's iterates (the target actor, which
            moves ``tau`` of the way to the actor after every actor step) rather than the latest iterate, which
            chases a moving critic and jitters. Collection always explores around the latest iterate.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(
        self,
        obs_dim: int | None = None,
        goal_dim: int | None = None,
        action_dim: int | None = None,
        hidden: Sequence[int] = (128, 128),
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        gamma: float = 0.98,
        tau: float = 0.005,
        normalize_inputs: bool = False,
        norm_clip: float = 5.0,
        twin_critics: bool = False,
        critic_layer_norm: bool = False,
        target_policy_noise: float = 0.0,
        target_noise_clip: float = 0.5,
        policy_delay: int = 1,
        action_l2: float = 0.0,
        preactivation_l2: float = 0.0,
        clip_target: bool = False,
        reward_range: tuple[float, float] | None = None,
        average_policy: bool = True,
    ) -> None:
        super().__init__()
        sizes = {"obs_dim": obs_dim, "goal_dim": goal_dim, "action_dim": action_dim}
        if None in sizes.values() and any(size is not None for size in sizes.values()):
            raise ValueError(f"obs_dim, goal_dim and action_dim go together: give all three or none, got {sizes}")
        for name, value in sizes.items():
            if value is not None:
                check_number(name, value, 1, integer=True)
        if not hidden:
            raise ValueError(f"hidden={list(hidden)} is invalid: need one or more positive widths")
        for i, width in enumerate(hidden):
            check_number(f"hidden[{i}]", width, 1, integer=True)
        for name, value in [("actor_lr", actor_lr), ("critic_lr", critic_lr), ("norm_clip", norm_clip),
                            ("target_noise_clip", target_noise_clip)]:
            check_number(name, value, 0, low_open=True)
        check_number("gamma", gamma, 0, 1)
        check_number("tau", tau, 0, 1, low_open=True, note="at 0 the target networks never move")
        for name, value in [("target_policy_noise", target_policy_noise), ("action_l2", action_l2),
                            ("preactivation_l2", preactivation_l2)]:
            check_number(name, value, 0)
        check_number("policy_delay", policy_delay, 1, integer=True)
        for i, bound in enumerate(reward_range or ()):
            check_number(f"reward_range[{i}]", bound)
        if clip_target and gamma >= 1.0:
            raise ValueError(f"clip_target needs gamma < 1 (the bounds are divided by 1 - gamma), got gamma={gamma}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.actor: Actor | None = None  # the networks are built by _build, here or in configure_model
        if obs_dim is not None:
            self._build(obs_dim, goal_dim, action_dim, reward_range)
        self._generator: torch.Generator | None = None  # target smoothing noise, made on the training device
        self._generator_state: torch.Tensor | None = None  # from a checkpoint, applied when the stream is made
        self.updates = 0
        self._update_stats: UpdateStats | None = None  # the epoch's sums
        self._updates_in_epoch = 0
        self._epoch_start = time.perf_counter()
        self._last_batch: HERBatch | None = None

    def _build(self, obs_dim: int, goal_dim: int, action_dim: int, reward_range: tuple[float, float] | None) -> None:
        """The networks, their targets, the input statistics and the bounds of attainable values, for these sizes.

        Raises:
            ValueError: If ``clip_target`` is set and ``reward_range`` is ``None``.
        """
        hp = self.hparams
        if hp.clip_target and reward_range is None:
            raise ValueError(
                "clip_target needs the env's reward range, which only a sparse reward has (reward_range is None)"
            )
        hidden, layer_norm = tuple(hp.hidden), hp.critic_layer_norm
        self.actor = Actor(obs_dim, goal_dim, action_dim, hidden)
        self.critic = Critic(obs_dim, goal_dim, action_dim, hidden, layer_norm)
        self.critic_twin = Critic(obs_dim, goal_dim, action_dim, hidden, layer_norm) if hp.twin_critics else None
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_twin_target = copy.deepcopy(self.critic_twin).requires_grad_(False) if hp.twin_critics else None
        # Networks see normalized inputs; the statistics are buffers, saved with the weights.
        self.obs_normalizer = RunningNormalizer(obs_dim, hp.norm_clip) if hp.normalize_inputs else None
        self.goal_normalizer = RunningNormalizer(goal_dim, hp.norm_clip) if hp.normalize_inputs else None
        attainable = value_range(reward_range, hp.gamma) if reward_range is not None and hp.gamma < 1.0 else None
        self._value_range = attainable if hp.clip_target else None  # with clip_target, gamma < 1 and a reward range
        self._value_watch = health.ValueRangeWatch(attainable)

    def configure_model(self) -> None:
        """Build the networks with the trainer's datamodule's sizes where ``__init__`` was given none.

        Lightning calls this hook before it restores a checkpoint's state. The sizes, and the datamodule's
        ``reward_range`` where none was given, are recorded in ``hparams`` (and so in checkpoints).

        Raises:
            ValueError: If the networks need sizes and the trainer has no datamodule to take them from.
        """
        if self.actor is not None:
            return
        data = self.trainer.datamodule
        if data is None:
            raise ValueError(
                "HERDDPG() without obs_dim, goal_dim and action_dim takes them from the datamodule: "
                "call trainer.fit(model, datamodule=...), or give the sizes"
            )
        reward_range = data.reward_range if self.hparams.reward_range is None else self.hparams.reward_range
        self.hparams.update(
            obs_dim=data.obs_dim, goal_dim=data.goal_dim, action_dim=data.action_dim, reward_range=reward_range
        )
        self._build(data.obs_dim, data.goal_dim, data.action_dim, reward_range)

    @property
    def critics(self) -> list[Critic]:
        return [self.critic] if self.critic_twin is None else [self.critic, self.critic_twin]

    @property
    def critic_targets(self) -> list[Critic]:
        twin = [] if self.critic_twin_target is None else [self.critic_twin_target]
        return [self.critic_target, *twin]

    @property
    def policy_actor(self) -> Actor:
        """The actor that is evaluated and exported: the target (averaged) actor with ``average_policy``."""
        return getattr(self, policy_weights(self.hparams))

    @torch.no_grad()
    def act(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The latest actor's actions in ``[-1, 1]`` for raw observations and goals: what collection explores around."""
        return self._run(self.actor, observation, goal)

    @torch.no_grad()
    def policy(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The trained policy, deterministic: what evaluation plays and ``her-lightning export`` writes."""
        return self._run(self.policy_actor, observation, goal)

    def _run(self, actor: Actor, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        if self.obs_normalizer is not None:
            observation, goal = self.obs_normalizer(observation), self.goal_normalizer(goal)
        return actor(observation, goal)

    @torch.no_grad()
    def observe(self, observations: torch.Tensor, goals: torch.Tensor) -> None:
        """Add collected states and goals to the input statistics (nothing without ``normalize_inputs``).

        ``goals`` should be the goals the networks train on (HER-relabelled, mostly achieved goals; see
        ``HERDataModule.collect``), so that normalized goals are centred where training needs them.
        """
        if self.obs_normalizer is None:
            return
        self.obs_normalizer.update(observations)
        self.goal_normalizer.update(goals)

    def normalize(self, batch: HERBatch) -> HERBatch:
        """The batch as the networks see it: observations and goals normalized when ``normalize_inputs`` is on."""
        if self.obs_normalizer is None:
            return batch
        return batch._replace(
            observation=self.obs_normalizer(batch.observation),
            goal=self.goal_normalizer(batch.goal),
            next_observation=self.obs_normalizer(batch.next_observation),
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # The fused kernel updates all parameters in one call: 35% faster than the default on a small CPU net.
        critic_params = [p for critic in self.critics for p in critic.parameters()]
        return [
            torch.optim.Adam(self.actor.parameters(), lr=self.hparams.actor_lr, fused=True),
            torch.optim.Adam(critic_params, lr=self.hparams.critic_lr, fused=True),
        ]

    def training_step(self, chunk: HERBatch, batch_idx: int) -> None:
        """One gradient step per batch of the chunk (fields ``(K, batch_size, ...)``, see ``HERDataset``).

        The losses are summed on the device and logged once per epoch (a per-step ``self.log`` costs more than
        the update); a chunk whose losses are not finite stops the run before anything is evaluated, logged or
        checkpointed (``health.stop_if_not_finite``).
        """
        actor_opt, critic_opt = self.optimizers()
        stats = self._update_stats
        for i in range(chunk.reward.shape[0]):
            batch = HERBatch(*(field[i] for field in chunk))
            step_stats = self.update(batch, actor_opt, critic_opt, self.manual_backward)
            stats = step_stats if stats is None else stats + step_stats
        self._update_stats = stats
        self._updates_in_epoch += chunk.reward.shape[0]
        self._last_batch = batch
        critic_sum, actor_sum = torch.stack([stats.critic_loss, stats.actor_loss]).tolist()  # one sync per chunk
        health.stop_if_not_finite(
            {"critic": critic_sum, "actor": actor_sum},
            {"critic": [*self.critics, *self.critic_targets], "actor": [self.actor, self.actor_target]},
            {"critic": self.hparams.critic_lr, "actor": self.hparams.actor_lr},
            (self.updates - self._updates_in_epoch + 1, self.updates),
        )

    def update(
        self,
        batch: HERBatch,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    ) -> UpdateStats:
        """One gradient step of the critics and, every ``policy_delay`` steps, of the actor and the targets.

        ``backward`` is Lightning's ``manual_backward`` in training; the default plain
        ``backward`` lets the same step run without a Trainer (benchmarks).
        """
        hp = self.hparams
        batch = self.normalize(batch)
        smoothing = None
        if hp.target_policy_noise > 0:
            smoothing = TargetSmoothing(hp.target_policy_noise, hp.target_noise_clip, self._noise_stream(batch.reward))
        target = td_target(batch, self.actor_target, self.critic_targets, hp.gamma, smoothing, self._value_range)
        loss_c, q = critic_loss(batch, self.critics, target)
        critic_opt.zero_grad(set_to_none=True)
        backward(loss_c)
        critic_opt.step()
        self.updates += 1
        if self.updates % hp.policy_delay != 0:
            zero = torch.zeros_like(loss_c)
            return UpdateStats(loss_c.detach(), zero, q.detach().mean(), zero)

        # The critic is frozen for the actor's step: the actor loss must not leave gradients in it.
        self.critic.requires_grad_(False)
        loss_a = actor_loss(batch, self.actor, self.critic, hp.action_l2, hp.preactivation_l2)
        actor_opt.zero_grad(set_to_none=True)
        backward(loss_a)
        actor_opt.step()
        self.critic.requires_grad_(True)

        polyak_update(self.actor_target, self.actor, hp.tau)
        for target_net, critic in zip(self.critic_targets, self.critics, strict=True):
            polyak_update(target_net, critic, hp.tau)
        return UpdateStats(loss_c.detach(), loss_a.detach(), q.detach().mean(), torch.ones_like(loss_c))

    def _noise_stream(self, like: torch.Tensor) -> torch.Generator:
        """The target smoothing noise stream, made on first use on the training device (restored on resume)."""
        if self._generator is None:
            self._generator = make_generator(run_seed(), "target_noise", like.device)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
        return self._generator

    def on_fit_start(self) -> None:
        line = threads.one_thread_for_small_networks(self, self.device)
        if line is not None:
            rank_zero_info(line)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self._update_stats is None:
            return
        sums = UpdateStats(*torch.stack(list(self._update_stats)).tolist())
        means = {
            "loss/critic": sums.critic_loss / self._updates_in_epoch,
            "loss/actor": sums.actor_loss / max(sums.actor_steps, 1.0),
            "train/q_mean": sums.q_mean / self._updates_in_epoch,
        }
        means["perf/updates_per_s"] = self._updates_in_epoch / (time.perf_counter() - self._epoch_start)
        warning = self._value_watch.check(means["train/q_mean"], self.updates, self.hparams.critic_lr)
        if warning is not None:
            rank_zero_warn(warning)
        self._update_stats, self._updates_in_epoch = None, 0
        batch = self.normalize(self._last_batch)
        with torch.no_grad():
            preactivation = self.actor.preactivation(batch.observation, batch.goal)
            # A policy saturated at the action bounds has no gradient left and stops changing: see losses.actor_loss.
            means["train/actor_saturation"] = float((preactivation.abs() > SATURATION_PREACTIVATION).float().mean())
        monitor.log_scalars(self.trainer, means, self.updates)

    @torch.no_grad()
    def q_values(self) -> torch.Tensor | None:
        """The critic's values of the latest actor's actions on the last batch trained on, ``(batch_size,)``;
        ``None`` before the first update. The ``Evaluator`` draws them as a histogram with its evaluations."""
        if self._last_batch is None:
            return None
        batch = self.normalize(self._last_batch)
        return self.critic(batch.observation, batch.goal, self.actor(batch.observation, batch.goal))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[checkpoint_format.FORMAT_KEY] = checkpoint_format.FORMAT  # the learner is in every checkpoint
        checkpoint["counters"] = {"updates": self.updates}
        if self._generator is not None:
            checkpoint["target_noise_generator"] = self._generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another format (the first hook that sees it, before any state is loaded).

        Raises:
            CheckpointError: Naming the checkpoint's format and the one this version reads.
        """
        mismatch = checkpoint_format.format_mismatch(checkpoint)
        if mismatch is not None:
            raise checkpoint_format.CheckpointError(f"the checkpoint cannot be loaded: {mismatch}")
        self.updates = checkpoint.get("counters", {}).get("updates", 0)
        self._generator_state = checkpoint.get("target_noise_generator")
        self._generator = None
