"""Learning-rate schedules fit any budget and have the documented shapes."""

import math

import pytest

from hf_pretrain.training.schedules import lr_multiplier


def curve(schedule, warmup=0.1, **kwargs):
    return [lr_multiplier(schedule, step, step / 100, warmup, **kwargs) for step in range(101)]


def test_warmup_rises_linearly_to_the_peak():
    values = curve("linear", warmup=0.1)
    assert values[0] < 0.01 and values[5] == pytest.approx(0.5) and values[10] == pytest.approx(1.0)
    assert lr_multiplier("constant", 9, 0.5, warmup=20) == pytest.approx(0.5)  # warmup in steps


def test_linear_and_cosine_end_at_the_minimum_ratio():
    for schedule in ("linear", "cosine"):
        values = curve(schedule, min_lr_ratio=0.1)
        assert values[-1] == pytest.approx(0.1)
        assert all(a >= b - 1e-12 for a, b in zip(values[10:], values[11:]))
    assert curve("cosine")[55] == pytest.approx(0.5)  # half way through the decay


def test_wsd_holds_the_peak_then_decays_over_the_final_fraction():
    values = curve("wsd", warmup=0.05, decay_fraction=0.2)
    assert all(v == pytest.approx(1.0) for v in values[5:81])
    assert values[90] == pytest.approx(0.5) and values[100] == pytest.approx(0.0)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule='step' is not allowed"):
        lr_multiplier("step", 0, 0.0, 0.1)
    assert math.isfinite(lr_multiplier("wsd", 0, 0.0, 0.0))
