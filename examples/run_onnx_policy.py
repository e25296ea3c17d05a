"""Run a policy written by ``her-lightning export CHECKPOINT policy.onnx`` with onnxruntime and numpy only.

    pip install onnxruntime numpy
    python examples/run_onnx_policy.py policy.onnx

The model takes raw float32 batches, ``observation`` ``(B, obs_dim)`` and ``goal`` ``(B, goal_dim)`` (one
observation is a batch of one), and has two outputs: ``action``, in the env's own bounds, and ``action_unit``,
the same actions in ``[-1, 1]``. onnxruntime refuses another dtype, rank or width by itself (``InvalidArgument``,
one line); ONNX has no operator that raises, so ``act`` below refuses NaN or inf inputs, and converts other
float or integer arrays to float32 first. Its metadata (env id, sizes, action bounds, training
config) is a JSON string in the model's ``metadata_props``. On the point task (``point2d``) this script plays 100
episodes, the task's dynamics written out here.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf


def load_policy(path: str) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any]]:
    """A function from batches of raw observations and goals to actions in the env's bounds, and the metadata.

    Raises:
        ValueError: If ``path`` is missing or is not an ONNX policy written by ``her-lightning export``.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except (InvalidProtobuf, InvalidGraph, Fail) as error:
        raise ValueError(f"{path} is not an ONNX model ({error}); a .pt2 policy runs with run_pt2_policy.py") from None
    properties = session.get_modelmeta().custom_metadata_map
    if "metadata.json" not in properties:
        raise ValueError(f"{path} holds no metadata.json: it was not written by her-lightning export")
    metadata = json.loads(properties["metadata.json"])

    def act(observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        observation, goal = np.asarray(observation, np.float32), np.asarray(goal, np.float32)
        if not (np.isfinite(observation).all() and np.isfinite(goal).all()):
            raise ValueError("observation and goal must be finite: a NaN or inf input is refused")
        return session.run(["action"], {"observation": observation, "goal": goal})[0]

    return act, metadata


def play_point_task(act: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """100 episodes at once: start at (0, 0), goals uniform in [3.5, 4.5]^2, reached within 0.15, 50 steps at most."""
    goal = 3.5 + np.random.default_rng(0).random((100, 2))
    position = np.zeros((100, 2))
    steps = np.full(100, 50)
    reached = np.zeros(100, dtype=bool)
    for t in range(50):
        position = np.where(reached[:, None], position, np.clip(position + act(position, goal), 0.0, 5.0))
        now = ~reached & (np.linalg.norm(position - goal, axis=1) <= 0.15)
        steps[now] = t + 1
        reached |= now
    if reached.any():
        print(f"success rate {reached.mean():.2f}, mean steps to the goal {steps[reached].mean():.2f}")
    else:
        print("success rate 0.00, no episode reached its goal")


def main() -> None:
    try:
        act, metadata = load_policy(sys.argv[1] if len(sys.argv) > 1 else "policy.onnx")
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
    print(
        f"env {metadata['env_id']}: observation ({metadata['obs_dim']},), goal ({metadata['goal_dim']},) -> "
        f"action ({metadata['action_dim']},) in [{metadata['action_low']}, {metadata['action_high']}]"
    )
    print("trained with hidden layers", metadata["config"]["model"]["hidden"])
    print("action at zero inputs:", act(np.zeros((1, metadata["obs_dim"])), np.zeros((1, metadata["goal_dim"])))[0])
    if metadata["env_id"] == "point2d":
        play_point_task(act)


if __name__ == "__main__":
    main()
