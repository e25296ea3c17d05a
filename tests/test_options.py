"""Values of options, wherever they come from: each numeric option refused in one line when it is not a finite number
in its range, one rule for seeds, sizes refused before allocating, config files that are not text, and messages
that name what is allowed."""

from __future__ import annotations

import fractions
import inspect
import os
from pathlib import Path

import pytest
import torch
import yaml
from test_faults import fit, fit_command, refused, run_folder

from her_lightning.buffer import EpisodeBuffer
from her_lightning.collector import EpisodeCollector
from her_lightning.data import HERDataModule
from her_lightning.ddpg import HERDDPG
from her_lightning.dqn import HERDQN
from her_lightning.envs import BitFlipEnv, PointNavEnv
from her_lightning.evaluation import Evaluator
from her_lightning.options import check_seed
from her_lightning.sac import HERSAC

NAN, INF = float("nan"), float("inf")

# Every numeric option of the classes a config sets, by its place in a config, with values that one-sided checks
# let through: NaN everywhere, infinity where there is no upper bound, and mistyped values where the type is loose.
NON_FINITE = [
    *[(f"model.{name}", NAN) for name in ("actor_lr", "critic_lr", "gamma", "tau", "norm_clip", "target_policy_noise",
                                         "target_noise_clip", "action_l2", "preactivation_l2", "noise_std",
                                         "random_action_prob")],
    *[(f"model.{name}", INF) for name in ("actor_lr", "critic_lr", "norm_clip", "target_policy_noise",
                                         "target_noise_clip", "action_l2", "preactivation_l2", "noise_std")],
    ("model.policy_delay", NAN),
    ("model.hidden", [64, NAN]),
    *[(f"data.{name}", NAN) for name in ("her_ratio", "displaced_share", "other_goal_share", "buffer_size",
                                        "batch_size", "batches_per_epoch", "eval_episodes", "eval_envs", "seed")],
    ("data.env.num_envs", NAN),
    *[(f"collector.{name}", NAN) for name in ("warmup_episodes", "episodes_per_epoch", "warmup_batch")],
    *[(f"evaluation.{name}", NAN) for name in ("solved_success_rate", "figure_every", "video_every")],
    *[(f"data.env.kwargs.{name}", NAN) for name in ("threshold", "goal_low", "goal_high", "arena_size",
                                                   "max_episode_steps")],
    *[(f"data.env.kwargs.{name}", INF) for name in ("threshold", "goal_high", "arena_size", "max_episode_steps")],
    ("data.env.kwargs.threshold", "small"),
    ("data.env.kwargs.max_episode_steps", 2.5),
    ("data.env.kwargs.max_episode_steps", True),
    ("seed_everything", NAN),
    ("torch_threads", NAN),
]

# The other learners' numeric options, each on the task that learner takes.
LEARNER_NON_FINITE = [
    *[(HERSAC, name, NAN) for name in ("actor_lr", "critic_lr", "temperature_lr", "gamma", "tau", "norm_clip",
                                       "initial_temperature", "target_entropy", "action_l2")],
    *[(HERSAC, name, INF) for name in ("actor_lr", "critic_lr", "temperature_lr", "norm_clip", "initial_temperature",
                                       "target_entropy", "action_l2")],
    *[(HERDQN, name, NAN) for name in ("q_lr", "gamma", "tau", "norm_clip", "epsilon_start", "epsilon_end",
                                       "epsilon_decay_updates", "num_actions")],
    (HERDQN, "q_lr", INF),
    (HERDQN, "epsilon_decay_updates", 2.5),
    (HERDQN, "hidden", [64, NAN]),
    (HERSAC, "hidden", [64, NAN]),
]
LEARNER_TASK = {HERSAC: [], HERDQN: ["--data.env.id", "bit_flip", "--data.env.kwargs", "{n_bits: 5}"]}

