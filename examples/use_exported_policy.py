"""Drive the point task with an exported policy, using nothing but torch.

    her-lightning export lightning_logs/point2d/version_0/checkpoints/last.ckpt policy.pt
    python examples/use_exported_policy.py policy.pt

The policy takes the raw observation (the point's position) and the goal, one at a time or batched, and
returns actions in [-1, 1]. The task's dynamics are written out here so that this file stands alone.
"""

import sys

import torch

policy = torch.jit.load(sys.argv[1] if len(sys.argv) > 1 else "policy.pt")

# One step of a single episode: observation (2,), goal (2,) -> action (2,).
print("first action towards (4, 4):", policy(torch.tensor([0.0, 0.0]), torch.tensor([4.0, 4.0])).tolist())

# 100 episodes at once: start at (0, 0), goals uniform in [3.5, 4.5]^2, reached within 0.15, 50 steps at most.
generator = torch.Generator().manual_seed(0)
goal = 3.5 + torch.rand(100, 2, generator=generator)
position = torch.zeros(100, 2)
steps = torch.full((100,), 50)
reached = torch.zeros(100, dtype=torch.bool)
with torch.no_grad():
    for t in range(50):
        action = policy(position, goal).clamp(-1.0, 1.0)
        position = torch.where(reached.unsqueeze(1), position, (position + action).clamp(0.0, 5.0))
        now = ~reached & (torch.linalg.vector_norm(position - goal, dim=1) <= 0.15)
        steps = torch.where(now, t + 1, steps)
        reached |= now
print(f"success rate {reached.float().mean():.2f}, mean steps to the goal {steps[reached].float().mean():.2f}")
