"""Every benchmark script runs end to end at a tiny size, so that none of them can rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout, result.stdout
