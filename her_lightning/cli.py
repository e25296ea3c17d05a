"""``her-lightning``: train agents from YAML configs (LightningCLI), test and export their checkpoints."""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from her_lightning.checkpoint import DATA_STATE, CheckpointError, read_checkpoint, trained
from her_lightning.collector import EpisodeCollector
from her_lightning.commands import COMMANDS, fail
from her_lightning.conventions import ConventionError
from her_lightning.data import HERDataModule
from her_lightning.ddpg import HERDDPG
from her_lightning.distributed import rank_count_mismatch, saved_ranks
from her_lightning.evaluation import Evaluator
from her_lightning.files import remove_leftover_temporaries
from her_lightning.health import TrainingDiverged
from her_lightning.learner import HERLearner, learner_name
from her_lightning.options import check_number, check_seed
from her_lightning.progress import RunProgressBar
from her_lightning.resume import (
    LINKED_FROM_DATA,
    RunFolderError,
    RunFolderLock,
    RunRecord,
    check_resume,
    configured_settings,
    cut_event_logs,
    resolve_last,
)
from her_lightning.signals import StopOnSignal, exit_status

# Write failures that are the disk's or the folder's, not the program's: reported in one line.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
# DDP strategies that wait for every parameter's gradient: a learner's steps (critic, actor, temperature) each leave
# the other networks without one.
PLAIN_DDP = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
DEFAULT_LEARNER = HERDDPG  # the learner of a config that names no model.class_path


