"""Hindsight Experience Replay: relabel sampled transitions with goals the episode actually achieved.

Andrychowicz et al., "Hindsight Experience Replay", NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

import torch

from her_lightning.buffer import EpisodeBuffer
from her_lightning.options import check_number

GoalFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Maps ``(achieved_goal (B, goal_dim), desired_goal (B, goal_dim))`` to one value per row ``(B,)``."""


class GoalStrategy(StrEnum):
    """Where a relabelled goal comes from; always an achieved goal of the same episode.

    Goals are achieved goals *after* an action (states ``1..L`` of an episode of
    ``L`` transitions); the start state is never a goal.
    """

    future = "future"  # a state after the transition, the transition's own next state included
    final = "final"  # the episode's last state
    episode = "episode"  # any state of the episode after the start, the past included


class HERBatch(NamedTuple):
    """A batch of relabelled transitions; the goal is the same for both states."""

    observation: torch.Tensor  # (B, obs_dim)
    goal: torch.Tensor  # (B, goal_dim)
    action: torch.Tensor  # (B, action_dim)
    reward: torch.Tensor  # (B,)
    next_observation: torch.Tensor  # (B, obs_dim)
    terminal: torch.Tensor  # (B,) float, 1.0 where the next state ends the episode under the goal


class HERSampler:
    """Samples transitions from a buffer, uniformly or favouring the episodes that displaced their achieved goal, and
    relabels a fraction of their goals.

    Rewards and terminals are recomputed for every sampled transition, relabelled
    or not, from the next achieved goal and the (new) goal, with the task's own
    functions. A time-limit truncation is never a terminal. A transition is
    terminal if the task ends episodes on success and its next state satisfies
    the goal, or if it is the last of an episode that the env ended for another
    reason (a failure): that end does not depend on the goal, so it stays
    terminal under every relabelled goal. Sampling reads the buffer and never
    writes to it.

    An episode *displaced its achieved goal* when its last achieved goal does not
    satisfy its first (the task's own success test): its relabelled goals
    include places it moved the goal's object to. Where that object is one the
    agent must first reach (a Fetch block), most early episodes never touch it:
    their relabelled goals are where it already lay and teach nothing about
    moving it. ``displaced_share`` draws that share of every batch from the
    displacing episodes (uniformly over their transitions) and the rest
    uniformly from all; while none is stored, the whole batch uniformly.

    ``other_goal_share`` of the relabelled goals come from other episodes instead
    of the strategy: the achieved goal after a uniformly drawn stored transition
    (any episode's, this one's included, never a start state). mrl's "future +
    actual" relabelling mixes goals so; such goals are mostly ones this episode
    did not reach, where future goals are all reached.

    Args:
        buffer: The episodes to sample from.
        compute_reward: The task's vectorized reward function.
        is_success: The task's vectorized success test.
        terminate_on_success: Whether reaching the goal ends an episode in this task.
        strategy: Where relabelled goals come from.
        her_ratio: Probability that a sampled transition's goal is relabelled.
        generator: The sampling stream.
        displaced_share: Share of each batch drawn from the episodes that displaced their achieved goal; 0 samples
            uniformly.
        other_goal_share: Share of the relabelled goals taken from any stored episode's achieved goals.

    Raises:
        ValueError: If ``her_ratio``, ``displaced_share`` or ``other_goal_share`` is outside ``[0, 1]`` or
            ``strategy`` is unknown.
    """

    def __init__(
        self,
        buffer: EpisodeBuffer,
        compute_reward: GoalFn,
        is_success: GoalFn,
        terminate_on_success: bool,
        strategy: GoalStrategy | str = GoalStrategy.future,
        her_ratio: float = 0.8,
        generator: torch.Generator | None = None,
        displaced_share: float = 0.0,
        other_goal_share: float = 0.0,
    ) -> None:
        validate_her_options(strategy, her_ratio, displaced_share, other_goal_share)
        self.buffer = buffer
        self.compute_reward = compute_reward
        self.is_success = is_success
        self.terminate_on_success = terminate_on_success
        self.strategy = GoalStrategy(strategy)
        self.her_ratio = her_ratio
        self.displaced_share = displaced_share
        self.other_goal_share = other_goal_share
        self._displaced: tuple[int, torch.Tensor, torch.Tensor] | None = None  # buffer revision, _displaced_counts
        self.generator = generator if generator is not None else torch.Generator(buffer.device)

    def sample(self, batch_size: int, newest: int | None = None) -> HERBatch:
        """Draw ``batch_size`` transitions (uniformly over the stored ones, or ``displaced_share`` of them from the
        episodes that displaced their achieved goal) and relabel them.

        With ``newest``, only the ``newest`` most recently stored transitions are drawn from, uniformly.
        """
        buffer, device, g = self.buffer, self.buffer.device, self.generator
        if buffer.num_transitions == 0:
            raise RuntimeError("cannot sample from an empty episode buffer: collect episodes first")
        older = buffer.num_transitions - min(newest, buffer.num_transitions) if newest is not None else 0
        flat = older + torch.randint(buffer.num_transitions - older, (batch_size,), generator=g, device=device)
        if self.displaced_share > 0 and newest is None:
            flat = self._favour_displaced(flat)
        u_relabel, u_goal = torch.rand(2, batch_size, generator=g, device=device)
        index = buffer.locate(flat)
        next_row = (index.row + 1) % buffer.capacity
        goal_step = self._goal_step(index.t, index.length, u_goal)
        goal_row = (index.start + goal_step) % buffer.capacity
        if self.other_goal_share > 0:
            goal_row = self._mix_other_goals(goal_row)
        relabel = (u_relabel < self.her_ratio).unsqueeze(-1)
        _, achieved, _ = buffer.split(buffer.rows.index_select(0, goal_row))  # whole rows: one contiguous gather each
        goal = torch.where(relabel, achieved, buffer.desired_goal.index_select(0, index.episode))

        observation, _, action = buffer.split(buffer.rows.index_select(0, index.row))
        next_observation, next_achieved, _ = buffer.split(buffer.rows.index_select(0, next_row))
        reward = self.compute_reward(next_achieved, goal)
        terminal = buffer.failed.index_select(0, index.episode) & (index.t == index.length - 1)
        if self.terminate_on_success:
            terminal |= self.is_success(next_achieved, goal)
        return HERBatch(observation, goal, action, reward, next_observation, terminal.to(reward.dtype))

    def _mix_other_goals(self, goal_row: torch.Tensor) -> torch.Tensor:
        """Replaces ``other_goal_share`` of the goal rows with the state after a uniformly drawn stored transition."""
        buffer, g = self.buffer, self.generator
        pick = torch.rand(goal_row.shape, generator=g, device=goal_row.device)
        other = torch.randint(buffer.num_transitions, goal_row.shape, generator=g, device=goal_row.device)
        other_row = (buffer.locate(other).row + 1) % buffer.capacity
        return torch.where(pick < self.other_goal_share, other_row, goal_row)

    def _favour_displaced(self, flat: torch.Tensor) -> torch.Tensor:
        """Replaces ``displaced_share`` of the transition numbers ``flat`` with ones drawn uniformly from the
        transitions of the episodes that displaced their achieved goal (none where no stored episode did)."""
        displaced_cumulative, still_before = self._displaced_counts()
        total = displaced_cumulative[-1]
        pick, u = torch.rand(2, flat.numel(), generator=self.generator, device=flat.device, dtype=torch.float64)
        k = torch.minimum((u * total).long(), total - 1)  # the k-th transition of the displacing episodes
        position = torch.searchsorted(displaced_cumulative, k, right=True)  # k < total: a stored episode
        return torch.where((pick < self.displaced_share) & (total > 0), k + still_before[position], flat)

    def _displaced_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per stored episode, oldest first: the transitions of the episodes that displaced their achieved goal,
        counted cumulatively, and those of the others up to it. The k-th transition of the displacing episodes is
        transition ``k + still_before[its episode]`` of all. Derived once per change of the buffer, not per batch:
        it is a pass over every stored episode."""
        buffer = self.buffer
        if self._displaced is None or self._displaced[0] != buffer.revision:
            cumulative = buffer.cumulative_transitions
            length = torch.diff(cumulative, prepend=cumulative.new_zeros(1))
            displaced_cumulative = torch.cumsum(length * displaced_goal(self.is_success, *buffer.goal_ends()), 0)
            self._displaced = (buffer.revision, displaced_cumulative, cumulative - displaced_cumulative)
        return self._displaced[1:]

    def _goal_step(self, t: torch.Tensor, length: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The state (1..length) of each episode whose achieved goal becomes the relabelled goal; ``u`` in [0, 1)."""
        if self.strategy is GoalStrategy.final:
            return length
        low = t + 1 if self.strategy is GoalStrategy.future else torch.ones_like(t)
        span = length - low + 1
        # The product can round up to ``span`` in float32; the minimum keeps the draw inside [low, length].
        return low + torch.minimum((u * span).long(), span - 1)


def displaced_goal(is_success: GoalFn, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Which episodes displaced their achieved goal: the ``last`` achieved goal does not satisfy the ``first``."""
    return ~is_success(last, first)


def validate_her_options(
    strategy: GoalStrategy | str, her_ratio: float, displaced_share: float = 0.0, other_goal_share: float = 0.0
) -> None:
    """Raise a ``ValueError`` naming the option if the HER settings are not allowed."""
    allowed = [s.value for s in GoalStrategy]
    if strategy not in allowed:
        raise ValueError(f"her_strategy={strategy!r} is unknown: choose one of {allowed}")
    for name, share in [("her_ratio", her_ratio), ("displaced_share", displaced_share),
                        ("other_goal_share", other_goal_share)]:
        check_number(name, share, 0, 1)
