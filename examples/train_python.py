"""Train on the point task from Python, composed as the CLI composes ``configs/point2d_fast.yaml``.

    python examples/train_python.py [EPOCHS]

The learner takes its sizes (``obs_dim``, ``goal_dim``, ``action_dim``, ``reward_range``) from the datamodule.
"""

import sys

import lightning.pytorch as pl

from her_lightning import HERDDPG, EnvConfig, EpisodeCollector, Evaluator, HERDataModule

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
pl.seed_everything(0)
data = HERDataModule(env=EnvConfig(id="point2d", num_envs=4), batch_size=128, batches_per_epoch=40)
model = HERDDPG(hidden=[64, 64], actor_lr=3e-3, critic_lr=3e-3, preactivation_l2=0.1)
collector = EpisodeCollector(warmup_episodes=200, warmup_policy="random", episodes_per_epoch=4)
trainer = pl.Trainer(max_epochs=epochs, callbacks=[collector, Evaluator()], enable_checkpointing=False, logger=False)
trainer.fit(model, data)
print(f"eval/success_rate {float(trainer.callback_metrics['eval/success_rate']):.2f}")
