"""Environment steps and gradient updates per second on 1 and 2 DDP ranks, on this machine, in one run.

Each rank keeps the per-rank settings of ``configs/point2d_ddp.yaml`` (2 episodes and 40 updates of 128
transitions per epoch), so 2 ranks collect twice the episodes and average the gradients of twice the
transitions per update (weak scaling). Checkpoints and evaluation are left out; the figures are the medians of
the per-epoch ``perf/*`` values the runs log, read back from TensorBoard.

    python benchmarks/ddp_scaling.py --ranks 1 2 --epochs 100
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "point2d_ddp.yaml"


def run(ranks: int, epochs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as save_dir:
        command = [
            sys.executable, "-m", "her_lightning.cli", "fit", "--config", str(CONFIG),
            "--trainer.devices", str(ranks), "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(epochs),
            "--trainer.check_val_every_n_epoch", "1000000", "--trainer.callbacks", "[]",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", save_dir,
        ]
        if ranks == 1:
            command += ["--trainer.strategy", "auto"]
        result = subprocess.run(command, cwd=save_dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the {ranks}-rank run failed:\n{result.stderr[-3000:]}")
        (run_dir,) = (Path(save_dir) / "point2d_ddp").iterdir()
        events = EventAccumulator(str(run_dir))
        events.Reload()
        env_rates = [e.value for e in events.Scalars("perf/env_steps_per_s")][1:]  # the first is the warm-up
        update_rates = [e.value for e in events.Scalars("perf/updates_per_s")]
    return {"env_steps_per_s": statistics.median(env_rates), "updates_per_s": statistics.median(update_rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    batch = yaml.safe_load(CONFIG.read_text())["data"]["batch_size"]
    results = {ranks: run(ranks, args.epochs) for ranks in args.ranks}
    print(f"machine: {machine()}")
    print(f"per rank: configs/point2d_ddp.yaml (batch {batch}), {args.epochs} epochs")
    print(f"{'ranks':>5} {'env steps/s':>12} {'updates/s':>10} {'transitions trained/s':>22}")
    base = results[args.ranks[0]]
    for ranks, figures in results.items():
        trained = figures["updates_per_s"] * batch * ranks
        print(f"{ranks:>5} {figures['env_steps_per_s']:>12,.0f} {figures['updates_per_s']:>10,.1f} {trained:>22,.0f}")
    for ranks, figures in list(results.items())[1:]:
        base_trained = base["updates_per_s"] * batch * args.ranks[0]
        speedup = figures["env_steps_per_s"] / base["env_steps_per_s"]
        print(f"{ranks} vs {args.ranks[0]} rank(s): env steps/s x{speedup:.2f}, "
              f"updates/s x{figures['updates_per_s'] / base['updates_per_s']:.2f}, "
              f"transitions trained/s x{figures['updates_per_s'] * batch * ranks / base_trained:.2f}")


if __name__ == "__main__":
    main()
