"""The checks every numeric option goes through, wherever its value comes from (command line, config file,
checkpoint, Python): one rule per kind of value, one message."""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import torch

# What numpy's legacy seeding and ``lightning.seed_everything`` accept: an unsigned 32-bit integer.
SEED_LOW, SEED_HIGH = 0, 2**32 - 1


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    integer: bool = False,
    note: str = "",
) -> None:
    """Refuse a value that is not a finite number (an integer with ``integer``) from ``low`` up to ``high``.

    Finiteness is tested first: NaN passes every one-sided comparison (``nan < 0`` and ``nan > 1`` are both false).
    Booleans are not numbers here, although Python counts them as integers.

    Args:
        name: The option, as the message names it.
        value: Its value, of any type.
        low: The smallest allowed value; ``None``: no lower bound.
        high: The largest allowed value; ``None``: no upper bound.
        low_open: ``low`` itself is not allowed.
        integer: Only integers are allowed.
        note: Said after the allowed range, in parentheses (why the range is what it is).

    Raises:
        ValueError: ``<name>=<value> is invalid: must be <the allowed values>``.
    """
    kind = Integral if integer else Real
    typed = isinstance(value, kind) and not isinstance(value, bool)
    finite = typed and (integer or math.isfinite(value))
    if finite and _within(value, low, high, low_open):
        return
    allowed = _allowed(low, high, low_open)
    if not finite:
        allowed = f"{'an integer' if integer else 'a finite number'} {allowed}".rstrip()
    shown = value if typed else repr(value)
    raise ValueError(f"{name}={shown} is invalid: must be {allowed}{f' ({note})' if note else ''}")


def check_seed(name: str, seed: Any) -> None:
    """Refuse a seed that numpy and ``lightning.seed_everything`` would refuse: the one rule for every seed."""
    check_number(name, seed, SEED_LOW, SEED_HIGH, integer=True, note="the seeds numpy takes")


def check_memory(name: str, value: Any, needed: int, device: torch.device | str, what: str) -> None:
    """Refuse, before allocating, a size whose storage needs more bytes than ``device`` has available.

    Args:
        name: The option that sets the size.
        value: Its value.
        needed: Bytes the storage takes.
        device: Where it would be allocated.
        what: What the storage is, for the message.

    Raises:
        ValueError: Naming the option, the bytes needed and the bytes available.
    """
    device = torch.device(device)
    available = available_memory(device)
    if needed > available:
        raise ValueError(
            f"{name}={value} is invalid: {what} would take {_bytes(needed)}, and {device.type} memory has "
            f"{_bytes(available)} available"
        )


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: a GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return _host_available()


def _host_available() -> int:
    """The host's available memory: Linux's MemAvailable (free pages and the caches the kernel can reclaim), or
    the free pages where the system does not report it."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _within(value: float, low: float | None, high: float | None, low_open: bool) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    return above and (high is None or value <= high)


def _allowed(low: float | None, high: float | None, low_open: bool) -> str:
    """The allowed values in words: ``within (0, 1]``, ``at least 1``, ``greater than 0``, ``at most 4``, or
    nothing where any finite number is."""
    if low is not None and high is not None:
        return f"within {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f"{'greater than' if low_open else 'at least'} {low}"
    return "" if high is None else f"at most {high}"


def _bytes(count: int) -> str:
    """A byte count in binary units, e.g. ``21.8 TiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    exponent = min(int(math.log(max(count, 1), 1024)), len(units) - 1)
    return f"{count / 1024**exponent:,.1f} {units[exponent]}"
