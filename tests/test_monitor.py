"""Every scalar the README documents reaches every logger of a run, not only the first."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_faults import CONFIG, TINY

from her_lightning.cli import main

README = Path(__file__).parents[1] / "README.md"


def documented_scalars() -> set[str]:
    """The keys of the README's table of logged values whose kind is ``scalar``."""
    keys = set()
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and cells[2] == "scalar":
            keys |= set(re.findall(r"`([a-z_]+/[a-z_]+)`", cells[1]))
    return keys


def test_every_documented_scalar_reaches_tensorboard_csv_and_mlflow_alike(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store: MLflow keeps its file store for old runs only
    loggers = {"trainer": {"logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(tmp_path), "name": "run", "version": 0, "default_hp_metric": False}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(tmp_path), "name": "csv", "version": 0}},
        {"class_path": "lightning.pytorch.loggers.MLFlowLogger",
         "init_args": {"experiment_name": "her", "tracking_uri": store}},
    ]}}
    (tmp_path / "loggers.yaml").write_text(yaml.safe_dump(loggers))
    main(["fit", "--config", CONFIG, "--config", str(tmp_path / "loggers.yaml"), *TINY, "--trainer.max_epochs", "2"])

    expected = documented_scalars()
    assert {"eval/success_rate", "loss/critic", "train/episode_return", "buffer/transitions"} <= expected
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"scalars": 0}).Reload()
    assert expected <= set(events.Tags()["scalars"])
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as file:
        assert expected <= set(csv.DictReader(file).fieldnames)
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("her").experiment_id])
    assert expected <= set(run.data.metrics)
