"""Checks of a training run's numbers: stop on NaN or infinity, warn when Q leaves the values the rewards allow.

Both read what the module already sums on the device and reads once per epoch, so they add no
synchronization to the update step; they run at the end of each epoch, before its checkpoint is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """Training produced NaN or infinite losses or weights; the message names what, when, and what to lower."""


def stop_if_not_finite(
    losses: Mapping[str, float],
    networks: Mapping[str, Iterable[nn.Module]],
    learning_rates: Mapping[str, float],
    updates: tuple[int, int],
) -> None:
    """Raise ``TrainingDiverged`` for the first of the epoch's loss sums, then of the networks, that is not finite.

    Args:
        losses: The epoch's summed losses by network (``critic``, ``actor``): one non-finite value makes the sum so.
        networks: The modules of each network (targets included), whose parameters are checked.
        learning_rates: Each network's learning rate, named in the advice.
        updates: The first and last update of the epoch: the value became non-finite within them.

    Raises:
        TrainingDiverged: If a loss or a parameter is NaN or infinite.
    """
    first, last = updates
    advice = "; lower model.{name}_lr (now {lr:g})"
    for name, value in losses.items():
        if not torch.isfinite(torch.tensor(value)):
            raise TrainingDiverged(
                f"{name} loss is {value} at update {last} (it left the finite numbers within updates {first}-{last})"
                + advice.format(name=name, lr=learning_rates[name])
            )
    for name, modules in networks.items():
        parameters = [p.detach() for module in modules for p in module.parameters()]
        if parameters and not bool(torch.stack([torch.isfinite(p).all() for p in parameters]).all()):
            raise TrainingDiverged(
                f"{name} weights are NaN or infinite after update {last} (since one of updates {first}-{last})"
                + advice.format(name=name, lr=learning_rates[name])
            )


class ValueRangeWatch:
    """Says once when the mean Q value leaves, by a wide margin, the returns that the rewards and gamma allow.

    With per-step rewards in ``[low, high]``, every return lies in ``value_range`` (``[-50, 0]`` for -1/0 rewards and
    gamma 0.98). A mean Q beyond that by more than the range's own width is no estimation error but a diverging
    critic (typically a learning rate far too large). Dense rewards (no known range) and gamma 1 are not watched.

    Args:
        value_range: The attainable returns ``(low, high)``, or ``None`` where they are not known.
    """

    def __init__(self, value_range: tuple[float, float] | None) -> None:
        self.value_range = value_range
        self.warned = False

    def check(self, q_mean: float, update: int, lr_name: str, lr: float) -> str | None:
        """The warning to give for this epoch's mean Q, or ``None`` (always ``None`` after the first warning)."""
        if self.warned or self.value_range is None:
            return None
        low, high = self.value_range
        margin = high - low
        if low - margin <= q_mean <= high + margin:
            return None
        self.warned = True
        return (
            f"train/q_mean is {q_mean:.3g} at update {update}, far outside the returns the rewards allow "
            f"([{low:g}, {high:g}]): the value estimate is diverging; lower model.{lr_name} (now {lr:g}) "
            "(warned once)"
        )
