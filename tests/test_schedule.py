"""The large-batch recipe: LR scaling rule by optimizer, LEGW warm-up, the paper's annealing (exact numbers)."""

from __future__ import annotations

import math

import pytest

from dasr.config import TrainConfig
from dasr.train.schedule import LrSchedule, batch_multiplier, build_schedule, scaled_peak_lr, scaling_rule


def config(**overrides) -> TrainConfig:
    return TrainConfig(data="d", exp="e", **overrides)


def test_auto_rule_is_linear_for_sgd_and_sqrt_for_adamw_and_lamb():
    assert scaling_rule("auto", "sgd") == "linear"
    assert scaling_rule("auto", "adamw") == "sqrt" == scaling_rule("auto", "lamb")
    assert scaling_rule("none", "sgd") == "none"
    with pytest.raises(ValueError, match="optimizer 'lion'"):
        scaling_rule("auto", "lion")


def test_peak_lr_by_rule():
    assert scaled_peak_lr(0.1, 10, "linear") == pytest.approx(1.0)
    assert scaled_peak_lr(0.003, 4, "sqrt") == pytest.approx(0.006)
    assert scaled_peak_lr(0.003, 10, "none") == 0.003
    with pytest.raises(ValueError, match="'cubic'"):
        scaled_peak_lr(0.1, 2, "cubic")


def test_multiplier_from_workers_and_batch_frames():
    assert batch_multiplier(config(batch_frames=5000, reference_batch_frames=1000), 2) == 10
    assert batch_multiplier(config(batch_frames=3000), 4) == 4  # reference: one worker's batch


def test_default_recipe_sgd_on_four_workers_scales_linearly_and_warms_up_four_times_longer():
    s = build_schedule(config(batch_frames=2000, reference_batch_frames=2000, lr=0.1), 4, steps_per_epoch=50)
    assert s.peak_lr == pytest.approx(0.4)
    assert s.warmup_steps == 0 and s.warmup_epochs == pytest.approx(0.4)  # 0.1 epochs at the reference x m = 4
    assert s.lr(0, 0.2) == pytest.approx(0.2)  # half way through the warm-up
    assert s.lr(30, 0.6) == pytest.approx(0.4)
    # paper annealing from epoch 6 (default): x 1/sqrt2 per epoch
    assert s.lr(300, 6.5) == pytest.approx(0.4 / math.sqrt(2))
    assert s.lr(400, 8.0) == pytest.approx(0.4 / 2**1.5)


def test_adamw_ten_times_the_batch_takes_sqrt10_peak_and_ten_times_the_warmup_epochs():
    c = config(optimizer="adamw", lr=0.003, batch_frames=10000, reference_batch_frames=2000, warmup_epochs=0.05)
    s = build_schedule(c, 2, steps_per_epoch=100)
    assert s.peak_lr == pytest.approx(0.003 * math.sqrt(10))
    assert s.warmup_epochs == pytest.approx(0.5)
    assert s.lr(9, 0.1) == pytest.approx(0.003 * math.sqrt(10) * 0.2)
    # the same updates of warm-up at every batch: at m = 1 the 0.05 epochs hold as many steps as 0.5 epochs at m = 10
    small = build_schedule(
        config(optimizer="adamw", lr=0.003, batch_frames=1000, reference_batch_frames=2000, warmup_epochs=0.05), 2, 1000
    )
    assert small.warmup_epochs * 1000 == pytest.approx(s.warmup_epochs * 100)


def test_explicit_rule_and_warmup_steps_override_the_recipe():
    c = config(lr=0.1, batch_frames=1000, reference_batch_frames=1000, lr_scaling="none", warmup_steps=10)
    s = build_schedule(c, 10, steps_per_epoch=20)
    assert s.peak_lr == 0.1
    assert [s.lr(i, 0.0) for i in (0, 4, 9, 10)] == pytest.approx([0.01, 0.05, 0.1, 0.1])
    no_warmup = build_schedule(config(lr=0.1, warmup_epochs=0.0), 1, 20)
    assert no_warmup.lr(0, 0.05) == pytest.approx(0.1)


def test_cosine_decays_from_the_end_of_a_step_warmup_to_zero():
    s = LrSchedule(1.0, warmup_steps=10, anneal="cosine", total_steps=110)
    assert s.lr(4, 0.0) == pytest.approx(0.5)
    assert s.lr(10, 0.0) == pytest.approx(1.0)
    assert s.lr(60, 0.0) == pytest.approx(0.5)
    assert s.lr(110, 0.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="anneal 'step'"):
        LrSchedule(1.0, anneal="step")
