"""Torch's CPU threads: one for small networks, unless the user chose a number.

Small networks update faster on one CPU thread: the point task's 60-epoch script took 9.5 s on one thread and
222 s on torch's default two, with another process busy on one of the two cores (OpenMP threads waiting on a busy
core). Larger networks (FetchPush's 3x256 layers on batches of 1,024) gain from every core.
"""

from __future__ import annotations

import os

import torch

SMALL_NETWORK_PARAMETERS = 100_000  # trainable parameters; the point task's 128x128 networks have about 35,000
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the environment's way of choosing torch's threads
DEFAULT_THREADS = torch.get_num_threads()  # torch's default, unless a program set threads before importing this


def one_thread_for_small_networks(module: torch.nn.Module, device: torch.device) -> str | None:
    """Set torch to one CPU thread where ``module`` trains on the CPU, has fewer than ``SMALL_NETWORK_PARAMETERS``
    trainable parameters, and neither the program (``torch.set_num_threads``, the CLI's ``torch_threads``) nor the
    environment (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) chose the number of threads.

    Returns:
        The line that says so, or ``None`` where the threads were left as they were.
    """
    threads = torch.get_num_threads()
    chosen = threads != DEFAULT_THREADS or any(name in os.environ for name in THREAD_VARIABLES)
    parameters = sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
    if device.type != "cpu" or chosen or threads == 1 or parameters >= SMALL_NETWORK_PARAMETERS:
        return None
    torch.set_num_threads(1)
    return (
        f"torch runs on 1 CPU thread instead of {threads}: networks of {parameters:,} parameters update faster on one "
        "(torch.set_num_threads or OMP_NUM_THREADS chooses otherwise)"
    )
