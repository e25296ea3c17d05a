"""The command line: every option shown, bad values rejected early by name, a run from the shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.cli import main

CONFIG = str(Path(__file__).parents[1] / "configs" / "point2d.yaml")


def run_cli(*args: str) -> None:
    main(["fit", "--config", CONFIG, *args])


def test_print_config_shows_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--print_config")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("her_ratio: 0.8", "her_strategy: future", "batch_size: 256", "warmup_episodes: 200",
                   "noise_std: 0.1", "gamma: 0.98", "tau: 0.005", "max_epochs: 1800", "num_envs: 1"):
        assert option in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data.her_ratio", "1.5"), "her_ratio=1.5 is invalid: must be within [0, 1]"),
        (("--data.batch_size", "0"), "batch_size=0 is invalid: must be at least 1"),
        (("--data.buffer_size", "50"), "buffer_size=50 is invalid: must hold one whole episode"),
        (("--data.env.id", "nope"), "env id='nope' is unknown: choose one of ['point2d']"),
        (("--model.gamma", "1.5"), "gamma=1.5 is invalid: must be within [0, 1]"),
        (("--collector.noise_std", "-1"), "noise_std=-1.0 is invalid: must be at least 0"),
        (("--collector.episodes_per_epoch", "0"), "episodes_per_epoch=0 is invalid: must be at least 1"),
    ],
)
def test_invalid_values_fail_at_start_with_the_option_named(
    args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unknown_strategy_lists_the_allowed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--data.her_strategy", "nearest")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data.her_strategy" in err and "future,final,episode" in err


def test_fit_from_the_shipped_config_writes_tensorboard_logs(tmp_path: Path) -> None:
    run_cli(
        "--trainer.max_epochs", "4",
        "--trainer.check_val_every_n_epoch", "2",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--collector.warmup_episodes", "20",
        "--data.eval_episodes", "10",
    )
    (run_dir,) = (tmp_path / "point2d").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/episode_return", "train/episode_length", "train/success_rate", "loss/critic", "loss/actor",
                "train/q_mean", "eval/success_rate", "eval/episode_return"}
    assert expected <= tags
    # Episode metrics are plotted against environment steps, losses against gradient updates.
    env_steps = [event.step for event in events.Scalars("train/episode_return")]
    assert env_steps == sorted(env_steps) and env_steps[0] >= 20 and env_steps[-1] <= 20 * 50 + 4 * 50
    assert [event.step for event in events.Scalars("loss/critic")] == [20, 40, 60, 80]
    assert len(events.Scalars("eval/success_rate")) == 2
