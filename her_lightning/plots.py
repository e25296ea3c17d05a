"""Pictures of episodes, for a person to look at rather than read."""

from __future__ import annotations

from typing import Any

from her_lightning.rollout import Episodes


def point_trajectories(episodes: Episodes, arena_size: float, threshold: float, max_episodes: int = 24) -> Any:
    """Paths of 2-D point episodes: start, goal (with its success radius), path; green if reached, red if not.

    Returns:
        A matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 5), dpi=100)
    count = min(max_episodes, episodes.length.numel())
    for i in range(count):
        length = int(episodes.length[i])
        path = episodes.achieved_goal[i, : length + 1].detach().cpu()
        goal = episodes.desired_goal[i].detach().cpu()
        color = "tab:green" if bool(episodes.success[i]) else "tab:red"
        ax.plot(path[:, 0], path[:, 1], "-", color=color, alpha=0.7, linewidth=1.2)
        ax.plot(path[-1, 0], path[-1, 1], ".", color=color, markersize=5)
        ax.add_patch(plt.Circle((float(goal[0]), float(goal[1])), threshold, color=color, fill=False, linewidth=1))
        ax.plot(float(goal[0]), float(goal[1]), "x", color="black", markersize=4)
    start = episodes.achieved_goal[0, 0].detach().cpu()
    ax.plot(float(start[0]), float(start[1]), "o", color="tab:blue", markersize=8, label="start")
    reached = int(episodes.success[:count].sum())
    ax.set_title(f"{reached}/{count} reached (green), goals x with radius {threshold}")
    ax.set_xlim(-0.1, arena_size + 0.1)
    ax.set_ylim(-0.1, arena_size + 0.1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
