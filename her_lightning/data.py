"""The experience side of training: the task, the episode buffer, the HER sampler and the batches Lightning sees."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset

from her_lightning.buffer import EpisodeBuffer
from her_lightning.checkpoint import DATA_STATE, plain_values
from her_lightning.conventions import check_episodes, ends_on_success
from her_lightning.distributed import gather_rank_states, rank_stream, select_rank_state, sum_over_ranks
from her_lightning.envs import GoalEnv, close_env, make_env
from her_lightning.her import GoalStrategy, HERBatch, HERSampler, displaced_goal, validate_her_options
from her_lightning.options import check_number, check_seed
from her_lightning.rng import derive_seed, make_generator, run_seed
from her_lightning.rollout import Episodes, Policy, rollout

# The data.env.kwargs key that, left out, is found from the collected episodes (``HERDataModule.collect``).
TERMINATE_ON_SUCCESS = "terminate_on_success"
# Key of the datamodule's checkpoint state: whether the episodes showed the env ending them on the goal.
FOUND_TERMINATE_ON_SUCCESS = "found_terminate_on_success"
# Lightning warns that a dataset length can be wrong with several loader workers; batches are drawn in-process.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")


@dataclass
class EnvConfig:
    """Which task to train on.

    Attributes:
        id: The task: ``point2d`` (built in), or a registered Gymnasium goal env such as
            ``FetchReach-v4`` (``module:Id`` imports ``module`` first).
        num_envs: Episodes collected at once (one batched env step advances all of them).
        kwargs: Extra keyword arguments for the task's constructor (for a Gymnasium env: ``gymnasium.make``'s,
            and the adapter's ``vectorization_mode``, ``terminate_on_success``, ``success_key``,
            ``success_threshold`` and ``success_fn``; see ``GymnasiumGoalEnv``). A Gymnasium env's
            ``terminate_on_success`` left out is taken as true once collected episodes show the env ending them
            on reaching the goal (``HERDataModule.collect``).
    """

    id: str = "point2d"
    num_envs: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)


class HERDataset(IterableDataset):
    """An epoch's HER-relabelled batches, handed to Lightning a chunk of several batches at a time.

    Each item is a ``HERBatch`` whose fields have a leading chunk dimension,
    ``(K, batch_size, ...)``: ``K`` batches drawn in one sampler call (up to
    ``MAX_CHUNK_TRANSITIONS`` transitions), on which the module takes ``K``
    gradient steps. The buffer does not change during an epoch, so this is
    the same distribution as drawing batch by batch, at a fraction of the
    sampling cost, and Lightning's per-item cost (hooks, progress, logging) is
    paid once per chunk instead of once per update.

    It has a length so that Lightning knows when an epoch ends without
    fetching an item ahead: every batch is sampled after the epoch's episodes
    were collected, and none is drawn that is not trained on.
    """

    MAX_CHUNK_TRANSITIONS = 65_536

    def __init__(self, sampler: HERSampler, batch_size: int, batches_per_epoch: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.batches_per_chunk = max(1, self.MAX_CHUNK_TRANSITIONS // batch_size)

    def __len__(self) -> int:
        return math.ceil(self.batches_per_epoch / self.batches_per_chunk)

    def __iter__(self) -> Iterator[HERBatch]:
        remaining = self.batches_per_epoch
        while remaining > 0:
            count = min(self.batches_per_chunk, remaining)
            chunk = self.sampler.sample(self.batch_size * count)
            yield HERBatch(*(field.view(count, self.batch_size, *field.shape[1:]) for field in chunk))
            remaining -= count


class Collection(NamedTuple):
    """What one round of collection stored, the inputs it adds to the networks' input statistics, and what is logged
    of it."""

    episodes: list[Episodes]  # the batches played, each checked and stored
    observations: torch.Tensor  # (M, obs_dim) every state of those episodes
    goals: torch.Tensor  # (K, goal_dim) goals as training draws them: HER-relabelled, from the new transitions
    env_steps: int  # transitions played in this round, over all DDP ranks
    stored: int  # transitions in the buffer after this round, over all DDP ranks
    displaced: list[torch.Tensor]  # per batch played, (N,) bool: the episode's last achieved goal misses its first
    achieved_goal_spread: float  # of the buffer after this round (``EpisodeBuffer.achieved_goal_spread``)
    total_env_steps: int  # ``HERDataModule.env_steps`` after this round: the x-axis of episode metrics


class HERDataModule(pl.LightningDataModule):
    """Owns the experience: the task's envs, the episode buffer, the HER sampler and the counters of what was played.

    ``collect`` plays, checks and stores episodes and advances ``env_steps`` and
    ``episodes`` (counted over all DDP ranks); ``train_dataloader`` serves HER
    batches from the buffer; ``make_env`` makes further envs of the task (the ``Evaluator``'s). The
    buffer lives on the training device, so batches need no transfer.

    Args:
        env: The task and how many of its episodes run at once.
        buffer_size: Stored states kept in the episode buffer (an episode of
            ``L`` steps takes ``L + 1``); the oldest episodes are dropped first.
        batch_size: Transitions per gradient step.
        batches_per_epoch: Gradient steps per epoch (one epoch = one collection round).
        her_strategy: Where relabelled goals come from: ``future``, ``final`` or ``episode``.
        her_ratio: Probability that a sampled transition's goal is relabelled.
        displaced_share: Share of each training batch drawn from the episodes that displaced their achieved goal
            (their last achieved goal does not satisfy their first), the rest uniformly from all; 0 samples
            uniformly. See ``HERSampler``.
        other_goal_share: Share of the relabelled goals taken from the achieved goals of any stored episode
            instead of ``her_strategy``'s (mrl's "future + actual" mix); 0: all from ``her_strategy``. See
            ``HERSampler``.
        eval_episodes: Episodes per deterministic evaluation (played by the ``Evaluator``).
        eval_envs: Copies of the env that play them side by side, in rounds; ``None``: all at once. Fewer copies
            hold less memory (a panda-gym copy holds about 110 MB of PyBullet state).
        seed: Seed of the env, sampler and evaluation streams; ``None`` takes the run's ``seed_everything``
            (``lightning.seed_everything`` in the Python API; 0 where it was not called).
        save_buffer: Whether checkpoints hold the episode buffer. Without it a
            checkpoint is much smaller, and a resumed run refills the buffer with
            warm-up episodes before training on.

    Raises:
        ValueError: If an option is out of range; the message names it.
    """

    def __init__(
        self,
        env: EnvConfig | None = None,
        buffer_size: int = 1_000_000,
        batch_size: int = 256,
        batches_per_epoch: int = 20,
        her_strategy: GoalStrategy = GoalStrategy.future,
        her_ratio: float = 0.8,
        eval_episodes: int = 100,
        seed: int | None = None,
        save_buffer: bool = True,
        eval_envs: int | None = None,
        displaced_share: float = 0.0,
        other_goal_share: float = 0.0,
    ) -> None:
        super().__init__()
        self.env_config = env if env is not None else EnvConfig()
        for name, value in [
            ("env.num_envs", self.env_config.num_envs),
            ("buffer_size", buffer_size),
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("eval_episodes", eval_episodes),
            ("eval_envs", 1 if eval_envs is None else eval_envs),
        ]:
            check_number(name, value, 1, integer=True)
        if seed is not None:
            check_seed("seed", seed)
        validate_her_options(her_strategy, her_ratio, displaced_share, other_goal_share)
        probe = make_env(self.env_config.id, 1, 0, **self.env_config.kwargs)
        self.obs_dim, self.goal_dim, self.action_dim = probe.obs_dim, probe.goal_dim, probe.action_dim
        self.num_actions: int | None = getattr(probe, "num_actions", None)  # a discrete action space's size
        self.max_episode_steps = probe.max_episode_steps
        self.reward_range = probe.reward_range
        self.action_low, self.action_high = probe.action_low, probe.action_high
        close_env(probe)
        EpisodeBuffer.check_holds_an_episode(buffer_size, self.max_episode_steps)
        if batch_size > buffer_size:
            raise ValueError(
                f"batch_size={batch_size} is invalid: must be at most buffer_size={buffer_size} "
                "(a batch draws transitions from the buffer, and must fit in memory with the networks' activations)"
            )
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.her_strategy = GoalStrategy(her_strategy)
        self.her_ratio = her_ratio
        self.displaced_share = displaced_share
        self.other_goal_share = other_goal_share
        self.eval_episodes = eval_episodes
        self.eval_envs = min(eval_envs or eval_episodes, eval_episodes)
        self.seed = seed
        self.save_buffer = save_buffer
        # The settings go into checkpoints (``datamodule_hyper_parameters``) as plain values, which a checkpoint
        # loaded with weights_only holds: the CLI gives them so, a Python caller may give an EnvConfig and enums.
        # TensorBoard shows them through the CLI's ``resume.RunRecord``.
        self.save_hyperparameters(logger=False)
        self.hparams.update(plain_values({**self.hparams, "env": self.env_config}))
        self.env: GoalEnv | None = None
        self.buffer: EpisodeBuffer | None = None
        self.sampler: HERSampler | None = None
        self.goal_sampler: HERSampler | None = None  # its own stream: the training batches do not depend on it
        self.env_steps = 0  # transitions played into the buffer, warm-up included, over all ranks
        self.episodes = 0

    def setup(self, stage: str) -> None:
        if self.env is not None:
            return
        if self.seed is None:
            self.seed = self.hparams.seed = run_seed()  # the checkpoints record the seed the run took
        device = self.device
        self.env = self.make_env(self.env_config.num_envs, rank_stream("env"))  # under DDP, each rank's episodes
        self.buffer = EpisodeBuffer(
            self.buffer_size, self.obs_dim, self.goal_dim, self.action_dim, self.max_episode_steps, device
        )
        self.sampler, self.goal_sampler = (
            HERSampler(
                self.buffer,
                self.env.compute_reward,
                self.env.is_success,
                self.env.terminate_on_success,
                self.her_strategy,
                self.her_ratio,
                make_generator(self.seed, rank_stream(stream), device),
                displaced_share,
                self.other_goal_share,  # the goal statistics see goals as training draws them
            )
            for stream, displaced_share in (("sampler", self.displaced_share), ("goal_statistics", 0.0))
        )

    @property
    def device(self) -> torch.device:
        """The training device: envs, buffer and batches all live there."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    @property
    def stored_episodes(self) -> int:
        """Episodes in the buffer on this rank (0 before the first collection, or after a resume without one)."""
        return self.buffer.num_episodes

    def check_fits(self, device: torch.device) -> None:
        """Refuse a ``buffer_size`` whose episode buffer does not fit in ``device``'s available memory, before
        ``setup`` allocates it there.

        Raises:
            ValueError: Naming ``buffer_size``, the bytes it needs and the bytes available.
        """
        EpisodeBuffer.check_fits(self.buffer_size, self.obs_dim, self.goal_dim, self.action_dim, device)

    @property
    def env_id(self) -> str:
        """The task's id, as ``data.env.id`` names it."""
        return self.env_config.id

    def make_env(self, num_envs: int, stream: str, **overrides: Any) -> GoalEnv:
        """A new batch of ``num_envs`` episodes of the task on the training device, seeded from the run seed and
        ``stream``; ``overrides`` replace keyword arguments of the task's constructor (``render_mode``)."""
        cfg = self.env_config
        return make_env(cfg.id, num_envs, derive_seed(self.seed, stream), self.device, **{**cfg.kwargs, **overrides})

    def collect(self, policy: Policy, num_episodes: int, num_envs: int | None = None) -> Collection:
        """Play at least ``num_episodes`` episodes with ``policy``, check them, store them and count them.

        They are played ``env.num_envs`` at a time on the training env, or, with ``num_envs``, that many
        at a time on a fresh env of the run's ``warmup`` stream (closed after). Every batch is checked
        against the env's own labels first (``conventions.check_episodes``): a disagreement stops the run. Where
        the config left ``terminate_on_success`` out, the first episodes that show the env ending them on reaching
        the goal make it true for the rest of the run (``_take_terminate_on_success``).
        """
        env = self.env if num_envs is None else self.make_env(num_envs, rank_stream("warmup"))
        found = False  # whether these episodes showed that the env ends them on reaching the goal
        played = []
        for _ in range(math.ceil(num_episodes / env.num_envs)):
            episodes = rollout(env, policy)
            if self._shows_termination(env, episodes):
                env.terminate_on_success = found = True
            check_episodes(env, episodes, self.env_config.id)
            self.buffer.add(episodes)
            played.append(episodes)
        if env is not self.env:
            close_env(env)
        observations = torch.cat([episodes.observation[episodes.valid_states] for episodes in played])
        lengths = torch.cat([episodes.length for episodes in played])
        new_transitions = int(lengths.sum())
        goals = self.goal_sampler.sample(new_transitions, newest=new_transitions).goal
        counts = torch.tensor(
            [new_transitions, lengths.numel(), self.buffer.num_transitions, found], device=self.device
        )
        steps, done, stored, found_by = sum_over_ranks(counts).tolist()  # every rank's episodes
        if found_by:  # on every rank alike, so that all ranks label their batches alike
            self._take_terminate_on_success("seen in the episodes collected")
        self.env_steps += steps
        self.episodes += done
        displaced = [displaced_goal(self.env.is_success, *episodes.goal_ends) for episodes in played]
        spread = self.buffer.achieved_goal_spread()
        return Collection(played, observations, goals, steps, stored, displaced, spread, self.env_steps)

    def _shows_termination(self, env: GoalEnv, episodes: Episodes) -> bool:
        """Whether ``episodes`` show that ``env`` ends its episodes on reaching the goal, where the config left
        ``terminate_on_success`` out and the env does not say so itself."""
        unset = TERMINATE_ON_SUCCESS not in self.env_config.kwargs and not env.terminate_on_success
        return unset and ends_on_success(episodes)

    def _take_terminate_on_success(self, source: str) -> None:
        """Train on as if the config set ``terminate_on_success: true``: the training env's check and the samplers'
        terminals use it, and the task record holds it (checkpoints keep it for a resume, ``test`` and ``export``).

        Deliberate: an env given by id alone that ends its episodes on reaching the goal (Stable-Baselines3's
        BitFlippingEnv, PointMaze with ``continuing_task: false``) trains as Stable-Baselines3 trains it, without
        the setting; an explicit ``false`` is still refused by ``check_episodes``.
        """
        cfg = self.env_config
        self.env_config = replace(cfg, kwargs={**cfg.kwargs, TERMINATE_ON_SUCCESS: True})
        for user in (self.env, self.sampler, self.goal_sampler):
            user.terminate_on_success = True
        rank_zero_info(
            f"env {cfg.id} ends its episodes on reaching the goal ({source}): terminate_on_success is taken as true "
            "(data.env.kwargs.terminate_on_success: true would say so in the config)"
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(HERDataset(self.sampler, self.batch_size, self.batches_per_epoch), batch_size=None)

    @property
    def found_terminate_on_success(self) -> bool:
        """Whether the run took ``terminate_on_success`` as true from its episodes (``_take_terminate_on_success``):
        the task trained on has it, and the settings as given (``hparams.env``) leave it out."""
        return TERMINATE_ON_SUCCESS in self.env_config.kwargs and TERMINATE_ON_SUCCESS not in self.hparams.env["kwargs"]

    def task_record(self) -> dict[str, Any]:
        """What checkpoints record of the task beyond the data settings, for ``recorded_task``: the env's own action
        bounds (see ``GoalEnv``) and ``found_terminate_on_success``."""
        return {
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            FOUND_TERMINATE_ON_SUCCESS: self.found_terminate_on_success,
        }

    def state_dict(self) -> dict[str, Any]:
        """The random streams and, with ``save_buffer``, the stored episodes: tensors, numbers and strings only.

        Under DDP, every rank's (see ``distributed.gather_rank_states``). Beside them the ``counters`` and, under
        ``task``, the ``task_record`` (of which a resume takes ``found_terminate_on_success``).
        """
        state = {
            "env": self.env.state_dict(),
            "sampler_generator": self.sampler.generator.get_state(),
            "goal_sampler_generator": self.goal_sampler.generator.get_state(),
        }
        if self.save_buffer:
            state["buffer"] = self.buffer.state_dict()
        counters = {"env_steps": self.env_steps, "episodes": self.episodes}  # the same on every rank
        return {**gather_rank_states(state), "counters": counters, "task": self.task_record()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["task"][FOUND_TERMINATE_ON_SUCCESS] and TERMINATE_ON_SUCCESS not in self.env_config.kwargs:
            self._take_terminate_on_success("the checkpoint's run trained so")
        counters = state["counters"]
        self.env_steps, self.episodes = counters["env_steps"], counters["episodes"]
        state = select_rank_state(state, "episode buffer and random streams")
        self.env.load_state_dict(state["env"])
        self.sampler.generator.set_state(state["sampler_generator"])
        self.goal_sampler.generator.set_state(state["goal_sampler_generator"])
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        else:
            rank_zero_warn(
                "the checkpoint holds no episode buffer (it was saved with data.save_buffer: false): "
                "the buffer starts empty and is refilled with the collector's warm-up episodes"
            )


class RecordedTask(NamedTuple):
    """The task a checkpoint's run trained on (``recorded_task``): what ``her-lightning test`` and ``export`` read."""

    env: dict[str, Any]  # as the data settings' env (id, num_envs, kwargs), with terminate_on_success where found
    seed: int  # the data's seed: of the env, sampler and evaluation streams
    action_low: list[float]  # the env's own action bounds
    action_high: list[float]


def recorded_task(checkpoint: dict[str, Any]) -> RecordedTask:
    """The task of a checkpoint's run, from its data settings (``datamodule_hyper_parameters``) and the datamodule's
    ``task_record``."""
    settings = checkpoint[pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY]
    task = checkpoint[DATA_STATE]["task"]
    env = settings["env"]
    if task[FOUND_TERMINATE_ON_SUCCESS]:
        env = {**env, "kwargs": {**env["kwargs"], TERMINATE_ON_SUCCESS: True}}
    return RecordedTask(env, settings["seed"], task["action_low"], task["action_high"])