class HERLightningCLI(LightningCLI):
    """LightningCLI with the collector and the evaluator always present, the task's sizes linked into the model,
    one seed, and one progress bar for the run.

    The collector and the evaluator are configured under their own top-level keys, ``collector:`` and
    ``evaluation:``.
    ``--ckpt_path last`` resumes the run that wrote the newest ``last.ckpt``, in
    its own log folder, and is an error when there is none. A checkpoint is
    checked before anything is written: the file itself, that the config keeps
    the checkpoint's model, data and collector settings (Lightning would
    silently take the model's from the checkpoint), ``max_epochs`` and the
    number of DDP ranks. Then ``fit`` locks the run folder (one writer at a
    time) and cuts its TensorBoard logs back to the checkpoint.
    """

    _checkpoint: dict[str, Any] | None = None  # the --ckpt_path checkpoint's contents (memory-mapped)
    _lock: RunFolderLock | None = None
    _stop: StopOnSignal | None = None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit`` alone: evaluation is the ``Evaluator`` callback's, and ``test`` and ``export`` take a checkpoint."""
        return {"fit": LightningCLI.subcommands()["fit"]}

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None or not self.config[subcommand].get("ckpt_path"):
            return
        config = self.config[subcommand]
        try:
            if config.ckpt_path == "last":
                config.ckpt_path = resolve_last(config.trainer)
            self._checkpoint = read_checkpoint(config.ckpt_path)
        except CheckpointError as error:
            fail(str(error))
        if not {"optimizer_states", "loops"} <= self._checkpoint.keys():
            fail(
                f"checkpoint {config.ckpt_path} holds only weights (saved with save_weights_only): it can be "
                "tested or exported, not resumed; leave out --ckpt_path to start a new run"
            )

    def _parse_ckpt_path(self) -> None:
        """Nothing: Lightning would replace the config's model options by the checkpoint's, without a word.

        ``before_instantiate_classes`` compares them instead and refuses a difference.
        """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EpisodeCollector, "collector")
        parser.add_lightning_class_args(Evaluator, "evaluation")
        parser.add_argument(
            "--torch_threads",
            type=int | None,
            default=None,
            help="CPU threads for torch (null: torch's default). Small networks train faster on one thread.",
        )
        model = "model"  # a learner class given to the CLI, or with model.class_path (``main``) any learner
        if self.subclass_mode_model:
            parser.set_defaults({"model": {"class_path": f"{DEFAULT_LEARNER.__module__}.{DEFAULT_LEARNER.__name__}"}})
            model = "model.init_args"
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"{model}.{key}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.data.seed is None:
            config.data.seed = config.seed_everything
        if config.trainer.get("strategy") in PLAIN_DDP:
            fail(
                f"trainer.strategy={config.trainer.strategy} cannot train the learners: each optimizer step "
                "uses part of their parameters; use ddp_find_unused_parameters_true (as configs/point2d_ddp.yaml)"
            )
        every = config.trainer.get("check_val_every_n_epoch")
        try:
            check_number("trainer.check_val_every_n_epoch", every, 1, integer=True, note="epochs between evaluations")
            if config.torch_threads is not None:
                check_number("torch_threads", config.torch_threads, 1, integer=True, note="or null")
        except ValueError as error:
            fail(str(error))
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        self._settings = configured_settings(config)
        if self._checkpoint is not None:
            chosen = config.model.class_path if self.subclass_mode_model else self.model_class.__name__
            learner = chosen.rpartition(".")[2]
            if learner_name(self._checkpoint) != learner:
                fail(
                    f"checkpoint {config.ckpt_path} was trained by {learner_name(self._checkpoint)}, and the config "
                    f"picks model.class_path {learner}: give the run's own config, or leave out --ckpt_path"
                )
            try:
                check_resume(self._checkpoint, config.ckpt_path, self._settings, config.trainer.get("max_epochs"))
            except CheckpointError as error:
                fail(str(error))

    def _set_seed(self) -> None:
        """Lightning's seeding, after the check that every seed goes through (``true`` draws one at random)."""
        seed = self._get(self.config, "seed_everything")
        if seed is not None and not isinstance(seed, bool):
            try:
                check_seed("seed_everything", seed)
            except ValueError as error:
                fail(str(error))
        super()._set_seed()

    def instantiate_classes(self) -> None:
        """Turn an invalid option into a one-line error instead of a stack trace: a buffer too large for the
        training device's memory too, before anything is allocated."""
        try:
            super().instantiate_classes()
            self.model.check_action_space(self.datamodule)
            self.datamodule.check_fits(self.trainer.strategy.root_device)
        except (ValueError, MisconfigurationException) as error:  # Lightning's own check of trainer options
            fail(_own_reason(str(error)))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).trainer
        if trainer_config.get("enable_progress_bar") in (None, True):  # beside the config's own callbacks
            trainer_config.callbacks = [*(trainer_config.get("callbacks") or []), RunProgressBar()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(RunRecord(self._settings))  # what a resume compares, and its event logs' sizes
        return trainer

    def before_fit(self) -> None:
        """Stop signals recorded from here on (``signals.StopOnSignal``); the checks that need the trainer; then the
        run folder's lock, what killed checkpoint writes left there removed, and its logs cut back to the checkpoint.
        """
        self._stop = StopOnSignal()
        self.trainer.callbacks.append(self._stop)
        self._stop.install()
        if self._checkpoint is not None:
            planned = self.trainer.num_devices * self.trainer.num_nodes
            saved = saved_ranks(self._checkpoint[DATA_STATE])
            if saved != planned:
                raise CheckpointError(f"checkpoint {self._ckpt_path()} {rank_count_mismatch(saved, planned)}")
        if not self.trainer.loggers or not _launching_process():
            return
        log_dir = self.trainer.log_dir
        self._lock = RunFolderLock(log_dir)
        removed = [
            entry
            for folder in _checkpoint_folders(self.trainer)
            for entry in remove_leftover_temporaries(folder, ModelCheckpoint.FILE_EXTENSION)
        ]
        if removed:
            rank_zero_info(f"removed the temporary files of interrupted checkpoint writes: {', '.join(removed)}")
        if self._checkpoint is not None and isinstance(self.trainer.logger, TensorBoardLogger):
            for change in cut_event_logs(log_dir, self._checkpoint.get("tensorboard_events")):
                rank_zero_info(f"TensorBoard logs back to the checkpoint: {change}")

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a bad checkpoint, an unusable run folder, a diverged run or a disk failure end in one line, and
        a stop signal in exit status 128 + its number.

        The signal handlers are put back before the recorded signal is read: a signal that comes later has its
        default effect, and none is recorded but not acted on.
        """
        threading.excepthook = _quiet_disk_errors
        stopped_by = None
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:  # Lightning's SIGTERM handler, in the moments before StopOnSignal takes over
            stopped_by = signal.SIGTERM
        except (CheckpointError, RunFolderError, ConventionError) as error:
            fail(str(error))
        except TrainingDiverged as error:
            fail(f"{error}; last good checkpoint: {self._last_good_checkpoint()}")
        except OSError as error:
            if error.errno not in DISK_ERRORS:
                raise
            path = error.filename or self.trainer.log_dir
            fail(f"cannot write {path}: {error.strerror}; last good checkpoint: {self._last_good_checkpoint()}")
        finally:
            threading.excepthook = threading.__excepthook__
            if self._stop is not None:
                self._stop.restore()
                stopped_by = self._stop.received or stopped_by
            if self._lock is not None:
                self._lock.release()
        if stopped_by is not None:
            self._exit_on_signal(stopped_by)

    def _exit_on_signal(self, signum: signal.Signals) -> NoReturn:
        """Say, once, where the run stopped and how to continue it; exit with 128 + the signal's number."""
        if _launching_process():
            epochs, planned = self.trainer.current_epoch, self.trainer.max_epochs
            of = f" of {planned}" if planned is not None and planned >= 0 else ""
            print(
                f"her-lightning: stopped by {signum.name} after epoch {epochs}{of}; last good checkpoint: "
                f"{self._last_good_checkpoint()}; to continue, run the same command with --ckpt_path last",
                file=sys.stderr,
            )
        raise SystemExit(exit_status(signum))

    def _ckpt_path(self) -> str | None:
        return self.config[self.subcommand].get("ckpt_path") if self.subcommand else None

    def _last_good_checkpoint(self) -> str:
        """The newest checkpoint of this run that loads, with its counters, or ``none``."""
        callbacks = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        candidates = [path for c in callbacks for path in (c.last_model_path, c.best_model_path)]
        for path in [*candidates, self._ckpt_path()]:
            try:
                counters = trained(read_checkpoint(path)) if path else None
            except CheckpointError:
                continue
            if counters is not None:
                return f"{path} ({counters['updates']:,} updates, {counters['env_steps']:,} env steps)"
        return "none (this run wrote no checkpoint yet)"


class SaveConfigOnTrainStart(SaveConfigCallback):
    """Writes ``config.yaml`` once training starts: a run that fails before (a resume refused by Lightning, a
    checkpoint that does not load) leaves the run folder's ``config.yaml`` as it was."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        super().setup(trainer, pl_module, "fit")


class HERArgumentParser(LightningArgumentParser):
    """A bad option is one line, last, without the usage dump (``--help`` shows the options)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):  # caught by jsonargparse, or debugging
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        command = " ".join(["her-lightning", *parser.prog.replace(" [options]", "").split()[1:]])  # + subcommand
        fail(f"{' '.join(_own_reason(message).split())} (options: {command} --help)")


