"""Episode buffer: variable-length episodes, FIFO wrap-around, fixed storage, exact lookup."""

from __future__ import annotations

import pytest
import torch
from conftest import tagged_episodes

from her_lightning.buffer import EpisodeBuffer


def make_buffer(capacity: int, max_steps: int = 10) -> EpisodeBuffer:
    return EpisodeBuffer(capacity, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=max_steps)


def stored_transitions(buffer: EpisodeBuffer) -> list[tuple[int, int]]:
    """Every stored transition as (episode id, step), oldest first, read through ``locate``."""
    index = buffer.locate(torch.arange(buffer.num_transitions))
    assert torch.equal(buffer.observation[index.row][:, 1], index.t.float())
    return [tuple(map(int, row)) for row in buffer.observation[index.row]]


def test_episodes_are_stored_whole_with_their_final_state() -> None:
    buffer = make_buffer(100)
    buffer.add(tagged_episodes([3, 1, 5]))
    assert buffer.num_episodes == 3 and buffer.num_transitions == 9
    assert stored_transitions(buffer) == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4)]
    index = buffer.locate(torch.arange(9))
    next_state = buffer.achieved_goal[(index.row + 1) % buffer.capacity]
    assert next_state[:, 1].tolist() == [1, 2, 3, 1, 1, 2, 3, 4, 5]  # the last transition's next state is kept
    assert torch.equal(buffer.action[index.row], buffer.observation[index.row])
    assert buffer.desired_goal[index.episode][:, 1].eq(-1).all()


def test_wrap_around_drops_the_oldest_whole_episodes_and_never_grows() -> None:
    buffer = make_buffer(capacity=20)
    storage = [t.data_ptr() for t in (buffer.observation, buffer.achieved_goal, buffer.action)]
    buffer.add(tagged_episodes([4, 2], first_id=0))  # 5 + 3 rows
    buffer.add(tagged_episodes([6], first_id=2))  # 7 rows: 15 used
    buffer.add(tagged_episodes([3, 5], first_id=3))  # 4 + 6 rows: 5 too many, so episode 0 (5 rows) goes
    assert [k for k, _ in stored_transitions(buffer)] == [1] * 2 + [2] * 6 + [3] * 3 + [4] * 5
    assert buffer.num_episodes == 4 and buffer.num_transitions == 16
    # Episode 4 wraps past the end of the ring; its rows are still read in order.
    index = buffer.locate(torch.arange(11, 16))
    assert index.row.tolist() != sorted(index.row.tolist())
    assert buffer.observation[index.row][:, 1].tolist() == [0, 1, 2, 3, 4]
    assert [t.data_ptr() for t in (buffer.observation, buffer.achieved_goal, buffer.action)] == storage
    assert buffer.observation.shape[0] == 20


def test_many_wraps_keep_exactly_the_newest_episodes_that_fit() -> None:
    buffer = make_buffer(capacity=37)
    lengths = torch.randint(1, 11, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    for start in range(0, 200, 3):
        buffer.add(tagged_episodes(lengths[start : start + 3], first_id=start))
        newest = []
        rows = 0
        for k in range(min(start + 3, 200) - 1, -1, -1):
            if rows + lengths[k] + 1 > 37:
                break
            rows += lengths[k] + 1
            newest.append(k)
        expected = [(k, s) for k in reversed(newest) for s in range(lengths[k])]
        assert stored_transitions(buffer) == expected


def test_a_batch_larger_than_the_capacity_keeps_its_newest_episodes() -> None:
    buffer = make_buffer(capacity=12)
    buffer.add(tagged_episodes([5, 5, 5]))
    assert [k for k, _ in stored_transitions(buffer)] == [1] * 5 + [2] * 5


def test_state_dict_round_trip_keeps_order_and_contents() -> None:
    buffer = make_buffer(capacity=30)
    for first in range(0, 12, 3):
        buffer.add(tagged_episodes([4, 7, 2], first_id=first))
    state = buffer.state_dict()
    assert all(isinstance(v, (torch.Tensor, int)) for v in state.values())
    restored = make_buffer(capacity=30)
    restored.load_state_dict(state)
    assert stored_transitions(restored) == stored_transitions(buffer)
    restored.add(tagged_episodes([3], first_id=99))
    buffer.add(tagged_episodes([3], first_id=99))
    assert stored_transitions(restored) == stored_transitions(buffer)
    with pytest.raises(ValueError, match="buffer_size=31 does not match the checkpoint's buffer_size=30"):
        make_buffer(capacity=31).load_state_dict(state)


def test_achieved_goal_spread_is_the_mean_per_dimension_deviation_of_the_stored_states() -> None:
    buffer = make_buffer(capacity=20)
    assert buffer.achieved_goal_spread() == 0.0
    stuck = tagged_episodes([4])
    stuck.achieved_goal[:] = torch.tensor([5.0, 2.0])  # an agent pinned in one place
    buffer.add(stuck)
    assert buffer.achieved_goal_spread() == 0.0
    buffer.add(tagged_episodes([6, 5]))  # evicts nothing: 5 + 7 + 6 rows
    stored = buffer.achieved_goal[:18]
    assert buffer.achieved_goal_spread() == pytest.approx(float(stored.std(dim=0).mean()))
    buffer.add(tagged_episodes([3]))  # wraps: only the rows in use count, read across the end of the ring
    index = buffer.locate(torch.arange(buffer.num_transitions))
    rows = torch.unique(torch.cat([index.row, (index.row + 1) % buffer.capacity]))  # every state, final ones too
    assert rows.numel() == 17 and rows.min() == 0 and rows.max() == 19
    assert buffer.achieved_goal_spread() == pytest.approx(float(buffer.achieved_goal[rows].std(dim=0).mean()))
    assert buffer.achieved_goal_spread(max_rows=4) > 0.0  # a strided subset


def test_capacity_below_one_episode_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"buffer_size=10 is invalid: .* at least one whole episode"):
        make_buffer(capacity=10, max_steps=10)


def test_episode_longer_than_the_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="episode lengths must be in"):
        make_buffer(capacity=100, max_steps=5).add(tagged_episodes([6]))


def test_goal_ends_are_each_stored_episodes_first_and_last_achieved_goal_oldest_first() -> None:
    buffer = EpisodeBuffer(25, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    for first in range(0, 12, 3):  # the ring wraps, and the oldest episodes are dropped
        episodes = tagged_episodes([5, 3, 6], first_id=first)
        first_goal, last_goal = episodes.goal_ends
        assert first_goal.tolist() == [[first + k, 0.0] for k in range(3)]
        assert last_goal.tolist() == [[first, 5.0], [first + 1, 3.0], [first + 2, 6.0]]
        buffer.add(episodes)
    stored_first, stored_last = buffer.goal_ends()
    ids = stored_first[:, 0].long()
    assert ids.tolist() == list(range(int(ids[0]), 12)) and (stored_first[:, 1] == 0).all()
    assert stored_last[:, 1].tolist() == [[5.0, 3.0, 6.0][k % 3] for k in ids.tolist()]
    assert torch.equal(buffer.cumulative_transitions, torch.cumsum(stored_last[:, 1].long(), 0))
