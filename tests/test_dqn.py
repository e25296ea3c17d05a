"""DQN: the double-Q target against a hand computation, the epsilon schedule and epsilon-greedy exploration, the
greedy policy, a learner given the wrong kind of action space, and a short seeded run that must learn bit flipping."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from her_lightning import EnvConfig, EpisodeCollector, Evaluator, HERDataModule
from her_lightning.cli import main
from her_lightning.dqn import HERDQN
from her_lightning.her import HERBatch

ROOT = Path(__file__).parents[1]


def batch(size: int = 32, dim: int = 4, actions: int = 4, seed: int = 0) -> HERBatch:
    g = torch.Generator().manual_seed(seed)
    return HERBatch(
        observation=torch.randn(size, dim, generator=g),
        goal=torch.randn(size, dim, generator=g),
        action=torch.randint(actions, (size, 1), generator=g).float(),
        reward=-(torch.rand(size, generator=g) < 0.7).float(),
        next_observation=torch.randn(size, dim, generator=g),
        terminal=(torch.rand(size, generator=g) < 0.2).float(),
    )


@pytest.mark.parametrize("double_q", [True, False])
def test_the_target_and_the_step_are_the_hand_computation(double_q: bool) -> None:
    model = HERDQN(4, 4, 1, 4, hidden=(16,), gamma=0.9, tau=1.0, double_q=double_q)
    with torch.no_grad():  # a target network unlike the online one, so that the two targets differ
        for p in model.q_target.parameters():
            p.add_(torch.randn_like(p))
    b = batch()
    online, target_net = model.q_network(b.next_observation, b.goal), model.q_target(b.next_observation, b.goal)
    chosen = (online if double_q else target_net).argmax(-1, keepdim=True)
    target = b.reward + 0.9 * (1 - b.terminal) * target_net.gather(-1, chosen).squeeze(-1)
    q = model.q_network(b.observation, b.goal).gather(-1, b.action.long()).squeeze(-1)
    expected_loss = torch.nn.functional.mse_loss(q, target.detach())
    stats = model.update(b, model.configure_optimizers())
    assert torch.isclose(stats.q_loss, expected_loss)
    assert model.updates == 1
    # tau 1: the target network is now the online one.
    assert all(torch.equal(t, o) for t, o in zip(model.q_target.parameters(), model.q_network.parameters()))


def test_epsilon_falls_linearly_then_stays() -> None:
    model = HERDQN(4, 4, 1, 4, epsilon_start=0.5, epsilon_end=0.1, epsilon_decay_updates=100)
    schedule = []
    for updates in (0, 50, 100, 1000):
        model.updates = updates
        schedule.append(round(model.epsilon(), 6))
    assert schedule == [0.5, 0.3, 0.1, 0.1]
    assert HERDQN(4, 4, 1, 4, epsilon_end=0.2, epsilon_decay_updates=0).epsilon() == pytest.approx(0.2)


def test_exploration_is_epsilon_greedy_and_the_policy_greedy() -> None:
    model = HERDQN(4, 4, 1, 8, hidden=(16,), epsilon_start=0.25, epsilon_decay_updates=1000)
    observation, goal = torch.randn(4000, 4), torch.randn(4000, 4)
    greedy = model.policy(observation, goal)
    assert greedy.shape == (4000, 1)
    assert torch.equal(greedy, model.q_network(observation, goal).argmax(-1, keepdim=True).float())
    explored = model.exploring_policy(torch.Generator().manual_seed(0))(observation, goal)
    assert set(explored.unique().tolist()) <= set(range(8))
    # A random action is the greedy one an eighth of the time: 0.25 * 7/8 of the actions differ.
    assert (explored != greedy).float().mean().item() == pytest.approx(0.25 * 7 / 8, abs=0.02)
    uniform = model.random_policy(torch.Generator().manual_seed(1))(observation, goal)
    assert torch.bincount(uniform.long().squeeze(-1), minlength=8).min() > 4000 / 8 * 0.8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", str(ROOT / "configs" / "bit_flip.yaml"), "--model", "her_lightning.HERDDPG"],
         "env id='bit_flip' has 30 discrete actions, which HERDDPG cannot take: set model.class_path to "
         "her_lightning.HERDQN"),
        (["--config", str(ROOT / "configs" / "point2d_fast.yaml"), "--model", "her_lightning.HERDQN"],
         "env id='point2d' has continuous actions, which HERDQN cannot take: set model.class_path to "
         "her_lightning.HERDDPG or her_lightning.HERSAC"),
    ],
)
def test_a_learner_given_the_other_kind_of_action_space_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *args, "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.max_epochs", "1"])
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"her-lightning: error: {message}"]
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_run_learns_to_flip_bits(tmp_path: Path, seed: int) -> None:
    pl.seed_everything(seed, verbose=False)
    env = EnvConfig(id="bit_flip", num_envs=16, kwargs={"n_bits": 10})
    data = HERDataModule(env=env, batches_per_epoch=40, batch_size=128, eval_episodes=100, seed=seed)
    model = HERDQN(hidden=(256,), epsilon_start=0.2, epsilon_decay_updates=2000, clip_target=True)
    collector = EpisodeCollector(warmup_episodes=64, warmup_policy="random", episodes_per_epoch=16)
    trainer = quiet_trainer(30, [collector, Evaluator()], tmp_path)
    trainer.fit(model, data)
    success = trainer.callback_metrics["eval/success_rate"].item()
    # Random flips reach a 10-bit goal within 10 steps in well under 1% of the episodes.
    assert success >= 0.9, f"eval success rate {success:.2f} after {model.updates} updates"


def test_the_exported_policy_and_the_test_command_play_the_greedy_action(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the onnx extra")
    import numpy as np
    import onnxruntime

    from her_lightning.testing import evaluate_checkpoint

    main(["fit", "--config", str(ROOT / "configs" / "bit_flip.yaml"), "--data.env.kwargs", "{n_bits: 6}",
          "--model.normalize_inputs", "true", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
          "--data.eval_episodes", "10", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    (checkpoint,) = tmp_path.glob("bit_flip/version_0/checkpoints/last.ckpt")
    module = HERDQN.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    observation = torch.randint(2, (64, 6), generator=torch.Generator().manual_seed(0)).float()
    goal = torch.randint(2, (64, 6), generator=torch.Generator().manual_seed(1)).float()
    expected = module.policy(observation, goal)
    for suffix in (".pt2", ".onnx"):
        main(["export", str(checkpoint), str(tmp_path / f"policy{suffix}")])
    pt2 = torch.export.load(tmp_path / "policy.pt2").module()(observation, goal)
    session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    onnx = dict(zip(["action", "action_unit"], session.run(["action", "action_unit"], {
        "observation": observation.numpy(), "goal": goal.numpy()})))
    for outputs in (pt2, {name: torch.from_numpy(np.asarray(value)) for name, value in onnx.items()}):
        assert torch.equal(outputs["action_unit"], expected) and torch.equal(outputs["action"], expected)
    summary = evaluate_checkpoint(checkpoint, episodes=20)
    assert summary["policy"] == "q_network (greedy action)" and 0.0 <= summary["success_rate"] <= 1.0