def _own_reason(message: str) -> str:
    """The learner's own refusal of its options, where jsonargparse wraps it in its report on ``model``'s types
    (a learner or none); else the message as it is."""
    lines = message.splitlines()
    if f"<class '{HERLearner.__module__}.{HERLearner.__name__}'>" not in message or "Errors:" not in message:
        return message
    start = [line.strip() for line in lines].index("Errors:") + 1
    entries: list[list[str]] = []  # each of the report's errors: from a "- " line at its indentation to the next
    indent = None
    for line in lines[start:]:
        text = line.strip()
        if indent is None and text.startswith("- "):
            indent = len(line) - len(line.lstrip())
        if indent is not None and len(line) - len(line.lstrip()) <= indent and not text.startswith("- "):
            break  # the report's "Given value" lines
        if text.startswith("- ") and len(line) - len(line.lstrip()) == indent:
            entries.append([])
        if entries:
            entries[-1].append(text.removeprefix("- ") if len(entries[-1]) == 0 else text)
    own = [" ".join(entry) for entry in entries if "NoneType" not in entry[0]]
    reason = "; ".join(re.sub(r"^Problem with given class_path '[^']*':\s*", "", text) for text in own)
    return reason or message


def _quiet_disk_errors(args: threading.ExceptHookArgs) -> None:
    """Leave a background writer's disk error (TensorBoard's) to the main thread, which reports it in one line."""
    if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_ERRORS):
        threading.__excepthook__(args)


