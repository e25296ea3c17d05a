"""benchmarks/fetch_suite.py: configs x seeds through the CLI, resumed where they stopped, reported from their logs."""

from __future__ import annotations

import csv
import importlib
import re
import sys
from pathlib import Path

import pytest

from her_lightning.resume import RunFolderLock

ROOT = Path(__file__).parents[1]
# FetchReach evaluated after every epoch of 100 env steps, on 2 episodes, after 2 warm-up episodes, with 5 updates
# an epoch: the options each suite run passes after --.
QUICK = [
    "--trainer.check_val_every_n_epoch", "1", "--data.eval_episodes", "2", "--collector.warmup_episodes", "2",
    "--data.batches_per_epoch", "5",
]

sys.path.insert(0, str(ROOT / "benchmarks"))
suite = importlib.import_module("fetch_suite")


def evaluation(seed: int, env_steps: int, success: float, wall_time: float) -> suite.Evaluation:
    return suite.Evaluation("task", seed, env_steps, success, -1.0, wall_time)


def test_table_has_a_row_per_seed_with_env_steps_to_each_threshold_and_the_pace() -> None:
    times = [0, 100, 200, 4_000, 4_100, 4_200]  # 100 s per 10,000 env steps; one interval spans a resume
    successes = [0.1, 0.5, 0.7, 0.95, 0.9, 0.8]
    resumed = [evaluation(0, 10_000 * (i + 1), success, t) for i, (success, t) in enumerate(zip(successes, times))]
    short = [evaluation(1, 10_000, 0.6, 0), evaluation(1, 20_000, 0.3, 100), evaluation(1, 30_000, 0.4, 9_000)]
    summaries = [suite.summarize(seed, rows, suite.THRESHOLDS) for seed, rows in [(0, resumed), (1, short), (3, [])]]
    lines = suite.table(summaries).splitlines()
    assert lines[0] == "| seed | env steps to 0.5 | env steps to 0.9 | latest success | wall time per 100k env steps |"
    assert lines[1] == "|---:|---:|---:|---:|---:|"
    assert lines[2] == ("| 0 | 20,000 | 40,000 | 0.80 at 60,000 env steps | "
                        "16.7 min (1 interval across a resume left out) |")
    assert lines[3].startswith("| 1 | 10,000 | not yet (30,000 env steps run) | 0.40 at 30,000 env steps | 16.7 min")
    assert lines[4] == "| 3 | no evaluation yet | no evaluation yet | no evaluation yet | no evaluation yet |"


def test_options_the_suite_sets_itself_are_refused_after_dashes() -> None:
    suite.check_passed_args(["--data.eval_episodes", "10", "--trainer.accelerator=cpu"])
    for arg in ["--trainer.max_epochs=9", "--data.env.num_envs", "--trainer.logger.init_args.name", "--config"]:
        with pytest.raises(ValueError, match=f"{re.escape(arg)} after -- is not allowed"):
            suite.check_passed_args(["--data.eval_episodes", "10", arg, "9"])


