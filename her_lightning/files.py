"""Writing a user's file so that an interruption leaves the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"
# ``.<target name>.<mkstemp's 8 random characters>.tmp``: the temporary file of one ``atomic_write``.
TEMPORARY_NAME = re.compile(rf"\.(?P<target>.+)\.[a-z0-9_]{{8}}{re.escape(TEMPORARY_SUFFIX)}")


def atomic_write(target: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``target``, sync it to disk, then rename it over ``target``.

    The temporary file is ``.<name>.<random>.tmp`` in ``target``'s folder, with the mode a plain ``open`` would
    give under the process's umask. It is removed if ``write`` (or anything after it) fails; a process killed
    outright can leave it behind (``remove_leftover_temporaries`` clears it later).

    Raises:
        OSError: If the file cannot be written; one without a file name (a full disk) gets ``target``'s.
    """
    target = Path(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 otherwise
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(target)) from error
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def remove_leftover_temporaries(folder: str | Path, target_suffix: str) -> list[str]:
    """Remove the temporary files that killed ``atomic_write`` calls left in ``folder`` for targets whose name ends
    with ``target_suffix``.

    Only for a folder that no other process writes to at the same time (a run folder whose lock is held): a
    write in progress has a temporary file of the same form.

    Returns:
        ``name (size)`` of each file removed, in name order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = TEMPORARY_NAME.fullmatch(path.name)
        if match and match["target"].endswith(target_suffix) and path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            path.unlink()
            removed.append(f"{path.name} ({size:,} bytes)")
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
