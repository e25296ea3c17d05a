"""The training health checks: non-finite losses and weights stop a run, a diverging Q is warned about once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from her_lightning.health import TrainingDiverged, ValueRangeWatch, stop_if_not_finite

RATES = {"critic": 1e-3, "actor": 2e-3}


def networks(bad: str | None = None) -> dict[str, list[nn.Module]]:
    nets = {"critic": [nn.Linear(2, 1)], "actor": [nn.Linear(2, 2)]}
    if bad is not None:
        with torch.no_grad():
            nets[bad][0].weight[0, 0] = float("inf")
    return nets


def test_finite_training_passes_and_one_infinite_weight_does_not() -> None:
    nets = networks()
    stop_if_not_finite({"critic": 1.5, "actor": -3.0}, nets, RATES, (21, 40))  # raises nothing
    with torch.no_grad():
        nets["critic"][0].bias[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="critic weights are NaN or infinite after update 40"):
        stop_if_not_finite({"critic": 1.5, "actor": -3.0}, nets, RATES, (21, 40))


@pytest.mark.parametrize(
    ("losses", "bad", "message"),
    [
        ({"critic": float("nan"), "actor": float("nan")}, None,
         "critic loss is nan at update 40 (it left the finite numbers within updates 21-40); lower model.critic_lr "
         "(now 0.001)"),
        ({"critic": 1.0, "actor": float("inf")}, None, "actor loss is inf at update 40"),
        ({"critic": 1.0, "actor": 1.0}, "actor", "actor weights are NaN or infinite after update 40 (since one of "
                                                 "updates 21-40); lower model.actor_lr (now 0.002)"),
    ],
)
def test_the_first_non_finite_value_stops_the_run_naming_what_to_lower(
    losses: dict[str, float], bad: str | None, message: str
) -> None:
    with pytest.raises(TrainingDiverged) as error:
        stop_if_not_finite(losses, networks(bad), RATES, (21, 40))
    assert str(error.value).startswith(message)


def test_q_far_outside_the_attainable_returns_is_warned_about_once() -> None:
    watch = ValueRangeWatch((-50.0, 0.0))
    assert watch.check(-60.0, 100, "critic_lr", 1e-3) is None  # an estimation error, not divergence
    assert watch.check(30.0, 120, "critic_lr", 1e-3) is None
    warning = watch.check(-1.4e13, 140, "critic_lr", 1e3)
    assert warning is not None and warning.startswith(
        "train/q_mean is -1.4e+13 at update 140, far outside the returns the rewards allow ([-50, 0])"
    )
    assert "lower model.critic_lr (now 1000)" in warning
    assert watch.check(-1e20, 160, "critic_lr", 1e3) is None
    assert ValueRangeWatch(None).check(-1e20, 160, "critic_lr", 1e3) is None  # a dense reward: no known range
