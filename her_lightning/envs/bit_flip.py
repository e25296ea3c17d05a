"""The bit-flipping task of the HER paper (Andrychowicz et al., 2017, "Hindsight Experience Replay"), batched."""

from __future__ import annotations

from typing import Any

import torch

from her_lightning.envs.base import GoalObs, StepResult
from her_lightning.options import check_number


class BitFlipEnv:
    """A batch of bit-flipping episodes, stepped with one tensor operation per step.

    Andrychowicz et al. (2017) introduced this task to show that HER learns where a sparse reward alone does not.
    The state is ``n_bits`` bits and the goal another ``n_bits`` bits, both drawn uniformly at random (each bit 0
    or 1 independently) at reset. An action is the index of one bit, which it flips: ``action_dim`` is 1 and the
    action a float holding an integer in ``[0, n_bits)`` (what a discrete policy over ``num_actions`` actions
    hands out). Each step earns ``-1``, or ``0`` when every bit then equals the goal's; ``n_bits`` steps truncate
    the episode, enough to flip every differing bit once.

    Reaching the goal terminates the episode (``terminate_on_success``): every action flips a bit, so the agent
    cannot stay on the goal, and a goal left at the next step would make success depend on when the episode is cut.
    A start that already equals the goal (probability ``2 ** -n_bits``) is not reported as a success until a step
    reaches the goal: the agent has to flip a bit and flip it back.

    Args:
        num_envs: Episodes stepped at once.
        seed: Seed of the state and goal stream.
        device: Where the state lives.
        n_bits: Bits of the state and of the goal; also the number of actions and the time limit.

    Raises:
        ValueError: If ``num_envs`` or ``n_bits`` is not an integer of at least 1.
    """

    action_dim = 1
    terminate_on_success = True
    reward_range = (-1.0, 0.0)

    def __init__(
        self, num_envs: int = 1, seed: int = 0, device: torch.device | str = "cpu", n_bits: int = 10
    ) -> None:
        for name, value in [("num_envs", num_envs), ("n_bits", n_bits)]:
            check_number(name, value, 1, integer=True)
        self.num_envs = num_envs
        self.n_bits = n_bits
        self.obs_dim = n_bits
        self.goal_dim = n_bits
        self.num_actions = n_bits  # discrete actions: the index of the bit to flip
        self.action_low = (0.0,)
        self.action_high = (float(n_bits - 1),)
        self.max_episode_steps = n_bits
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.bits = torch.zeros(num_envs, n_bits, device=self.device)
        self.goal = torch.zeros(num_envs, n_bits, device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def reset(self) -> GoalObs:
        self.bits = self._random_bits()
        self.goal = self._random_bits()
        self.elapsed.zero_()
        return self._obs()

    def step(self, action: torch.Tensor) -> StepResult:
        index = self._bit_index(action)
        self.bits = self.bits.scatter(1, index, 1.0 - self.bits.gather(1, index))
        self.elapsed += 1
        success = self.is_success(self.bits, self.goal)
        truncated = (self.elapsed >= self.max_episode_steps) & ~success
        return StepResult(self._obs(), success.to(self.bits.dtype) - 1.0, success, truncated, success)

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        return self.is_success(achieved_goal, desired_goal).to(achieved_goal.dtype) - 1.0

    def is_success(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        # Bits are 0 or 1: half the gap tells equal from different however the floats were stored.
        return (achieved_goal - desired_goal).abs().amax(dim=-1) < 0.5

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def _random_bits(self) -> torch.Tensor:
        shape = (self.num_envs, self.n_bits)
        dtype = torch.get_default_dtype()
        return torch.randint(2, shape, generator=self.generator, device=self.device, dtype=dtype)

    def _bit_index(self, action: torch.Tensor) -> torch.Tensor:
        """``action`` ``(num_envs, 1)`` as long bit indices; a wrong shape or a value that is no index is refused."""
        if tuple(action.shape) != (self.num_envs, 1):
            raise ValueError(
                f"action of shape {tuple(action.shape)} is invalid: must be (num_envs, 1) = ({self.num_envs}, 1)"
            )
        index = action.long()
        # A fraction, NaN or infinity is changed by the cast to long, so it differs from its cast.
        bad = (index != action) | (index < 0) | (index >= self.n_bits)
        if bad.any():
            value = action[bad][0].item()
            raise ValueError(
                f"action={value} is invalid: must be an integer from 0 to {self.n_bits - 1} (the bit to flip)"
            )
        return index.to(self.device)

    def _obs(self) -> GoalObs:
        # Bits and goal are replaced, never written in place, so handing them out without copies is safe.
        return GoalObs(self.bits, self.bits, self.goal)
