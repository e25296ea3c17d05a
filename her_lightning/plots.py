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
    from matplotlib.collections import EllipseCollection, LineCollection

    count = min(max_episodes, episodes.length.numel())
    reached = episodes.success[:count].cpu()
    colors = ["tab:green" if ok else "tab:red" for ok in reached.tolist()]
    paths = [episodes.achieved_goal[i, : int(episodes.length[i]) + 1].detach().cpu().numpy() for i in range(count)]
    goals = episodes.desired_goal[:count].detach().cpu().numpy()
    # Collections draw all episodes in one artist each: a figure per evaluation stays cheap.
    figure, ax = plt.subplots(figsize=(4.5, 4.5), dpi=90)
    ax.add_collection(LineCollection(paths, colors=colors, linewidths=1.2, alpha=0.7))
    ax.add_collection(EllipseCollection(2 * threshold, 2 * threshold, 0, units="xy", offsets=goals,
                                        offset_transform=ax.transData, facecolors="none", edgecolors=colors))
    ax.scatter(goals[:, 0], goals[:, 1], marker="x", color="black", s=12, linewidths=1)
    start = episodes.achieved_goal[0, 0].detach().cpu()
    ax.scatter([float(start[0])], [float(start[1])], color="tab:blue", s=50, zorder=3)
    ax.set_title(f"{int(reached.sum())}/{count} reached (green); goals x, radius {threshold}", fontsize=10)
    ax.set_xlim(-0.1, arena_size + 0.1)
    ax.set_ylim(-0.1, arena_size + 0.1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
