"""Every benchmark script runs end to end at a tiny size, so that none of them can rot."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("time_to_solve.py", ["--seeds", "0", "--max-epochs", "1", "--max-episodes", "1", "--warmup-episodes", "2"],
         ["her_lightning", "stable-baselines3", "median time to solve"]),
        ("update_cost.py", ["--config", "configs/point2d_fast.yaml", "--epochs", "2", "--repeats", "1"],
         ["bare update:", "full loop:", "full loop / bare update:"]),
        ("sampling_scale.py", ["--sizes", "1000", "5000", "--repeats", "20"], ["bytes per transition", "1,000"]),
        ("collection.py", ["--envs", "1", "4", "--rounds", "2"], ["env steps/s"]),
        ("ddp_scaling.py", ["--ranks", "1", "2", "--epochs", "2"], ["2 vs 1 rank(s): env steps/s x"]),
    ],
)
def test_benchmark_runs(script: str, args: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout, result.stdout


def test_seeds_trains_each_seed_afresh_and_reports_its_evaluations(tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    # An earlier sitting's log of seed 3, at a step the new run does not reach: the new run starts over without it.
    with SummaryWriter(str(out / "point2d_fast" / "seed3")) as earlier:
        earlier.add_scalar("eval/success_rate", 1.0, 10**9)
    quick = ["--trainer.max_epochs", "2", "--collector.warmup_episodes", "4", "--data.eval_episodes", "2",
             "--data.batches_per_epoch", "2"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "seeds.py"), "configs/point2d_fast.yaml", "--seeds", "3", "--out", str(out),
         "--", *quick],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with (out / "evaluations.csv").open() as file:
        rows = list(csv.DictReader(file))
    # point2d_fast plays 4 episodes of up to 50 steps an epoch: evaluated after each of the 2 epochs.
    assert [row["seed"] for row in rows] == ["3", "3"] and 0 < int(rows[0]["env_steps"]) < int(rows[1]["env_steps"])
    assert all(float(row["seconds"]) > 0 and np.isfinite(float(row["return"])) for row in rows)
    table = (out / "seeds.md").read_text()
    assert table.startswith("point2d_fast.yaml --trainer.max_epochs 2") and table in result.stdout
    (row,) = [line for line in table.splitlines() if line.startswith("| 3 |")]
    assert row.endswith(f"| {float(rows[-1]['success']):.2f} | {float(rows[-1]['return']):.2f} |")
    assert "seeds reached 0.95" in table and (out / "success.png").stat().st_size > 0
