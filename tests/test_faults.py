"""Faults found by probing the command line (issue #14): each is refused or reported in one line, and nothing is lost.

Every run here is tiny (a few episodes, two updates an epoch); a refusal happens before training starts.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.checkpoint import DATA_STATE, AtomicCheckpointIO, CheckpointError, verify_checkpoint
from her_lightning.cli import main
from her_lightning.data import HERDataModule
from her_lightning.envs import make_env
from her_lightning.resume import LOCK_FILE, RunFolderLock
from her_lightning.rng import derive_seed
from her_lightning.testing import evaluate_checkpoint

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "point2d.yaml")
TINY = [
    "--collector.warmup_episodes", "4",
    "--data.eval_episodes", "4",
    "--data.batches_per_epoch", "2",
    "--data.batch_size", "32",
    "--trainer.check_val_every_n_epoch", "1",
    "--trainer.enable_progress_bar", "false",
]


def fit(save_dir: Path, epochs: int, *extra: str, config: str = CONFIG) -> None:
    main(["fit", "--config", config, *TINY, "--trainer.logger.init_args.save_dir", str(save_dir),
          "--trainer.max_epochs", str(epochs), *extra])


def refused(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    """Run ``her-lightning`` in-process, expect exit code 2, and return its error line (checked to be one line)."""
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    errors = [line for line in err.splitlines() if line.startswith("her-lightning: error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err  # one line, and the last
    return errors[0]


def fit_command(save_dir: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", "--config", CONFIG, *TINY, "--trainer.logger.init_args.save_dir", str(save_dir),
            "--trainer.max_epochs", str(epochs), *extra]


def run_folder(save_dir: Path) -> Path:
    return save_dir / "point2d" / "version_0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_dir holding one run of 2 epochs; tests that change it work on a copy (``run_copy``)."""
    save_dir = tmp_path_factory.mktemp("trained")
    fit(save_dir, 2)
    return save_dir


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "logs")
    return tmp_path / "logs"


