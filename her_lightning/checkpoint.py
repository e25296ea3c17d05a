"""Checkpoint files: atomic writes, integrity checks with clear errors, and finding a run's last checkpoint."""

from __future__ import annotations

import inspect
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from her_lightning.files import atomic_write

LAST_CHECKPOINT = "last.ckpt"
DATA_STATE = "HERDataModule"  # where Lightning keeps the datamodule's state_dict in a checkpoint (its class name)
# The layout of what a checkpoint holds and where: every change to it takes the next number. Written by the learner
# (``HERLearner.on_save_checkpoint``); a checkpoint of another format is refused (``format_mismatch``).
FORMAT = 1
FORMAT_KEY = "her_lightning_format"
RUN_RECORD = "run_settings"  # the run's own record of its settings (``resume.RunRecord``)
# Where a checkpoint records each section of a run's settings: the model's and the data's where Lightning writes
# their ``save_hyperparameters``, the rest (what Lightning has no place for) in the run's own record.
RECORDS = {
    "model": pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY,
    "data": pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY,
    "seed_everything": RUN_RECORD,
    "collector": RUN_RECORD,
}


# Options that moved to another section (section, option: new section): a checkpoint written before records them
# where they were, and ``recorded_settings`` reads them where they are now.
MOVED = {("collector", "noise_std"): "model", ("collector", "random_action_prob"): "model"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, syncs it to disk, then renames it over the target.

    A run killed at any moment leaves either the previous checkpoint or the new
    one, never a partial file. Loading turns an unreadable file into a
    ``CheckpointError`` that names it.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        _refuse_non_finite_weights(checkpoint, path)
        if "://" in str(path):  # remote storage: Lightning's own transactional write
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda file: torch.save(checkpoint, file))

    @override
    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if "://" not in str(path):
            _verify_file(Path(path))
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


# What every her-lightning checkpoint holds: the model's weights and the settings that shape them.
REQUIRED_HYPER_PARAMETERS = ("obs_dim", "goal_dim", "action_dim", "hidden")


def verify_checkpoint(path: str | Path) -> None:
    """Check that ``path`` is a complete, uncorrupted her-lightning checkpoint (see ``read_checkpoint``).

    Raises:
        CheckpointError: If it is not; the message names the file and why.
    """
    read_checkpoint(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a complete, uncorrupted her-lightning checkpoint, memory-mapped (cheap to open).

    Every stored record's CRC is checked first; then that the file loads with ``weights_only=True`` and holds
    a model's weights and hyper-parameters (a torch file that is not a training checkpoint is refused here,
    not half-way through a run); then that the weights are finite and are the ones its hyper-parameters make
    (``weights_disagreement``). A checkpoint of another format than ``FORMAT`` is refused.

    Raises:
        CheckpointError: If the file is missing, a directory, truncated, corrupt, not a her-lightning
            checkpoint, of another format, or holds weights that are not finite or that its hyper-parameters do
            not make; the message names it and what is wrong.
    """
    path = Path(path)
    _verify_file(path)
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise CheckpointError(_unreadable(path, f"not a checkpoint ({_first_reason(error)})")) from None
    if not isinstance(contents, dict) or "state_dict" not in contents:
        raise CheckpointError(_unreadable(path, "not a training checkpoint: it holds no model weights (state_dict)"))
    missing = [key for key in REQUIRED_HYPER_PARAMETERS if key not in contents.get("hyper_parameters", {})]
    if missing:
        raise CheckpointError(
            _unreadable(path, f"not a her-lightning checkpoint: its hyper-parameters lack {', '.join(missing)}")
        )
    mismatch = format_mismatch(contents)
    if mismatch is not None:
        raise CheckpointError(_unreadable(path, mismatch))
    bad = non_finite_weights(contents["state_dict"])
    if bad:
        raise CheckpointError(
            _unreadable(path, f"weights {_some(bad)} are NaN or infinite (the run diverged, or the file was edited)")
        )
    from her_lightning.learner import learner_class  # the learners import this module

    try:
        learner = learner_class(contents)
    except CheckpointError as error:
        raise CheckpointError(_unreadable(path, str(error))) from None
    disagreement = weights_disagreement(contents["hyper_parameters"], contents["state_dict"], learner)
    if disagreement is not None:
        raise CheckpointError(_unreadable(path, disagreement))
    return contents


def format_mismatch(contents: dict[str, Any]) -> str | None:
    """Why a checkpoint's format is not the one this version reads (naming both), or ``None`` where it is."""
    found = contents.get(FORMAT_KEY)
    if found == FORMAT:
        return None
    return (
        f"it is of checkpoint format {'none (it records no ' + FORMAT_KEY + ')' if found is None else found}, "
        f"and this version of her-lightning reads format {FORMAT}: use the version that wrote it, or train anew"
    )


