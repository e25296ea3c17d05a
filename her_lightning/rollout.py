"""Run a batch of whole episodes with a policy and hand them back as padded tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from her_lightning.envs.base import GoalEnv

Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Maps ``(observation (N, obs_dim), desired_goal (N, goal_dim))`` to actions ``(N, action_dim)`` in ``[-1, 1]``."""


class Episodes(NamedTuple):
    """A batch of ``N`` finished episodes, padded to the time limit ``T``.

    Episode ``i`` has ``length[i]`` transitions: states ``0..length[i]`` and
    actions ``0..length[i]-1`` are valid; the rest is padding.
    """

    observation: torch.Tensor  # (N, T + 1, obs_dim)
    achieved_goal: torch.Tensor  # (N, T + 1, goal_dim)
    desired_goal: torch.Tensor  # (N, goal_dim)
    action: torch.Tensor  # (N, T, action_dim)
    reward: torch.Tensor  # (N, T), zero past the end
    length: torch.Tensor  # (N,) long, in [1, T]
    terminated: torch.Tensor  # (N,) bool: ended by reaching the goal
    success: torch.Tensor  # (N,) bool: the final state satisfies the goal

    @property
    def episode_return(self) -> torch.Tensor:  # (N,)
        return self.reward.sum(dim=1)


@torch.no_grad()
def rollout(
    env: GoalEnv,
    policy: Policy,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    random_action_prob: float = 0.0,
) -> Episodes:
    """Play one episode in each of the env's ``num_envs`` slots, all at once.

    Args:
        env: The batch of episodes to run; it is reset first.
        policy: The acting policy.
        noise_std: Standard deviation of the Gaussian exploration noise added to
            the policy's action (the sum is clipped to ``[-1, 1]``).
        generator: The exploration stream; required when exploring.
        random_action_prob: Probability that an episode's action at a step is
            replaced by a uniformly random one (HER's ``random_eps``).

    Returns:
        The finished episodes. Slots whose episode has ended keep being stepped
        until every episode has ended; past its end, an episode's actions and
        rewards are zeroed and its states are not to be read.
    """
    if (noise_std > 0 or random_action_prob > 0) and generator is None:
        raise ValueError("rollout with exploration (noise_std or random_action_prob > 0) needs a generator")
    n, steps, device = env.num_envs, env.max_episode_steps, env.device
    obs = env.reset()
    observation = torch.zeros(n, steps + 1, env.obs_dim, device=device)
    achieved_goal = torch.zeros(n, steps + 1, env.goal_dim, device=device)
    action = torch.zeros(n, steps, env.action_dim, device=device)
    reward = torch.zeros(n, steps, device=device)
    success = torch.zeros(n, steps, dtype=torch.bool, device=device)
    length = torch.full((n,), steps, dtype=torch.long, device=device)
    terminated = torch.zeros(n, dtype=torch.bool, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    observation[:, 0], achieved_goal[:, 0] = obs.observation, obs.achieved_goal
    desired_goal = obs.desired_goal

    for t in range(steps):
        act = policy(obs.observation, desired_goal)
        if noise_std > 0:
            noise = torch.randn(act.shape, generator=generator, device=device)
            act = (act + noise_std * noise).clamp_(-1.0, 1.0)
        if random_action_prob > 0:
            replace = torch.rand(n, 1, generator=generator, device=device) < random_action_prob
            uniform = torch.rand(act.shape, generator=generator, device=device) * 2.0 - 1.0
            act = torch.where(replace, uniform, act)
        result = env.step(act)
        obs = result.obs
        # Every slot is recorded; what a slot records after its episode ended is cut off below.
        observation[:, t + 1], achieved_goal[:, t + 1] = obs.observation, obs.achieved_goal
        action[:, t], reward[:, t], success[:, t] = act, result.reward, result.success
        done = alive & (result.terminated | result.truncated)
        terminated |= done & result.terminated
        length = torch.where(done, t + 1, length)
        alive &= ~done
        if not alive.any():
            break
    valid = torch.arange(steps, device=device) < length.unsqueeze(1)  # (N, T)
    reward = reward * valid
    action = action * valid.unsqueeze(-1)
    final_success = success.gather(1, (length - 1).unsqueeze(1)).squeeze(1)
    return Episodes(observation, achieved_goal, desired_goal, action, reward, length, terminated, final_success)
