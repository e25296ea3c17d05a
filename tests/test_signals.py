"""Signals, exit statuses and the run folder's files of ``fit``.

SIGTERM and SIGINT finish the epoch, write ``last.ckpt``, print how to continue and exit 128 + the signal's
number; a run folder's lock that is not a file is one line; what killed checkpoint writes left is removed. Each
signal is sent by the fit process itself, at a chosen moment (``tests/signal_probe.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_checkpoint import assert_same
from test_faults import ROOT, TINY, fit, fit_command, refused, run_folder

from her_lightning.checkpoint import DATA_STATE, LAST_CHECKPOINT, trained, verify_checkpoint
from her_lightning.resume import LOCK_FILE

BATCHES = 2  # per epoch, in test_faults.TINY
# The shipped ModelCheckpoint, writing every third epoch only (as the Fetch configs write every 100th).
EVERY_THIRD_EPOCH = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true, save_top_k: 1, every_n_epochs: 3, save_on_train_epoch_end: true,
                  enable_version_counter: false}
"""


def probe(signum: signal.Signals, epoch: int, moment: str) -> str:
    """The option that adds ``signal_probe.SignalAt`` to the run's callbacks."""
    init_args = {"signum": int(signum), "epoch": epoch, "moment": moment}
    return "--trainer.callbacks+=" + json.dumps({"class_path": "signal_probe.SignalAt", "init_args": init_args})


def fit_process(save_dir: Path, epochs: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """``her-lightning fit`` of ``test_faults.fit_command`` as its own process."""
    return her_lightning_process(fit_command(save_dir, epochs, *extra))


def her_lightning_process(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """``her-lightning`` as its own process, with this folder's helpers importable."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "her_lightning.cli", *arguments]
    return subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def last_checkpoint(save_dir: Path) -> Path:
    return run_folder(save_dir) / "checkpoints" / LAST_CHECKPOINT


def assert_stopped(
    result: subprocess.CompletedProcess[str], save_dir: Path, signum: signal.Signals, epochs: int, of: int
) -> None:
    """Exit status 128 + the signal's number, one line last saying how to continue, and a whole ``last.ckpt`` of
    ``epochs`` epochs."""
    assert result.returncode == 128 + signum, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr[-3000:]
    checkpoint = last_checkpoint(save_dir)
    line = result.stderr.rstrip().splitlines()[-1]
    assert line.startswith(f"her-lightning: stopped by {signum.name} after epoch {epochs} of {of}; "), line
    assert f"last good checkpoint: {checkpoint} ({epochs * BATCHES} updates" in line
    assert line.endswith("to continue, run the same command with --ckpt_path last"), line
    verify_checkpoint(checkpoint)
    assert trained(torch.load(checkpoint, weights_only=True))["updates"] == epochs * BATCHES
    assert not list(checkpoint.parent.glob(".*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_epoch_writes_last_ckpt_and_exits_128_plus_its_number(
    tmp_path: Path, signum: signal.Signals
) -> None:
    result = fit_process(tmp_path, 4, probe(signum, 2, "epoch_start"))
    assert_stopped(result, tmp_path, signum, epochs=2, of=4)
    fit(tmp_path, 4, "--ckpt_path", "last")
    assert trained(torch.load(last_checkpoint(tmp_path), weights_only=True))["updates"] == 4 * BATCHES


@pytest.mark.parametrize("epoch", [2, 3], ids=["before-the-last-epoch", "after-the-last-epoch"])
def test_a_sigint_just_after_a_checkpoint_write_is_never_swallowed(tmp_path: Path, epoch: int) -> None:
    result = fit_process(tmp_path, 3, probe(signal.SIGINT, epoch, "after_write"))
    assert_stopped(result, tmp_path, signal.SIGINT, epochs=epoch, of=3)


def test_a_sigint_inside_a_checkpoint_write_lets_the_write_finish_and_is_one_line(tmp_path: Path) -> None:
    result = fit_process(tmp_path, 3, probe(signal.SIGINT, 2, "in_write"))
    assert_stopped(result, tmp_path, signal.SIGINT, epochs=2, of=3)


def test_a_stop_between_scheduled_checkpoints_writes_last_ckpt_and_resumes_exactly(tmp_path: Path) -> None:
    schedule = tmp_path / "every_third_epoch.yaml"
    schedule.write_text(EVERY_THIRD_EPOCH)
    result = fit_process(tmp_path / "stopped", 4, "--config", str(schedule), probe(signal.SIGTERM, 2, "epoch_start"))
    assert_stopped(result, tmp_path / "stopped", signal.SIGTERM, epochs=2, of=4)
    fit(tmp_path / "stopped", 4, "--config", str(schedule), "--ckpt_path", "last")
    fit(tmp_path / "straight", 4, "--config", str(schedule))

    straight = torch.load(last_checkpoint(tmp_path / "straight"), weights_only=True)
    resumed = torch.load(last_checkpoint(tmp_path / "stopped"), weights_only=True)
    for key in ("state_dict", "optimizer_states", "counters", DATA_STATE, "epoch", "global_step"):
        assert_same(straight[key], resumed[key], key)


def test_a_signal_to_one_ddp_rank_stops_every_rank_at_the_same_epoch(tmp_path: Path) -> None:
    result = her_lightning_process(
        ["fit", "--config", str(ROOT / "configs" / "point2d_ddp.yaml"), *TINY, "--trainer.accelerator", "cpu",
         "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.max_epochs", "4",
         probe(signal.SIGTERM, 2, "epoch_start")]
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert len([line for line in result.stderr.splitlines() if line.startswith("her-lightning: stopped by")]) == 1
    checkpoint = torch.load(tmp_path / "point2d_ddp" / "version_0" / "checkpoints" / LAST_CHECKPOINT, weights_only=True)
    assert trained(checkpoint)["updates"] == 2 * BATCHES


def test_a_lock_file_that_is_a_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = run_folder(tmp_path) / LOCK_FILE
    lock.mkdir(parents=True)
    error = refused(capsys, fit_command(tmp_path, 2, "--trainer.logger.init_args.version", "0"))
    assert f"{lock} is a directory" in error


def test_what_killed_checkpoint_writes_left_is_removed_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit(tmp_path, 1)
    folder = last_checkpoint(tmp_path).parent
    left = [folder / ".last.ckpt.k2x_9aq0.tmp", folder / ".epoch=0-step=2.ckpt.abcdefgh.tmp"]
    kept = [folder / ".notes.txt.abcdefgh.tmp", folder / ".last.ckpt.tmp"]  # not a checkpoint's, not atomic_write's
    for path in left + kept:
        path.write_bytes(b"partial")
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)  # on to caplog's handler
    with caplog.at_level(logging.INFO):
        fit(tmp_path, 2, "--ckpt_path", "last")
    assert [path for path in left + kept if path.exists()] == kept
    lines = [record.getMessage() for record in caplog.records if "removed" in record.getMessage()]
    assert len(lines) == 1 and all(f"{path.name} (7 bytes)" in lines[0] for path in left), lines
