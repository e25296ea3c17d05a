"""Turn a training checkpoint into a standalone policy file: ``torch.export`` (``.pt2``) or ONNX (``.onnx``).

The file maps raw (unnormalized) observations and goals, float32 batches ``(B, obs_dim)`` and ``(B, goal_dim)``,
to two outputs: ``action``, in the env's own action bounds (what its ``step`` takes), and ``action_unit``, the
policy's ``[-1, 1]`` (for a discrete action space: the action's index, counted from the env's first action). The
policy is the one evaluation plays (the learner's ``policy_network``: DDPG's Polyak-averaged actor with
``model.average_policy``, SAC's mean action, DQN's greedy action), and the input normalization a run trained with
is part of the file. A ``.pt2`` file needs only torch (``torch.export.load(path).module()``); an ``.onnx`` file
needs only onnxruntime. ``examples/`` shows both.

Inputs are checked in the file, each refusal one line: a dtype other than float32, a rank other than 2 and a
wrong width are refused by both formats (the ``.pt2`` program by its own checks, onnxruntime by the model's input
types), and a NaN or inf input by the ``.pt2`` program; ONNX has no operator that raises, so an ONNX caller checks
finiteness (as ``examples/run_onnx_policy.py`` does). Both formats clamp their actions to their bounds: tanh can
round past 1 (onnxruntime's by a few ulp).

The file is built and checked in memory and written with ``files.atomic_write``: a failed or interrupted export
leaves an earlier file of that name as it was, and no partial file.

Both formats carry the same metadata under ``METADATA_KEY`` (``.pt2``: an extra file; ONNX: ``metadata_props``),
one JSON object: ``env_id``, ``obs_dim``, ``goal_dim``, ``action_dim``, ``action_low``, ``action_high``,
``inputs``, ``outputs`` and ``config``, the run's settings as its checkpoint records them
(``checkpoint.recorded_settings``: ``model`` and ``data``, and ``collector`` and ``seed_everything`` where the
command line trained it).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from her_lightning.checkpoint import read_checkpoint, recorded_settings
from her_lightning.data import recorded_task
from her_lightning.envs.base import scale_action
from her_lightning.files import atomic_write
from her_lightning.learner import learner_from_checkpoint

FORMATS = {".pt2": "torch.export", ".onnx": "ONNX"}
METADATA_KEY = "metadata.json"
INPUTS = ("observation", "goal")
OUTPUTS = ("action", "action_unit")
ONNX_EXTRA = "pip install 'her_lightning[onnx]'"


class ExportedPolicy(nn.Module):
    """The evaluated policy behind its input normalization, with its actions also in the env's own bounds.

    Takes float32 batches ``(B, obs_dim), (B, goal_dim)`` and returns ``{"action": (B, action_dim) in
    [action_low, action_high], "action_unit": (B, action_dim) in [-1, 1]}``; with ``discrete``, ``action_unit`` is
    the policy's action index and ``action`` is ``action_low`` plus it. Other dtypes raise (normalization
    would turn an int64 or float16 input into float32 and act on it), and so do non-finite inputs (normalization
    would clip an inf to a plausible input).
    """

    def __init__(
        self,
        actor: nn.Module,
        obs_normalizer: nn.Module,
        goal_normalizer: nn.Module,
        action_low: list[float],
        action_high: list[float],
        discrete: bool = False,
    ) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = actor
        self.obs_normalizer = obs_normalizer
        self.goal_normalizer = goal_normalizer
        self.register_buffer("action_low", torch.tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=torch.float32))

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
        # torch.export fixes dtypes when it traces, so a dtype test in Python leaves no trace in the program; this
        # operator (the one torch.export itself inserts for .to()) compares at run time. Its message names no input.
        for value in (observation, goal):
            torch.ops.aten._assert_tensor_metadata.default(value, dtype=torch.float32)
        # An assert that the program keeps with its message (torch._check on a value loses it).
        torch._assert_async(
            torch.isfinite(observation).all() & torch.isfinite(goal).all(),
            "observation and goal must be finite: a NaN or inf input is refused",
        )
        chosen = self.actor(self.obs_normalizer(observation), self.goal_normalizer(goal))
        if self.discrete:  # an index: the env's action is the first one's number plus it
            return {"action": chosen + self.action_low, "action_unit": chosen}
        unit = chosen.clamp(-1.0, 1.0)
        action = scale_action(unit, self.action_low, self.action_high).clamp(self.action_low, self.action_high)
        return {"action": action, "action_unit": unit}


def export_policy(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the checkpoint's policy to ``output``, in the format its suffix names (see ``FORMATS``).

    The file is built in memory, loaded back from there and checked to act as the checkpoint's policy does;
    only then is it written, through ``files.atomic_write``.

    Args:
        checkpoint: A training checkpoint.
        output: The policy file to write.
        overwrite: Replace an existing ``output``; without it, an existing one is refused.

    Raises:
        ValueError: If the suffix of ``output`` is not one of ``FORMATS``.
        ImportError: If ``.onnx`` is asked for without the ``onnx`` extra installed.
        FileExistsError: If ``output`` exists and ``overwrite`` is false.
        OSError: If ``output`` is a directory, its folder does not exist, or writing it fails.
        CheckpointError: If the checkpoint is missing, truncated or corrupt.
    """
    output = Path(output)
    if output.suffix not in FORMATS:
        allowed = ", ".join(f"{suffix} ({name})" for suffix, name in FORMATS.items())
        raise ValueError(f"output {output} has the unknown format {output.suffix!r}: its suffix must be {allowed}")
    if output.suffix == ".onnx":
        _require_onnx_extra(output)
    _check_output(output, overwrite)
    state = read_checkpoint(checkpoint)
    policy, metadata = policy_from_checkpoint(state)
    batch = torch.export.Dim("batch")
    dynamic_shapes = {name: {0: batch} for name in INPUTS}
    generator = torch.Generator().manual_seed(0)
    probe = tuple(torch.randn(3, metadata[key], generator=generator) * 3 for key in ("obs_dim", "goal_dim"))
    if output.suffix == ".pt2":
        contents = _pt2_bytes(policy, probe, dynamic_shapes, metadata)
        written = torch.export.load(io.BytesIO(contents)).module()
    else:
        contents = _onnx_bytes(policy, probe, dynamic_shapes, metadata)
        written = _onnx_runner(contents)
    with torch.no_grad():
        expected = policy(*probe)
    produced = written(*probe)
    if not all(torch.allclose(produced[name], expected[name], atol=1e-5) for name in OUTPUTS):
        raise RuntimeError(f"the exported policy {output} does not reproduce the checkpoint's actor")
    atomic_write(output, lambda file: file.write(contents))
    return output


