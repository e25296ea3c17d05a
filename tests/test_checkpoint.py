"""Checkpoints: exact resume, resume after SIGKILL, atomic writes, corrupt files, and what a checkpoint holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.checkpoint import (
    DATA_STATE,
    FORMAT,
    FORMAT_KEY,
    AtomicCheckpointIO,
    CheckpointError,
    trained,
    verify_checkpoint,
)
from her_lightning.cli import main

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "point2d.yaml")
SMALL = [
    "--collector.warmup_episodes", "20",
    "--collector.episodes_per_epoch", "2",
    "--data.batches_per_epoch", "16",
    "--data.batch_size", "64",
    "--data.eval_episodes", "10",
    "--trainer.check_val_every_n_epoch", "2",
]


def fit(save_dir: Path, epochs: int, *extra: str) -> None:
    main(["fit", "--config", CONFIG, *SMALL, "--trainer.logger.init_args.save_dir", str(save_dir),
          "--trainer.max_epochs", str(epochs), *extra])


def last_checkpoint(save_dir: Path) -> Path:
    (checkpoint,) = save_dir.glob("point2d/version_*/checkpoints/last.ckpt")
    return checkpoint


def scalars(save_dir: Path) -> dict[str, list[tuple[int, float]]]:
    (run,) = (save_dir / "point2d").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same(a: object, b: object, where: str = "checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


VARIANTS = {
    "ddpg": [],
    # Every option that keeps state of its own: input statistics, a second critic, the target noise stream.
    "td3_normalized": ["--model.normalize_inputs", "true", "--model.twin_critics", "true",
                       "--model.critic_layer_norm", "true",
                       "--model.target_policy_noise", "0.2", "--model.policy_delay", "2",
                       "--model.action_l2", "1.0", "--model.clip_target", "true"],
    # The other learners: SAC's sampling stream and temperature, DQN's schedule on the bit-flipping task.
    "sac": ["--model", "her_lightning.HERSAC", "--model.normalize_inputs", "true", "--model.clip_target", "true"],
    "dqn": ["--model", "her_lightning.HERDQN", "--data.env.id", "bit_flip", "--data.env.kwargs", "{n_bits: 6}",
            "--model.epsilon_decay_updates", "50"],
    # A Gymnasium env: its copies' random streams must come back too.
    "gymnasium_env": ["--data.env.id", "goal_envs:ToyReach-v0", "--data.env.num_envs", "2",
                      "--model.normalize_inputs", "true", "--data.displaced_share", "0.5"],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path: Path, variant: str) -> None:
    """Bitwise: on the CPU every operation here (fused Adam included) is deterministic for a fixed thread count."""
    if variant == "gymnasium_env":
        pytest.importorskip("gymnasium", reason="the Gymnasium adapter needs gymnasium")
    options = VARIANTS[variant]
    fit(tmp_path / "straight", 6, *options)
    fit(tmp_path / "resumed", 3, *options)
    fit(tmp_path / "resumed", 6, "--ckpt_path", "last", *options)

    straight = torch.load(last_checkpoint(tmp_path / "straight"), weights_only=True)
    resumed = torch.load(last_checkpoint(tmp_path / "resumed"), weights_only=True)
    assert trained(straight)["updates"] == 6 * 16 and trained(straight)["episodes"] == 20 + 6 * 2
    for key in ("state_dict", "optimizer_states", "counters", DATA_STATE, "epoch", "global_step"):
        assert_same(straight[key], resumed[key], key)
    for name in ("EpisodeCollector", "Evaluator"):
        (state_key,) = [k for k in straight["callbacks"] if k.startswith(name)]
        assert_same(straight["callbacks"][state_key], resumed["callbacks"][state_key], name)
    # One run folder, and the same curves: no gap, no restart at zero.
    assert len(list((tmp_path / "resumed" / "point2d").iterdir())) == 1
    straight_curves, resumed_curves = scalars(tmp_path / "straight"), scalars(tmp_path / "resumed")
    assert straight_curves.keys() == resumed_curves.keys()
    for tag, curve in straight_curves.items():
        if tag.startswith("perf/"):  # wall-clock throughput: the same steps, not the same values
            assert [step for step, _ in curve] == [step for step, _ in resumed_curves[tag]]
        else:
            assert curve == resumed_curves[tag], tag


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path: Path) -> None:
    fit(tmp_path, 2)
    checkpoint = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert checkpoint[FORMAT_KEY] == FORMAT
    # Each setting once: the model's and the data's where Lightning writes them, the rest in the run's own record.
    assert checkpoint["hyper_parameters"]["hidden"] == [128, 128]
    assert checkpoint["datamodule_hyper_parameters"]["env"] == {"id": "point2d", "num_envs": 1, "kwargs": {}}
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == 64
    assert set(checkpoint["run_settings"]) == {"seed_everything", "collector"}
    assert set(checkpoint["counters"]) == {"updates"}  # the learner's; the experience counters are the data's
    assert set(checkpoint[DATA_STATE]["counters"]) == {"env_steps", "episodes"}
    assert set(checkpoint["callbacks"]["Evaluator"]) == {"solved", "evaluations"}
    expected = {"actor.net.0.weight", "actor_target.net.0.weight", "critic_target.net.4.bias"}
    assert expected <= set(checkpoint["state_dict"])
    assert len(checkpoint["optimizer_states"]) == 2
    data = checkpoint[DATA_STATE]
    assert data["buffer"]["episode_length"].numel() == 20 + 2 * 2
    assert data["buffer"]["observation"].shape[0] == data["counters"]["env_steps"] + 24
    assert isinstance(data["env"]["generator"], torch.Tensor) and isinstance(data["sampler_generator"], torch.Tensor)


def test_without_the_buffer_a_resume_refills_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path, 2, "--data.save_buffer", "false")
    checkpoint = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert "buffer" not in checkpoint[DATA_STATE]
    with pytest.warns(UserWarning, match="holds no episode buffer"):
        fit(tmp_path, 3, "--data.save_buffer", "false", "--ckpt_path", "last")
    resumed = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert trained(resumed)["episodes"] == trained(checkpoint)["episodes"] + 20 + 2  # warm-up again, then 1 epoch


def test_resume_last_without_a_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, 2, "--ckpt_path", "last")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no last.ckpt under" in err and "there is no run to resume" in err
    assert not (tmp_path / "point2d").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_checkpoint_is_named(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path, 1)
    checkpoint = last_checkpoint(tmp_path)
    data = bytearray(checkpoint.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    broken = checkpoint.with_name("broken.ckpt")
    broken.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, 2, "--ckpt_path", str(broken))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"checkpoint {broken} cannot be loaded" in err
    assert ("truncated" if damage == "truncate" else "fails its checksum") in err
    assert "last.ckpt" in err  # points to the good checkpoint beside it
    verify_checkpoint(checkpoint)


def test_atomic_write_leaves_the_previous_file_when_saving_fails(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2), "bad": Unpicklable()}, target)
    assert io.load_checkpoint(target)["step"].item() == 1
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "missing.ckpt")


def test_sigkill_mid_epoch_then_resume_completes_the_run(tmp_path: Path) -> None:
    epochs, batches = 12, 150
    args = [sys.executable, "-m", "her_lightning.cli", "fit", "--config", CONFIG, *SMALL,
            "--data.batches_per_epoch", str(batches), "--trainer.check_val_every_n_epoch", "1",
            "--trainer.max_epochs", str(epochs), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "point2d" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    seen = 0
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
            seen = checkpoint.stat().st_mtime_ns
            if torch.load(checkpoint, weights_only=True)["counters"]["updates"] >= 2 * batches:
                time.sleep(0.3)  # into the next epoch's updates
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = torch.load(checkpoint, weights_only=True)
    done = killed["counters"]["updates"] // batches
    assert 2 <= done < epochs
    assert killed["counters"]["updates"] == done * batches  # saved at an epoch end
    assert trained(killed)["episodes"] == 20 + done * 2

    resumed = subprocess.run(args + ["--ckpt_path", "last"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f"Restoring states from the checkpoint path at {checkpoint}" in log
    evals = [line for line in log.splitlines() if line.startswith("eval (")]
    assert len(evals) == epochs - done  # only the missing epochs were trained
    assert f"{(done + 1) * batches:,} updates" in evals[0]  # counters continue from the checkpoint
    final = torch.load(checkpoint, weights_only=True)
    assert final["counters"]["updates"] == epochs * batches
    assert trained(final)["episodes"] == 20 + epochs * 2
    assert sorted(p.name for p in (tmp_path / "point2d").iterdir()) == ["version_0"]
