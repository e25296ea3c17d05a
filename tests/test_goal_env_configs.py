"""The shipped configs for goal envs other than Fetch learn: PandaReach (panda-gym) and PointMaze (Gymnasium-Robotics).

Each runs as a user runs it, from its YAML file, cut short; the bars are far above an untrained policy's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"


def evaluations(save_dir: Path, name: str) -> list[tuple[int, float]]:
    """``(env steps, success rate)`` of every evaluation the run logged."""
    (run,) = (save_dir / name).iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("eval/success_rate")]


def test_panda_reach_learns_within_ten_epochs(tmp_path: Path) -> None:
    pytest.importorskip("panda_gym", reason="PandaReach needs the panda extra: pip install -e '.[panda]'")
    main(["fit", "--config", str(CONFIGS / "panda_reach.yaml"), "--trainer.max_epochs", "10",
          "--trainer.logger.init_args.save_dir", str(tmp_path)])
    ((env_steps, success),) = evaluations(tmp_path, "panda_reach")
    # 1,000 random warm-up steps and 10 epochs of 2 episodes (shorter than 50 steps once they reach their goals).
    assert env_steps <= 2_000
    # The untrained actor reaches 7% of PandaReach's goals, uniformly random actions 17%.
    assert success >= 0.9, f"eval success rate {success:.2f} after {env_steps:,} env steps"


def test_point_maze_learns_within_thirty_epochs(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium_robotics", reason="PointMaze needs the robotics extra: pip install -e '.[robotics]'")
    main(["fit", "--config", str(CONFIGS / "point_maze.yaml"), "--trainer.max_epochs", "30",
          "--trainer.logger.init_args.save_dir", str(tmp_path)])
    *_, (env_steps, success) = evaluations(tmp_path, "point_maze")
    # Uniformly random actions reach 18% of UMaze's goals within 300 steps, the untrained actor 14%.
    assert success >= 0.5, f"eval success rate {success:.2f} after {env_steps:,} env steps"
