"""A short real FetchReach run (Gymnasium-Robotics, mujoco) from the shipped config must learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.checkpoint import trained
from her_lightning.cli import main

pytest.importorskip("gymnasium_robotics", reason="FetchReach needs the robotics extra: pip install -e '.[robotics]'")
CONFIGS = Path(__file__).parents[1] / "configs"
CONFIG = str(CONFIGS / "fetch_reach.yaml")


def test_fetch_reach_learns_within_two_thousand_steps(tmp_path: Path) -> None:
    # 1,000 random warm-up steps, then 10 epochs of 100 steps and 100 updates; one evaluation at the end.
    main(["fit", "--config", CONFIG, "--trainer.max_epochs", "10",
          "--trainer.logger.init_args.save_dir", str(tmp_path)])
    (run,) = (tmp_path / "fetch_reach").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    (evaluation,) = events.Scalars("eval/success_rate")
    assert evaluation.step == 2_000
    # An untrained policy succeeds in about 5% of FetchReach episodes (goals that start within reach).
    assert evaluation.value >= 0.9, f"eval success rate {evaluation.value:.2f} after 2,000 env steps"
    checkpoint = torch.load(next(run.glob("checkpoints/last.ckpt")), weights_only=True)
    assert checkpoint["state_dict"]["obs_normalizer.count"] > 0  # the robotics config normalizes inputs


@pytest.mark.parametrize("config", ["fetch_push", "fetch_push_sac", "fetch_pick_and_place", "fetch_slide"])
def test_fetch_object_config_trains_and_checkpoints(config: str, tmp_path: Path) -> None:
    # Learning these tasks takes hours (Push: see the README); this checks that each config runs end to end. On one
    # torch thread: on a machine busy with other runs, two threads wait on each other (27 s for these 40 updates, 2 s
    # on one).
    main([
        "fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.max_epochs", "2",
        "--trainer.check_val_every_n_epoch", "2", "--trainer.callbacks.init_args.every_n_epochs", "2",
        "--collector.warmup_episodes", "2", "--data.eval_episodes", "2", "--torch_threads", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])
    (run,) = (tmp_path / config).iterdir()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert trained(checkpoint)["env_steps"] == 2 * 50 + 2 * 2 * 50  # warm-up, then 2 epochs of 2 episodes
    assert checkpoint["counters"]["updates"] == 2 * 20
    assert checkpoint["state_dict"]["goal_normalizer.count"] > 0