def run_suite(out: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The suite's printed output; its fit commands run in their own processes, as always."""
    try:
        suite.main([str(ROOT / "configs" / "fetch_reach.yaml"), "--out", str(out), *args, "--", *QUICK])
    except SystemExit as stop:
        pytest.fail(f"the suite stopped ({stop.code}):\n{capsys.readouterr().out[-3000:]}")
    return capsys.readouterr().out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_suite_trains_resumes_skips_a_busy_run_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gymnasium_robotics", reason="FetchReach needs the robotics extra: pip install -e .[robotics]")
    monkeypatch.setattr(suite, "fits_running_elsewhere", lambda: 0)  # whatever else this machine is training
    out = tmp_path / "suite"
    # A budget of 200 env steps is 2 epochs of 100, after 100 warm-up steps: evaluated at 200 and 300.
    run_suite(out, capsys, "--seeds", "0", "--env-steps", "200")
    first = read_csv(out / "evaluations.csv")
    assert [(row["task"], row["seed"], row["env_steps"]) for row in first] == [
        ("fetch_reach", "0", "200"), ("fetch_reach", "0", "300"),
    ]

    busy = RunFolderLock(out / "fetch_reach" / "seed1")  # another process fitting seed 1
    try:
        printed = run_suite(out, capsys, "--seeds", "0-1", "--env-steps", "400", "--jobs", "2")
    finally:
        busy.release()
    assert "fetch_reach seed 0: resuming from its last checkpoint, to 4 epochs" in printed
    assert "fetch_reach seed 1: skipped, another process is fitting it" in printed
    second = read_csv(out / "evaluations.csv")
    assert second[:2] == first  # the first evaluations, wall times included, are the resumed run's own
    assert [row["env_steps"] for row in second[2:]] == ["400", "500"]
    fits = [line for line in (out / "fetch_reach" / "seed0.log").read_text().splitlines() if " fit --config " in line]
    assert len(fits) == 2 and "--ckpt_path last" in fits[1] and "--torch_threads 1" in fits[1]

    assert (out / "fetch_reach.png").stat().st_size > 0
    report = (out / "fetch_suite.md").read_text()
    assert "## fetch_reach" in report and "![fetch_reach](fetch_reach.png)" in report
    rows = [line for line in report.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2 and "at 500 env steps" in rows[0] and "no evaluation yet" in rows[1]
    # Each sitting's machine and setting, in the report whichever machine writes it.
    sittings = (out / "machines.txt").read_text().splitlines()
    assert len(sittings) == 2 and "1 run at once" in sittings[0] and "2 runs at once, 1 torch thread" in sittings[1]
    assert all(("GPU" in line) for line in sittings) and f"Trained on: {sittings[0]}; {sittings[1]}." in report
    assert run_suite(out, capsys, "--report-only").strip() == report.strip()


def test_machine_record_names_the_device_the_fits_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(suite.torch.cuda, "get_device_name", lambda: "Test GPU")
    suite.record_machine(tmp_path, 1, ["--trainer.accelerator", "cpu", "--torch_threads", "4"])
    suite.record_machine(tmp_path, 3, ["--trainer.accelerator=gpu"])
    suite.record_machine(tmp_path, 3, [])  # the same machine and setting: not recorded twice
    suite.record_machine(tmp_path, 1, ["--torch_threads", "1"], elsewhere=2)
    lines = (tmp_path / "machines.txt").read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("no GPU; 1 run at once, 4 torch threads per run")
    assert lines[1].endswith("GPU Test GPU; 3 runs at once, 1 torch thread per run")
    assert lines[2].endswith("GPU Test GPU; 3 runs at once (2 started elsewhere), 1 torch thread per run")


def test_fits_are_counted_whichever_way_they_were_started() -> None:
    python = "/root/.pyenv/versions/3.11.7/bin/python3.11"
    fits = [
        [python, "/root/.pyenv/versions/3.11.7/bin/her-lightning", "fit", "--config", "configs/point2d.yaml"],
        ["her-lightning", "fit", "--config", "configs/point2d.yaml"],
        [python, "-m", "her_lightning.cli", "fit", "--config", "configs/fetch_push.yaml", "--seed_everything", "1"],
        ["python3", "-u", "-mher_lightning.cli", "fit", "--config", "configs/fetch_push.yaml"],
        [python, "-m", "cProfile", "-o", "push.prof", "-m", "her_lightning.cli", "fit", "--config", "x.yaml"],
        ["python", "/work/main/her_lightning/cli.py", "fit"],
    ]
    others = [
        [],  # a kernel thread
        ["timeout", "600", "her-lightning", "fit", "--config", "configs/point2d.yaml"],  # counted as its child
        ["bash", "-c", "her-lightning fit --config configs/point2d.yaml"],
        ["her-lightning", "test", "--ckpt_path", "fit/last.ckpt"],
        [python, "-m", "her_lightning.cli", "export", "--ckpt_path", "last.ckpt"],
        [python, "-c", "import time; time.sleep(60)", "her_lightning.cli", "fit"],
        [python, "-m", "pytest", "-k", "fit", "tests/test_cli.py"],
        [python, "benchmarks/fetch_suite.py", "configs/fetch_push.yaml", "--seeds", "1"],
        [python, "/work/main/not_her_lightning/cli.py", "fit"],
    ]
    assert [suite.is_fit(line) for line in fits] == [True] * len(fits)
    assert [suite.is_fit(line) for line in others] == [False] * len(others)
    assert suite.count_fits(others + fits + others) == len(fits)
