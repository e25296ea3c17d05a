"""benchmarks/runner.py: the fit command of a config and seed, its run folder, and how a run ended."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from her_lightning.resume import LOCK_FILE

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
runner = importlib.import_module("runner")


def test_fit_command_continues_a_run_in_its_own_folder(tmp_path: Path) -> None:
    run = runner.Run(Path("configs/fetch_push.yaml"), 3)
    layout = [
        sys.executable, "-m", "her_lightning.cli", "fit", "--config", "configs/fetch_push.yaml",
        "--seed_everything", "3", "--torch_threads", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", "fetch_push",
        "--trainer.logger.init_args.version", "seed3", "--trainer.max_epochs", "5000",
    ]
    assert runner.fit_command(run, tmp_path, 5000, True, []) == layout
    assert runner.fit_command(run, tmp_path, None, True, []) == layout[:-2]  # the config's epochs
    checkpoints = tmp_path / "fetch_push" / "seed3" / "checkpoints"
    assert run.folder(tmp_path) == checkpoints.parent and run.log(tmp_path) == tmp_path / "fetch_push" / "seed3.log"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").touch()
    one_job = runner.fit_command(run, tmp_path, 5000, False, ["--data.eval_episodes", "10"])
    assert "--torch_threads" not in one_job  # one run at a time: the config's threads
    assert one_job[-4:] == ["--ckpt_path", "last", "--data.eval_episodes", "10"]


def test_seeds_ranges_and_option_values() -> None:
    assert runner.parse_seeds(["0-3", "7", "2"]) == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match=r"--seeds 1 x is invalid"):
        runner.parse_seeds(["1", "x"])
    args = ["--a", "1", "--b=2", "--a=3", "--c"]
    assert [runner.option_value(args, option) for option in ("--a", "--b", "--c", "--d")] == ["3", "2", None, None]
    assert runner.split_at_dashes(["x", "--", "--a", "1"]) == (["x"], ["--a", "1"])
    assert runner.split_at_dashes(["x"]) == (["x"], [])
    with pytest.raises(ValueError, match="--jobs 0 is invalid"):
        runner.check_jobs(0)


@pytest.mark.parametrize(
    ("code", "last_line", "failed", "message"),
    [
        (0, "trained", False, "done"),
        (1, f"run folder x is being written by another her-lightning fit (holding x/{LOCK_FILE})", False,
         "skipped, another process is fitting it: run folder x"),
        (3, "ValueError: bad option", True, "failed (exit 3): ValueError: bad option (see "),
    ],
)
def test_a_run_ends_done_skipped_or_failed_with_its_output_appended_to_its_log(
    tmp_path: Path, code: int, last_line: str, failed: bool, message: str
) -> None:
    run = runner.Run(Path("configs/point2d.yaml"), 0)
    run.log(tmp_path).parent.mkdir(parents=True)
    run.log(tmp_path).write_text("an earlier sitting's output\nfailed (exit 5): old\n")
    command = [sys.executable, "-c", f"print('starting'); print({last_line!r}); raise SystemExit({code})"]
    outcome = runner.train(run, command, tmp_path)
    assert outcome.failed == failed and outcome.message.startswith(message)
    log = run.log(tmp_path).read_text().splitlines()
    assert log[:2] == ["an earlier sitting's output", "failed (exit 5): old"]
    assert log[3].endswith(" ".join(command)) and log[4:] == ["starting", last_line]
