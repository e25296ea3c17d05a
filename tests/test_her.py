"""HER sampler: where relabelled goals come from, rewards and terminals, statistics, and no side effects."""

from __future__ import annotations

import pytest
import torch
from conftest import exact_match, exact_match_reward, tagged_episodes

from her_lightning.buffer import EpisodeBuffer
from her_lightning.her import GoalStrategy, HERSampler
from her_lightning.rollout import Episodes


def make_sampler(
    lengths: list[int], strategy: str = "future", her_ratio: float = 1.0, terminate: bool = True, capacity: int = 500
) -> HERSampler:
    buffer = EpisodeBuffer(capacity, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    buffer.add(tagged_episodes(lengths))
    return HERSampler(
        buffer, exact_match_reward, exact_match, terminate, strategy, her_ratio, torch.Generator().manual_seed(0)
    )


LENGTHS = [1, 4, 10, 2, 7]


def sample_tags(sampler: HERSampler, n: int = 20000):
    batch = sampler.sample(n)
    episode, t = batch.observation[:, 0].long(), batch.observation[:, 1].long()
    goal_episode, goal_step = batch.goal[:, 0].long(), batch.goal[:, 1].long()
    return batch, episode, t, goal_episode, goal_step


@pytest.mark.parametrize("strategy", list(GoalStrategy))
def test_relabelled_goals_come_from_the_same_episode_and_the_right_steps(strategy: GoalStrategy) -> None:
    batch, episode, t, goal_episode, goal_step = sample_tags(make_sampler(LENGTHS, strategy))
    length = torch.tensor(LENGTHS)[episode]
    assert torch.equal(goal_episode, episode)  # never another episode
    assert (goal_step >= 1).all() and (goal_step <= length).all()  # an achieved goal after an action
    if strategy is GoalStrategy.future:
        assert (goal_step > t).all()  # never the past nor the transition's own start state
        assert (goal_step == t + 1).any()  # the transition's own next state is included
    elif strategy is GoalStrategy.final:
        assert torch.equal(goal_step, length)
    else:
        assert (goal_step <= t).any() and (goal_step > t).any()


def test_future_goals_are_uniform_over_the_later_states() -> None:
    batch, episode, t, _, goal_step = sample_tags(make_sampler([10]), n=200000)
    at_start = goal_step[t == 0]  # 10 candidates: states 1..10
    counts = torch.bincount(at_start, minlength=11)[1:].float()
    assert (counts / counts.sum() - 0.1).abs().max() < 0.01


def test_ratio_zero_keeps_every_goal_and_ratio_one_relabels_every_goal() -> None:
    *_, goal_step = sample_tags(make_sampler(LENGTHS, her_ratio=0.0))
    assert (goal_step == -1).all()
    *_, goal_step = sample_tags(make_sampler(LENGTHS, her_ratio=1.0))
    assert (goal_step >= 1).all()


def test_relabel_fraction_matches_the_ratio() -> None:
    *_, goal_step = sample_tags(make_sampler(LENGTHS, her_ratio=0.8), n=100000)
    assert (goal_step >= 1).float().mean().item() == pytest.approx(0.8, abs=0.01)


def test_transitions_are_uniform_and_every_one_is_sampled_the_last_included() -> None:
    batch, episode, t, *_ = sample_tags(make_sampler(LENGTHS, her_ratio=0.0), n=240000)
    total = sum(LENGTHS)
    flat = torch.tensor([sum(LENGTHS[:k]) for k in range(len(LENGTHS))])[episode] + t
    counts = torch.bincount(flat, minlength=total).float()
    assert (counts > 0).all()
    assert (counts / counts.sum() * total - 1).abs().max() < 0.1
    last = t == torch.tensor(LENGTHS)[episode] - 1
    assert last.any()


def test_next_state_action_and_reward_belong_to_the_transition() -> None:
    batch, episode, t, goal_episode, goal_step = sample_tags(make_sampler(LENGTHS, her_ratio=0.5))
    assert torch.equal(batch.next_observation[:, 0].long(), episode)
    assert torch.equal(batch.next_observation[:, 1].long(), t + 1)
    assert torch.equal(batch.action, batch.observation)
    assert torch.equal(batch.reward, exact_match_reward(batch.next_observation, batch.goal))
    # The sentinel -7 stored in the episodes is never served: rewards are recomputed.
    assert set(batch.reward.unique().tolist()) == {-1.0, 0.0}
    reached = goal_step == t + 1
    assert torch.equal(batch.terminal, reached.float())


def test_truncation_is_never_a_terminal() -> None:
    """Episodes that ran out of time: only a reached (relabelled) goal makes a terminal, the time limit never does."""
    batch, episode, t, goal_episode, goal_step = sample_tags(make_sampler([10, 10], her_ratio=0.0))
    last = t == 9
    assert last.any() and (batch.terminal[last] == 0).all()
    assert (batch.terminal == 0).all()


def test_tasks_that_do_not_end_on_success_have_no_terminals() -> None:
    batch, *_ = sample_tags(make_sampler(LENGTHS, her_ratio=1.0, terminate=False))
    assert (batch.reward == 0).any() and (batch.terminal == 0).all()


def test_sampling_leaves_the_buffer_unchanged() -> None:
    sampler = make_sampler(LENGTHS, her_ratio=1.0)
    buffer = sampler.buffer
    before = [t.clone() for t in (buffer.observation, buffer.achieved_goal, buffer.action, buffer.desired_goal)]
    for _ in range(5):
        sampler.sample(1000)
    after = (buffer.observation, buffer.achieved_goal, buffer.action, buffer.desired_goal)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_samples_after_wrap_come_only_from_stored_episodes() -> None:
    buffer = EpisodeBuffer(25, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    sampler = HERSampler(buffer, exact_match_reward, exact_match, True, "future", 1.0, torch.Generator().manual_seed(1))
    for first in range(0, 30, 2):
        buffer.add(tagged_episodes([7, 3], first_id=first))
        batch = sampler.sample(2000)
        stored = {int(k) for k in buffer.observation[buffer.locate(torch.arange(len(buffer))).row][:, 0]}
        assert set(batch.observation[:, 0].long().tolist()) <= stored
        assert torch.equal(batch.goal[:, 0], batch.observation[:, 0])


def other_goal_sampler(lengths: list[int], share: float, buffer: EpisodeBuffer | None = None) -> HERSampler:
    if buffer is None:
        buffer = EpisodeBuffer(500, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
        buffer.add(tagged_episodes(lengths))
    generator = torch.Generator().manual_seed(0)
    return HERSampler(buffer, exact_match_reward, exact_match, True, "future", 1.0, generator, 0.0, share)


def test_other_goals_are_achieved_goals_after_stored_transitions_drawn_uniformly() -> None:
    lengths = [4, 10, 6]
    batch, episode, t, goal_episode, goal_step = sample_tags(other_goal_sampler(lengths, 1.0), n=200000)
    assert (goal_step >= 1).all() and (goal_step <= torch.tensor(lengths)[goal_episode]).all()  # never a start state
    states = torch.unique(goal_episode * 100 + goal_step, return_counts=True)[1].float()
    assert states.numel() == sum(lengths) and (states / states.mean() - 1).abs().max() < 0.05  # every state alike
    assert (goal_step <= t)[goal_episode == episode].any()  # not the strategy's: the past of its own episode too
    assert torch.equal(batch.reward, exact_match_reward(batch.next_observation, batch.goal))


def test_other_goal_share_replaces_that_share_of_the_relabelled_goals() -> None:
    lengths = [4, 10, 6]
    _, episode, t, goal_episode, goal_step = sample_tags(other_goal_sampler(lengths, 0.5), n=200000)
    same_episode = (torch.tensor(lengths) / sum(lengths)).square().sum().item()  # an other goal from its own episode
    assert (goal_episode != episode).float().mean().item() == pytest.approx(0.5 * (1 - same_episode), abs=0.005)
    _, episode, t, goal_episode, goal_step = sample_tags(other_goal_sampler(lengths, 0.0))
    assert torch.equal(goal_episode, episode) and (goal_step > t).all()


def test_other_goals_come_only_from_stored_episodes_after_the_buffer_wrapped() -> None:
    buffer = EpisodeBuffer(25, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    sampler = other_goal_sampler([], 1.0, buffer)
    for first in range(0, 30, 2):
        buffer.add(tagged_episodes([7, 3], first_id=first))
        goal_episode = sampler.sample(2000).goal[:, 0].long()
        stored = {int(k) for k in buffer.observation[buffer.locate(torch.arange(len(buffer))).row][:, 0]}
        assert set(goal_episode.tolist()) <= stored


def still_and_displacing(lengths: list[int], still: list[int], first_id: int = 0) -> Episodes:
    """``tagged_episodes`` in which the episodes at the indices ``still`` keep their first achieved goal."""
    episodes = tagged_episodes(lengths, first_id)
    episodes.achieved_goal[still] = episodes.achieved_goal[still, :1]
    return episodes


def displaced_sampler(lengths: list[int], still: list[int], share: float, capacity: int = 500) -> HERSampler:
    buffer = EpisodeBuffer(capacity, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    buffer.add(still_and_displacing(lengths, still))
    generator = torch.Generator().manual_seed(0)
    return HERSampler(buffer, exact_match_reward, exact_match, True, "future", 0.8, generator, share)


def test_displaced_share_draws_that_share_from_the_episodes_that_displaced_their_achieved_goal() -> None:
    lengths, still = [4, 10, 6, 8], [1, 3]  # episodes 0 and 2 displace it: 10 of 28 transitions
    _, episode, t, *_ = sample_tags(displaced_sampler(lengths, still, 0.5), n=200000)
    from_displacing = (episode == 0) | (episode == 2)
    assert from_displacing.float().mean().item() == pytest.approx(0.5 + 0.5 * 10 / 28, abs=0.005)
    # Uniform over the transitions of each group: either draw is uniform over its own transitions.
    for group in ([0, 2], [1, 3]):
        flat = torch.cat([episode[episode == k] * 100 + t[episode == k] for k in group])
        counts = torch.unique(flat, return_counts=True)[1].float()
        assert counts.numel() == sum(lengths[k] for k in group)
        assert (counts / counts.mean() - 1).abs().max() < 0.05

    _, episode, *_ = sample_tags(displaced_sampler(lengths, still, 1.0))
    assert set(episode.unique().tolist()) == {0, 2}


def test_displaced_share_samples_uniformly_while_no_episode_displaced_its_achieved_goal() -> None:
    lengths = [4, 10, 6]
    _, episode, *_ = sample_tags(displaced_sampler(lengths, [0, 1, 2], 1.0), n=100000)
    assert torch.bincount(episode).float().div(100000).tolist() == pytest.approx([4 / 20, 10 / 20, 6 / 20], abs=0.01)


def test_displaced_share_draws_only_stored_episodes_after_the_buffer_wrapped() -> None:
    buffer = EpisodeBuffer(25, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    generator = torch.Generator().manual_seed(1)
    sampler = HERSampler(buffer, exact_match_reward, exact_match, True, "future", 1.0, generator, 1.0)
    for first in range(0, 30, 3):
        buffer.add(still_and_displacing([5, 3, 6], still=[0, 2], first_id=first))  # the middle one displaces it
        episode = sampler.sample(2000).observation[:, 0].long()
        stored = {int(k) for k in buffer.observation[buffer.locate(torch.arange(len(buffer))).row][:, 0]}
        assert set(episode.tolist()) <= {k for k in stored if k % 3 == 1}


def test_same_generator_state_gives_the_same_batch() -> None:
    a, b = make_sampler(LENGTHS, her_ratio=0.8), make_sampler(LENGTHS, her_ratio=0.8)
    assert all(torch.equal(x, y) for x, y in zip(a.sample(64), b.sample(64)))


@pytest.mark.parametrize(
    ("strategy", "ratio", "message"),
    [
        ("nearest", 0.8, r"her_strategy='nearest' is unknown: choose one of \['future', 'final', 'episode'\]"),
        ("future", 1.5, r"her_ratio=1.5 is invalid: must be within \[0, 1\]"),
        ("future", -0.1, r"her_ratio=-0.1 is invalid"),
    ],
)
def test_invalid_options_are_named(strategy: str, ratio: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_sampler([3], strategy, ratio)


def test_empty_buffer_says_so() -> None:
    buffer = EpisodeBuffer(50, obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=10)
    with pytest.raises(RuntimeError, match="empty episode buffer"):
        HERSampler(buffer, exact_match_reward, exact_match, True).sample(4)


def test_the_dataset_hands_out_the_epochs_batches_in_chunks_of_the_samplers_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from her_lightning.data import HERDataset

    monkeypatch.setattr(HERDataset, "MAX_CHUNK_TRANSITIONS", 8)  # 2 batches of 4 per chunk
    dataset = HERDataset(make_sampler(LENGTHS), batch_size=4, batches_per_epoch=5)
    chunks = list(dataset)
    assert len(dataset) == len(chunks) == 3
    assert [chunk.reward.shape for chunk in chunks] == [(2, 4), (2, 4), (1, 4)]
    assert [chunk.observation.shape for chunk in chunks] == [(2, 4, 2), (2, 4, 2), (1, 4, 2)]
    # The same transitions, in the same order, as drawing 8, 8 and 4 from a sampler in the same state.
    reference = make_sampler(LENGTHS)
    for chunk, draw in zip(chunks, [reference.sample(8), reference.sample(8), reference.sample(4)]):
        for field, drawn in zip(chunk, draw):
            assert torch.equal(field.reshape(drawn.shape), drawn)
