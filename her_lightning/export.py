"""Turn a training checkpoint into a standalone policy file: ``torch.export`` (``.pt2``) or ONNX (``.onnx``).

The file maps raw (unnormalized) observations and goals, float32 batches ``(B, obs_dim)`` and ``(B, goal_dim)``,
to two outputs: ``action``, in the env's own action bounds (what its ``step`` takes), and ``action_unit``, the
actor's ``[-1, 1]``. The actor is the one evaluation plays (``module.policy_weights``: the Polyak-averaged one
with ``model.average_policy``), and the input normalization a run trained with is part of the file. A ``.pt2``
file needs only torch (``torch.export.load(path).module()``); an ``.onnx`` file needs only onnxruntime.
``examples/`` shows both.

Inputs are checked in the file: a wrong input size is refused by both formats (the sizes are fixed in the
program's input shapes), and a NaN or inf input by the ``.pt2`` program itself; ONNX has no operator that
raises, so an ONNX caller checks finiteness (as ``examples/run_onnx_policy.py`` does).

Both formats carry the same metadata under ``METADATA_KEY`` (``.pt2``: an extra file; ONNX: ``metadata_props``),
one JSON object: ``env_id``, ``obs_dim``, ``goal_dim``, ``action_dim``, ``action_low``, ``action_high``,
``inputs``, ``outputs``, ``config`` (``model``: the module's hyper-parameters; ``data``: the data settings;
``collector`` and ``seed_everything`` where the command line recorded them), and, for checkpoints written before
they recorded the task, a ``note`` saying that the env and its bounds are unknown.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from her_lightning.checkpoint import DATA_STATE, read_checkpoint, upgrade
from her_lightning.envs.base import scale_action
from her_lightning.module import policy_weights
from her_lightning.networks import Actor
from her_lightning.normalizer import RunningNormalizer

FORMATS = {".pt2": "torch.export", ".onnx": "ONNX"}
METADATA_KEY = "metadata.json"
INPUTS = ("observation", "goal")
OUTPUTS = ("action", "action_unit")
ONNX_EXTRA = "pip install 'her_lightning[onnx]'"
UNKNOWN_TASK_NOTE = (
    "the checkpoint predates recorded tasks: the env and its action bounds are unknown, "
    "so action is the actor's [-1, 1], as action_unit"
)


class ExportedPolicy(nn.Module):
    """The evaluated policy's actor behind its input normalization, with its actions also in the env's own bounds.

    Takes batches ``(B, obs_dim), (B, goal_dim)`` and returns ``{"action": (B, action_dim) in
    [action_low, action_high], "action_unit": (B, action_dim) in [-1, 1]}``. Non-finite inputs raise:
    normalization would clip an inf to a plausible input and act on it.
    """

    def __init__(
        self,
        actor: Actor,
        obs_normalizer: nn.Module,
        goal_normalizer: nn.Module,
        action_low: list[float],
        action_high: list[float],
    ) -> None:
        super().__init__()
        self.actor = actor
        self.obs_normalizer = obs_normalizer
        self.goal_normalizer = goal_normalizer
        self.register_buffer("action_low", torch.tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=torch.float32))

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
        # An assert that torch.export keeps in the program, with its message (torch._check on a value loses it).
        torch._assert_async(
            torch.isfinite(observation).all() & torch.isfinite(goal).all(),
            "observation and goal must be finite: a NaN or inf input is refused",
        )
        unit = self.actor(self.obs_normalizer(observation), self.goal_normalizer(goal))
        return {"action": scale_action(unit, self.action_low, self.action_high), "action_unit": unit}


def export_policy(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the checkpoint's policy to ``output``, in the format its suffix names (see ``FORMATS``).

    The written file is loaded back and checked to act as the checkpoint's policy does. A checkpoint
    without recorded action bounds (written before they were) is exported with ``[-1, 1]`` and a warning.

    Raises:
        ValueError: If the suffix of ``output`` is not one of ``FORMATS``.
        ImportError: If ``.onnx`` is asked for without the ``onnx`` extra installed.
        CheckpointError: If the checkpoint is missing, truncated or corrupt.
    """
    output = Path(output)
    if output.suffix not in FORMATS:
        allowed = ", ".join(f"{suffix} ({name})" for suffix, name in FORMATS.items())
        raise ValueError(f"output {output} has the unknown format {output.suffix!r}: its suffix must be {allowed}")
    if output.suffix == ".onnx":
        _require_onnx_extra(output)
    state = read_checkpoint(checkpoint)
    policy, metadata = policy_from_checkpoint(state)
    if "note" in metadata:
        warnings.warn(f"{checkpoint}: {metadata['note']}", stacklevel=2)
    batch = torch.export.Dim("batch")
    dynamic_shapes = {name: {0: batch} for name in INPUTS}
    generator = torch.Generator().manual_seed(0)
    probe = tuple(torch.randn(3, metadata[key], generator=generator) * 3 for key in ("obs_dim", "goal_dim"))
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".pt2":
        _save_pt2(policy, probe, dynamic_shapes, metadata, output)
        written = torch.export.load(output).module()
    else:
        _save_onnx(policy, probe, dynamic_shapes, metadata, output)
        written = _onnx_runner(output)
    with torch.no_grad():
        expected = policy(*probe)
    produced = written(*probe)
    if not all(torch.allclose(produced[name], expected[name], atol=1e-5) for name in OUTPUTS):
        raise RuntimeError(f"the exported policy {output} does not reproduce the checkpoint's actor")
    return output


