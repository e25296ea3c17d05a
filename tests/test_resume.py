"""What a resume compares and what it does to a run folder's event files, without training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from her_lightning.her import GoalStrategy
from her_lightning.resume import (
    RunFolderBusy,
    RunFolderLock,
    cut_event_logs,
    plain_values,
    settings_differences,
)


def test_settings_differences_name_each_leaf_and_skip_what_only_one_side_has() -> None:
    saved = {"model": {"hidden": (64, 64), "tau": 0.005, "obs_dim": 2, "_instantiator": "x"},
             "data": {"env": {"id": "point2d", "kwargs": {}}, "save_buffer": True}}
    wanted = {"model": {"hidden": [128, 128], "tau": 0.005, "average_policy": True},
              "data": {"env": {"id": "point2d", "kwargs": {"threshold": 0.3}}, "save_buffer": False}}
    assert settings_differences(saved, wanted) == [
        "model.hidden ([64, 64] in the checkpoint, [128, 128] here)",
        "data.env.kwargs ({} in the checkpoint, {'threshold': 0.3} here)",
    ]  # average_policy: not recorded in the checkpoint; save_buffer: honoured; obs_dim: follows data.env


def test_plain_values_are_what_a_weights_only_checkpoint_holds() -> None:
    assert plain_values({"her_strategy": GoalStrategy.final, "hidden": (8, 8)}) == {"her_strategy": "final",
                                                                                   "hidden": [8, 8]}


def write_events(folder: Path, name: str, size: int) -> Path:
    path = folder / f"events.out.tfevents.{name}"
    path.write_bytes(b"x" * size)
    return path


def test_event_files_are_cut_back_to_the_record_of_their_run_only(tmp_path: Path) -> None:
    first, second = write_events(tmp_path, "1.host.10.0", 100), write_events(tmp_path, "2.host.11.0", 50)
    (tmp_path / "config.yaml").write_text("x")
    assert cut_event_logs(tmp_path, {"elsewhere.tfevents": 10}) == []  # a checkpoint of another folder
    assert first.stat().st_size == 100 and second.exists()
    changed = cut_event_logs(tmp_path, {first.name: 60})
    assert changed == [f"cut {first.name} from 100 to 60 bytes", f"removed {second.name} (logged after the checkpoint)"]
    assert first.stat().st_size == 60 and not second.exists() and (tmp_path / "config.yaml").exists()


def test_the_lock_names_its_holder_and_is_free_once_released(tmp_path: Path) -> None:
    lock = RunFolderLock(tmp_path)
    with pytest.raises(RunFolderBusy, match=rf"pid {os.getpid()}, holding {tmp_path / 'fit.lock'}"):
        RunFolderLock(tmp_path)
    lock.release()
    RunFolderLock(tmp_path).release()