def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output path that cannot or should not be written.

    A missing folder is refused rather than created: a mistyped path would otherwise leave the policy where
    nobody looks for it.

    Raises:
        IsADirectoryError: If ``output`` is a directory.
        FileNotFoundError: If the folder of ``output`` does not exist.
        FileExistsError: If ``output`` exists and ``overwrite`` is false.
    """
    if output.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a directory", str(output))
    if not output.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"its folder {output.parent} does not exist", str(output))
    if output.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "it already exists", str(output))


def policy_from_checkpoint(state: dict[str, Any]) -> tuple[ExportedPolicy, dict[str, Any]]:
    """The policy module and its metadata from a loaded checkpoint (see ``checkpoint.read_checkpoint``)."""
    settings = recorded_settings(state)
    learner = learner_from_checkpoint(state)
    dims = {key: learner.hparams[key] for key in ("obs_dim", "goal_dim", "action_dim")}
    normalizers = [learner.obs_normalizer or nn.Identity(), learner.goal_normalizer or nn.Identity()]
    task = recorded_task(state)
    low, high = task.action_low, task.action_high
    discrete = learner.DISCRETE
    policy = ExportedPolicy(learner.policy_network(), *normalizers, low, high, discrete).eval().requires_grad_(False)
    metadata = {
        "env_id": task.env["id"],
        "policy": learner.policy_name,
        **dims,
        "action_low": low,
        "action_high": high,
        "inputs": {"observation": "(batch, obs_dim) float32, raw", "goal": "(batch, goal_dim) float32, raw"},
        "outputs": {
            "action": "in [action_low, action_high], the env's units",
            "action_unit": "the action's index, in [0, action_high - action_low]" if discrete else "in [-1, 1]",
        },
        "config": settings,
    }
    return policy, metadata


def _pt2_bytes(
    policy: ExportedPolicy, probe: tuple[torch.Tensor, ...], dynamic_shapes: Any, metadata: dict[str, Any]
) -> bytes:
    """The ``.pt2`` file's contents.

    The program is saved without its example inputs: ``.module()`` then checks each input's rank, width and batch
    size in a pre-hook, one line each. From example inputs it would instead build guards that index a 1-D input's
    missing axis (an ``IndexError``) and pass a 3-D one on to broadcast.
    """
    program = torch.export.export(policy, probe, dynamic_shapes=dynamic_shapes)
    program.example_inputs = None
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA_KEY: json.dumps(metadata)})
    return buffer.getvalue()


def _require_onnx_extra(output: Path) -> None:
    """Refuse in one line, before any work, where torch.onnx's exporter (onnxscript) or onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(f"writing {output} needs the onnx extra ({error}): {ONNX_EXTRA}") from None


def _onnx_bytes(
    policy: ExportedPolicy, probe: tuple[torch.Tensor, ...], dynamic_shapes: Any, metadata: dict[str, Any]
) -> bytes:
    """The ``.onnx`` file's contents: the model with its weights inside (a policy is far below protobuf's 2 GB)."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # it warns of every optional torchvision operator it cannot register
    try:
        with warnings.catch_warnings():
            # torch's own deprecated call inside the exporter, and its note that both inputs share the batch axis.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*The axis name: batch will not be used")
            program = torch.onnx.export(
                policy, probe, dynamo=True, dynamic_shapes=dynamic_shapes, output_names=list(OUTPUTS),
                external_data=False, verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    return program.model_proto.SerializeToString()


def _onnx_runner(model: bytes) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """A function that runs an ONNX model in onnxruntime on tensors and returns its outputs by name, as tensors."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])

    def run(observation: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
        values = session.run(list(OUTPUTS), {"observation": observation.numpy(), "goal": goal.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUTS, values, strict=True)}

    return run
