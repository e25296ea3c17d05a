"""Turn a training checkpoint into a standalone TorchScript policy file.

The file needs only ``torch`` to run: ``torch.jit.load(path)(observation, goal)`` returns actions in
``[-1, 1]`` for raw (unnormalized) observations and goals, batched or not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from her_lightning.checkpoint import verify_checkpoint
from her_lightning.networks import Actor


class ExportedPolicy(nn.Module):
    """The deterministic actor, taking one observation and goal ``(obs_dim,), (goal_dim,)`` or a batch of them."""

    def __init__(self, actor: Actor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.actor(observation.float(), goal.float())


def export_policy(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the checkpoint's actor to ``output`` as TorchScript and check that it loads and acts the same.

    Raises:
        CheckpointError: If the checkpoint is missing, truncated or corrupt.
    """
    verify_checkpoint(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    actor = Actor(hparams["obs_dim"], hparams["goal_dim"], hparams["action_dim"], tuple(hparams["hidden"]))
    prefix = "actor."
    actor.load_state_dict({k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    policy = ExportedPolicy(actor).eval()
    scripted = torch.jit.script(policy)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(output))
    probe = (torch.zeros(3, hparams["obs_dim"]), torch.ones(3, hparams["goal_dim"]))
    with torch.no_grad():
        if not torch.allclose(torch.jit.load(str(output))(*probe), policy(*probe)):
            raise RuntimeError(f"the exported policy {output} does not reproduce the checkpoint's actor")
    return output
