"""Faults of the commands that write a file from a checkpoint (``export``, ``test``) and of the example loaders:
a policy file is replaced whole or not at all, an existing one only on request, and every refusal is one line.

The checkpoint is a one-epoch run of the tiny point task with input normalization: a policy that reaches no goal.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_export import EXAMPLES, export_each
from test_faults import fit, refused, run_folder

from her_lightning.cli import main
from her_lightning.ddpg import policy_weights
from her_lightning.export import INPUTS, export_policy

DTYPE_MISMATCH = "Tensor dtype mismatch! Expected: Float, Got:"  # torch's message, from the program's own check


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    save_dir = tmp_path_factory.mktemp("run")
    fit(save_dir, 1, "--model.normalize_inputs", "true")
    return run_folder(save_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def policies(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_each(checkpoint, tmp_path_factory.mktemp("policies"))


def temporaries(folder: Path) -> list[Path]:
    """The temporary files ``files.atomic_write`` leaves when it is killed (``.<name>.<random>.tmp``)."""
    return list(folder.glob(".*.tmp"))


def deny_temporary_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make creating a file fail as it does in a read-only folder, whoever the user (root writes there anyway)."""

    def denied(suffix: str = "", prefix: str = "", dir: str | None = None, **kwargs: Any) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir or ".", f"{prefix}xyz{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)


def read_only(folder: Path) -> None:
    """Make ``folder`` read-only, or skip where chmod does not stop this user from writing there (root)."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("chmod does not stop this user (root) from writing")


# Item 1: export is atomic and never overwrites silently.
def test_an_existing_output_is_refused_without_overwrite_and_replaced_with_it(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "policy.pt2"
    output.write_bytes(b"another policy")
    error = refused(capsys, ["export", str(checkpoint), str(output)])
    assert f"cannot write {output}: it already exists (--overwrite replaces it)" in error
    assert output.read_bytes() == b"another policy"
    main(["export", str(checkpoint), str(output), "--overwrite"])
    assert torch.export.load(output).module()(torch.zeros(1, 2), torch.zeros(1, 2))["action"].shape == (1, 2)
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("earlier", [None, b"another policy"])
def test_a_saver_that_fails_midway_leaves_the_earlier_file_or_none(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: bytes | None
) -> None:
    output = tmp_path / "policy.pt2"
    if earlier is not None:
        output.write_bytes(earlier)

    def half_then_fail(program: Any, f: Any, **kwargs: Any) -> None:
        with open(f, "wb") if isinstance(f, str | os.PathLike) else f as file:
            file.write(b"PK half a program")
        raise RuntimeError("the saver failed")

    monkeypatch.setattr(torch.export, "save", half_then_fail)
    with pytest.raises(RuntimeError, match="the saver failed"):
        export_policy(checkpoint, output, overwrite=True)
    assert (output.read_bytes() if output.exists() else None) == earlier
    assert temporaries(tmp_path) == []


def test_a_full_disk_during_the_write_leaves_the_earlier_file_and_no_temporary(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "policy.pt2"
    output.write_bytes(b"another policy")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    error = refused(capsys, ["export", str(checkpoint), str(output), "--overwrite"])
    assert f"cannot write {output}: No space left on device" in error
    assert output.read_bytes() == b"another policy"
    assert temporaries(tmp_path) == []


def test_an_export_that_fails_its_check_leaves_no_file(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "allclose", lambda *args, **kwargs: False)  # the written policy acts otherwise
    with pytest.raises(RuntimeError, match="does not reproduce the checkpoint's actor"):
        export_policy(checkpoint, tmp_path / "policy.pt2")
    assert list(tmp_path.iterdir()) == []


# Item 4: an output that cannot be written is one line.
def test_an_existing_directory_is_not_an_output(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "policy.pt2").mkdir()
    error = refused(capsys, ["export", str(checkpoint), str(tmp_path / "policy.pt2"), "--overwrite"])
    assert f"cannot write {tmp_path / 'policy.pt2'}: it is a directory" in error


def test_a_missing_folder_is_named_and_not_created(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "missing" / "policy.pt2"
    error = refused(capsys, ["export", str(checkpoint), str(output)])
    assert f"cannot write {output}: its folder {output.parent} does not exist" in error
    assert not output.parent.exists()


@pytest.mark.parametrize("how", ["chmod", "denied"])
def test_export_to_a_read_only_folder_is_one_line_and_leaves_nothing(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    if how == "chmod":
        read_only(folder)
    else:
        deny_temporary_files(monkeypatch)
    try:
        error = refused(capsys, ["export", str(checkpoint), str(folder / "policy.pt2")])
    finally:
        folder.chmod(0o755)
    assert f"cannot write {folder / 'policy.pt2'}: Permission denied" in error
    assert list(folder.iterdir()) == []


class KeptOutput:
    """A stand-in for capsys that keeps what it last read: ``refused`` returns the error line, and a command that
    prints its result first is checked for that too."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.out = ""

    def readouterr(self) -> Any:
        captured = self.capsys.readouterr()
        self.out = captured.out
        return captured


