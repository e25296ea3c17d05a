"""Goal-conditioned DDPG with Hindsight Experience Replay on PyTorch Lightning."""

from her_lightning.buffer import EpisodeBuffer
from her_lightning.collector import EpisodeCollector, WarmupPolicy
from her_lightning.data import EnvConfig, HERDataModule, HERDataset
from her_lightning.envs import GoalEnv, GymnasiumGoalEnv, PointNavEnv, make_env
from her_lightning.evaluation import Evaluator
from her_lightning.her import GoalStrategy, HERBatch, HERSampler
from her_lightning.module import HERDDPG

__all__ = [
    "EnvConfig",
    "EpisodeBuffer",
    "EpisodeCollector",
    "Evaluator",
    "GoalEnv",
    "GoalStrategy",
    "GymnasiumGoalEnv",
    "HERBatch",
    "HERDDPG",
    "HERDataModule",
    "HERDataset",
    "HERSampler",
    "PointNavEnv",
    "WarmupPolicy",
    "make_env",
]
