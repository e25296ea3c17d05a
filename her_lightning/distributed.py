"""What data-parallel training needs beyond Lightning's DDP strategy.

Each rank collects its own episodes into its own buffer and samples its own
batches; DDP averages the gradients. What is left is here: every rank's own
random streams, counts summed over ranks, and per-rank state gathered into the
one checkpoint file that rank 0 writes. With a single process, all of it is
the identity, and checkpoints look as they always did.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_stream(stream: str) -> str:
    """The name of this rank's own copy of a random stream; rank 0 keeps the plain name."""
    rank, _ = rank_and_world()
    return stream if rank == 0 else f"{stream}/rank{rank}"


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (in place; every rank must call it)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rank_states(state: dict[str, Any]) -> dict[str, Any]:
    """This rank's state alone in a single process; ``{"ranks": [state of rank 0, ...]}`` over several.

    A collective: every rank must call it (Lightning builds the checkpoint's contents on every rank).
    """
    _, world = rank_and_world()
    if world == 1:
        return state
    states: list[Any] = [None] * world
    dist.all_gather_object(states, _to_cpu(state))
    return {"ranks": states}


def saved_ranks(state: dict[str, Any]) -> int:
    """How many ranks wrote a state of ``gather_rank_states``."""
    return len(state["ranks"]) if "ranks" in state else 1


def rank_count_mismatch(saved: int, running: int) -> str:
    """Why a state written by ``saved`` ranks cannot be resumed on ``running``."""
    return (
        f"was written by a run on {saved} DDP rank(s), and this run would have {running} "
        f"(trainer.devices x trainer.num_nodes): each rank's episodes and random streams are its own, "
        f"so resume it on {saved}"
    )


def select_rank_state(state: dict[str, Any], what: str) -> dict[str, Any]:
    """This rank's part of a state written by ``gather_rank_states``.

    Raises:
        RuntimeError: If the checkpoint was written by a different number of ranks.
    """
    rank, world = rank_and_world()
    saved = saved_ranks(state)
    if saved != world:
        raise RuntimeError(f"the checkpoint's {what} {rank_count_mismatch(saved, world)}")
    return state["ranks"][rank] if "ranks" in state else state


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value
