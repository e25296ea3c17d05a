"""One CPU thread for small networks, unless the program or the environment chose the number of threads."""

from __future__ import annotations

import pytest
import torch

from her_lightning import threads
from her_lightning.networks import Actor

CPU = torch.device("cpu")


@pytest.fixture
def four_default_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch at its default of 4 threads, with no thread variable set; returns the counts set since."""
    current = [4]
    monkeypatch.setattr(threads, "DEFAULT_THREADS", 4)
    monkeypatch.setattr(threads.torch, "get_num_threads", lambda: current[-1])
    monkeypatch.setattr(threads.torch, "set_num_threads", current.append)
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return current


def test_small_networks_on_the_default_threads_get_one_thread_and_a_line(four_default_threads: list[int]) -> None:
    line = threads.one_thread_for_small_networks(Actor(4, 2, 2, (64, 64)), CPU)
    assert four_default_threads == [4, 1]
    assert line is not None and line.startswith("torch runs on 1 CPU thread instead of 4: networks of 4,")


def test_frozen_parameters_do_not_count_and_large_networks_keep_the_threads(four_default_threads: list[int]) -> None:
    large = Actor(25, 3, 4, (256, 256, 256))
    assert threads.one_thread_for_small_networks(large, CPU) is None and four_default_threads == [4]
    assert threads.one_thread_for_small_networks(large.requires_grad_(False), CPU) is not None


def test_threads_chosen_by_the_program_or_the_environment_and_other_devices_are_left_alone(
    four_default_threads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = Actor(4, 2, 2, (8,))
    assert threads.one_thread_for_small_networks(small, torch.device("cuda", 0)) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.one_thread_for_small_networks(small, CPU) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    four_default_threads.append(3)  # torch.set_num_threads(3) before fitting
    assert threads.one_thread_for_small_networks(small, CPU) is None and four_default_threads == [4, 3]
