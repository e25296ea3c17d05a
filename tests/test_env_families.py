"""Every family of Gymnasium goal envs the adapter should train: built with ``make_env``, then two tiny epochs.

Gymnasium-Robotics (Fetch, Shadow Hand, PointMaze, AntMaze) and panda-gym, at their newest versions.
One case per task or goal convention rather than per registered id: the ``Dense`` twin of a task is the same
env with another reward, so one dense case per family; the maze maps differ in layout and time limit only,
so a few maps each. Each case takes 1-4 s on two cores: every family builds in under 0.25 s and steps in
about 1 ms (Fetch, Shadow Hand, panda-gym), 0.3 ms (AntMaze) or 0.05 ms (PointMaze); AntMaze's 700-step
episodes make it the slowest.

What each family needs, found from its source and its ``compute_reward``:

- Fetch and Shadow Hand: reward 0 at the goal and -1 elsewhere, ``info["is_success"]``, no termination.
- PointMaze and AntMaze: reward 1 at the goal and 0 elsewhere, ``info["success"]``; ``continuing_task=True``
  by default (no termination; the goal moves once reached only with ``reset_target=True``), which the adapter
  refuses, so the cases set ``continuing_task=False``: episodes then end on success.
- panda-gym: reward 0 at the goal and -1 elsewhere, ``info["is_success"]``, and episodes end on success.
- Dense rewards (``-distance`` or ``exp(-distance)``) say nothing about success: the case names the env's
  own criterion (its distance threshold, or the Shadow Hand's position and rotation test).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from her_lightning import HERDDPG, EnvConfig, EpisodeCollector, Evaluator, HERDataModule
from her_lightning.conventions import check_episodes
from her_lightning.envs import make_env
from her_lightning.rollout import Episodes, rollout, uniform_policy

NUM_ENVS = 2
EPOCHS = 2
BATCHES_PER_EPOCH = 4
WARMUP_EPISODES = 4
EPISODES_PER_EPOCH = 2

MAZE = {"continuing_task": False, "terminate_on_success": True}  # one fixed goal per episode, which ends there
PANDA = {"terminate_on_success": True}


def __getattr__(name: str) -> Any:
    """``reached_<sparse id>``: that Shadow Hand task's own success test (position and rotation), for the
    ``success_fn`` of its dense twin, whose reward says nothing about success."""
    if not name.startswith("reached_"):
        raise AttributeError(name)
    twin = _sparse_twin(name.removeprefix("reached_"))
    return lambda achieved, desired: twin.unwrapped._is_success(achieved, desired).astype(bool)


@functools.cache
def _sparse_twin(env_id: str) -> Any:
    import gymnasium
    import gymnasium_robotics

    gymnasium.register_envs(gymnasium_robotics)
    return gymnasium.make(env_id)


ROBOTICS = [
    pytest.param("FetchReach-v4", {}, id="FetchReach-v4"),
    pytest.param("FetchPush-v4", {}, id="FetchPush-v4"),
    pytest.param("FetchPickAndPlace-v4", {}, id="FetchPickAndPlace-v4"),
    pytest.param("FetchSlide-v4", {}, id="FetchSlide-v4"),
    pytest.param("FetchReachDense-v4", {"success_threshold": 0.05}, id="FetchReachDense-v4"),
    pytest.param("HandReach-v3", {}, id="HandReach-v3"),
    pytest.param("HandReachDense-v3", {"success_threshold": 0.01}, id="HandReachDense-v3"),
    pytest.param("HandManipulateBlock-v1", {}, id="HandManipulateBlock-v1"),
    pytest.param("HandManipulateBlockFull-v1", {}, id="HandManipulateBlockFull-v1"),
    pytest.param("HandManipulateBlockRotateZ-v1", {}, id="HandManipulateBlockRotateZ-v1"),
    pytest.param("HandManipulateBlockRotateParallel-v1", {}, id="HandManipulateBlockRotateParallel-v1"),
    pytest.param("HandManipulateBlockRotateXYZ-v1", {}, id="HandManipulateBlockRotateXYZ-v1"),
    pytest.param("HandManipulateEgg-v1", {}, id="HandManipulateEgg-v1"),
    pytest.param("HandManipulateEggRotate-v1", {}, id="HandManipulateEggRotate-v1"),
    pytest.param("HandManipulateBlock_BooleanTouchSensors-v1", {}, id="HandManipulateBlock_BooleanTouchSensors-v1"),
    pytest.param(
        "HandManipulateBlockDense-v1",
        {"success_fn": f"{__name__}:reached_HandManipulateBlock-v1"},
        id="HandManipulateBlockDense-v1",
    ),
    pytest.param("PointMaze_UMaze-v3", MAZE, id="PointMaze_UMaze-v3"),
    pytest.param("PointMaze_Open-v3", MAZE, id="PointMaze_Open-v3"),
    pytest.param("PointMaze_Medium-v3", MAZE, id="PointMaze_Medium-v3"),
    pytest.param("PointMaze_Large_Diverse_G-v3", MAZE, id="PointMaze_Large_Diverse_G-v3"),
    pytest.param("PointMaze_Large_Diverse_GR-v3", MAZE, id="PointMaze_Large_Diverse_GR-v3"),
    pytest.param("PointMaze_UMazeDense-v3", {**MAZE, "success_threshold": 0.45}, id="PointMaze_UMazeDense-v3"),
    pytest.param("AntMaze_UMaze-v5", MAZE, id="AntMaze_UMaze-v5"),
    pytest.param(  # 1,000 steps by default: capped, as a user may, to keep the case short
        "AntMaze_Medium_Diverse_GR-v5", {**MAZE, "max_episode_steps": 300}, id="AntMaze_Medium_Diverse_GR-v5"
    ),
    pytest.param("AntMaze_UMazeDense-v5", {**MAZE, "success_threshold": 0.45}, id="AntMaze_UMazeDense-v5"),
]

PANDA_GYM = [
    pytest.param("panda_gym:PandaReach-v3", PANDA, id="PandaReach-v3"),
    pytest.param("panda_gym:PandaReachJoints-v3", PANDA, id="PandaReachJoints-v3"),
    pytest.param("panda_gym:PandaPush-v3", PANDA, id="PandaPush-v3"),
    pytest.param("panda_gym:PandaSlide-v3", PANDA, id="PandaSlide-v3"),
    pytest.param("panda_gym:PandaPickAndPlace-v3", PANDA, id="PandaPickAndPlace-v3"),
    pytest.param("panda_gym:PandaStack-v3", PANDA, id="PandaStack-v3"),
    pytest.param("panda_gym:PandaFlip-v3", PANDA, id="PandaFlip-v3"),
    pytest.param("panda_gym:PandaReachDense-v3", {**PANDA, "success_threshold": 0.05}, id="PandaReachDense-v3"),
]


def build_and_train(tmp_path: Path, env_id: str, kwargs: dict[str, Any]) -> None:
    """Check one batched step of ``env_id``, then train two tiny epochs on it and check the counters."""
    env = make_env(env_id, num_envs=NUM_ENVS, seed=0, **kwargs)
    obs = env.reset()
    assert obs.observation.shape == (NUM_ENVS, env.obs_dim)
    assert obs.achieved_goal.shape == obs.desired_goal.shape == (NUM_ENVS, env.goal_dim)
    result = env.step(torch.zeros(NUM_ENVS, env.action_dim))
    assert result.reward.shape == result.success.shape == (NUM_ENVS,)
    # A goal that was achieved is reached, and its reward is the best there is.
    assert env.is_success(result.obs.achieved_goal, result.obs.achieved_goal).all()
    at_goal = env.compute_reward(result.obs.achieved_goal, result.obs.achieved_goal)
    assert (at_goal >= env.compute_reward(result.obs.achieved_goal, result.obs.desired_goal)).all()
    env.close()

    pl.seed_everything(0, verbose=False)
    data = HERDataModule(
        env=EnvConfig(id=env_id, num_envs=NUM_ENVS, kwargs=kwargs),
        buffer_size=20_000,
        batch_size=32,
        batches_per_epoch=BATCHES_PER_EPOCH,
        eval_episodes=2,
        seed=0,
    )
    model = HERDDPG(data.obs_dim, data.goal_dim, data.action_dim, hidden=(16, 16))
    collector = EpisodeCollector(
        warmup_episodes=WARMUP_EPISODES, warmup_policy="random", episodes_per_epoch=EPISODES_PER_EPOCH
    )
    trainer = quiet_trainer(EPOCHS, [collector, Evaluator()], tmp_path)
    trainer.fit(model, data)
    assert model.updates == EPOCHS * BATCHES_PER_EPOCH
    assert data.episodes == WARMUP_EPISODES + EPOCHS * EPISODES_PER_EPOCH
    assert 0 < data.env_steps <= data.episodes * data.max_episode_steps
    assert 0.0 <= trainer.callback_metrics["eval/success_rate"].item() <= 1.0


@pytest.mark.parametrize(("env_id", "kwargs"), ROBOTICS)
def test_gymnasium_robotics_env_trains(tmp_path: Path, env_id: str, kwargs: dict[str, Any]) -> None:
    pytest.importorskip("gymnasium_robotics", reason="Gymnasium-Robotics needs the robotics extra")
    build_and_train(tmp_path, env_id, kwargs)


@pytest.mark.parametrize(("env_id", "kwargs"), PANDA_GYM)
def test_panda_gym_env_trains(tmp_path: Path, env_id: str, kwargs: dict[str, Any]) -> None:
    panda_gym = pytest.importorskip("panda_gym", reason="panda-gym is not installed: pip install panda-gym")
    if "Flip" in env_id and not (Path(panda_gym.__file__).parent / "assets" / "colored_cube.png").exists():
        pytest.skip("panda-gym's PyPI release lacks assets/colored_cube.png, which PandaFlip loads")
    build_and_train(tmp_path, env_id, kwargs)


@pytest.mark.parametrize("env_id", ["HandManipulatePen-v1"])
def test_a_batched_reward_that_is_wrong_is_refused(env_id: str) -> None:
    # Gymnasium-Robotics 1.4's Pen reward indexes its batch where it means the z angle
    # (Farama-Foundation/Gymnasium-Robotics#338): batched rewards are wrong, which HER would learn from silently.
    pytest.importorskip("gymnasium_robotics", reason="Gymnasium-Robotics needs the robotics extra")
    with pytest.raises(ValueError, match=r"compute_reward(\(g, g\) takes several values| fails on a batch)"):
        make_env(env_id, num_envs=1, seed=0)


def test_an_env_with_dict_goals_is_refused_with_a_reason() -> None:
    # FrankaKitchen's goals are dicts of per-task vectors, not one vector: HER cannot relabel them.
    pytest.importorskip("gymnasium_robotics", reason="Gymnasium-Robotics needs the robotics extra")
    with pytest.raises(ValueError, match="achieved_goal"):
        make_env("FrankaKitchen-v1", num_envs=1, seed=0)


def newest_goal_env_ids() -> list[str]:
    """Every goal env id Gymnasium-Robotics registers, at its newest version (older ones need mujoco-py)."""
    try:
        import gymnasium
        import gymnasium_robotics
    except ImportError:
        return []
    gymnasium.register_envs(gymnasium_robotics)
    newest: dict[str, tuple[int, str]] = {}
    for env_id, spec in gymnasium.registry.items():
        family = ("Fetch", "Hand", "PointMaze", "AntMaze")
        if str(spec.entry_point).startswith("gymnasium_robotics") and env_id.startswith(family):
            name, version = spec.name, spec.version or 0
            newest[name] = max(newest.get(name, (-1, "")), (version, env_id))
    return sorted(env_id for _, env_id in newest.values())


def options_for(env_id: str) -> dict[str, Any]:
    """What a user sets for each family: one goal per maze episode, and a success criterion for dense rewards."""
    options: dict[str, Any] = {}
    if "Maze" in env_id:
        options = {**MAZE, "max_episode_steps": 50}  # a short cap: this test checks conventions, not learning
    if "Dense" in env_id and env_id.startswith("HandManipulate"):
        options["success_fn"] = f"{__name__}:reached_{env_id.replace('Dense', '')}"
    elif "Dense" in env_id:
        thresholds = {"Fetch": 0.05, "HandReach": 0.01, "PointMaze": 0.45, "AntMaze": 0.45}
        options["success_threshold"] = next(v for prefix, v in thresholds.items() if env_id.startswith(prefix))
    return options


def play_and_check(env_id: str) -> Episodes:
    """One batch of random episodes of ``env_id``, checked against the env's own labels as training checks them."""
    env = make_env(env_id, num_envs=NUM_ENVS, seed=0, **options_for(env_id))
    episodes = rollout(env, uniform_policy(env.action_dim, torch.Generator().manual_seed(0)))
    check_episodes(env, episodes, env_id)
    env.close()
    return episodes


@pytest.mark.parametrize("env_id", newest_goal_env_ids())
def test_every_registered_goal_env_passes_the_checks_or_is_refused_with_the_reason(env_id: str) -> None:
    # The per-family cases above also train; this covers every id with one batch of checked episodes.
    if env_id.startswith("HandManipulatePen") and ("Rotate" not in env_id or "Dense" in env_id):
        # Pen's batched reward is wrong (see the test above) in all of these variants but the sparse rotation-only
        # ones: they are refused at start, or stopped by the first batch's check (PenRotateDense).
        with pytest.raises(ValueError, match="compute_reward"):
            play_and_check(env_id)
        return
    episodes = play_and_check(env_id)
    assert (episodes.length >= 1).all() and episodes.reward.isfinite().all()
