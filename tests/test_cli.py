"""The command line: every option shown, bad values rejected early by name, a run from the shipped config."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from her_lightning.checkpoint import DATA_STATE
from her_lightning.cli import main
from her_lightning.collector import EpisodeCollector
from her_lightning.data import HERDataModule
from her_lightning.ddpg import HERDDPG
from her_lightning.evaluation import Evaluator

CONFIGS = Path(__file__).parents[1] / "configs"
CONFIG = str(CONFIGS / "point2d.yaml")


def run_cli(*args: str) -> None:
    main(["fit", "--config", CONFIG, *args])


def test_print_config_shows_every_option_of_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--print_config")
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "her_lightning.HERDDPG"  # the learner of a config that names none
    printed["model"] = printed["model"]["init_args"]
    sections = {"model": HERDDPG, "data": HERDataModule, "collector": EpisodeCollector, "evaluation": Evaluator}
    linked = {"model": {"obs_dim", "goal_dim", "action_dim", "reward_range"}}  # set from the data, not options
    for section, cls in sections.items():
        assert set(inspect.signature(cls).parameters) - set(printed[section]) == linked.get(section, set()), section
    assert printed["data"]["her_ratio"] == yaml.safe_load(Path(CONFIG).read_text())["data"]["her_ratio"]


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert "max_epochs:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data.her_ratio", "1.5"), "her_ratio=1.5 is invalid: must be within [0, 1]"),
        (("--data.displaced_share", "-0.5"), "displaced_share=-0.5 is invalid: must be within [0, 1]"),
        (("--data.batch_size", "0"), "batch_size=0 is invalid: must be at least 1"),
        (("--data.buffer_size", "50"), "buffer_size=50 is invalid: must hold at least one whole episode"),
        (("--data.env.id", "nope"), "env id='nope' is unknown: it is not built in (point2d, bit_flip)"),
        (("--model.gamma", "1.5"), "gamma=1.5 is invalid: must be within [0, 1]"),
        (("--model.noise_std", "-1"), "noise_std=-1.0 is invalid: must be at least 0"),
        (("--trainer.enable_checkpointing", "false"), "`enable_checkpointing=False` but found `ModelCheckpoint`"),
        (("--model.random_action_prob", "2"), "random_action_prob=2.0 is invalid: must be within [0, 1]"),
        (("--model.policy_delay", "0"), "policy_delay=0 is invalid: must be at least 1"),
        (("--model", "her_lightning.HERLearner"), "HERLearner is what learners share, not a learner: set "
                                                   "model.class_path to her_lightning.HERDDPG or"),
        (("--model", "her_lightning.Nope"), "module 'her_lightning' has no attribute 'Nope'"),
        (("--trainer.strategy", "ddp"), "use ddp_find_unused_parameters_true"),
        (("--collector.episodes_per_epoch", "0"), "episodes_per_epoch=0 is invalid: must be at least 1"),
        (("--model.tau", "0"), "tau=0.0 is invalid: must be within (0, 1] (at 0 the target networks never move)"),
        (("--trainer.check_val_every_n_epoch", "0"), "check_val_every_n_epoch=0 is invalid: must be at least 1"),
        (("--data.batch_size", "100000000"), "batch_size=100000000 is invalid: must be at most buffer_size=1000000"),
        (("--data.env.kwargs", "{bogus: 1}"),
         "env id='point2d' does not take data.env.kwargs ['bogus']: it takes ['max_episode_steps', 'threshold',"),
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


@pytest.mark.parametrize(
    "args",
    [("--data.her_strategy", "nearest"), ("--trainer.max_epochs", "x"), ("--bogus", "1"), ("--optimizer", "Adam")],
)
def test_a_parser_error_is_one_line_without_the_usage(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "usage:" not in err and "[--" not in err
    last = err.splitlines()[-1]  # (pytest's own command line adds a warning of LightningCLI's before it)
    assert last.startswith("her-lightning: error: ") and args[0].lstrip("-") in last
    assert last.endswith("(options: her-lightning fit --help)") and err.count("error") == 1


def test_an_empty_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(empty)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"her-lightning: error: config file {empty} is empty: it must set " \
        "options, e.g. as configs/point2d.yaml does"


SCALARS_BY_ENV_STEPS = {
    "train/episode_return", "train/episode_length", "train/success_rate", "train/displaced_rate", "eval/success_rate",
    "eval/episode_return", "eval/episode_length", "perf/env_steps_per_s", "buffer/transitions",
    "buffer/achieved_goal_spread",
}
SCALARS_BY_UPDATES = {"loss/critic", "loss/actor", "train/q_mean", "perf/updates_per_s", "train/actor_saturation"}


def test_fit_from_the_shipped_config_logs_every_documented_key(tmp_path: Path) -> None:
    run_cli(
        "--trainer.max_epochs", "4",
        "--trainer.check_val_every_n_epoch", "2",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--collector.warmup_episodes", "20",
        "--data.eval_episodes", "10",
    )
    (run_dir,) = (tmp_path / "point2d").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) == SCALARS_BY_ENV_STEPS | SCALARS_BY_UPDATES
    for tag in tags["scalars"]:
        assert all(math.isfinite(event.value) for event in events.Scalars(tag)), tag
    # Episode metrics are plotted against environment steps, losses against gradient updates.
    env_steps = [event.step for event in events.Scalars("train/episode_return")]
    assert env_steps == sorted(env_steps) and env_steps[0] >= 20 and env_steps[-1] <= 20 * 50 + 4 * 50
    checkpoint = torch.load(next(run_dir.glob("checkpoints/last.ckpt")), weights_only=True)
    assert env_steps[-1] == checkpoint[DATA_STATE]["counters"]["env_steps"]
    assert [event.step for event in events.Scalars("eval/success_rate")][-1] == env_steps[-1]
    for tag in SCALARS_BY_UPDATES:
        assert [event.step for event in events.Scalars(tag)] == [20, 40, 60, 80], tag
    assert len(events.Scalars("eval/success_rate")) == 2
    # Pictures and distributions.
    # The trajectory figure of the first of every evaluation.figure_every (10) evaluations.
    assert [image.step for image in events.Images("eval/trajectories")] == [
        events.Scalars("eval/success_rate")[0].step
    ]
    assert events.Images("eval/trajectories")[0].width >= 300
    assert set(tags["histograms"]) == {"train/actions", "train/q_values"}
    # The HParams tab with eval/success_rate as its metric, and the success chart.
    plugins = {key: meta.plugin_data.plugin_name for key, meta in events.summary_metadata.items()}
    assert plugins.get("_hparams_/experiment") == "hparams"
    assert b"eval/success_rate" in events.summary_metadata["_hparams_/experiment"].plugin_data.content
    # Every setting of the run, by section: the config's, as a resume compares them.
    settings = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    for key in (b"seed_everything", b"model/hidden", b"data/env/id", b"data/her_ratio", b"model/noise_std"):
        assert key in settings, key
    assert plugins.get("custom_scalars__config__") == "custom_scalars"


def test_progress_bar_shows_evaluation_and_training_return() -> None:
    from lightning.pytorch.cli import LightningCLI  # noqa: F401  (the CLI class below is one)

    from her_lightning.cli import HERLightningCLI
    from her_lightning.data import HERDataModule
    from her_lightning.ddpg import HERDDPG

    cli = HERLightningCLI(
        HERDDPG, HERDataModule, run=False, save_config_callback=None,
        args=["--config", CONFIG, "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1",
              "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
              "--collector.warmup_episodes", "4", "--data.eval_episodes", "4"],
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    shown = cli.trainer.progress_bar_metrics
    assert {"eval/success_rate", "train/episode_return"} <= set(shown)


def test_help_lists_every_subcommand_export_included(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "her-lightning export CHECKPOINT" in out and "{fit}" in out and "her-lightning test CHECKPOINT" in out
    assert "validate" not in out and "predict" not in out