def _checkpoint_folders(trainer: Trainer) -> set[Path]:
    """The folders the run's ``ModelCheckpoint``s write to (their ``dirpath``, or the run folder's ``checkpoints``)."""
    return {
        Path(c.dirpath) if c.dirpath else Path(trainer.log_dir) / "checkpoints"
        for c in trainer.checkpoint_callbacks
        if isinstance(c, ModelCheckpoint)
    }


def _launching_process() -> bool:
    """Whether this is the process the user started: not a DDP rank that Lightning launched, nor another node's."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


DESCRIPTION = """Train and evaluate goal-conditioned agents with HER (DDPG, SAC) from YAML configs.

  her-lightning fit --config configs/point2d.yaml      train (--ckpt_path last resumes)
  her-lightning test CHECKPOINT                        final evaluation on fresh goals, saved as JSON
  her-lightning export CHECKPOINT policy.pt2|.onnx     write a standalone policy file"""


SUBCOMMANDS = ("fit", *COMMANDS)


def _check_config_files(argv: list[str]) -> None:
    """An empty config file, or one that is not UTF-8, is an error that names the file (jsonargparse would say only
    ``Unexpected config:``)."""
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            path = Path(argv[i + 1])
        elif arg.startswith("--config="):
            path = Path(arg.partition("=")[2])
        else:
            continue
        try:
            settings = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except UnicodeDecodeError as error:
            fail(f"config file {path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}): "
                 "save it as UTF-8")
        except (yaml.YAMLError, OSError):
            continue  # jsonargparse reports it, naming the problem
        if settings is None:
            fail(f"config file {path} is empty: it must set options, e.g. as configs/point2d.yaml does")


def main(args: ArgsType = None) -> None:
    """Entry point of the ``her-lightning`` console script: ``fit`` (LightningCLI), ``test`` and ``export``."""
    # Lightning's own use of an API that torch deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and (not argv or argv[0] not in SUBCOMMANDS and not argv[0].startswith("-")):
        given = f"unknown subcommand {argv[0]!r}" if argv else "no subcommand given"
        fail(f"{given}: choose from {', '.join(map(repr, SUBCOMMANDS))} (options: her-lightning --help)")
    if isinstance(argv, list) and argv[:1] in (["export"], ["test"]):
        COMMANDS[argv[0]](argv[1:])
        return
    if isinstance(argv, list):
        _check_config_files(argv)
    HERLightningCLI(
        HERLearner,
        HERDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        parser_class=HERArgumentParser,
        auto_configure_optimizers=False,  # each learner makes its own optimizers: no --optimizer
        save_config_callback=SaveConfigOnTrainStart,
        save_config_kwargs={"overwrite": True},  # a resumed run writes its config into its own folder again
        parser_kwargs={"description": DESCRIPTION, "formatter_class": argparse.RawDescriptionHelpFormatter},
        trainer_defaults={
            "plugins": [{"class_path": "her_lightning.checkpoint.AtomicCheckpointIO"}],
            "log_every_n_steps": 1,  # an epoch is one item (a chunk of batches); larger values only warn
        },
        args=args,
    )


if __name__ == "__main__":
    main()
