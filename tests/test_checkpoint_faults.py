"""Checkpoints that pass their checksums but contradict themselves: each is refused in one line that says what is wrong
with the file, by a resume (``fit --ckpt_path``), by ``test`` and by ``export`` alike (all read it with
``checkpoint.read_checkpoint``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_faults import fit, fit_command, refused, run_folder

from her_lightning.checkpoint import FORMAT, FORMAT_KEY, CheckpointError, read_checkpoint
from her_lightning.ddpg import HERDDPG

Change = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``last.ckpt`` of a one-epoch run of the tiny point task; tests change copies of it."""
    save_dir = tmp_path_factory.mktemp("good")
    fit(save_dir, 1)
    return run_folder(save_dir) / "checkpoints" / "last.ckpt"


def changed(good: Path, folder: Path, change: Change) -> Path:
    """A copy of checkpoint ``good`` in ``folder``, its contents changed by ``change`` and saved again (so its
    checksums pass)."""
    contents = torch.load(good, weights_only=True)
    change(contents)
    path = folder / "changed.ckpt"
    torch.save(contents, path)
    return path


def set_weight(name: str, value: float) -> Change:
    def change(contents: dict[str, Any]) -> None:
        contents["state_dict"][name][0, 0] = value

    return change


def set_hyper_parameter(name: str, value: Any) -> Change:
    def change(contents: dict[str, Any]) -> None:
        contents["hyper_parameters"][name] = value

    return change


def set_format(value: int | None) -> Change:
    def change(contents: dict[str, Any]) -> None:
        if value is None:
            del contents[FORMAT_KEY]
        else:
            contents[FORMAT_KEY] = value

    return change


def commands(checkpoint: Path, folder: Path) -> dict[str, list[str]]:
    """Each command that reads a checkpoint, given ``checkpoint``."""
    return {
        "fit": fit_command(folder / "logs", 3, "--ckpt_path", str(checkpoint)),
        "test": ["test", str(checkpoint), "--episodes", "2"],
        "export": ["export", str(checkpoint), str(folder / "policy.pt2")],
    }


CHANGES = {
    "nan weight": (set_weight("actor.net.2.weight", float("nan")), "weights actor.net.2.weight are NaN or infinite"),
    "inf weight": (
        set_weight("critic_target.net.0.weight", float("-inf")),
        "weights critic_target.net.0.weight are NaN or infinite",
    ),
    "hidden": (
        set_hyper_parameter("hidden", [64, 64]),
        ("its hyper-parameters disagree with its weights: weight actor.net.0.weight is (128, 4) in the file, "
         "where hidden=[64, 64] makes it (64, 4)"),
    ),
    "obs_dim": (
        set_hyper_parameter("obs_dim", 5),
        ("its hyper-parameters disagree with its weights: weight actor.net.0.weight is (128, 4) in the file, "
         "where obs_dim=5 and goal_dim=2 make it (128, 7)"),
    ),
    "twin_critics": (
        set_hyper_parameter("twin_critics", True),
        ("its hyper-parameters disagree with its weights: twin_critics=True makes weights critic_twin.net.0.weight, "
         "critic_twin.net.0.bias, critic_twin.net.2.weight, ..., which the file lacks"),
    ),
    "invalid": (set_hyper_parameter("hidden", [0]), "its hyper-parameters are invalid: hidden"),
    "other format": (
        set_format(FORMAT + 1),
        f"it is of checkpoint format {FORMAT + 1}, and this version of her-lightning reads format {FORMAT}",
    ),
    "no format": (
        set_format(None),
        (f"it is of checkpoint format none (it records no {FORMAT_KEY}), and this version of her-lightning reads "
         f"format {FORMAT}"),
    ),
}


@pytest.mark.parametrize("command", ["fit", "test", "export"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_an_inconsistent_checkpoint_is_refused_in_one_line_saying_what_is_wrong(
    good_checkpoint: Path, tmp_path: Path, change: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, what = CHANGES[change]
    checkpoint = changed(good_checkpoint, tmp_path, edit)
    error = refused(capsys, commands(checkpoint, tmp_path)[command])
    assert f"checkpoint {checkpoint} cannot be loaded: {what}" in error
    assert not (tmp_path / "logs").exists() and not (tmp_path / "policy.pt2").exists()


def test_a_weight_the_hyper_parameters_do_not_make_is_named(good_checkpoint: Path, tmp_path: Path) -> None:
    def add_weight(contents: dict[str, Any]) -> None:
        contents["state_dict"]["actor.net.9.weight"] = torch.zeros(2, 2)

    with pytest.raises(CheckpointError, match=r"the file holds weights actor.net.9.weight, which its "
                                              r"hyper-parameters do not make"):
        read_checkpoint(changed(good_checkpoint, tmp_path, add_weight))


def test_a_consistent_checkpoint_reads_as_saved(good_checkpoint: Path) -> None:
    contents = read_checkpoint(good_checkpoint)
    assert contents["hyper_parameters"]["hidden"] == [128, 128]
    assert torch.isfinite(contents["state_dict"]["actor.net.0.weight"]).all()


def test_the_learner_refuses_a_checkpoint_of_another_format_before_loading_anything() -> None:
    """What a Python user's ``Trainer.fit(ckpt_path=...)`` meets: the learner's hook is the first to see the file."""
    learner = HERDDPG(obs_dim=4, goal_dim=2, action_dim=2)
    with pytest.raises(CheckpointError, match=rf"it is of checkpoint format {FORMAT + 1}, .* reads format {FORMAT}"):
        learner.on_load_checkpoint({FORMAT_KEY: FORMAT + 1, "counters": {"updates": 7}})
    assert learner.updates == 0
    learner.on_load_checkpoint({FORMAT_KEY: FORMAT, "counters": {"updates": 7}})
    assert learner.updates == 7
