"""The learner protocol, and what every learner shares.

A learner is a ``LightningModule`` that the rest of the package uses through a few methods only:

- ``exploring_policy(generator)``: the policy that collection plays, exploration included (DDPG's noise around its
  actor, SAC's samples of its stochastic policy);
- ``random_policy(generator)``: uniformly random actions, for the random warm-up;
- ``policy(observation, goal)``: the trained policy, noise-free, which evaluation plays;
- ``policy_network()``: the same policy as a module of normalized inputs, which ``her-lightning export`` writes;
- ``observe(observations, goals)``: collected states and goals for the input statistics;
- ``training_step``: one update per ``HERBatch`` of a chunk (``update``), with manual optimization;
- ``q_values()``: values of the last batch, which the evaluator draws.

``HERLearner`` holds what they share: sizes taken from the datamodule, input normalization, the range of returns
the rewards allow, the ``updates`` counter, a random stream for the update, the chunk loop with its health check,
and the checkpoint hooks. A checkpoint names its learner (``LEARNER_KEY``), so that ``test`` and ``export`` rebuild
the right one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from her_lightning import checkpoint as checkpoint_format
from her_lightning import health, monitor, threads
from her_lightning.her import HERBatch
from her_lightning.normalizer import RunningNormalizer
from her_lightning.options import check_number
from her_lightning.rng import make_generator, run_seed
from her_lightning.rollout import Policy, uniform_policy

LEARNER_KEY = "her_lightning_learner"  # the learner's class name, in every checkpoint
DEFAULT_LEARNER = "HERDDPG"  # the learner of checkpoints written before they named theirs


def value_range(reward_range: tuple[float, float], gamma: float) -> tuple[float, float]:
    """The discounted returns that per-step rewards in ``reward_range`` can produce, over any horizon."""
    low, high = reward_range
    return min(low, 0.0) / (1.0 - gamma), max(high, 0.0) / (1.0 - gamma)


class HERLearner(pl.LightningModule):
    """What every learner shares (see the module's docstring for the protocol); not trained itself.

    A subclass validates its own options, calls ``save_hyperparameters()`` and then ``build_if_sized()``, and
    implements ``build_networks``, ``configure_optimizers``, ``update``, ``health``, ``exploring_policy``,
    ``policy``, ``policy_network``, ``q_values`` and ``epoch_scalars``. Its ``update`` returns a ``NamedTuple`` of
    0-d tensors; the chunk loop sums them field by field on the device and reads them once per chunk.

    Args:
        obs_dim, goal_dim, action_dim: Sizes; ``None`` (all three): the datamodule's, taken in ``configure_model``.
        hidden: Hidden layer widths of the networks.
        gamma: Discount factor.
        tau: Polyak rate of the target networks.
        normalize_inputs: Normalize observations and goals with running statistics (saved with the weights).
        norm_clip: Normalized inputs are clipped to ``[-norm_clip, norm_clip]``.
        clip_target: Clip TD targets to the returns ``reward_range`` allows.
        reward_range: ``(low, high)`` of the env's per-step reward where known; ``None``: the datamodule's.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    UPDATE_STREAM: ClassVar[str] = "update"  # the name the update's random stream is seeded from
    DISCRETE: ClassVar[bool] = False  # whether it acts in discrete action spaces (else in continuous ones)
    VALUE_LR: ClassVar[str] = "critic_lr"  # the option that steadies a diverging value estimate

    def __init__(
        self,
        obs_dim: int | None,
        goal_dim: int | None,
        action_dim: int | None,
        hidden: Sequence[int],
        gamma: float,
        tau: float,
        normalize_inputs: bool,
        norm_clip: float,
        clip_target: bool,
        reward_range: tuple[float, float] | None,
    ) -> None:
        super().__init__()
        if type(self) is HERLearner:
            learners = " or ".join(f"her_lightning.{cls.__name__}" for cls in _subclasses(HERLearner))
            raise ValueError(f"HERLearner is what learners share, not a learner: set model.class_path to {learners}")
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
        check_number("norm_clip", norm_clip, 0, low_open=True)
        check_number("gamma", gamma, 0, 1)
        check_number("tau", tau, 0, 1, low_open=True, note="at 0 the target networks never move")
        for i, bound in enumerate(reward_range or ()):
            check_number(f"reward_range[{i}]", bound)
        if clip_target and gamma >= 1.0:
            raise ValueError(f"clip_target needs gamma < 1 (the bounds are divided by 1 - gamma), got gamma={gamma}")
        self.automatic_optimization = False
        self.built = False
        self.obs_normalizer: RunningNormalizer | None = None
        self.goal_normalizer: RunningNormalizer | None = None
        self._generator: torch.Generator | None = None  # the update's random stream, made on the training device
        self._generator_state: torch.Tensor | None = None  # from a checkpoint, applied when the stream is made
        self.updates = 0
        self._update_stats: Any = None  # the epoch's sums
        self._updates_in_epoch = 0
        self._epoch_start = time.perf_counter()
        self._last_batch: HERBatch | None = None

    def build_if_sized(self) -> None:
        """Build now where the sizes were given (the subclass calls this at the end of its ``__init__``)."""
        if self.sized():
            hp = self.hparams
            self._build(hp.obs_dim, hp.goal_dim, hp.action_dim, hp.reward_range)

    def sized(self) -> bool:
        """Whether the hyper-parameters hold every size the networks need."""
        return self.hparams.obs_dim is not None

    def take_sizes(self, data: Any) -> None:
        """Record the datamodule's sizes, and its ``reward_range`` where none was given, in ``hparams``."""
        reward_range = data.reward_range if self.hparams.reward_range is None else self.hparams.reward_range
        self.hparams.update(
            obs_dim=data.obs_dim, goal_dim=data.goal_dim, action_dim=data.action_dim, reward_range=reward_range
        )

    def check_action_space(self, data: Any) -> None:
        """Refuse a datamodule whose env acts in the other kind of action space (discrete or continuous).

        Raises:
            ValueError: Naming the env, its action space and the learners that take it.
        """
        discrete = getattr(data, "num_actions", None) is not None
        if discrete == self.DISCRETE:
            return
        takers = [f"her_lightning.{cls.__name__}" for cls in _subclasses(HERLearner) if cls.DISCRETE == discrete]
        kind = f"{data.num_actions} discrete actions" if discrete else "continuous actions"
        raise ValueError(
            f"env id={data.env_config.id!r} has {kind}, which {type(self).__name__} cannot take: "
            f"set model.class_path to {' or '.join(takers)}"
        )

    def setup(self, stage: str) -> None:
        if self.trainer.datamodule is not None:
            self.check_action_space(self.trainer.datamodule)

    def _build(self, obs_dim: int, goal_dim: int, action_dim: int, reward_range: tuple[float, float] | None) -> None:
        """The input statistics, the bounds of attainable values and the learner's networks, for these sizes.

        Raises:
            ValueError: If ``clip_target`` is set and ``reward_range`` is ``None``.
        """
        hp = self.hparams
        if hp.clip_target and reward_range is None:
            raise ValueError(
                "clip_target needs the env's reward range, which only a sparse reward has (reward_range is None)"
            )
        self.build_networks(obs_dim, goal_dim, action_dim)
        # Networks see normalized inputs; the statistics are buffers, saved with the weights.
        self.obs_normalizer = RunningNormalizer(obs_dim, hp.norm_clip) if hp.normalize_inputs else None
        self.goal_normalizer = RunningNormalizer(goal_dim, hp.norm_clip) if hp.normalize_inputs else None
        attainable = value_range(reward_range, hp.gamma) if reward_range is not None and hp.gamma < 1.0 else None
        self._value_range = attainable if hp.clip_target else None  # with clip_target, gamma < 1 and a reward range
        self._value_watch = health.ValueRangeWatch(attainable)
        self.built = True

    def build_networks(self, obs_dim: int, goal_dim: int, action_dim: int) -> None:
        """Make the learner's networks and their targets."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Build the networks with the trainer's datamodule's sizes where ``__init__`` was given none.

        Lightning calls this hook before it restores a checkpoint's state. The sizes, and the datamodule's
        ``reward_range`` where none was given, are recorded in ``hparams`` (and so in checkpoints).

        Raises:
            ValueError: If the networks need sizes and the trainer has no datamodule to take them from.
        """
        if self.built:
            return
        data = self.trainer.datamodule
        if data is None:
            raise ValueError(
                f"{type(self).__name__}() without its sizes takes them from the datamodule: "
                "call trainer.fit(model, datamodule=...), or give the sizes"
            )
        self.take_sizes(data)
        hp = self.hparams
        self._build(hp.obs_dim, hp.goal_dim, hp.action_dim, hp.reward_range)

    # The protocol's acting side.

    def exploring_policy(self, generator: torch.Generator) -> Policy:
        """The policy collection plays: the learner's latest policy with its exploration, drawn from ``generator``."""
        raise NotImplementedError

    def random_policy(self, generator: torch.Generator) -> Policy:
        """Uniformly random actions, drawn from ``generator``: the random warm-up."""
        return uniform_policy(self.hparams.action_dim, generator)

    def policy(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The trained policy, deterministic, on raw observations and goals: what evaluation plays."""
        raise NotImplementedError

    def policy_network(self) -> nn.Module:
        """The trained policy as a module of normalized ``(observation, goal)``: what ``export`` writes."""
        raise NotImplementedError

    @property
    def policy_name(self) -> str:
        """Which of the learner's networks ``policy_network`` is, as exported metadata and test reports name it."""
        raise NotImplementedError

    def q_values(self) -> torch.Tensor | None:
        """Values of the last batch trained on, ``(batch_size,)``; ``None`` before the first update."""
        raise NotImplementedError

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

    def normalize_inputs(self, observation: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw observations and goals as the networks see them."""
        if self.obs_normalizer is None:
            return observation, goal
        return self.obs_normalizer(observation), self.goal_normalizer(goal)

    def normalize(self, batch: HERBatch) -> HERBatch:
        """The batch as the networks see it: observations and goals normalized when ``normalize_inputs`` is on."""
        if self.obs_normalizer is None:
            return batch
        return batch._replace(
            observation=self.obs_normalizer(batch.observation),
            goal=self.goal_normalizer(batch.goal),
            next_observation=self.obs_normalizer(batch.next_observation),
        )

    # The protocol's training side.

    def update(
        self, batch: HERBatch, *optimizers: torch.optim.Optimizer, backward: Callable = torch.Tensor.backward
    ) -> Any:
        """One update on ``batch``; returns its statistics (a ``NamedTuple`` of 0-d tensors that adds up).

        ``backward`` is Lightning's ``manual_backward`` in training; the default plain ``backward`` lets the same
        step run without a Trainer (benchmarks).
        """
        raise NotImplementedError

    def health(self, sums: Any) -> tuple[dict[str, float], dict[str, list[nn.Module]], dict[str, float]]:
        """The chunk's summed losses by network, each network's modules and each network's learning rate, for
        ``health.stop_if_not_finite``."""
        raise NotImplementedError

    def epoch_scalars(self, sums: Any, updates: int) -> dict[str, float]:
        """The scalars logged at the end of an epoch from the sums of its ``updates`` updates."""
        raise NotImplementedError

    def training_step(self, chunk: HERBatch, batch_idx: int) -> None:
        """One ``update`` per batch of the chunk (fields ``(K, batch_size, ...)``, see ``HERDataset``).

        The statistics are summed on the device and logged once per epoch (a per-step ``self.log`` costs more
        than the update); a chunk whose losses are not finite stops the run before anything is evaluated,
        logged or checkpointed (``health.stop_if_not_finite``).
        """
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        stats = self._update_stats
        for batch in _batches(chunk):
            step_stats = self.update(batch, *optimizers, backward=self.manual_backward)
            stats = step_stats if stats is None else _add(stats, step_stats)
        self._update_stats = stats
        self._updates_in_epoch += chunk.reward.shape[0]
        self._last_batch = batch
        losses, networks, learning_rates = self.health(stats)
        health.stop_if_not_finite(
            losses, networks, learning_rates, (self.updates - self._updates_in_epoch + 1, self.updates)
        )

    def update_stream(self, like: torch.Tensor) -> torch.Generator:
        """The update's random stream, made on first use on the training device (restored on resume)."""
        if self._generator is None:
            self._generator = make_generator(run_seed(), self.UPDATE_STREAM, like.device)
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
        sums = type(self._update_stats)(*torch.stack(list(self._update_stats)).tolist())
        scalars = self.epoch_scalars(sums, self._updates_in_epoch)
        scalars["perf/updates_per_s"] = self._updates_in_epoch / (time.perf_counter() - self._epoch_start)
        warning = self._value_watch.check(
            scalars["train/q_mean"], self.updates, self.VALUE_LR, self.hparams[self.VALUE_LR]
        )
        if warning is not None:
            rank_zero_warn(warning)
        self._update_stats, self._updates_in_epoch = None, 0
        monitor.log_scalars(self.trainer, scalars, self.updates)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[checkpoint_format.FORMAT_KEY] = checkpoint_format.FORMAT  # the learner is in every checkpoint
        checkpoint[LEARNER_KEY] = type(self).__name__
        checkpoint["counters"] = {"updates": self.updates}
        if self._generator is not None:
            checkpoint["update_generator"] = self._generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another format or learner (the first hook that sees it, before any state is
        loaded).

        Raises:
            CheckpointError: Naming the checkpoint's format and the one this version reads, or its learner.
        """
        mismatch = checkpoint_format.format_mismatch(checkpoint)
        if mismatch is None and learner_name(checkpoint) != type(self).__name__:
            mismatch = f"it was trained by {learner_name(checkpoint)}, not {type(self).__name__}"
        if mismatch is not None:
            raise checkpoint_format.CheckpointError(f"the checkpoint cannot be loaded: {mismatch}")
        self.updates = checkpoint.get("counters", {}).get("updates", 0)
        self._generator_state = checkpoint.get("update_generator", checkpoint.get("target_noise_generator"))
        self._generator = None


def _batches(chunk: HERBatch) -> Iterator[HERBatch]:
    """The batches of a chunk whose fields are ``(K, batch_size, ...)``."""
    for i in range(chunk.reward.shape[0]):
        yield HERBatch(*(field[i] for field in chunk))


def _add(sums: NamedTuple, more: NamedTuple) -> NamedTuple:
    """Two statistics of one kind added field by field."""
    return type(sums)(*(mine + theirs for mine, theirs in zip(sums, more, strict=True)))


def learner_name(checkpoint: Mapping[str, Any]) -> str:
    """The class name of the learner that wrote a checkpoint."""
    return checkpoint.get(LEARNER_KEY, DEFAULT_LEARNER)


def learner_class(checkpoint: Mapping[str, Any]) -> type[HERLearner]:
    """The learner class that wrote a checkpoint.

    Raises:
        CheckpointError: If it names a learner this version does not have.
    """
    import her_lightning  # noqa: F401  (defines every learner)

    name = learner_name(checkpoint)
    known = {cls.__name__: cls for cls in _subclasses(HERLearner)}
    if name not in known:
        raise checkpoint_format.CheckpointError(
            f"the checkpoint was trained by learner {name!r}, which this version lacks: it has {sorted(known)}"
        )
    return known[name]


def learner_from_checkpoint(contents: Mapping[str, Any]) -> HERLearner:
    """The learner of a checkpoint (see ``checkpoint.read_checkpoint``), with its weights, on the CPU, in eval mode."""
    learner = learner_class(contents)
    module = learner(**checkpoint_format.learner_settings(learner, contents["hyper_parameters"]))
    module.load_state_dict(contents["state_dict"])
    return module.eval().requires_grad_(False)


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in [direct, *_subclasses(direct)]]
