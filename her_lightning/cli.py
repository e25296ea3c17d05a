"""``her-lightning``: train, evaluate and inspect agents from YAML configs (LightningCLI)."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from her_lightning.callbacks import EpisodeCollector
from her_lightning.data import HERDataModule
from her_lightning.module import HERDDPG


class HERLightningCLI(LightningCLI):
    """LightningCLI with the collector always present, the task's sizes linked into the model, and one seed.

    The collector is configured under its own top-level key, ``collector:``.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EpisodeCollector, "collector")
        for key in ("obs_dim", "goal_dim", "action_dim"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.data.seed is None:
            config.data.seed = config.seed_everything

    def instantiate_classes(self) -> None:
        """Turn an invalid option into a one-line error instead of a stack trace."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            print(f"her-lightning: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def main(args: ArgsType = None) -> None:
    """Entry point of the ``her-lightning`` console script."""
    HERLightningCLI(
        HERDDPG,
        HERDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
