"""Turn a training checkpoint into a standalone TorchScript policy file.

The file needs only ``torch`` to run: ``torch.jit.load(path)(observation, goal)`` returns actions in
``[-1, 1]`` for raw (unnormalized) observations and goals, batched or not: the input normalization a
run trained with is part of the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from her_lightning.checkpoint import verify_checkpoint
from her_lightning.module import policy_weights
from her_lightning.networks import Actor
from her_lightning.normalizer import RunningNormalizer


class ExportedPolicy(nn.Module):
    """The deterministic actor behind the input normalization it was trained with.

    Takes one observation and goal ``(obs_dim,), (goal_dim,)`` or a batch of them.
    """

    def __init__(self, actor: Actor, obs_normalizer: nn.Module, goal_normalizer: nn.Module) -> None:
        super().__init__()
        self.actor = actor
        self.obs_normalizer = obs_normalizer
        self.goal_normalizer = goal_normalizer

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.actor(self.obs_normalizer(observation.float()), self.goal_normalizer(goal.float()))


def export_policy(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the checkpoint's actor, with its input normalization, to ``output`` as TorchScript.

    The written file is loaded back and checked to act as the checkpoint's policy does.

    Raises:
        CheckpointError: If the checkpoint is missing, truncated or corrupt.
    """
    verify_checkpoint(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    weights = state["state_dict"]
    actor = Actor(hparams["obs_dim"], hparams["goal_dim"], hparams["action_dim"], tuple(hparams["hidden"]))
    actor.load_state_dict(_submodule(weights, policy_weights(hparams)))
    normalizers: list[nn.Module] = [nn.Identity(), nn.Identity()]
    if hparams.get("normalize_inputs", False):
        for i, (name, dim) in enumerate([("obs_normalizer", hparams["obs_dim"]), ("goal_normalizer", hparams["goal_dim"])]):
            normalizers[i] = RunningNormalizer(dim, hparams["norm_clip"])
            normalizers[i].load_state_dict(_submodule(weights, name))
    policy = ExportedPolicy(actor, *normalizers).eval()
    scripted = torch.jit.script(policy)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(output))
    probe = (torch.randn(3, hparams["obs_dim"]), torch.randn(3, hparams["goal_dim"]))
    with torch.no_grad():
        if not torch.allclose(torch.jit.load(str(output))(*probe), policy(*probe)):
            raise RuntimeError(f"the exported policy {output} does not reproduce the checkpoint's actor")
    return output


def _submodule(weights: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}."
    return {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
