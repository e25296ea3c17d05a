"""Environment steps per second of collection with 1, 16 and 64 episodes side by side.

Each round plays whole point-task episodes with the reference actor (128x128, untrained, so every episode runs
the full 50 steps) plus exploration noise, as the collector does.

    python benchmarks/collection.py
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

from her_lightning.ddpg import HERDDPG  # noqa: E402
from her_lightning.envs import PointNavEnv  # noqa: E402
from her_lightning.rollout import exploring, rollout  # noqa: E402


def steps_per_second(num_envs: int, rounds: int) -> float:
    env = PointNavEnv(num_envs=num_envs, seed=0)
    actor = HERDDPG(env.obs_dim, env.goal_dim, env.action_dim)
    noise = torch.Generator().manual_seed(0)
    policy = exploring(actor.act, 0.1, 0.0, noise)
    rollout(env, policy)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        episodes = rollout(env, policy)
        rates.append(int(episodes.length.sum()) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(f"{'episodes at once':>16} {'env steps/s':>12} {'vs one':>8}")
    base = None
    for n in args.envs:
        rate = steps_per_second(n, args.rounds)
        base = base or rate
        print(f"{n:>16} {rate:>12,.0f} {rate / base:>7.1f}x")


if __name__ == "__main__":
    main()