# 1. A checkpoint's settings are compared with the config, not silently taken over.
@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (("--model.hidden", "[32,32]", "--model.actor_lr", "0.1"),
         ["model.hidden ([128, 128] in the checkpoint, [32, 32] here)",
          "model.actor_lr (0.001 in the checkpoint, 0.1 here)"]),
        (("--data.batch_size", "7"), ["data.batch_size (32 in the checkpoint, 7 here)"]),
        (("--model.noise_std", "0.3"), ["model.noise_std"]),
        (("--collector.episodes_per_epoch", "3"), ["collector.episodes_per_epoch"]),
        (("--data.env.kwargs", "{threshold: 0.3}"), ["data.env.kwargs"]),
        (("--seed_everything", "3"), ["seed_everything", "data.seed"]),
    ],
)
def test_a_resume_that_changes_the_model_data_or_task_is_refused_naming_each_key(
    run_copy: Path, args: tuple[str, ...], keys: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config_before = (run_folder(run_copy) / "config.yaml").read_bytes()
    error = refused(capsys, fit_command(run_copy, 4, "--ckpt_path", "last", *args))
    assert "was trained with other settings" in error and "A resume keeps them (it honours changes to trainer" in error
    for key in keys:
        assert key in error
    assert (run_folder(run_copy) / "config.yaml").read_bytes() == config_before


def test_another_configs_checkpoint_is_refused(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = run_folder(run_copy) / "checkpoints" / "last.ckpt"
    error = refused(capsys, ["fit", "--config", str(ROOT / "configs" / "point2d_fast.yaml"), *TINY,
                             "--trainer.logger.init_args.save_dir", str(run_copy), "--ckpt_path", str(checkpoint)])
    assert "model.hidden ([128, 128] in the checkpoint, [64, 64] here)" in error
    assert "data.env.num_envs (1 in the checkpoint, 4 here)" in error
    assert not (run_copy / "point2d_fast").exists()


def test_a_resume_honours_trainer_changes_and_keeps_the_checkpoints_settings(run_copy: Path) -> None:
    fit(run_copy, 3, "--ckpt_path", "last", "--trainer.check_val_every_n_epoch", "2", "--data.save_buffer", "false")
    checkpoint = torch.load(run_folder(run_copy) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["counters"]["updates"] == 3 * 2
    assert checkpoint["hyper_parameters"]["hidden"] == [128, 128]
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == 32
    assert "check_val_every_n_epoch: 2" in (run_folder(run_copy) / "config.yaml").read_text()


# 2. One writer per run folder.
def test_a_second_writer_is_refused_and_a_killed_writer_does_not_block(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_folder(run_copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from her_lightning.resume import RunFolderLock; "
                               "RunFolderLock(sys.argv[1]); time.sleep(120)", str(folder)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while (folder / LOCK_FILE).read_text().strip() != str(holder.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        error = refused(capsys, fit_command(run_copy, 3, "--ckpt_path", "last"))
        assert f"run folder {folder} is being written by another her-lightning fit (pid {holder.pid}" in error
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fit(run_copy, 3, "--ckpt_path", "last")  # the OS dropped the killed process's lock
    assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
    RunFolderLock(folder).release()  # and this process let go of it when its fit ended


# 3, 4. Everything is checked before anything is written.
def test_max_epochs_below_the_checkpoint_is_one_line_and_changes_nothing(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {path: path.read_bytes() for path in run_folder(run_copy).rglob("*") if path.is_file()}
    error = refused(capsys, fit_command(run_copy, 1, "--ckpt_path", "last"))
    assert "trainer.max_epochs=1 is below the 2 epochs that checkpoint" in error
    assert {path: path.read_bytes() for path in run_folder(run_copy).rglob("*") if path.is_file()} == before


def test_a_resume_that_fails_inside_fit_leaves_the_config_yaml(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_before = (run_folder(run_copy) / "config.yaml").read_bytes()

    def fail(self: HERDataModule, state: dict) -> None:
        raise RuntimeError("restore failed")

    monkeypatch.setattr(HERDataModule, "load_state_dict", fail)
    with pytest.raises(RuntimeError, match="restore failed"):
        fit(run_copy, 4, "--ckpt_path", "last", "--trainer.check_val_every_n_epoch", "3")
    assert (run_folder(run_copy) / "config.yaml").read_bytes() == config_before


# 5. A resumed curve has one point per step, the same as a run never stopped.
def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def next_second() -> None:
    """TensorBoard reads a folder's event files in name order: by the second each started, then by pid and a
    per-process counter as text. Sessions of one process within one second could be read out of order."""
    time.sleep(1.0 - time.time() % 1.0)


@pytest.fixture(scope="module")
def straight_six(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, float]]]:
    save_dir = tmp_path_factory.mktemp("straight")
    fit(save_dir, 6)
    return scalars(run_folder(save_dir))


@pytest.mark.parametrize("lost_after", [3, 4], ids=["lost-whole-session", "lost-end-of-session"])
def test_what_was_logged_after_the_last_checkpoint_is_not_logged_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, straight_six: dict, lost_after: int
) -> None:
    """A run logged epochs its last checkpoint does not hold (killed before writing it); the resume redoes them.

    Epoch 3 ends one session: losing what came after it drops a whole event file. Epoch 4 is in the
    middle of the next: losing what came after it cuts that file.
    """
    saved: dict[int, Path] = {}
    save = AtomicCheckpointIO.save_checkpoint

    def keep_every_checkpoint(self: AtomicCheckpointIO, checkpoint: dict, path: str, storage_options=None) -> None:
        save(self, checkpoint, path, storage_options)
        copy = tmp_path / f"epoch{checkpoint['loops']['fit_loop']['epoch_progress']['current']['processed']}.ckpt"
        saved[checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]] = copy
        shutil.copy(path, copy)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", keep_every_checkpoint)
    save_dir = tmp_path / "logs"
    fit(save_dir, 3)
    next_second()
    fit(save_dir, 5, "--ckpt_path", "last")
    shutil.copy(saved[lost_after], run_folder(save_dir) / "checkpoints" / "last.ckpt")  # as if killed after it
    next_second()
    fit(save_dir, 6, "--ckpt_path", "last")

    resumed = scalars(run_folder(save_dir))
    assert resumed.keys() == straight_six.keys()
    for tag, curve in resumed.items():
        steps = [step for step, _ in curve]
        assert not [step for step, count in Counter(steps).items() if count > 1], f"{tag}: steps logged twice"
        if tag.startswith("perf/"):  # wall-clock throughput: the same steps, not the same values
            assert steps == [step for step, _ in straight_six[tag]], tag
        else:
            assert curve == straight_six[tag], tag


# 6. Files that are not checkpoints.
def test_a_torch_file_that_is_not_a_checkpoint_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"a": 1}, other)
    error = refused(capsys, fit_command(tmp_path / "logs", 2, "--ckpt_path", str(other)))
    assert f"checkpoint {other} cannot be loaded: not a training checkpoint" in error
    assert not (tmp_path / "logs").exists()
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        verify_checkpoint(other)  # what her-lightning export checks first
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, other)
    with pytest.raises(CheckpointError, match="not a her-lightning checkpoint: its hyper-parameters lack obs_dim"):
        verify_checkpoint(other)


def test_a_directory_is_not_a_checkpoint(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = run_folder(trained)
    error = refused(capsys, fit_command(tmp_path / "logs", 4, "--ckpt_path", str(folder)))
    assert f"checkpoint {folder} is a directory, not a checkpoint file: it holds checkpoints/" in error
    assert "last.ckpt" in error
    assert not (tmp_path / "logs").exists()


# 7. Disk trouble.
def test_a_full_disk_is_one_line_naming_the_file_and_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    writes = []
    real_save = torch.save

    def save_until_full(obj: object, file: object, *args: object, **kwargs: object) -> None:
        writes.append(file)
        if len(writes) > 2:  # the first epoch's two files, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr("her_lightning.checkpoint.torch.save", save_until_full)
    error = refused(capsys, fit_command(tmp_path, 3))
    checkpoints = run_folder(tmp_path) / "checkpoints"
    assert f"cannot write {checkpoints}" in error and "No space left on device" in error
    assert f"last good checkpoint: {checkpoints / 'last.ckpt'} (2 updates" in error
    verify_checkpoint(checkpoints / "last.ckpt")
    assert not list(checkpoints.glob(".*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_log_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_dir = tmp_path / "read_only"
    save_dir.mkdir()
    save_dir.chmod(0o500)
    try:
        error = refused(capsys, fit_command(save_dir, 2))
    finally:
        save_dir.chmod(0o700)
    assert f"cannot write {save_dir}" in error and "Permission denied" in error
    assert "last good checkpoint: none" in error


# 8. Checkpoints of 2 DDP ranks.
@pytest.fixture
def two_rank_checkpoint(trained: Path, tmp_path: Path) -> Path:
    """The 2-epoch checkpoint with its per-rank state doubled, as 2 ranks write it (see ``gather_rank_states``)."""
    checkpoint = torch.load(run_folder(trained) / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint[DATA_STATE]
    shared = {key: state.pop(key) for key in ("counters", "task")}  # written once, beside the ranks' own states
    checkpoint[DATA_STATE] = {"ranks": [state] * 2, **shared}
    checkpoint["callbacks"]["EpisodeCollector"] = {"ranks": [checkpoint["callbacks"]["EpisodeCollector"]] * 2}
    path = tmp_path / "two_ranks.ckpt"
    torch.save(checkpoint, path)
    return path


def test_test_evaluates_a_two_rank_checkpoint_on_one_process(
    two_rank_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["test", str(two_rank_checkpoint), "--episodes", "7", "--num_envs", "3"])
    (line,) = capsys.readouterr().out.splitlines()
    summary = json.loads(two_rank_checkpoint.with_name("two_ranks.ckpt.test.json").read_text())
    assert summary["episodes"] == 7 and summary["env_id"] == "point2d" and summary["seed"] == 0
    assert summary["trained"] == {"env_steps": summary["trained"]["env_steps"], "episodes": 6, "updates": 4}
    low, high = summary["success_rate_95ci"]
    assert 0.0 <= low <= summary["success_rate"] <= high <= 1.0
    assert f"7 episodes, seed 0: success rate {summary['success_rate']:.3f}" in line and "test.json" in line


def test_test_plays_goals_of_its_own_stream(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = run_folder(trained) / "checkpoints" / "last.ckpt"
    seeds: list[int] = []
    # Every evaluation sizes one episode on a one-copy probe first (seed 0), then plays on its own copies.
    monkeypatch.setattr("her_lightning.testing.make_env", lambda *args, **kwargs: args[1] > 1 and
                        seeds.append(args[2]) or make_env(*args, **kwargs))
    first = evaluate_checkpoint(checkpoint, episodes=20)
    again = evaluate_checkpoint(checkpoint, episodes=20)
    evaluate_checkpoint(checkpoint, episodes=20, seed=6)
    del first["seconds"], again["seconds"]
    assert first == again and first["seed"] == 0  # the run's seed
    # Goals of the run's seed, from a stream that training's evaluations (and its envs) never drew from.
    assert seeds == [derive_seed(0, "test"), derive_seed(0, "test"), derive_seed(6, "test")]
    assert derive_seed(0, "test") not in {derive_seed(0, stream) for stream in ("eval", "env", "warmup")}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--episodes", "0"], "episodes=0 is invalid: must be at least 1"),
        (["--num_envs", "0"], "num_envs=0 is invalid: must be at least 1"),
        (["--config", "x.yaml"], "unrecognized arguments: --config x.yaml"),
    ],
)
def test_test_refuses_bad_options_in_one_line(
    trained: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    checkpoint = run_folder(trained) / "checkpoints" / "last.ckpt"
    assert message in refused(capsys, ["test", str(checkpoint), *options])


def test_resuming_a_two_rank_checkpoint_with_auto_devices_is_one_line(
    two_rank_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refused(capsys, fit_command(tmp_path, 4, "--trainer.devices", "auto", "--trainer.strategy", "auto",
                                        "--ckpt_path", str(two_rank_checkpoint)))
    assert "was written by a run on 2 DDP rank(s), and this run would have 1" in error
    assert not (tmp_path / "point2d").exists()


# 9. File modes.
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_are_written_with_the_umasks_mode(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, tmp_path / "last.ckpt")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask


# 12, 13. Training health.
def test_a_diverging_critic_is_warned_about_once(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"train/q_mean is .* at update \d+, far outside the returns the rewards "
                                         r"allow \(\[-50, 0\]\): the value estimate is diverging") as warned:
        fit(tmp_path, 3, "--model.actor_lr", "1e3", "--model.critic_lr", "1e3", "--data.batches_per_epoch", "20")
    assert len([w for w in warned if "far outside the returns" in str(w.message)]) == 1


def test_nan_stops_the_run_in_one_line_before_any_checkpoint_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refused(capsys, fit_command(tmp_path, 3, "--model.actor_lr", "1e30", "--model.critic_lr", "1e30",
                                        "--data.batches_per_epoch", "20"))
    assert "critic loss is nan at update 20 (it left the finite numbers within updates 1-20)" in error
    assert "lower model.critic_lr (now 1e+30)" in error and "last good checkpoint: none" in error
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("learner", "lr_option"),
    [(["--model", "her_lightning.HERSAC", "--model.actor_lr", "1e30", "--model.temperature_lr", "1e30"], "critic_lr"),
     (["--model", "her_lightning.HERDQN", "--data.env.id", "bit_flip", "--data.env.kwargs", "{n_bits: 6}"], "q_lr")],
    ids=["sac", "dqn"],
)
def test_nan_stops_the_other_learners_in_one_line_naming_their_learning_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], learner: list[str], lr_option: str
) -> None:
    error = refused(capsys, fit_command(tmp_path, 3, *learner, f"--model.{lr_option}", "1e30",
                                        "--data.batches_per_epoch", "20"))
    assert f"lower model.{lr_option} (now 1e+30)" in error and "last good checkpoint: none" in error
    assert " loss is nan at update " in error or " weights are NaN or infinite after update " in error
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_checkpoint_with_non_finite_weights_never_replaces_a_good_one(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"not writing checkpoint .*last.ckpt: weights w are NaN or infinite"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "last.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "last.ckpt")["state_dict"]["w"], torch.ones(2))


# 17. Only the subcommands that work.
@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_validate_and_predict_are_not_offered(subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    error = refused(capsys, [subcommand, "--config", CONFIG])
    assert f"unknown subcommand '{subcommand}': choose from 'fit', 'test', 'export'" in error