def policy_from_checkpoint(state: dict[str, Any]) -> tuple[ExportedPolicy, dict[str, Any]]:
    """The policy module and its metadata from a loaded checkpoint (see ``checkpoint.read_checkpoint``)."""
    hparams = {key: value for key, value in state["hyper_parameters"].items() if not key.startswith("_")}
    weights = state["state_dict"]
    dims = {key: hparams[key] for key in ("obs_dim", "goal_dim", "action_dim")}
    actor = Actor(dims["obs_dim"], dims["goal_dim"], dims["action_dim"], tuple(hparams["hidden"]))
    actor.load_state_dict(_submodule(weights, policy_weights(hparams)))
    normalizers: list[nn.Module] = [nn.Identity(), nn.Identity()]
    if hparams.get("normalize_inputs", False):
        for i, (name, dim) in enumerate([("obs_normalizer", dims["obs_dim"]), ("goal_normalizer", dims["goal_dim"])]):
            normalizers[i] = RunningNormalizer(dim, hparams["norm_clip"])
            normalizers[i].load_state_dict(_submodule(weights, name))
    task = upgrade(state).get(DATA_STATE, {}).get("task")
    if task is None:
        low, high = [-1.0] * dims["action_dim"], [1.0] * dims["action_dim"]
    else:
        low, high = task["action_low"], task["action_high"]
    policy = ExportedPolicy(actor, *normalizers, low, high).eval().requires_grad_(False)
    metadata = {
        "env_id": None if task is None else task["env"]["id"],
        "policy": policy_weights(hparams),
        **dims,
        "action_low": low,
        "action_high": high,
        "inputs": {"observation": "(batch, obs_dim) float32, raw", "goal": "(batch, goal_dim) float32, raw"},
        "outputs": {"action": "in [action_low, action_high], the env's units", "action_unit": "in [-1, 1]"},
        # The run's own record of its settings where the command line wrote one (collector and seed too).
        "config": {"data": None if task is None else {"env": task["env"]}, **state.get("run_settings", {}), "model": hparams},
    }
    if task is None:
        metadata["note"] = UNKNOWN_TASK_NOTE
    return policy, metadata


def _save_pt2(
    policy: ExportedPolicy, probe: tuple[torch.Tensor, ...], dynamic_shapes: Any, metadata: dict[str, Any], output: Path
) -> None:
    program = torch.export.export(policy, probe, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, output, extra_files={METADATA_KEY: json.dumps(metadata)})


def _require_onnx_extra(output: Path) -> None:
    """Refuse in one line, before any work, where torch.onnx's exporter (onnxscript) or onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(f"writing {output} needs the onnx extra ({error}): {ONNX_EXTRA}") from None


def _save_onnx(
    policy: ExportedPolicy, probe: tuple[torch.Tensor, ...], dynamic_shapes: Any, metadata: dict[str, Any], output: Path
) -> None:
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
    program.save(output)


def _onnx_runner(path: Path) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """A function that runs the ONNX file in onnxruntime on tensors and returns its outputs by name, as tensors."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(observation: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
        values = session.run(list(OUTPUTS), {"observation": observation.numpy(), "goal": goal.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUTS, values, strict=True)}

    return run


def _submodule(weights: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}."
    return {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
