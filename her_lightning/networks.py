"""Goal-conditioned actor and critic networks and the Polyak update of their targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    """``in -> hidden[0] -> ReLU -> ... -> hidden[-1] -> ReLU -> out``, with ``layer_norm`` a ``LayerNorm`` before
    each ``ReLU``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), *([nn.LayerNorm(width)] if layer_norm else []), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy ``pi(s, g)`` with actions in ``[-1, 1]``."""

    def __init__(self, obs_dim: int, goal_dim: int, action_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, hidden, action_dim)

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.preactivation(observation, goal))

    def preactivation(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The action before the ``tanh``: where it is large, the action saturates and its gradient vanishes."""
        return self.net(torch.cat([observation, goal], dim=-1))


class Critic(nn.Module):
    """Action value ``Q(s, g, a)``, one value per row; ``layer_norm`` normalizes each hidden layer's features."""

    def __init__(
        self,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (128, 128),
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim + goal_dim + action_dim, hidden, 1, layer_norm)

    def forward(self, observation: torch.Tensor, goal: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([observation, goal, action], dim=-1)).squeeze(-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Move every target parameter a fraction ``tau`` of the way to its source: ``t <- t + tau * (s - t)``."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
