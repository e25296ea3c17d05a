"""Export: a checkpoint becomes a .pt2 or .onnx policy that acts like the module, in fresh processes without this
package (and, for ONNX, without torch), that checks its inputs and carries the task's metadata."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from her_lightning.cli import main
from her_lightning.data import recorded_task
from her_lightning.learner import learner_class

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "point2d.yaml")
EXAMPLES = {".pt2": ROOT / "examples" / "run_pt2_policy.py", ".onnx": ROOT / "examples" / "run_onnx_policy.py"}

# Checkpoints to export: the env id, its action bounds and the extra training options.
VARIANTS = {
    "raw_inputs": ("point2d", 1.0, []),
    "normalized_inputs": ("point2d", 1.0, ["--model.normalize_inputs", "true"]),
    "sac": ("point2d", 1.0, ["--model", "her_lightning.HERSAC", "--model.normalize_inputs", "true"]),
    # A Gymnasium env whose actions are in [-2, 2]: the exported action is twice the actor's.
    "env_bounds": ("goal_envs:ToyReach-v0", 2.0, ["--data.env.id", "goal_envs:ToyReach-v0",
                                                   "--model.normalize_inputs", "true"]),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    save_dir = tmp_path_factory.mktemp("run")
    main(["fit", "--config", CONFIG, "--trainer.max_epochs", "3", "--collector.warmup_episodes", "20",
          "--data.eval_episodes", "10", "--trainer.logger.init_args.save_dir", str(save_dir),
          *VARIANTS[request.param][2]])
    path = next(save_dir.glob("point2d/version_0/checkpoints/last.ckpt"))
    if "--model.normalize_inputs" in VARIANTS[request.param][2]:  # real statistics, or no test could tell them apart
        weights = torch.load(path, weights_only=True)["state_dict"]
        assert weights["obs_normalizer.count"] > 0 and weights["obs_normalizer.std"].ne(1.0).all()
    return path


@pytest.fixture(scope="module")
def policy_files(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_each(checkpoint, tmp_path_factory.mktemp("policy"))


def export_each(checkpoint: Path, folder: Path) -> dict[str, Path]:
    """``checkpoint`` exported once in each format into ``folder``, by the command line."""
    for suffix in EXAMPLES:
        main(["export", str(checkpoint), str(folder / f"policy{suffix}")])
    return {suffix: folder / f"policy{suffix}" for suffix in EXAMPLES}


def variant_of(checkpoint: Path) -> tuple[str, float]:
    """The env id and action bound of the variant that wrote ``checkpoint``, read from its own settings."""
    env_id = recorded_task(torch.load(checkpoint, weights_only=True)).env["id"]
    return next((env, bound) for env, bound, _ in VARIANTS.values() if env == env_id)


def expected_outputs(checkpoint: Path, observation: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the module's evaluated policy does: actions in [-1, 1], and the same actions in the env's bounds."""
    state = torch.load(checkpoint, weights_only=True)
    module = learner_class(state).load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    unit = module.policy(observation, goal)
    return {"action": unit * variant_of(checkpoint)[1], "action_unit": unit}


