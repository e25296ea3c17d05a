"""Checkpoint files: atomic writes, integrity checks with clear errors, and finding a run's last checkpoint."""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

LAST_CHECKPOINT = "last.ckpt"


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
        if "://" in str(path):  # remote storage: Lightning's own transactional write
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)

    @override
    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if "://" not in str(path):
            verify_checkpoint(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def verify_checkpoint(path: str | Path) -> None:
    """Check that ``path`` is a complete, uncorrupted checkpoint file (every stored record's CRC).

    Raises:
        CheckpointError: If the file is missing, truncated or corrupt; the message names it.
    """
    path = Path(path)
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
