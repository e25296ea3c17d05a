"""``her-lightning``: train, evaluate and inspect agents from YAML configs (LightningCLI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from her_lightning.callbacks import EpisodeCollector
from her_lightning.checkpoint import LAST_CHECKPOINT, CheckpointError, find_last_checkpoint, verify_checkpoint
from her_lightning.data import HERDataModule
from her_lightning.distributed import rank_count_mismatch, saved_ranks
from her_lightning.export import export_policy
from her_lightning.module import PLAIN_DDP_ADVICE, HERDDPG


class HERLightningCLI(LightningCLI):
    """LightningCLI with the collector always present, the task's sizes linked into the model, and one seed.

    The collector is configured under its own top-level key, ``collector:``.
    ``--ckpt_path last`` resumes the run that wrote the newest ``last.ckpt``, in
    its own log folder, and is an error when there is none; a checkpoint file
    is checked before anything starts.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None or not self.config[subcommand].get("ckpt_path"):
            return
        config = self.config[subcommand]
        try:
            if config.ckpt_path == "last":
                config.ckpt_path = str(_resolve_last(config.trainer))
            verify_checkpoint(config.ckpt_path)
            _check_ranks(config.ckpt_path, config.trainer)
        except CheckpointError as error:
            _fail(str(error))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EpisodeCollector, "collector")
        parser.add_argument(
            "--torch_threads",
            type=int | None,
            default=None,
            help="CPU threads for torch (null: torch's default). Small networks train faster on one thread.",
        )
        for key in ("obs_dim", "goal_dim", "action_dim", "reward_range"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.data.seed is None:
            config.data.seed = config.seed_everything
        if config.trainer.get("strategy") in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
            _fail(f"trainer.strategy={config.trainer.strategy} {PLAIN_DDP_ADVICE}")
        if config.torch_threads is not None:
            if config.torch_threads < 1:
                _fail(f"torch_threads={config.torch_threads} is invalid: must be at least 1, or null")
            torch.set_num_threads(config.torch_threads)

    def instantiate_classes(self) -> None:
        """Turn an invalid option into a one-line error instead of a stack trace."""
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as error:  # Lightning's own check of trainer options
            _fail(str(error))


def _fail(message: str) -> None:
    print(f"her-lightning: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _planned_ranks(trainer: Namespace) -> int | None:
    """How many DDP ranks the trainer settings ask for, where they say it without ``auto``."""
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, list):
        devices = len(devices)
    return devices * nodes if isinstance(devices, int) and devices > 0 else None


def _check_ranks(checkpoint: str, trainer: Namespace) -> None:
    """Refuse, before anything starts, to resume per-rank state on another number of ranks."""
    planned = _planned_ranks(trainer)
    if planned is None:
        return  # decided at run time; the datamodule refuses a mismatch then
    data = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("HERDataModule", {})
    saved = saved_ranks(data)
    if saved != planned:
        raise CheckpointError(f"checkpoint {checkpoint} {rank_count_mismatch(saved, planned)}")


def _resolve_last(trainer: Namespace) -> str:
    """The ``last.ckpt`` that ``--ckpt_path last`` means; pins the logger to that run's version folder."""
    for callback in trainer.get("callbacks") or []:
        dirpath = callback.get("init_args", {}).get("dirpath") if isinstance(callback, Namespace) else None
        if callback.get("class_path", "").endswith("ModelCheckpoint") and dirpath:
            return str(Path(dirpath) / LAST_CHECKPOINT)  # checked by the caller like any checkpoint path
    logger = trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if init_args is None or init_args.get("save_dir") is None:
        raise CheckpointError(
            "--ckpt_path last needs trainer.logger with a save_dir and name (as in configs/*.yaml) "
            "or a ModelCheckpoint with a dirpath; otherwise give the checkpoint file"
        )
    run_root = Path(init_args.save_dir) / (init_args.get("name") or "")
    checkpoint, version = find_last_checkpoint(run_root, init_args.get("version"))
    init_args.version = version  # keep logging into the same run folder
    return str(checkpoint)


def export_main(args: list[str]) -> None:
    """``her-lightning export CHECKPOINT OUTPUT``: write a standalone TorchScript policy."""
    parser = argparse.ArgumentParser(
        prog="her-lightning export",
        description="Write a checkpoint's policy as a TorchScript file that needs only torch to run.",
    )
    parser.add_argument(
        "checkpoint", help="a training checkpoint, e.g. lightning_logs/point2d/version_0/checkpoints/last.ckpt"
    )
    parser.add_argument("output", help="the policy file to write, e.g. policy.pt")
    options = parser.parse_args(args)
    try:
        path = export_policy(options.checkpoint, options.output)
    except CheckpointError as error:
        _fail(str(error))
    print(f"exported the policy of {options.checkpoint} to {path}")


def main(args: ArgsType = None) -> None:
    """Entry point of the ``her-lightning`` console script: LightningCLI subcommands, and ``export``."""
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] == ["export"]:
        export_main(argv[1:])
        return
    HERLightningCLI(
        HERDDPG,
        HERDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},  # a resumed run writes its config into its own folder again
        trainer_defaults={
            "plugins": [{"class_path": "her_lightning.checkpoint.AtomicCheckpointIO"}],
            "log_every_n_steps": 1,  # an epoch is one item (a chunk of batches); larger values only warn
        },
        args=args,
    )


if __name__ == "__main__":
    main()
