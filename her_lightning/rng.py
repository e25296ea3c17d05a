"""Dedicated random streams.

Every source of randomness in the package (environment resets, exploration
noise, HER sampling, evaluation goals) draws from its own ``torch.Generator``
so that it can be seeded, saved in a checkpoint and restored on its own,
independently of the global RNG that Lightning re-seeds on resume.
"""

from __future__ import annotations

import os
import zlib

import torch

_MASK_63 = (1 << 63) - 1


def derive_seed(seed: int, stream: str) -> int:
    """The seed of one named stream of a run: different streams of one seed do not overlap."""
    return (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(stream.encode())) & _MASK_63


def make_generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one named stream of a run, independent of the other streams.

    Args:
        seed: The run seed.
        stream: The stream's name, e.g. ``"env"`` or ``"noise"``.
        device: Where the generator draws (a CUDA generator for CUDA tensors).

    Returns:
        A seeded generator; the same ``(seed, stream)`` always gives the same numbers.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))


def run_seed() -> int:
    """The run's seed: what ``lightning.seed_everything`` set (the CLI's ``seed_everything``), 0 where it was not
    called."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