# Numeric parameters that no config sets: the task's sizes (linked from the data), and what the data module hands
# the task (its number of copies, the stream's seed, the device). data.seed is set, and is among those above.
NOT_OPTIONS = {"obs_dim", "goal_dim", "action_dim", "reward_range", "num_envs", "seed", "device"}


def nested(key: str, value: object) -> dict:
    """``{"a": {"b": value}}`` for ``a.b``."""
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


def config_file(folder: Path, key: str, value: object) -> str:
    path = folder / "values.yaml"
    path.write_text(yaml.safe_dump(nested(key, value)))
    return str(path)


@pytest.mark.parametrize(("key", "value"), NON_FINITE, ids=[f"{key}={value}" for key, value in NON_FINITE])
def test_a_non_finite_or_mistyped_value_in_a_second_config_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: object
) -> None:
    error = refused(capsys, fit_command(tmp_path, 1, "--config", config_file(tmp_path, key, value)))
    assert key.rpartition(".")[2] in error
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("learner", "name", "value"), LEARNER_NON_FINITE, ids=[f"{c.__name__}.{n}={v}" for c, n, v in LEARNER_NON_FINITE]
)
def test_the_other_learners_refuse_a_non_finite_or_mistyped_value_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], learner: type, name: str, value: object
) -> None:
    learner_options = {"class_path": f"her_lightning.{learner.__name__}", "init_args": {name: value}}
    values = config_file(tmp_path, "model", learner_options)
    error = refused(capsys, fit_command(tmp_path, 1, *LEARNER_TASK[learner], "--config", values))
    assert name in error
    assert not list(tmp_path.rglob("*.ckpt"))


def numeric_parameters(cls: type) -> set[str]:
    """The parameters of ``cls``'s constructor typed as numbers (or sequences of numbers)."""
    return {
        name for name, parameter in inspect.signature(cls).parameters.items()
        if any(kind in str(parameter.annotation) for kind in ("int", "float"))
    }


@pytest.mark.parametrize(
    ("cls", "section"),
    [(HERDDPG, "model"), (HERDataModule, "data"), (EpisodeCollector, "collector"), (Evaluator, "evaluation"),
     (PointNavEnv, "data.env.kwargs"), (HERSAC, HERSAC), (HERDQN, HERDQN)],
)
def test_every_numeric_option_is_among_those_refused(cls: type, section: str | type) -> None:
    covered = {key.rpartition(".")[2] for key, _ in NON_FINITE if key.rpartition(".")[0] == section}
    covered |= {name for learner, name, _ in LEARNER_NON_FINITE if learner is section}
    assert numeric_parameters(cls) - NOT_OPTIONS <= covered


def test_the_classes_refuse_non_finite_values_from_python_too() -> None:
    with pytest.raises(ValueError, match=r"^actor_lr=nan is invalid: must be a finite number greater than 0$"):
        HERDDPG(2, 2, 2, actor_lr=NAN)
    with pytest.raises(ValueError, match=r"^noise_std=inf is invalid: must be a finite number at least 0$"):
        HERDDPG(2, 2, 2, noise_std=INF)
    with pytest.raises(ValueError, match=r"^temperature_lr=nan is invalid: must be a finite number greater than 0$"):
        HERSAC(2, 2, 2, temperature_lr=NAN)
    with pytest.raises(ValueError, match=r"^epsilon_end=2 is invalid: must be within \[0, 1\]$"):
        HERDQN(2, 2, 1, 4, epsilon_end=2)
    with pytest.raises(ValueError, match=r"^n_bits=0 is invalid: must be at least 1$"):
        BitFlipEnv(n_bits=0)
    with pytest.raises(ValueError, match=r"^solved_success_rate=nan is invalid"):
        Evaluator(solved_success_rate=NAN)
    with pytest.raises(ValueError, match=r"^threshold=inf is invalid: must be a finite number greater than 0$"):
        PointNavEnv(threshold=INF)
    with pytest.raises(ValueError, match=r"^max_episode_steps=2.5 is invalid: must be an integer at least 1$"):
        PointNavEnv(max_episode_steps=2.5)


