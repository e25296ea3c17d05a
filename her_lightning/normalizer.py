"""Running mean and variance normalization of observations and goals (as HER used on the Fetch tasks)."""

from __future__ import annotations

import torch
from torch import nn

from her_lightning.distributed import sum_over_ranks


class RunningNormalizer(nn.Module):
    """Maps ``x`` to ``clip((x - mean) / std, -clip, clip)`` with statistics of all data it was shown.

    The statistics are buffers (sums in float64, so they stay exact over millions
    of rows): they are saved in checkpoints with the module and are not trained.
    Under DDP every update is summed over the ranks, so that all ranks hold the
    statistics of all ranks' data.
    ``std`` is floored at ``eps`` so that constant features do not blow up.

    Args:
        dim: Size of a row.
        clip: Normalized values are clipped to ``[-clip, clip]``.
        eps: Smallest standard deviation.

    Raises:
        ValueError: If ``clip`` or ``eps`` is not positive.
    """

    def __init__(self, dim: int, clip: float = 5.0, eps: float = 1e-2) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"norm_clip={clip} is invalid: must be positive")
        if eps <= 0:
            raise ValueError(f"eps={eps} is invalid: must be positive")
        self.clip = clip
        self.eps = eps
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        """Add ``rows`` (``(..., dim)``) of this rank, and those of the other ranks, to the statistics."""
        rows = rows.reshape(-1, self.total.shape[0]).to(torch.float64)
        count = torch.full((1,), rows.shape[0], dtype=torch.float64, device=rows.device)
        increment = sum_over_ranks(torch.cat([rows.sum(dim=0), rows.square().sum(dim=0), count]))
        total, total_sq, count = increment.split([self.total.shape[0], self.total.shape[0], 1])
        self.total += total
        self.total_sq += total_sq
        self.count += count.squeeze(0)
        mean = self.total / self.count
        variance = (self.total_sq / self.count - mean.square()).clamp_(min=self.eps**2)
        self.mean.copy_(mean)
        self.std.copy_(variance.sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)
