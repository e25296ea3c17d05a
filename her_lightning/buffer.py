"""Whole episodes of variable length in preallocated ring storage."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from her_lightning.options import check_memory
from her_lightning.rollout import Episodes, episode_ends


class TransitionIndex(NamedTuple):
    """Where sampled transitions live: transition ``t`` of stored episode ``episode``."""

    episode: torch.Tensor  # (B,) long, slot in the episode table
    t: torch.Tensor  # (B,) long, in [0, length - 1]
    length: torch.Tensor  # (B,) long, the episode's number of transitions
    start: torch.Tensor  # (B,) long, storage row of the episode's first state
    row: torch.Tensor  # (B,) long, storage row of the state before the transition


class EpisodeBuffer:
    """A FIFO store of whole episodes, sampled uniformly over transitions.

    An episode of ``L`` transitions occupies ``L + 1`` consecutive rows of a ring
    (its final state is kept so that the last transition can bootstrap and can
    serve as a goal), so ``capacity`` counts stored states, not transitions.
    When a new episode does not fit, the oldest episodes are dropped whole and
    stop being samplable at once. All storage is allocated up front; nothing
    grows after construction.

    Args:
        capacity: Number of stored states (rows).
        obs_dim: Size of an observation.
        goal_dim: Size of a goal.
        action_dim: Size of an action.
        max_episode_steps: The longest episode that will be added.
        device: Where the storage lives.

    Raises:
        ValueError: If ``capacity`` cannot hold one episode of ``max_episode_steps``.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        max_episode_steps: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.check_holds_an_episode(capacity, max_episode_steps)
        self.check_fits(capacity, obs_dim, goal_dim, action_dim, device)
        self.capacity = capacity
        self.obs_dim, self.goal_dim, self.action_dim = obs_dim, goal_dim, action_dim
        self.max_episode_steps = max_episode_steps
        self.device = torch.device(device)
        max_episodes = capacity // 2  # every episode takes at least two rows
        # One row per state: [observation | achieved goal | action taken there]. Packed so that a sampled
        # transition's fields share cache lines, which keeps sampling cost flat as the buffer grows.
        self.rows = torch.zeros(capacity, obs_dim + goal_dim + action_dim, device=self.device)
        self.observation, self.achieved_goal, self.action = self.split(self.rows)
        # Per episode slot: [first storage row, number of transitions], gathered together when sampling.
        self.episode_span = torch.zeros(max_episodes, 2, dtype=torch.long, device=self.device)
        self.episode_start, self.episode_length = self.episode_span.unbind(-1)
        self.desired_goal = torch.zeros(max_episodes, goal_dim, device=self.device)
        # Ended by the env without reaching the goal (a failure): the last transition is terminal under any goal.
        self.failed = torch.zeros(max_episodes, dtype=torch.bool, device=self.device)
        self._next_row = 0  # where the next episode starts
        self._oldest = 0  # slot of the oldest stored episode
        self._num_episodes = 0
        self._num_rows = 0
        # Cumulative transition counts of the stored episodes, oldest first: what sampling searches.
        self._cum_transitions = torch.zeros(0, dtype=torch.long, device=self.device)
        self.revision = 0  # changes whenever the stored episodes do: what samplers key what they derive on

    @staticmethod
    def storage_bytes(capacity: int, obs_dim: int, goal_dim: int, action_dim: int) -> int:
        """Bytes that a buffer of ``capacity`` states takes: its rows, and per episode slot (one per two rows) the
        span, desired goal and failure flag, and the cumulative transition count that sampling searches."""
        row = (obs_dim + goal_dim + action_dim) * torch.get_default_dtype().itemsize
        slot = 3 * torch.long.itemsize + goal_dim * torch.get_default_dtype().itemsize + torch.bool.itemsize
        return capacity * row + capacity // 2 * slot

    @staticmethod
    def check_holds_an_episode(capacity: int, max_episode_steps: int) -> None:
        """Refuse a ``capacity`` that cannot hold one episode of ``max_episode_steps`` transitions.

        Raises:
            ValueError: Naming ``buffer_size`` and the least it must be.
        """
        if capacity < max_episode_steps + 1:
            raise ValueError(
                f"buffer_size={capacity} is invalid: must hold at least one whole episode, "
                f"i.e. max_episode_steps + 1 = {max_episode_steps + 1} states"
            )

    @classmethod
    def check_fits(
        cls, capacity: int, obs_dim: int, goal_dim: int, action_dim: int, device: torch.device | str
    ) -> None:
        """Refuse, before allocating, a ``capacity`` whose storage does not fit in ``device``'s available memory.

        Raises:
            ValueError: Naming ``buffer_size``, the bytes it needs and the bytes available.
        """
        needed = cls.storage_bytes(capacity, obs_dim, goal_dim, action_dim)
        check_memory("buffer_size", capacity, needed, device, "the episode buffer")

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of packed rows ``(..., obs + goal + action)`` as (observation, achieved goal, action)."""
        return torch.split(rows, [self.obs_dim, self.goal_dim, self.action_dim], dim=-1)

    @property
    def num_episodes(self) -> int:
        return self._num_episodes

    @property
    def num_transitions(self) -> int:
        return self._num_rows - self._num_episodes

    def __len__(self) -> int:
        return self.num_transitions

    def add(self, episodes: Episodes) -> None:
        """Store a batch of finished episodes, dropping the oldest ones that no longer fit."""
        length = episodes.length.to(self.device)
        n = length.numel()
        if n == 0:
            return
        if int(length.max()) > self.max_episode_steps or int(length.min()) < 1:
            raise ValueError(
                f"episode lengths must be in [1, {self.max_episode_steps}], got {length.min()}..{length.max()}"
            )
        rows_per_episode = length + 1
        # Only the newest episodes that fit are kept, in case one batch exceeds the capacity.
        from_newest = rows_per_episode.flip(0).cumsum(0).flip(0)
        keep = from_newest <= self.capacity
        length, rows_per_episode = length[keep], rows_per_episode[keep]
        new_rows = int(rows_per_episode.sum())
        self._evict(new_rows)

        valid = episodes.valid_states.to(self.device)[keep]  # (n, T + 1)
        rows = (self._next_row + torch.arange(new_rows, device=self.device)) % self.capacity
        padded_action = torch.nn.functional.pad(episodes.action.to(self.device)[keep], (0, 0, 0, 1))
        self.observation[rows] = episodes.observation.to(self.device)[keep][valid]
        self.achieved_goal[rows] = episodes.achieved_goal.to(self.device)[keep][valid]
        self.action[rows] = padded_action[valid]

        kept = length.numel()
        max_episodes = self.episode_start.numel()
        slots = (self._oldest + self._num_episodes + torch.arange(kept, device=self.device)) % max_episodes
        starts = self._next_row + torch.cumsum(rows_per_episode, 0) - rows_per_episode
        self.episode_start[slots] = starts % self.capacity
        self.episode_length[slots] = length
        self.desired_goal[slots] = episodes.desired_goal.to(self.device)[keep]
        self.failed[slots] = (episodes.terminated & ~episodes.success).to(self.device)[keep]
        self._next_row = (self._next_row + new_rows) % self.capacity
        self._num_rows += new_rows
        self._num_episodes += kept
        self._reindex()

    def achieved_goal_spread(self, max_rows: int = 65536) -> float:
        """Mean over goal dimensions of the standard deviation of the stored achieved goals (0.0 when empty).

        Near 0 when the experience has collapsed onto a point (an agent stuck in a corner or against a wall),
        which HER cannot relabel its way out of. Computed on an evenly strided subset of at most ``max_rows``
        states, so that it costs the same for any buffer size and draws no random numbers.
        """
        if self._num_rows < 2:
            return 0.0
        stride = -(-self._num_rows // max_rows)
        first = int(self.episode_start[self._oldest])
        rows = (first + torch.arange(0, self._num_rows, stride, device=self.device)) % self.capacity
        return float(self.achieved_goal[rows].std(dim=0).mean())

    def goal_ends(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first and the last achieved goal of every stored episode, oldest first: ``(num_episodes, goal_dim)``
        each."""
        start, length = self.episode_span.index_select(0, self._fifo_slots()).unbind(-1)
        return episode_ends(self.achieved_goal, start, length)

    @property
    def cumulative_transitions(self) -> torch.Tensor:
        """Transitions of the stored episodes counted cumulatively, oldest first: the numbering ``locate`` maps."""
        return self._cum_transitions

    def locate(self, flat: torch.Tensor) -> TransitionIndex:
        """Map transition numbers in ``[0, num_transitions)`` (oldest first) to their storage."""
        position = torch.searchsorted(self._cum_transitions, flat, right=True)
        episode = (self._oldest + position) % self.episode_span.shape[0]
        start, length = self.episode_span.index_select(0, episode).unbind(-1)
        t = flat - (self._cum_transitions.index_select(0, position) - length)
        return TransitionIndex(episode, t, length, start, (start + t) % self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """The stored episodes, oldest first, as plain tensors (only the rows in use)."""
        rows = self._rows_in_order()
        order = self._fifo_slots()
        return {
            "capacity": self.capacity,
            "observation": self.observation[rows].cpu(),
            "achieved_goal": self.achieved_goal[rows].cpu(),
            "action": self.action[rows].cpu(),
            "episode_length": self.episode_length[order].cpu(),
            "desired_goal": self.desired_goal[order].cpu(),
            "failed": self.failed[order].cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with a saved state (stored compactly, from row 0)."""
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"buffer_size={self.capacity} does not match the checkpoint's buffer_size={state['capacity']}"
            )
        num_rows = state["observation"].shape[0]
        length = state["episode_length"].to(self.device)
        self.observation[:num_rows] = state["observation"].to(self.device)
        self.achieved_goal[:num_rows] = state["achieved_goal"].to(self.device)
        self.action[:num_rows] = state["action"].to(self.device)
        n = length.numel()
        self.episode_start[:n] = torch.cumsum(length + 1, 0) - (length + 1)
        self.episode_length[:n] = length
        self.desired_goal[:n] = state["desired_goal"].to(self.device)
        self.failed[:n] = state["failed"].to(self.device)
        self._next_row = num_rows % self.capacity
        self._oldest = 0
        self._num_episodes = n
        self._num_rows = num_rows
        self._reindex()

    def _evict(self, new_rows: int) -> None:
        """Drop the oldest episodes until ``new_rows`` rows are free."""
        overflow = self._num_rows + new_rows - self.capacity
        if overflow <= 0:
            return
        rows_of_oldest = self.episode_length[self._fifo_slots()] + 1
        dropped = int(torch.searchsorted(torch.cumsum(rows_of_oldest, 0), overflow)) + 1
        self._num_rows -= int(rows_of_oldest[:dropped].sum())
        self._num_episodes -= dropped
        self._oldest = (self._oldest + dropped) % self.episode_start.numel()

    def _fifo_slots(self) -> torch.Tensor:
        """Slots of the stored episodes, oldest first."""
        slots = self._oldest + torch.arange(self._num_episodes, device=self.device)
        return slots % self.episode_span.shape[0]

    def _reindex(self) -> None:
        self._cum_transitions = torch.cumsum(self.episode_length[self._fifo_slots()], 0)
        self.revision += 1

    def _rows_in_order(self) -> torch.Tensor:
        first = int(self.episode_start[self._oldest]) if self._num_episodes else 0
        return (first + torch.arange(self._num_rows, device=self.device)) % self.capacity
