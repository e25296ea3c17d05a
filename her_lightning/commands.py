"""``her-lightning test`` and ``her-lightning export``: the commands that take a checkpoint rather than a config."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from her_lightning.checkpoint import CheckpointError
from her_lightning.export import export_policy
from her_lightning.testing import evaluate_checkpoint


def fail(message: str) -> NoReturn:
    """End the command with ``message`` as one line on stderr and exit status 2."""
    print(f"her-lightning: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``test`` and ``export``: a bad option is one line, as for ``fit``."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (options: {self.prog} --help)")


def checkpoint_test_main(args: list[str]) -> None:
    """``her-lightning test CHECKPOINT``: a final evaluation on goals of its own; prints it and writes it as JSON."""
    parser = CommandParser(
        prog="her-lightning test",
        description="Evaluate a checkpoint's policy without exploration noise on fresh goals (a stream of the run's "
        "seed that training's evaluations never drew from), print the result and write it as JSON beside the "
        "checkpoint (CHECKPOINT.test.json).",
    )
    parser.add_argument(
        "checkpoint", help="a training checkpoint, e.g. lightning_logs/point2d/version_0/checkpoints/last.ckpt"
    )
    parser.add_argument("--episodes", type=int, default=1000, help="episodes to play (default: 1000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the test goals (default: the run's seed)")
    parser.add_argument(
        "--num_envs", type=int, default=None, help="env copies played side by side (default: up to 100)"
    )
    options = parser.parse_args(args)
    try:
        summary = evaluate_checkpoint(options.checkpoint, options.episodes, options.seed, options.num_envs)
    except (CheckpointError, ValueError, ImportError) as error:  # a bad checkpoint or option, or a missing extra
        fail(str(error))
    low, high = summary["success_rate_95ci"]
    counters = summary["trained"]
    print(
        f"test of {summary['checkpoint']} ({summary['env_id']}, {counters['env_steps']:,} env steps trained): "
        f"{summary['episodes']:,} episodes, seed {summary['seed']}: success rate {summary['success_rate']:.3f} "
        f"(95% interval {low:.3f}-{high:.3f}), mean return {summary['episode_return_mean']:.2f}, "
        f"mean length {summary['episode_length_mean']:.1f}"
        + ("" if "output_error" in summary else f"; written to {summary['output']}")
    )
    if "output_error" in summary:  # the result is printed above; the run still did not do all it was asked
        fail(f"the result above was not written to {summary['output']}: {summary['output_error']}")


def export_main(args: list[str]) -> None:
    """``her-lightning export CHECKPOINT OUTPUT``: write a standalone policy file (``.pt2`` or ``.onnx``)."""
    parser = CommandParser(
        prog="her-lightning export",
        description="Write a checkpoint's policy as a torch.export program (.pt2: needs only torch to run) "
        "or an ONNX model (.onnx: needs only onnxruntime; writing it needs the onnx extra).",
    )
    parser.add_argument(
        "checkpoint", help="a training checkpoint, e.g. lightning_logs/point2d/version_0/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "output",
        help="the policy file to write, in an existing folder: its suffix picks the format, e.g. policy.pt2",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (default: refuse)")
    options = parser.parse_args(args)
    try:
        path = export_policy(options.checkpoint, options.output, options.overwrite)
    except (CheckpointError, ValueError, ImportError) as error:  # a bad checkpoint, suffix, or missing extra
        fail(str(error))
    except FileExistsError:
        fail(f"cannot write {options.output}: it already exists (--overwrite replaces it)")
    except OSError as error:  # the output path, or a failed write (reading the checkpoint raises CheckpointError)
        fail(f"cannot write {options.output}: {error.strerror}")
    print(f"exported the policy of {options.checkpoint} to {path}")


COMMANDS = {"test": checkpoint_test_main, "export": export_main}