@pytest.mark.parametrize("tau", [0.0, 2.0, -1.0])
def test_the_tau_error_states_one_range(tau: float) -> None:
    with pytest.raises(ValueError, match=rf"^tau={tau} is invalid: must be within \(0, 1\]"):
        HERDDPG(2, 2, 2, tau=tau)


# 5. One rule for every seed: an unsigned 32-bit integer, as numpy and Lightning's seed_everything take.
@pytest.mark.parametrize(
    ("option", "value"),
    [("seed_everything", -1), ("seed_everything", 2**64 + 1), ("seed_everything", 2**32), ("data.seed", -1)],
)
def test_a_seed_outside_numpys_range_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: int
) -> None:
    error = refused(capsys, fit_command(tmp_path, 1, f"--{option}", str(value)))
    assert f"{option.rpartition('.')[2]}={value} is invalid: must be within [0, 4294967295]" in error


def test_the_seed_rule_takes_both_ends() -> None:
    for seed in (0, 2**32 - 1):
        check_seed("seed", seed)
    with pytest.raises(ValueError, match=r"^seed=1.5 is invalid: must be an integer within \[0, 4294967295\]"):
        check_seed("seed", 1.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a one-epoch run."""
    save_dir = tmp_path_factory.mktemp("trained")
    fit(save_dir, 1)
    return run_folder(save_dir) / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_test_refuses_a_seed_outside_numpys_range(
    checkpoint: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    error = refused(capsys, ["test", str(checkpoint), "--seed", str(seed), "--episodes", "1"])
    assert f"seed={seed} is invalid: must be within [0, 4294967295]" in error


# 9. Sizes no machine holds are refused before anything is allocated, naming the bytes.
def test_a_buffer_larger_than_memory_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refused(capsys, fit_command(tmp_path, 1, "--data.buffer_size", str(10**13)))
    assert f"buffer_size={10**13} is invalid: the episode buffer would take" in error
    assert "memory has" in error and "available" in error
    with pytest.raises(ValueError, match=rf"^buffer_size={10**13} is invalid: the episode buffer would take"):
        EpisodeBuffer(10**13, 2, 2, 2, 50)


def test_test_refuses_more_episodes_than_memory_holds(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = refused(capsys, ["test", str(checkpoint), "--episodes", str(10**13), "--num_envs", str(10**13)])
    assert f"episodes={10**13} is invalid: the episodes played would take" in error and "available" in error
    assert not checkpoint.with_name("last.ckpt.test.json").exists()


# 10. A config file that is not text.
def test_a_config_file_that_is_not_utf8_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("model:\n  hidden: [64, 64]  # Größe\n".encode("latin-1"))
    error = refused(capsys, fit_command(tmp_path, 1, "--config", str(config)))
    assert f"config file {config} is not UTF-8 text" in error


# 12. Messages that name what is allowed.
@pytest.mark.parametrize("command", [[], ["bogus"], ["tset", "x.ckpt"]])
def test_a_missing_or_unknown_subcommand_names_all_three(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert "choose from 'fit', 'test', 'export'" in refused(capsys, command)


class Payload:
    """Pickles as a call of a harmless global, as a malicious file would of a harmful one."""

    def __init__(self, function: object) -> None:
        self.function = function

    def __reduce__(self) -> tuple:
        return (self.function, ())


@pytest.mark.parametrize(
    ("function", "name"), [(os.getcwd, "posix.getcwd"), (fractions.Fraction, "fractions.Fraction")]
)
def test_a_pickle_payload_names_the_refused_global_and_no_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], function: object, name: str
) -> None:
    payload = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload(function)}, payload)
    error = refused(capsys, ["test", str(payload)])
    assert name in error and "weights_only" not in error and "Re-running" not in error