# The hyper-parameters that decide which weights a learner has and their shapes (each learner has some of them).
SHAPING_HYPER_PARAMETERS = (
    "obs_dim", "goal_dim", "action_dim", "hidden", "twin_critics", "critic_layer_norm", "normalize_inputs",
    "average_policy", "num_actions",
)


def non_finite_weights(weights: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point weights that hold a NaN or an infinity."""
    return [name for name, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]


def weights_disagreement(hparams: dict[str, Any], weights: dict[str, torch.Tensor], learner: type) -> str | None:
    """What differs between ``weights`` and the weights of the ``learner`` that ``hparams`` make, in words that
    name the hyper-parameters to blame; ``None`` where they agree.

    The module is built on the meta device (shapes without memory), so the comparison is exact for every
    network and normalizer it has. A shaping hyper-parameter is blamed for a difference where another value of
    it changes what differs: the size of that dimension, or whether that weight exists.
    """
    try:
        settings = learner_settings(learner, hparams)
        made = _weight_shapes(learner, settings)
    except (ValueError, TypeError) as error:
        return f"its hyper-parameters are invalid: {error}"
    held = {name: tuple(value.shape) for name, value in weights.items()}
    reshaped = [name for name, shape in made.items() if name in held and held[name] != shape]
    if reshaped:
        name = reshaped[0]
        blamed = _blamed(learner, settings, lambda shapes: _dimensions_differ(shapes.get(name), made[name], held[name]))
        return (
            f"its hyper-parameters disagree with its weights: weight {name} is {held[name]} in the file, "
            f"where {_named(settings, blamed)} make{'s' if len(blamed) == 1 else ''} it {made[name]}"
        )
    lacking = [name for name in made if name not in held]
    if lacking:
        blamed = _blamed(learner, settings, lambda shapes: lacking[0] not in shapes)
        return (
            f"its hyper-parameters disagree with its weights: {_named(settings, blamed)} "
            f"make{'s' if len(blamed) == 1 else ''} weights {_some(lacking)}, which the file lacks"
        )
    extra = [name for name in held if name not in made]
    if extra:
        blamed = _blamed(learner, settings, lambda shapes: extra[0] in shapes)
        return (
            f"the file holds weights {_some(extra)}, which {_named(settings, blamed)} "
            f"do{'es' if len(blamed) == 1 else ''} not make"
        )
    return None


def learner_settings(learner: type, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The learner's arguments from a checkpoint's hyper-parameters, with the defaults of those it lacks."""
    parameters = inspect.signature(learner).parameters.values()
    return {p.name: hparams.get(p.name, p.default) for p in parameters if p.name in hparams or p.default is not p.empty}


def _weight_shapes(learner: type, settings: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The name and shape of every weight of the learner made with ``settings``, built on the meta device.

    Raises:
        ValueError: If the learner refuses a setting.
    """
    with torch.device("meta"):
        module = learner(**settings)
    return {name: tuple(value.shape) for name, value in module.state_dict().items()}


def _blamed(
    learner: type, settings: dict[str, Any], changes: Callable[[dict[str, tuple[int, ...]]], bool]
) -> list[str]:
    """The shaping hyper-parameters another value of which ``changes`` the weights the learner has."""
    return [
        key
        for key in SHAPING_HYPER_PARAMETERS
        if settings.get(key) is not None
        and changes(_weight_shapes(learner, {**settings, key: _other(settings[key])}))
    ]


def _dimensions_differ(shape: tuple[int, ...] | None, made: tuple[int, ...], held: tuple[int, ...]) -> bool:
    """Whether ``shape`` differs from ``made`` where ``made`` differs from ``held``; ``None`` (no such weight) does."""
    if shape is None or len(shape) != len(made) or len(made) != len(held):
        return True
    return any(shape[i] != made[i] for i in range(len(made)) if made[i] != held[i])


def _other(value: Any) -> Any:
    """Another value of a shaping hyper-parameter, which changes every shape and weight it decides: the other
    boolean, a size one larger, or every hidden width one larger and one more hidden layer."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return [width + 1 for width in value] + [1]


def _named(settings: dict[str, Any], keys: list[str]) -> str:
    """``hidden=[64, 64]``, ``obs_dim=5 and goal_dim=2``; ``its hyper-parameters`` for none."""
    named = [f"{key}={settings[key]!r}" for key in keys]
    return " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named) or "its hyper-parameters"


def _some(names: list[str]) -> str:
    """The first three names, and ``...`` where there are more."""
    return f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"


def trained(checkpoint: dict[str, Any]) -> dict[str, int]:
    """How far a checkpoint's run had trained: ``env_steps``, ``episodes`` and ``updates``."""
    data = checkpoint.get(DATA_STATE, {}).get("counters", {})
    return {
        "env_steps": data.get("env_steps", 0),
        "episodes": data.get("episodes", 0),
        "updates": checkpoint.get("counters", {}).get("updates", 0),
    }


def recorded_settings(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's settings by section (see ``RECORDS``), as plain values, without the sections it does not record
    (a run trained from Python has no record of its own), without LightningCLI's internal ``_`` keys, and with the
    options that moved (``MOVED``) in their present section."""
    settings = {}
    for section, entry in RECORDS.items():
        recorded = checkpoint.get(entry) or {}
        value = recorded.get(section) if entry == RUN_RECORD else recorded
        if isinstance(value, Mapping):
            value = {key: item for key, item in value.items() if not key.startswith("_")} or None
        if value is not None:
            settings[section] = plain_values(value)
    for (section, option), now in MOVED.items():
        if option in settings.get(section, {}) and now in settings:
            settings[now].setdefault(option, settings[section].pop(option))
    return settings


def plain_values(value: Any) -> Any:
    """Dataclasses and mappings as dicts, tuples as lists and enums as their values: what a checkpoint can hold (it
    loads with ``weights_only``), and what compares equal between a config and a checkpoint's record."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain_values(asdict(value))
    if isinstance(value, Mapping):
        return {str(key): plain_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_values(item) for item in value]
    return value.value if isinstance(value, Enum) else value


def _verify_file(path: Path) -> None:
    """Check that ``path`` is a complete zip archive whose every record passes its CRC."""
    if path.is_dir():
        found = sorted(str(p.relative_to(path)) for p in path.glob("**/*.ckpt"))
        hint = f": it holds {', '.join(found[:4])}{', ...' if len(found) > 4 else ''}" if found else ""
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(_unreadable(path, f"truncated or not a checkpoint ({error})")) from None
    if bad is not None:
        raise CheckpointError(_unreadable(path, f"corrupt: record {bad!r} fails its checksum"))


def _unreadable(path: Path, why: str) -> str:
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
    hint = f"; other checkpoints in {path.parent}: {', '.join(others)}" if others else ""
    return f"checkpoint {path} cannot be loaded: {why}{hint}"


def _first_reason(error: Exception) -> str:
    """What a loading error says is wrong: the global that torch's weights-only loading refused, by name, where
    it refused one (deep inside its message). Torch's advice to load the file without weights-only, which would
    run whatever the file calls, is never passed on."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return f"it refers to {refused.group(1).rstrip('.')}, a global no checkpoint holds; refused, nothing run"
    unpickler = re.search(r"WeightsUnpickler error: (.+?)(?:\. |$)", text, re.MULTILINE)
    if unpickler:
        return unpickler.group(1)
    if "weights_only" in text or text.startswith("Weights only load failed"):
        return "it holds objects other than tensors, numbers, strings, lists and dicts"
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _refuse_non_finite_weights(checkpoint: dict[str, Any], target: str | Path) -> None:
    """Never replace a checkpoint by one whose weights hold NaN or infinity (a diverged run)."""
    bad = non_finite_weights(checkpoint.get("state_dict", {}))
    if bad:
        raise CheckpointError(
            f"not writing checkpoint {target}: weights {_some(bad)} "
            "are NaN or infinite (the run diverged); the checkpoint already there is left as it was"
        )


def find_last_checkpoint(run_root: str | Path, version: int | str | None = None) -> tuple[Path, int | str]:
    """The ``last.ckpt`` of a run: of the given logger version, or of the newest version that has one.

    Args:
        run_root: The logger's ``<save_dir>/<name>`` folder, holding ``version_N`` run folders.
        version: A fixed logger version (an int ``N`` for ``version_N``, or a folder name), if the config sets one.

    Returns:
        The checkpoint file and the logger version it belongs to.

    Raises:
        CheckpointError: If there is no such checkpoint.
    """
    run_root = Path(run_root)
    if version is not None:
        folder = run_root / (f"version_{version}" if isinstance(version, int) else version)
        candidates = [(folder / "checkpoints" / LAST_CHECKPOINT, version)]
    else:
        versions = []
        for folder in run_root.glob("version_*"):
            match = re.fullmatch(r"version_(\d+)", folder.name)
            if match:
                versions.append(int(match.group(1)))
        candidates = [(run_root / f"version_{v}" / "checkpoints" / LAST_CHECKPOINT, v) for v in sorted(versions)]
    for checkpoint, found in reversed(candidates):
        if checkpoint.is_file():
            return checkpoint, found
    raise CheckpointError(
        f"--ckpt_path last: no {LAST_CHECKPOINT} under {run_root}"
        + (f" (version {version})" if version is not None else "")
        + ": there is no run to resume; leave out --ckpt_path to start a new one"
    )
