"""``her-lightning test``: the final evaluation of a checkpoint's policy on goals of its own, with a confidence
interval, written as JSON beside the checkpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from her_lightning.checkpoint import read_checkpoint, trained
from her_lightning.data import recorded_task
from her_lightning.envs import close_env, make_env
from her_lightning.evaluation import summarize
from her_lightning.export import policy_from_checkpoint
from her_lightning.files import atomic_write
from her_lightning.options import check_memory, check_number, check_seed
from her_lightning.rng import derive_seed
from her_lightning.rollout import Policy, play, rollout

TEST_STREAM = "test"  # its goals are other than the training evaluations' ("eval")


def evaluate_checkpoint(
    path: str | Path, episodes: int = 1000, seed: int | None = None, num_envs: int | None = None
) -> dict[str, Any]:
    """A final evaluation of a checkpoint's policy on ``episodes`` fresh goals; writes it as JSON beside the file.

    The goals come from a stream of their own (``test``) of the run's seed, or of ``seed``: none of them is
    one of the goals the run was evaluated on while training. The policy is the one ``her-lightning export``
    writes (the averaged actor where the run used ``average_policy``), played without exploration noise.

    Args:
        path: A training checkpoint.
        episodes: Episodes to play.
        seed: Seed of the test goals; ``None``: the run's seed.
        num_envs: Copies of the env that play side by side; ``None``: all episodes at once (at most 100).

    Returns:
        The summary also written to ``<checkpoint>.test.json``, with that file's path as ``output``. Where the
        file cannot be written (a read-only folder, a full disk), the summary is returned all the same, with
        ``output_error`` saying why.

    Raises:
        CheckpointError: If the checkpoint is unusable. ValueError: If an option is out of range.
    """
    check_number("episodes", episodes, 1, integer=True)
    if num_envs is not None:
        check_number("num_envs", num_envs, 1, integer=True)
    if seed is not None:
        check_seed("seed", seed)
    path = Path(path)
    state = read_checkpoint(path)
    policy, metadata = policy_from_checkpoint(state)
    task = recorded_task(state)
    base_seed = task.seed if seed is None else seed
    env_config = task.env
    copies = min(num_envs or 100, episodes)
    act = _acting(policy)
    _check_play_fits(env_config, act, episodes, copies)
    env = make_env(env_config["id"], copies, derive_seed(base_seed, TEST_STREAM), **env_config["kwargs"])
    start = time.perf_counter()
    try:
        played = play(env, act, episodes)
    finally:
        close_env(env)
    metrics = summarize(played)
    success = metrics["eval/success_rate"]
    low, high = wilson_interval(int(played.success.sum()), episodes)
    summary = {
        "checkpoint": str(path),
        "env_id": env_config["id"],
        "seed": base_seed,
        "episodes": episodes,
        "success_rate": success,
        "success_rate_95ci": [round(low, 4), round(high, 4)],
        "episode_return_mean": metrics["eval/episode_return"],
        "episode_return_std": float(played.episode_return.std()) if episodes > 1 else 0.0,
        "episode_length_mean": metrics["eval/episode_length"],
        "policy": metadata["policy"],
        "trained": trained(state),
        "seconds": round(time.perf_counter() - start, 2),
    }
    output = path.with_name(f"{path.name}.test.json")
    contents = (json.dumps(summary, indent=2) + "\n").encode()
    try:
        atomic_write(output, lambda file: file.write(contents))
    except OSError as error:
        summary["output_error"] = error.strerror
    summary["output"] = str(output)
    return summary


def _acting(policy: torch.nn.Module) -> Policy:
    """An exported policy module as a ``Policy``: its actions in ``[-1, 1]`` (``rollout`` records no gradients)."""

    def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return policy(observation, goal)["action_unit"]

    return act


def _check_play_fits(env_config: dict[str, Any], act: Policy, episodes: int, copies: int) -> None:
    """Refuse, before the env's copies are made, a test whose episodes do not fit in the host's available memory.

    ``play`` keeps every round's episodes and concatenates them (two of each), and a round is built from its
    steps' tensors (one more round): sized from one episode played on a single copy of the task.

    Raises:
        ValueError: Naming ``episodes``, the bytes needed and the bytes available.
    """
    probe = make_env(env_config["id"], 1, 0, **env_config["kwargs"])
    try:
        one = sum(field.nbytes for field in rollout(probe, act))
    finally:
        close_env(probe)
    held = (2 * math.ceil(episodes / copies) + 1) * copies
    check_memory("episodes", episodes, one * held, "cpu", "the episodes played")


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for ``z = 1.96``): sound near 0 and 1, unlike ``p ± z·se``."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