def run_without(blocked: list[str], script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh Python process in which importing any of ``blocked`` fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def inputs(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of raw observations and goals of the checkpoint's task (both tasks are 2-D)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 2, generator=generator) * 5, 3.5 + torch.rand(8, 2, generator=generator)


def check_metadata(metadata: dict[str, Any], checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    env_id, bound = variant_of(checkpoint)
    assert metadata["env_id"] == env_id
    assert (metadata["obs_dim"], metadata["goal_dim"], metadata["action_dim"]) == (2, 2, 2)
    assert metadata["action_low"] == [-bound] * 2 and metadata["action_high"] == [bound] * 2
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    assert metadata["config"]["model"] == json.loads(json.dumps(hparams))
    assert metadata["config"]["data"]["env"]["id"] == env_id and metadata["config"]["data"]["batch_size"] == 256
    assert "note" not in metadata


def test_pt2_policy_acts_like_the_module_in_a_fresh_process(
    checkpoint: Path, policy_files: dict[str, Path], tmp_path: Path
) -> None:
    observation, goal = inputs(checkpoint)
    script = (
        "import json, torch\n"
        "extra = {'metadata.json': ''}\n"
        "policy = torch.export.load(sys.argv[1], extra_files=extra).module()\n"
        "obs, goal = (torch.tensor(x) for x in json.loads(sys.argv[2]))\n"
        "outputs = policy(obs, goal)\n"
        "print(json.dumps({'outputs': {k: v.numpy().tolist() for k, v in outputs.items()},\n"  # .numpy(): no grad
        "                  'metadata': json.loads(extra['metadata.json'])}))\n"
    )
    result = run_without(["her_lightning"], script, str(policy_files[".pt2"]),
                         json.dumps([observation.tolist(), goal.tolist()]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    produced = json.loads(result.stdout)
    for name, expected in expected_outputs(checkpoint, observation, goal).items():
        assert torch.allclose(torch.tensor(produced["outputs"][name]), expected, atol=1e-6), name
    check_metadata(produced["metadata"], checkpoint)


def test_onnx_policy_acts_like_the_module_in_a_fresh_process_without_torch(
    checkpoint: Path, policy_files: dict[str, Path], tmp_path: Path
) -> None:
    observation, goal = inputs(checkpoint)
    script = (
        "import json, numpy as np, onnxruntime\n"
        "session = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "obs, goal = (np.array(x, np.float32) for x in json.loads(sys.argv[2]))\n"
        "names = [output.name for output in session.get_outputs()]\n"
        "values = session.run(names, {'observation': obs, 'goal': goal})\n"
        "print(json.dumps({'outputs': {n: v.tolist() for n, v in zip(names, values)},\n"
        "                  'metadata': json.loads(session.get_modelmeta().custom_metadata_map['metadata.json'])}))\n"
    )
    result = run_without(["her_lightning", "torch"], script, str(policy_files[".onnx"]),
                         json.dumps([observation.tolist(), goal.tolist()]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    produced = json.loads(result.stdout)
    expected = expected_outputs(checkpoint, observation, goal)
    assert produced["outputs"].keys() == expected.keys()
    for name in expected:
        assert torch.allclose(torch.tensor(produced["outputs"][name]), expected[name], atol=1e-5), name
    check_metadata(produced["metadata"], checkpoint)


@pytest.mark.parametrize("suffix", list(EXAMPLES))
def test_the_examples_run_without_her_lightning(
    checkpoint: Path, policy_files: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    blocked = ["her_lightning"] + (["torch"] if suffix == ".onnx" else [])
    script = "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    result = run_without(blocked, script, str(EXAMPLES[suffix]), str(policy_files[suffix]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    env_id, bound = variant_of(checkpoint)
    assert f"env {env_id}: observation (2,), goal (2,) -> action (2,) in [[{-bound}, {-bound}]" in result.stdout
    assert ("success rate" in result.stdout) == (env_id == "point2d")


def test_the_pt2_policy_refuses_wrong_sizes_and_non_finite_inputs(
    checkpoint: Path, policy_files: dict[str, Path]
) -> None:
    policy = torch.export.load(policy_files[".pt2"]).module()
    assert policy(torch.zeros(0, 2), torch.zeros(0, 2))["action"].shape == (0, 2)
    assert policy(torch.zeros(1, 2), torch.zeros(1, 2))["action"].shape == (1, 2)
    # Once silently concatenated into 4 inputs (3 + 1), or, with normalization, a length-1 row broadcast.
    for observation, goal in [(torch.zeros(4, 3), torch.zeros(4, 1)), (torch.zeros(4, 1), torch.zeros(4, 2))]:
        with pytest.raises(RuntimeError, match=r"Expected input at \*args\[0\].shape\[1\] to be equal to 2"):
            policy(observation, goal)
    with pytest.raises(RuntimeError, match=r"Expected input at \*args\[1\].shape\[1\] to be equal to 2"):
        policy(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(RuntimeError, match="Tensor dtype mismatch! Expected: Float, Got: double"):
        policy(torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 2))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for observation, goal in [(torch.tensor([[bad, 0.0]]), torch.zeros(1, 2)),
                                  (torch.zeros(1, 2), torch.tensor([[0.0, bad]]))]:
            with pytest.raises(RuntimeError, match="observation and goal must be finite"):
                policy(observation, goal)


def test_the_onnx_policy_refuses_wrong_sizes_and_its_example_loader_non_finite_inputs(
    checkpoint: Path, policy_files: dict[str, Path]
) -> None:
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(policy_files[".onnx"]), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", 2], ["batch", 2]]
    for observation, goal in [(np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32)),
                              (np.zeros((4, 1), np.float32), np.zeros((4, 2), np.float32))]:
        with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="Expected: 2"):
            session.run(None, {"observation": observation, "goal": goal})
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="data type"):
        session.run(None, {"observation": np.zeros((4, 2)), "goal": np.zeros((4, 2), np.float32)})
    spec = importlib.util.spec_from_file_location("run_onnx_policy", EXAMPLES[".onnx"])
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    act, _ = example.load_policy(str(policy_files[".onnx"]))
    assert act(np.zeros((1, 2)), np.zeros((1, 2))).shape == (1, 2)  # float64 inputs are converted
    with pytest.raises(ValueError, match="must be finite"):
        act(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="must be finite"):
        act(np.zeros((1, 2)), np.array([[0.0, np.inf]]))


def test_an_unknown_suffix_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "last.ckpt"), str(tmp_path / "policy.pt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'.pt'" in err and ".pt2 (torch.export)" in err and ".onnx (ONNX)" in err


def test_onnx_without_the_extra_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "last.ckpt"), str(tmp_path / "policy.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'her_lightning[onnx]'" in err


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "policy.pt2")])
    assert exit_info.value.code == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
