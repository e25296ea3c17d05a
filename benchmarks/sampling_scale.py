"""HER sampling cost against buffer size, and the buffer's bytes per stored transition.

A batch is drawn from buffers holding 1e3, 1e5 and 1e6 transitions of the point task (50-step episodes); the
cost must not grow with the buffer. Printed: median time per batch and the ratio to the smallest buffer, and the
same with half of every batch drawn from the episodes that displaced their achieved goal (``displaced_share``
0.5; which episodes did is derived once per change of the buffer, so it is not in these times), as a ratio to the
uniform draw.

    python benchmarks/sampling_scale.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from her_lightning.buffer import EpisodeBuffer  # noqa: E402
from her_lightning.envs import PointNavEnv  # noqa: E402
from her_lightning.her import HERSampler  # noqa: E402
from her_lightning.rollout import Episodes  # noqa: E402

STEPS = 50


def filled_buffer(transitions: int) -> EpisodeBuffer:
    """A buffer holding ``transitions`` transitions of random 50-step point-task episodes, exactly full."""
    episodes = transitions // STEPS
    buffer = EpisodeBuffer(episodes * (STEPS + 1), obs_dim=2, goal_dim=2, action_dim=2, max_episode_steps=STEPS)
    g = torch.Generator().manual_seed(0)
    for start in range(0, episodes, 2000):
        n = min(2000, episodes - start)
        path = torch.rand(n, STEPS + 1, 2, generator=g) * 5
        buffer.add(Episodes(path, path.clone(), torch.rand(n, 2, generator=g) + 3.5, torch.rand(n, STEPS, 2) * 2 - 1,
                            -torch.ones(n, STEPS), torch.full((n,), STEPS), torch.zeros(n, dtype=torch.bool),
                            torch.zeros(n, dtype=torch.bool), torch.zeros(n, STEPS, dtype=torch.bool),
                            torch.zeros(n, dtype=torch.bool)))
    return buffer


def storage_bytes(buffer: EpisodeBuffer) -> int:
    """Bytes of the buffer's tensors, each storage counted once (the field views share the packed rows)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in vars(buffer).values() if isinstance(t, torch.Tensor)}
    return sum(storages.values())


def sample_times(samplers: list[HERSampler], batch_size: int, repeats: int) -> list[float]:
    """Median seconds per batch of each sampler, measured in alternation so that machine noise hits all alike."""
    times: list[list[float]] = [[] for _ in samplers]
    for sampler in samplers:
        for _ in range(20):
            sampler.sample(batch_size)
    for _ in range(repeats // 10):
        for sampler, record in zip(samplers, times):
            start = time.perf_counter()
            for _ in range(10):
                sampler.sample(batch_size)
            record.append((time.perf_counter() - start) / 10)
    return [statistics.median(record) for record in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e5, 1e6], help="stored transitions")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = PointNavEnv()
    print(f"machine: {machine()}")
    print(f"{'transitions':>12} {'us per batch':>13} {'vs smallest':>12} {'displaced 0.5':>14} {'vs uniform':>11} "
          f"{'bytes per transition':>21}")
    buffers = [filled_buffer(int(size)) for size in args.sizes]
    samplers = [HERSampler(b, task.compute_reward, task.is_success, True, "future", 0.8,
                           torch.Generator().manual_seed(1), share) for share in (0.0, 0.5) for b in buffers]
    seconds = sample_times(samplers, args.batch_size, args.repeats)
    uniform, displaced = seconds[: len(buffers)], seconds[len(buffers):]
    for buffer, time_per_batch, favoured in zip(buffers, uniform, displaced):
        per_transition = storage_bytes(buffer) / buffer.num_transitions
        print(f"{buffer.num_transitions:>12,} {time_per_batch * 1e6:>13.1f} {time_per_batch / uniform[0]:>11.2f}x "
              f"{favoured * 1e6:>14.1f} {favoured / time_per_batch:>10.2f}x {per_transition:>21.1f}")


if __name__ == "__main__":
    main()
