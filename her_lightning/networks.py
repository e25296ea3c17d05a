"""Goal-conditioned networks: DDPG's actor and critic, SAC's stochastic actor and temperature, DQN's Q network and
its greedy policy; and the Polyak update of targets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


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


class GaussianActor(nn.Module):
    """Stochastic policy ``tanh(N(mean(s, g), std(s, g)))`` with actions in ``[-1, 1]`` (SAC's squashed Gaussian).

    ``forward`` is the deterministic policy, ``tanh(mean)``: what evaluation plays and export writes. The
    log standard deviation is bounded smoothly to ``LOG_STD_RANGE``, where the Gaussian neither collapses to a
    point nor covers far more than the ``tanh`` can tell apart.
    """

    LOG_STD_RANGE = (-5.0, 2.0)

    def __init__(self, obs_dim: int, goal_dim: int, action_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, hidden, 2 * action_dim)

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        mean, _ = self.mean_log_std(observation, goal)
        return torch.tanh(mean)

    def mean_log_std(self, observation: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian's mean and log standard deviation before the ``tanh``, ``(N, action_dim)`` each."""
        mean, raw = self.net(torch.cat([observation, goal], dim=-1)).chunk(2, dim=-1)
        low, high = self.LOG_STD_RANGE
        return mean, low + 0.5 * (high - low) * (torch.tanh(raw) + 1.0)

    def sample(
        self, observation: torch.Tensor, goal: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions drawn from the policy (reparameterized: gradients flow through them) and their log densities.

        Returns:
            Actions ``(N, action_dim)`` in ``(-1, 1)`` and ``log pi(a | s, g)`` ``(N,)``, the ``tanh``'s change of
            volume included (``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, exact where ``tanh`` rounds to 1).
        """
        mean, log_std = self.mean_log_std(observation, goal)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        unsquashed = mean + log_std.exp() * noise
        gaussian = (-0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)).sum(dim=-1)
        squash = (2.0 * (math.log(2.0) - unsquashed - F.softplus(-2.0 * unsquashed))).sum(dim=-1)
        return torch.tanh(unsquashed), gaussian - squash


class Temperature(nn.Module):
    """SAC's entropy temperature ``alpha``, learned as its logarithm (positive, and scale-free steps)."""

    def __init__(self, initial: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


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


class QNetwork(nn.Module):
    """Action values ``Q(s, g, .)`` of every discrete action, ``(N, num_actions)``."""

    def __init__(self, obs_dim: int, goal_dim: int, num_actions: int, hidden: Sequence[int] = (256,)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, hidden, num_actions)

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([observation, goal], dim=-1))


class GreedyPolicy(nn.Module):
    """The index of the action of highest value, as a ``(N, 1)`` float (how actions travel): DQN's policy."""

    def __init__(self, q_network: QNetwork) -> None:
        super().__init__()
        self.q_network = q_network

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.q_network(observation, goal).argmax(dim=-1, keepdim=True).to(observation.dtype)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Move every target parameter a fraction ``tau`` of the way to its source: ``t <- t + tau * (s - t)``."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
