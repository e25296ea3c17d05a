"""Time to solve the point task: her_lightning against Stable-Baselines3 DDPG + HER, on this machine, in one run.

Solved means a noise-free evaluation on 100 fixed goals reaches 95% success; evaluation time is not counted.
Both agents use the same network sizes, learning rate, discount, Polyak rate, batch size, noise, relabel ratio,
gradient steps per episode and a uniformly random warm-up of the same length, taken from
``configs/point2d_fast.yaml``. Needs the ``dev`` extra (Stable-Baselines3 and Gymnasium).

    python benchmarks/time_to_solve.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import SOLVED, SolveTimer, Stopwatch, machine, point_success_rate  # noqa: E402

from her_lightning.cli import HERLightningCLI  # noqa: E402
from her_lightning.data import HERDataModule  # noqa: E402
from her_lightning.ddpg import HERDDPG  # noqa: E402

FAST_CONFIG = Path(__file__).parents[1] / "configs" / "point2d_fast.yaml"


def her_lightning_run(seed: int, max_epochs: int, *overrides: str) -> tuple[float, int, int] | None:
    cli = HERLightningCLI(
        HERDDPG,
        HERDataModule,
        run=False,
        save_config_callback=None,
        args=["--config", str(FAST_CONFIG), "--seed_everything", str(seed), "--trainer.logger", "false",
              "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "100000",
              "--trainer.max_epochs", str(max_epochs), "--trainer.enable_model_summary", "false", *overrides],
    )
    timer = SolveTimer()
    cli.trainer.callbacks.insert(0, timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.solved_at


def sb3_run(seed: int, options: dict, max_episodes: int) -> tuple[float, int, int] | None:
    from gym_point import GymPointEnv
    from stable_baselines3 import DDPG, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    torch.manual_seed(seed)
    env = GymPointEnv(seed=seed)
    warmup_steps = options["warmup_episodes"] * env.max_episode_steps
    model = DDPG(
        "MultiInputPolicy",
        env,
        learning_rate=options["lr"],
        buffer_size=1_000_000,
        learning_starts=warmup_steps,
        batch_size=options["batch_size"],
        tau=options["tau"],
        gamma=options["gamma"],
        train_freq=(1, "episode"),
        gradient_steps=options["updates_per_episode"],
        action_noise=NormalActionNoise(torch.zeros(2).numpy(), options["noise_std"] * torch.ones(2).numpy()),
        replay_buffer_class=HerReplayBuffer,
        # n_sampled_goal relabels n / (n + 1) of the samples: 4 gives the ratio 0.8.
        replay_buffer_kwargs={"n_sampled_goal": round(options["her_ratio"] / (1 - options["her_ratio"])),
                              "goal_selection_strategy": "future"},
        policy_kwargs={"net_arch": list(options["hidden"])},
        seed=seed,
        device="cpu",
    )

    def act(observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        obs = {"observation": observation.numpy(), "achieved_goal": observation.numpy(), "desired_goal": goal.numpy()}
        action, _ = model.predict(obs, deterministic=True)
        return torch.as_tensor(action)

    class Solve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.watch = Stopwatch()
            self.solved_at: tuple[float, int, int] | None = None

        def _on_training_start(self) -> None:
            self.watch.start()

        def _on_rollout_start(self) -> None:  # after the previous episode's gradient steps
            if self.num_timesteps < warmup_steps:
                return
            self.watch.pause()
            if point_success_rate(act) >= SOLVED:
                self.solved_at = (self.watch.elapsed, self.num_timesteps, model._n_updates)
            self.watch.start()

        def _on_step(self) -> bool:
            return self.solved_at is None

    solve = Solve()
    model.learn(total_timesteps=warmup_steps + max_episodes * env.max_episode_steps, callback=solve)
    return solve.solved_at


def fast_options() -> dict:
    config = yaml.safe_load(FAST_CONFIG.read_text())
    model, data, collector = config["model"], config["data"], config["collector"]
    assert model["actor_lr"] == model["critic_lr"], "Stable-Baselines3 DDPG takes one learning rate"
    return {
        "hidden": model["hidden"],
        "lr": model["actor_lr"],
        "gamma": model["gamma"],
        "tau": model["tau"],
        "batch_size": data["batch_size"],
        "her_ratio": data["her_ratio"],
        "noise_std": model["noise_std"],
        "warmup_episodes": collector["warmup_episodes"],
        "updates_per_episode": data["batches_per_epoch"] // collector["episodes_per_epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=200, help="her_lightning's limit per seed")
    parser.add_argument("--max-episodes", type=int, default=1500, help="Stable-Baselines3's limit per seed")
    parser.add_argument("--warmup-episodes", type=int, help="override the config's warm-up (both agents)")
    parser.add_argument("--skip-sb3", action="store_true", help="time her_lightning only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = fast_options()
    overrides = []
    if args.warmup_episodes is not None:
        options["warmup_episodes"] = args.warmup_episodes
        overrides = ["--collector.warmup_episodes", str(args.warmup_episodes)]
    print(f"machine: {machine()}")
    print(f"shared settings (configs/point2d_fast.yaml): {options}")
    results: dict[str, list[tuple[float, int, int] | None]] = {"her_lightning": [], "stable-baselines3": []}
    for seed in args.seeds:
        results["her_lightning"].append(her_lightning_run(seed, args.max_epochs, *overrides))
        if not args.skip_sb3:
            results["stable-baselines3"].append(sb3_run(seed, options, args.max_episodes))
    print(f"\n{'agent':<18} {'seed':>4} {'seconds':>8} {'env steps':>10} {'updates':>8}")
    medians = {}
    for agent, runs in results.items():
        for seed, run in zip(args.seeds, runs):
            cells = ("not solved", "", "") if run is None else (f"{run[0]:.2f}", f"{run[1]:,}", f"{run[2]:,}")
            print(f"{agent:<18} {seed:>4} {cells[0]:>8} {cells[1]:>10} {cells[2]:>8}")
        times = [run[0] if run is not None else float("inf") for run in runs]
        if times:
            medians[agent] = statistics.median(times)
            print(f"{agent:<18} median time to solve: {medians[agent]:.2f} s")
    if len(medians) == 2:
        print(f"speed-up (Stable-Baselines3 median / her_lightning median): "
              f"{medians['stable-baselines3'] / medians['her_lightning']:.1f}x")


if __name__ == "__main__":
    main()
