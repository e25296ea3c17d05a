"""The check that makes an unseen goal env safe to train: the env's own labels against the ones HER recomputes.

HER trains on rewards, successes and terminals that it recomputes from achieved and desired goals with the
env's ``compute_reward`` and success criterion. Where the env's conventions differ from what the adapter
found out (a reward with a step penalty that ``compute_reward`` lacks, a success flag under another key, an
env that ends episodes on reaching the goal though ``terminate_on_success`` says it does not), training
would silently learn from wrong labels. Every collected batch of real transitions is therefore relabelled
with its own goals and compared with what the env reported; a disagreement stops the run. Where
``terminate_on_success`` was left out, ``ends_on_success`` tells from the episodes whether the env ends them on
reaching the goal (``HERDataModule.collect`` then takes it as true).

What the check compares against is found out first, from a Gymnasium goal env itself (``discover_conventions``, used
by ``GymnasiumGoalEnv``): the reward at the goal, whether the reward is sparse, the success criterion and the
``info`` key of the env's own success flag.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:  # imported for annotations only: the envs package imports this module
    from her_lightning.envs.base import GoalEnv
    from her_lightning.rollout import Episodes

SuccessFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (achieved (B, G), desired (B, G)) -> (B,) bool


class Conventions(NamedTuple):
    """What a Gymnasium goal env's rewards and success flags mean, as ``discover_conventions`` found them."""

    reward_at_goal: float  # compute_reward(g, g)
    reward_range: tuple[float, float] | None  # (low, high) of a sparse reward; None for a dense one
    success_fn: SuccessFn  # the success test of relabelled goals
    success_key: str | None  # the info key of the env's own success flag; None where it has none


ROUNDING_SLACK = 2
"""Disagreements tolerated per batch: goals are stored as float32, so a distance within float32 rounding of a
success threshold can come out on the other side of it when recomputed. A convention that differs disagrees on
far more transitions than this."""


class ConventionError(ValueError):
    """The env's own labels disagree with the recomputed ones; the message names the option that fixes it."""


def discover_conventions(
    env: Any, env_id: str, seed: int, success_key: str | None, success_threshold: float | None, success_fn: str | None
) -> Conventions:
    """Find out a Gymnasium goal env's conventions from the env itself, where the config does not name them.

    Args:
        env: One copy of the env (``gymnasium.make``'s), reset and stepped here.
        env_id: Its id, for the messages.
        seed: Seed of the resets whose goals probe the reward.
        success_key: The ``info`` key of the env's success flag; ``None`` finds ``is_success`` or ``success``.
        success_threshold: A goal is reached within this L2 distance (needed for dense rewards).
        success_fn: ``module:function`` mapping batches of achieved and desired goals (numpy) to booleans.

    Raises:
        ValueError: If the reward at the goal is not one value, a dense reward has no success criterion, both
            criteria are named, ``success_fn`` cannot be imported, or ``success_key`` is not in the step info.
    """
    reward = _reward_convention(env, env_id, seed)
    criterion = _success_criterion(env, env_id, reward, success_threshold, success_fn)
    return Conventions(*reward, criterion, _success_key(env, env_id, success_key))


def _reward_convention(env: Any, env_id: str, seed: int) -> tuple[float, tuple[float, float] | None]:
    """The reward at the goal and, for a sparse reward, the range of rewards; ``None`` for a dense reward.

    The goals are those of a few resets (a goal space's own samples can be meaningless, e.g. quaternions
    that are not unit). The reward at the goal is ``compute_reward(g, g)``; a reward that takes no value but
    that one and one other on pairs of those goals is sparse.
    """
    resets = [env.reset(seed=seed + i)[0] for i in range(8)]
    goals = np.concatenate([np.stack([obs[key] for obs in resets]) for key in ("achieved_goal", "desired_goal")])
    compute_reward = env.unwrapped.compute_reward
    at_goal = np.asarray(compute_reward(goals, goals.copy(), None), dtype=np.float64)
    if np.ptp(at_goal) > 1e-6 * max(1.0, np.abs(at_goal).max()):  # a dense reward's own rounding is allowed
        raise ValueError(
            f"env id={env_id!r}: compute_reward(g, g) takes several values ({at_goal.min():g} to {at_goal.max():g}) "
            "for goals that are reached; HER needs one reward for a reached goal"
        )
    others = np.asarray(compute_reward(goals, np.roll(goals, 1, axis=0), None), dtype=np.float64)
    values = np.unique(np.concatenate([at_goal, others]))
    # + 0.0 turns a -0.0 into 0.0, for the messages and the logs
    reward_range = (float(values.min()) + 0.0, float(values.max()) + 0.0) if values.size <= 2 else None
    return float(at_goal.max()) + 0.0, reward_range


def _success_criterion(
    env: Any,
    env_id: str,
    reward: tuple[float, tuple[float, float] | None],
    threshold: float | None,
    function: str | None,
) -> SuccessFn:
    """The success test of relabelled goals: ``threshold`` or ``function`` where named, else the sparse ``reward``'s
    value at the goal."""
    if threshold is not None and function is not None:
        raise ValueError("success_threshold and success_fn are both set: name one success criterion")
    if threshold is not None:
        return lambda achieved, desired: np.linalg.norm(
            achieved.astype(np.float64) - desired.astype(np.float64), axis=-1
        ) <= threshold
    if function is not None:
        module, _, name = function.rpartition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f"success_fn={function!r} cannot be imported: give it as module:function ({error})"
            ) from error
    reward_at_goal, reward_range = reward
    if reward_range is None:
        raise ValueError(
            f"env id={env_id!r} has a dense reward (compute_reward takes many values on random goal pairs), so a "
            "reached goal cannot be told from the reward: name the success criterion in data.env.kwargs, "
            "success_threshold (an L2 distance) or success_fn (module:function)"
        )
    compute_reward = env.unwrapped.compute_reward
    return lambda achieved, desired: np.asarray(compute_reward(achieved, desired, None)) == reward_at_goal


def _success_key(env: Any, env_id: str, key: str | None) -> str | None:
    """The ``info`` key of the env's own success flag, found from one step of ``env`` when not named."""
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    if key is not None and key not in info:
        raise ValueError(f"env id={env_id!r}: success_key={key!r} is not in its step info, which has {sorted(info)}")
    return key or next((name for name in ("is_success", "success") if name in info), None)


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
