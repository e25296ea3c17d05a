"""The check that makes an unseen goal env safe to train: the env's own labels against the ones HER recomputes.

HER trains on rewards, successes and terminals that it recomputes from achieved and desired goals with the
env's ``compute_reward`` and success criterion. Where the env's conventions differ from what the adapter
found out (a reward with a step penalty that ``compute_reward`` lacks, a success flag under another key, an
env that ends episodes on reaching the goal though ``terminate_on_success`` says it does not), training
would silently learn from wrong labels. Every collected batch of real transitions is therefore relabelled
with its own goals and compared with what the env reported; a disagreement stops the run. Where
``terminate_on_success`` was left out, ``ends_on_success`` tells from the episodes whether the env ends them on
reaching the goal (``HERDataModule.collect`` then takes it as true).
"""

from __future__ import annotations

import torch

from her_lightning.envs.base import GoalEnv
from her_lightning.rollout import Episodes

ROUNDING_SLACK = 2
"""Disagreements tolerated per batch: goals are stored as float32, so a distance within float32 rounding of a
success threshold can come out on the other side of it when recomputed. A convention that differs disagrees on
far more transitions than this."""


class ConventionError(ValueError):
    """The env's own labels disagree with the recomputed ones; the message names the option that fixes it."""


def check_episodes(env: GoalEnv, episodes: Episodes, name: str) -> None:
    """Raise a ``ConventionError`` where ``episodes``' rewards, successes or ends disagree with ``env``'s functions.

    Args:
        env: The env that played the episodes (its ``compute_reward``, ``is_success`` and flags).
        episodes: A batch of real transitions, with the env's own rewards, success flags and ends.
        name: The env's name for the message.
    """
    if episodes.goal_moved.any():
        raise ConventionError(
            f"env {name}: the desired goal changed within an episode (a continuing task); HER relabels whole "
            "episodes with one goal each, so the goal must stay fixed (PointMaze, AntMaze: continuing_task: false)"
        )
    valid = episodes.valid  # (N, T)
    checked = int(valid.sum())
    next_achieved = episodes.achieved_goal[:, 1:][valid]  # (checked, goal_dim)
    desired = episodes.desired_goal.unsqueeze(1).expand(-1, valid.shape[1], -1)[valid]
    reward, env_reward = env.compute_reward(next_achieved, desired), episodes.reward[valid]
    differs = ~torch.isclose(reward, env_reward, rtol=1e-4, atol=1e-5)
    if int(differs.sum()) > ROUNDING_SLACK:
        i = int(differs.nonzero()[0])
        raise ConventionError(
            f"env {name}: step() gave reward {env_reward[i].item():g} where compute_reward(next achieved goal, "
            f"desired goal) gives {reward[i].item():g}, on {int(differs.sum())} of {checked} transitions; HER "
            "recomputes every reward with compute_reward, so the env must reward its steps with that function"
        )
    reached, env_reached = env.is_success(next_achieved, desired), episodes.step_success[valid]
    differs = reached != env_reached
    if int(differs.sum()) > ROUNDING_SLACK:
        raise ConventionError(
            f"env {name}: the env reports the goal reached on {int(env_reached.sum())} of {checked} transitions, "
            f"the success criterion on {int(reached.sum())}, disagreeing on {int(differs.sum())}; name the env's "
            "own flag with data.env.kwargs.success_key, or the criterion with success_threshold or success_fn"
        )
    ended, went_on = _ended_on_success(episodes), _went_on_past_success(episodes)
    if ended and went_on:
        raise ConventionError(
            f"env {name} ended {ended} episodes on reaching the goal but went on past it on {went_on} transitions: "
            "its endings do not match its success, and HER labels every reached goal one way (terminate_on_success)"
        )
    if not env.terminate_on_success and ended:
        raise ConventionError(
            f"env {name} ended {ended} episodes on reaching the goal, but terminate_on_success is false: set "
            "data.env.kwargs.terminate_on_success: true, or leave it out to have it found from the episodes"
        )
    if env.terminate_on_success and went_on:
        raise ConventionError(
            f"env {name} reached the goal without ending the episode on {went_on} transitions, but "
            "terminate_on_success is true: set data.env.kwargs.terminate_on_success: false"
        )


def ends_on_success(episodes: Episodes) -> bool:
    """Whether ``episodes`` show an env that ends its episodes on reaching the goal: some ended there, and no step
    reached the goal without ending its episode."""
    return _ended_on_success(episodes) > 0 and _went_on_past_success(episodes) == 0


def _ended_on_success(episodes: Episodes) -> int:
    """The episodes that the env ended on reaching the goal."""
    return int((episodes.terminated & episodes.success).sum())


def _went_on_past_success(episodes: Episodes) -> int:
    """The steps that reached the goal without the env ending their episode there."""
    last = torch.arange(episodes.valid.shape[1], device=episodes.valid.device) == episodes.length.unsqueeze(1) - 1
    return int((episodes.step_success & ~(last & episodes.terminated.unsqueeze(1))).sum())
