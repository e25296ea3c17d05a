"""Export: a checkpoint becomes a TorchScript policy that plain torch loads and that acts like the module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from her_lightning.cli import main
from her_lightning.module import HERDDPG

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "point2d.yaml")


@pytest.fixture(scope="module", params=[False, True], ids=["raw_inputs", "normalized_inputs"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    save_dir = tmp_path_factory.mktemp("run")
    main(["fit", "--config", CONFIG, "--trainer.max_epochs", "3", "--collector.warmup_episodes", "20",
          "--data.eval_episodes", "10", "--trainer.logger.init_args.save_dir", str(save_dir),
          "--model.normalize_inputs", str(request.param).lower()])
    path = next(save_dir.glob("point2d/version_0/checkpoints/last.ckpt"))
    if request.param:  # the statistics must be real ones, or the test below could not tell them from none
        weights = torch.load(path, weights_only=True)["state_dict"]
        assert weights["obs_normalizer.count"] > 0 and weights["obs_normalizer.std"].ne(1.0).all()
    return path


def test_exported_policy_acts_like_the_module_in_a_fresh_process(checkpoint: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.pt"
    main(["export", str(checkpoint), str(policy_file)])
    observation, goal = torch.rand(8, 2) * 5, 3.5 + torch.rand(8, 2)
    module = HERDDPG.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    expected = module.policy(observation, goal)
    script = (
        "import json, sys, torch\n"
        "policy = torch.jit.load(sys.argv[1])\n"
        "obs, goal = (torch.tensor(x) for x in json.loads(sys.argv[2]))\n"
        "print(json.dumps(policy(obs, goal).tolist()))\n"
    )
    # The fresh process must not import this package: run it from a folder where it cannot be found either.
    result = subprocess.run(
        [sys.executable, "-c", script, str(policy_file), json.dumps([observation.tolist(), goal.tolist()])],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "", "PYTHONNOUSERSITE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert torch.allclose(torch.tensor(json.loads(result.stdout)), expected, atol=1e-6)


def test_the_documented_example_runs_on_an_exported_policy(checkpoint: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.pt"
    main(["export", str(checkpoint), str(policy_file)])
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "use_exported_policy.py"), str(policy_file)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "success rate" in result.stdout


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "policy.pt")])
    assert exit_info.value.code == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