@pytest.mark.parametrize("how", ["chmod", "denied", "directory"])
def test_test_prints_its_result_when_the_json_cannot_be_written(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    copy = Path(shutil.copy(checkpoint, folder))
    json_file = folder / f"{copy.name}.test.json"
    if how == "chmod":
        read_only(folder)
    elif how == "denied":
        deny_temporary_files(monkeypatch)
    else:
        json_file.mkdir()
    kept = KeptOutput(capsys)
    try:
        error = refused(kept, ["test", str(copy), "--episodes", "2"])
    finally:
        folder.chmod(0o755)
    assert f"test of {copy} (point2d" in kept.out and "success rate 0.000" in kept.out and "written to" not in kept.out
    assert f"the result above was not written to {json_file}:" in error
    assert temporaries(folder) == []


# Item 11: exported policies keep their actions in bounds and refuse what her-lightning refuses.
def test_onnx_actions_stay_within_their_bounds(checkpoint: Path, tmp_path: Path) -> None:
    import onnxruntime

    state = torch.load(checkpoint, weights_only=True)
    prefix = f"{policy_weights(state['hyper_parameters'])}."
    for name, value in state["state_dict"].items():
        if name.startswith(prefix):
            value.mul_(10.0)  # a saturated actor: most of its actions are tanh's +-1
    saturated = tmp_path / "saturated.ckpt"
    torch.save(state, saturated)
    export_policy(saturated, tmp_path / "policy.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(0)
    inputs = {name: (generator.standard_normal((100_000, 2)) * 5).astype(np.float32) for name in INPUTS}
    action, unit = session.run(["action", "action_unit"], inputs)
    assert (np.abs(unit) == 1.0).mean() > 0.1  # the bound is met, not avoided
    assert np.abs(unit).max() <= 1.0 and np.abs(action).max() <= 1.0


@pytest.mark.parametrize(
    ("observation", "goal", "message"),
    [
        (torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 2), f"{DTYPE_MISMATCH} long"),
        (torch.zeros(4, 2), torch.zeros(4, 2, dtype=torch.float16), f"{DTYPE_MISMATCH} c10::Half"),
        (torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 2), f"{DTYPE_MISMATCH} double"),
        (torch.zeros(2), torch.zeros(2), "Unexpected number of dimensions in input at *args[0].shape"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), "Unexpected number of dimensions in input at *args[0].shape"),
        (torch.zeros(4, 2), torch.zeros(4, 3), "Expected input at *args[1].shape[1] to be equal to 2, but got 3"),
    ],
    ids=["int64", "float16", "float64", "1-D", "3-D", "width"],
)
def test_the_pt2_policy_refuses_other_dtypes_and_shapes_in_one_line(
    policies: dict[str, Path], observation: torch.Tensor, goal: torch.Tensor, message: str
) -> None:
    policy = torch.export.load(policies[".pt2"]).module()
    with pytest.raises(RuntimeError) as error:
        policy(observation, goal)
    assert message in str(error.value) and "\n" not in str(error.value).strip()


# Item 13: the example loaders.
def run_example(suffix: str, path: Path | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES[suffix]), str(path)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("suffix", list(EXAMPLES))
def test_an_example_says_when_no_episode_reached_its_goal(
    policies: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    result = run_example(suffix, policies[suffix], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "success rate 0.00, no episode reached its goal" in result.stdout and "nan" not in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("suffix", list(EXAMPLES))
@pytest.mark.parametrize("given", ["missing", "other format", "a checkpoint"])
def test_an_example_given_a_file_it_cannot_run_says_so_in_one_line(
    policies: dict[str, Path], checkpoint: Path, tmp_path: Path, suffix: str, given: str
) -> None:
    other = next(path for other_suffix, path in policies.items() if other_suffix != suffix)
    path = {"missing": tmp_path / f"nope{suffix}", "other format": other, "a checkpoint": checkpoint}[given]
    result = run_example(suffix, path, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{EXAMPLES[suffix].name}: error: {path}")
    assert "Traceback" not in result.stderr
    if given == "other format":
        assert EXAMPLES[next(iter(set(EXAMPLES) - {suffix}))].name in result.stderr  # the example that runs it
