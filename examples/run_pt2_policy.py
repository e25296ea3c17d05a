"""Run a policy written by ``her-lightning export CHECKPOINT policy.pt2`` with nothing but torch.

    python examples/run_pt2_policy.py policy.pt2

The program takes raw float32 batches, observation ``(B, obs_dim)`` and goal ``(B, goal_dim)`` (one observation
is a batch of one), and returns ``{"action": ..., "action_unit": ...}``: actions in the env's own bounds, and the
same actions in ``[-1, 1]``. It refuses another dtype, rank or width, and NaN or inf inputs, itself (a
``RuntimeError`` of one line). Its metadata (env id, sizes, action bounds, training config) is a JSON extra file.
On the point task (``point2d``) this script plays 100 episodes, the task's dynamics written out here.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from typing import Any

import torch


def load_policy(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The policy as a module, and its metadata.

    Raises:
        ValueError: If ``path`` is missing or is not a ``.pt2`` policy written by ``her-lightning export``.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if not is_pt2_archive(path):  # torch.export.load would log a traceback before it raised
        raise ValueError(f"{path} is not a .pt2 program; an .onnx policy runs with run_onnx_policy.py")
    extra_files = {"metadata.json": ""}
    policy = torch.export.load(path, extra_files=extra_files).module()
    if not extra_files["metadata.json"]:
        raise ValueError(f"{path} holds no metadata.json: it was not written by her-lightning export")
    return policy, json.loads(extra_files["metadata.json"])


def is_pt2_archive(path: str) -> bool:
    """Whether ``path`` is a zip archive in torch.export's layout (a record ``<name>/archive_format``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


def play_point_task(policy: torch.nn.Module) -> None:
    """100 episodes at once: start at (0, 0), goals uniform in [3.5, 4.5]^2, reached within 0.15, 50 steps at most."""
    generator = torch.Generator().manual_seed(0)
    goal = 3.5 + torch.rand(100, 2, generator=generator)
    position = torch.zeros(100, 2)
    steps = torch.full((100,), 50)
    reached = torch.zeros(100, dtype=torch.bool)
    for t in range(50):
        action = policy(position, goal)["action"]
        position = torch.where(reached.unsqueeze(1), position, (position + action).clamp(0.0, 5.0))
        now = ~reached & (torch.linalg.vector_norm(position - goal, dim=1) <= 0.15)
        steps = torch.where(now, t + 1, steps)
        reached |= now
    if reached.any():
        print(f"success rate {reached.float().mean():.2f}, mean steps to the goal {steps[reached].float().mean():.2f}")
    else:
        print("success rate 0.00, no episode reached its goal")


def main() -> None:
    try:
        policy, metadata = load_policy(sys.argv[1] if len(sys.argv) > 1 else "policy.pt2")
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
    print(
        f"env {metadata['env_id']}: observation ({metadata['obs_dim']},), goal ({metadata['goal_dim']},) -> "
        f"action ({metadata['action_dim']},) in [{metadata['action_low']}, {metadata['action_high']}]"
    )
    print("trained with hidden layers", metadata["config"]["model"]["hidden"])
    outputs = policy(torch.zeros(1, metadata["obs_dim"]), torch.zeros(1, metadata["goal_dim"]))
    print("action at zero inputs:", outputs["action"][0].numpy())
    if metadata["env_id"] == "point2d":
        play_point_task(policy)


if __name__ == "__main__":
    main()
