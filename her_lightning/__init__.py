"""Goal-conditioned agents (DDPG, SAC, DQN) with Hindsight Experience Replay on PyTorch Lightning."""

from her_lightning.buffer import EpisodeBuffer
from her_lightning.collector import EpisodeCollector, WarmupPolicy
from her_lightning.data import EnvConfig, HERDataModule, HERDataset
from her_lightning.ddpg import HERDDPG
from her_lightning.dqn import HERDQN
from her_lightning.envs import BitFlipEnv, GoalEnv, GymnasiumGoalEnv, PointNavEnv, make_env
from her_lightning.evaluation import Evaluator
from her_lightning.her import GoalStrategy, HERBatch, HERSampler
from her_lightning.learner import HERLearner
from her_lightning.sac import HERSAC

__all__ = [
    "BitFlipEnv",
    "EnvConfig",
    "EpisodeBuffer",
    "EpisodeCollector",
    "Evaluator",
    "GoalEnv",
    "GoalStrategy",
    "GymnasiumGoalEnv",
    "HERBatch",
    "HERDDPG",
    "HERDQN",
    "HERDataModule",
    "HERDataset",
    "HERLearner",
    "HERSAC",
    "HERSampler",
    "PointNavEnv",
    "WarmupPolicy",
    "make_env",
]
