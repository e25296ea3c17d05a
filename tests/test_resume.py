"""What a resume compares and what it does to a run folder's event files, without training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from her_lightning.checkpoint import CheckpointError, plain_values, recorded_settings
from her_lightning.her import GoalStrategy
from her_lightning.resume import (
    HONOURED,
    RunFolderBusy,
    RunFolderLock,
    check_resume,
    cut_event_logs,
    settings_differences,
)

CHECKPOINT = {
    "hyper_parameters": {"hidden": [64, 64], "tau": 0.005, "obs_dim": 4, "_instantiator": "x"},
    "datamodule_hyper_parameters": {"env": {"id": "point2d", "num_envs": 1, "kwargs": {}}, "save_buffer": True},
    "run_settings": {"seed_everything": 3, "collector": {"warmup_episodes": 20}},
    "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 5}}}},
}


def test_settings_differences_name_each_leaf_and_skip_what_only_one_side_has() -> None:
    saved = {"model": {"hidden": (64, 64), "tau": 0.005, "obs_dim": 2},
             "data": {"env": {"id": "point2d", "kwargs": {}}, "save_buffer": True}}
    wanted = {"model": {"hidden": [128, 128], "tau": 0.005, "average_policy": True},
              "data": {"env": {"id": "point2d", "kwargs": {"threshold": 0.3}}, "save_buffer": False}}
    assert settings_differences(saved, wanted) == [
        "model.hidden ([64, 64] in the checkpoint, [128, 128] here)",
        "data.env.kwargs ({} in the checkpoint, {'threshold': 0.3} here)",
    ]  # average_policy: not recorded in the checkpoint; save_buffer: honoured; obs_dim: follows data.env


def test_a_checkpoints_settings_are_read_from_where_each_is_recorded_without_internal_keys() -> None:
    assert recorded_settings(CHECKPOINT) == {
        "model": {"hidden": [64, 64], "tau": 0.005, "obs_dim": 4},
        "data": {"env": {"id": "point2d", "num_envs": 1, "kwargs": {}}, "save_buffer": True},
        "seed_everything": 3,
        "collector": {"warmup_episodes": 20},
    }
    assert recorded_settings({"hyper_parameters": {"hidden": [8]}}) == {"model": {"hidden": [8]}}  # from Python


def test_options_that_moved_section_are_read_where_they_are_now() -> None:
    older = {**CHECKPOINT, "run_settings": {"collector": {"noise_std": 0.2, "random_action_prob": 0.3}}}
    settings = recorded_settings(older)
    assert settings["model"]["noise_std"] == 0.2 and settings["model"]["random_action_prob"] == 0.3
    assert settings["collector"] == {}
    wanted = {"model": {**CHECKPOINT["hyper_parameters"], "noise_std": 0.1}}
    with pytest.raises(CheckpointError, match=r"model.noise_std \(0.2 in the checkpoint, 0.1 here\)"):
        check_resume(older, "last.ckpt", wanted, None)


def test_a_resume_is_refused_naming_each_difference_and_what_it_honours() -> None:
    wanted = {"model": {"hidden": [64, 64], "tau": 0.01, "obs_dim": 7},
              "data": {"env": {"id": "point2d", "num_envs": 1, "kwargs": {}}, "save_buffer": False},
              "seed_everything": 4, "collector": {"warmup_episodes": 20}}
    with pytest.raises(CheckpointError) as refused:
        check_resume(CHECKPOINT, "last.ckpt", wanted, None)
    message = str(refused.value)
    assert message.startswith("checkpoint last.ckpt was trained with other settings: model.tau (0.005 in the "
                              "checkpoint, 0.01 here); seed_everything (3 in the checkpoint, 4 here). A resume keeps")
    assert f"it honours changes to {', '.join(HONOURED)})" in message and "data.save_buffer" in message
    check_resume(CHECKPOINT, "last.ckpt", {**wanted, "model": CHECKPOINT["hyper_parameters"], "seed_everything": 3}, 6)


def test_a_resume_is_refused_a_max_epochs_below_the_epochs_trained() -> None:
    with pytest.raises(CheckpointError, match=r"trainer.max_epochs=4 is below the 5 epochs .* give at least 6"):
        check_resume(CHECKPOINT, "last.ckpt", {}, 4)


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
