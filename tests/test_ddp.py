"""Data-parallel training on 2 CPU ranks (Lightning's DDP with gloo), launched as a user would launch it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_checkpoint
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_checkpoint import assert_same

from her_lightning.checkpoint import DATA_STATE, trained

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "point2d_ddp.yaml")
SMALL = [*test_checkpoint.SMALL, "--trainer.accelerator", "cpu"]  # per rank: 20 warm-up, then 2 episodes an epoch


def ddp_fit(save_dir: Path, epochs: int, *extra: str) -> subprocess.CompletedProcess:
    """``her-lightning fit`` on 2 ranks; the probe callback leaves each rank's final weights in ``save_dir``."""
    save_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "DDP_PROBE_DIR": str(save_dir)}
    command = [sys.executable, "-m", "her_lightning.cli", "fit", "--config", CONFIG,
               "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.max_epochs", str(epochs),
               "--trainer.callbacks+=ddp_probe.SaveWeightsPerRank", *extra]
    result = subprocess.run(command, cwd=save_dir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def checkpoint_of(save_dir: Path) -> dict:
    (path,) = save_dir.glob("point2d_ddp/version_*/checkpoints/last.ckpt")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    save_dir = tmp_path_factory.mktemp("straight")
    ddp_fit(save_dir, 6, *SMALL)
    return save_dir


def test_ranks_collect_their_own_episodes_and_hold_the_same_weights(straight_run: Path) -> None:
    checkpoint = checkpoint_of(straight_run)
    ranks = checkpoint[DATA_STATE]["ranks"]
    assert len(ranks) == 2
    first, second = (rank["buffer"] for rank in ranks)
    assert not torch.equal(first["desired_goal"], second["desired_goal"])
    assert not torch.equal(ranks[0]["sampler_generator"], ranks[1]["sampler_generator"])
    # Counters count both ranks: 2 x (20 warm-up + 6 epochs x 2 episodes).
    assert trained(checkpoint)["episodes"] == 2 * (20 + 6 * 2)
    assert trained(checkpoint)["env_steps"] == sum(int(b["episode_length"].sum()) for b in (first, second))
    assert trained(checkpoint)["updates"] == 6 * 16  # every rank takes part in each (averaged) update
    weights = [torch.load(straight_run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same(weights[0], weights[1], "rank 0 vs rank 1 weights")  # targets and normalizers included
    assert_same(weights[0], checkpoint["state_dict"], "rank 0 vs checkpoint")


def test_metrics_count_both_ranks_and_are_logged_once(straight_run: Path) -> None:
    (run,) = (straight_run / "point2d_ddp").iterdir()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 writes, for all
    events = EventAccumulator(str(run))
    events.Reload()
    stored = events.Scalars("buffer/transitions")
    checkpoint = checkpoint_of(straight_run)
    assert stored[-1].step == stored[-1].value == trained(checkpoint)["env_steps"]  # both buffers, never wrapped
    lengths = events.Scalars("train/episode_length")
    assert len(lengths) == 1 + 6 and len({e.step for e in lengths}) == len(lengths)  # warm-up + each epoch, once


def test_stop_and_resume_on_two_ranks_equals_an_uninterrupted_run(straight_run: Path, tmp_path: Path) -> None:
    ddp_fit(tmp_path, 3, *SMALL)
    ddp_fit(tmp_path, 6, *SMALL, "--ckpt_path", "last")
    straight, resumed = checkpoint_of(straight_run), checkpoint_of(tmp_path)
    for key in ("state_dict", "optimizer_states", "counters", DATA_STATE, "epoch", "global_step"):
        assert_same(straight[key], resumed[key], key)
    assert_same(straight["callbacks"]["EpisodeCollector"], resumed["callbacks"]["EpisodeCollector"], "collector")


def test_resuming_on_another_number_of_ranks_is_a_clear_error(straight_run: Path, tmp_path: Path) -> None:
    (path,) = straight_run.glob("point2d_ddp/version_*/checkpoints/last.ckpt")
    command = [sys.executable, "-m", "her_lightning.cli", "fit", "--config", CONFIG, *SMALL,
               "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.logger", "false",
               "--trainer.max_epochs", "7", "--ckpt_path", str(path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "was written by a run on 2 DDP rank(s), and this run would have 1" in result.stderr


def test_normalizer_statistics_are_summed_over_ranks(tmp_path: Path) -> None:
    ddp_fit(tmp_path, 2, *SMALL, "--model.normalize_inputs", "true")
    checkpoint = checkpoint_of(tmp_path)
    stored = sum(int(rank["buffer"]["episode_length"].sum()) + rank["buffer"]["episode_length"].numel()
                 for rank in checkpoint[DATA_STATE]["ranks"])
    assert checkpoint["state_dict"]["obs_normalizer.count"].item() == stored  # every state of both ranks
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same(weights[0], weights[1], "rank 0 vs rank 1 weights")


def test_a_two_rank_run_learns(tmp_path: Path) -> None:
    ddp_fit(tmp_path, 25, "--trainer.check_val_every_n_epoch", "25", "--trainer.accelerator", "cpu")
    (run,) = (tmp_path / "point2d_ddp").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    (evaluation,) = events.Scalars("eval/success_rate")
    assert evaluation.value >= 0.9, f"eval success rate {evaluation.value:.2f} after 25 epochs on 2 ranks"
    # The last round's episode metrics are means over both ranks' episodes (torchmetrics synced), not rank 0's.
    ranks = checkpoint_of(tmp_path)[DATA_STATE]["ranks"]
    last_lengths = [rank["buffer"]["episode_length"][-2:].float() for rank in ranks]
    logged = events.Scalars("train/episode_length")[-1].value
    assert logged == pytest.approx(torch.cat(last_lengths).mean().item())
    assert logged != pytest.approx(last_lengths[0].mean().item())  # the ranks' episodes differ here


def test_sac_holds_the_same_weights_on_both_ranks_and_resumes_exactly(tmp_path: Path) -> None:
    sac = ["--model", "her_lightning.HERSAC", "--model.normalize_inputs", "true"]
    ddp_fit(tmp_path / "straight", 4, *SMALL, *sac)
    weights = [torch.load(tmp_path / "straight" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same(weights[0], weights[1], "rank 0 vs rank 1 weights")  # targets, average, temperature included
    ddp_fit(tmp_path / "resumed", 2, *SMALL, *sac)
    ddp_fit(tmp_path / "resumed", 4, *SMALL, *sac, "--ckpt_path", "last")
    straight, resumed = checkpoint_of(tmp_path / "straight"), checkpoint_of(tmp_path / "resumed")
    for key in ("state_dict", "optimizer_states", "counters", DATA_STATE):
        assert_same(straight[key], resumed[key], key)


def test_dqn_holds_the_same_weights_on_both_ranks(tmp_path: Path) -> None:
    ddp_fit(tmp_path, 3, *SMALL, "--model", "her_lightning.HERDQN", "--data.env.id", "bit_flip",
            "--data.env.kwargs", "{n_bits: 6}")
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same(weights[0], weights[1], "rank 0 vs rank 1 weights")
    assert any(name.startswith("q_network.") for name in weights[0])
