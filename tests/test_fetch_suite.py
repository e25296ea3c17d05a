"""benchmarks/fetch_suite.py: configs x seeds through the CLI, resumed where they stopped, reported from their logs."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from her_lightning.resume import RunFolderLock

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "fetch_suite.py"
# FetchReach evaluated after every epoch of 100 env steps, on 2 episodes, after 2 warm-up episodes, with 5 updates
# an epoch: the options each suite run passes after --.
QUICK = [
    "--trainer.check_val_every_n_epoch", "1", "--data.eval_episodes", "2", "--collector.warmup_episodes", "2",
    "--data.batches_per_epoch", "5",
]

spec = importlib.util.spec_from_file_location("fetch_suite", SCRIPT)
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)


def evaluation(seed: int, env_steps: int, success: float, wall_time: float) -> suite.Evaluation:
    return suite.Evaluation("task", seed, env_steps, success, wall_time)


def test_summary_finds_thresholds_latest_success_and_pace_across_a_resume() -> None:
    # 100 s per 10,000 env steps, except one interval that spans a stop of over an hour.
    times = [0, 100, 200, 4_000, 4_100, 4_200]
    successes = [0.1, 0.5, 0.7, 0.95, 0.9, 0.8]
    rows = [evaluation(0, 10_000 * (i + 1), success, t) for i, (success, t) in enumerate(zip(successes, times))]
    summary = suite.summarize(0, rows)
    assert summary.reached == {0.5: 20_000, 0.9: 40_000}
    assert summary.latest == rows[-1]
    assert summary.seconds_per_env_step == pytest.approx(400 / 40_000)
    assert summary.resume_gaps == 1
    # Two intervals, one a resume: the typical interval is the faster one, so the resume is still left out.
    short = suite.summarize(1, [evaluation(1, 10_000, 0.6, 0), evaluation(1, 20_000, 0.3, 100),
                                evaluation(1, 30_000, 0.4, 9_000)])
    assert (short.reached, short.seconds_per_env_step, short.resume_gaps) == ({0.5: 10_000, 0.9: None}, 0.01, 1)
    # A slower machine (twice the typical pace) is not taken for a resume.
    uneven = suite.summarize(2, [evaluation(2, 10_000 * i, 0.0, t) for i, t in enumerate([0, 100, 300, 400], 1)])
    assert uneven.resume_gaps == 0 and uneven.seconds_per_env_step == pytest.approx(400 / 30_000)

    lines = suite.table([summary, short, suite.summarize(3, [])]).splitlines()
    assert lines[0] == "| seed | env steps to 0.5 | env steps to 0.9 | latest success | wall time per 100k env steps |"
    assert lines[2] == ("| 0 | 20,000 | 40,000 | 0.80 at 60,000 env steps | "
                        "16.7 min (1 interval across a resume left out) |")
    assert lines[3].startswith("| 1 | 10,000 | not yet (30,000 env steps run) | 0.40 at 30,000 env steps | 16.7 min")
    assert lines[4] == "| 3 | no evaluation yet | no evaluation yet | no evaluation yet | no evaluation yet |"


def test_plot_draws_a_median_band_over_seeds_and_one_seed_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = pytest.importorskip("matplotlib.figure")
    legends: list[list[str]] = []

    def record(figure: object, path: Path, **_: object) -> None:
        legends.append([text.get_text() for text in figure.axes[0].get_legend().get_texts()])

    monkeypatch.setattr(figures.Figure, "savefig", record)
    rows = [evaluation(seed, steps, 0.5, 0.0) for seed in (1, 2) for steps in (10_000, 20_000)]
    suite.plot(rows, [1, 2], "task", tmp_path / "two.png")
    suite.plot(rows[2:], [1, 2], "task", tmp_path / "one.png")  # seed 1 has no evaluations yet
    assert legends == [["95% bootstrap band of the median", "median of 2 seeds"], ["seed 2"]]


def test_fit_command_continues_a_run_in_its_own_folder(tmp_path: Path) -> None:
    run = suite.Run(Path("configs/fetch_push.yaml"), 3)
    layout = [
        sys.executable, "-m", "her_lightning.cli", "fit", "--config", "configs/fetch_push.yaml",
        "--seed_everything", "3", "--torch_threads", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", "fetch_push",
        "--trainer.logger.init_args.version", "seed3", "--trainer.max_epochs", "5000",
    ]
    assert suite.fit_command(run, tmp_path, 5000, True, []) == layout
    checkpoints = tmp_path / "fetch_push" / "seed3" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").touch()
    one_job = suite.fit_command(run, tmp_path, 5000, False, ["--data.eval_episodes", "10"])
    assert "--torch_threads" not in one_job  # one run at a time: the config's threads
    assert one_job[-4:] == ["--ckpt_path", "last", "--data.eval_episodes", "10"]
    with pytest.raises(ValueError, match=r"--trainer\.max_epochs=9 after -- is not allowed"):
        suite.check_passed_args(["--data.eval_episodes", "10", "--trainer.max_epochs=9"])


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
    rows = [line for line in report.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
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


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="counts processes through /proc")
def test_fits_started_elsewhere_are_counted() -> None:
    before = suite.fits_running_elsewhere()
    # A process whose command line reads like a training run's: the suite counts it as one sharing the cores.
    fit = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "her_lightning.cli", "fit"])
    try:
        assert suite.fits_running_elsewhere() == before + 1
    finally:
        fit.kill()
        fit.wait()
    assert suite.fits_running_elsewhere() == before
