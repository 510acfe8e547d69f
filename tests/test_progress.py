"""progress.py: the cost model's time left and recent rate, on hand-made timings; the bar's texts."""

import pytest

from dreamercli.display import clock, phase_text
from dreamercli.progress import CostModel, Ema, Progress


def test_ema_is_the_weighted_mean_of_what_it_has_seen():
    ema = Ema(0.5)
    assert ema.value is None  # unknown, not zero
    ema.add(4.0)
    assert ema.value == 4.0  # bias-corrected: the first value is the average of one
    ema.add(1.0)
    assert ema.value == pytest.approx((0.5 * 4.0 + 1.0) / 1.5)


def test_time_left_from_measured_costs():
    costs = CostModel(steps=100, prefill=10, pretrain=5, train_ratio=0.5, eval_every=50)
    for _ in range(10):  # prefill: only the env step's cost is known
        costs.add("step", 0.001)
    assert costs.seconds_left(10, 0) is None
    costs.add("pretrain", 0.02)
    assert costs.seconds_left(10, 1) is None  # the full update's cost is still unknown
    costs.add("update", 0.04)
    # 4 pretrain updates, 90 env steps, 45 updates; no evaluation timed yet
    assert costs.seconds_left(10, 1) == pytest.approx(4 * 0.02 + 90 * 0.001 + 45 * 0.04)
    assert costs.seconds_left(60, 5) == pytest.approx(40 * 0.001 + 20 * 0.04)
    costs.add("eval", 0.5)
    assert costs.seconds_left(60, 5) == pytest.approx(40 * 0.001 + 20 * 0.04 + 0.5)  # the one at 100
    assert costs.seconds_left(100, 5) == 0.0


def test_recent_costs_outweigh_old_ones():
    costs = CostModel(steps=1000, prefill=0, pretrain=0, train_ratio=1.0)
    costs.add("step", 0.0)
    for _ in range(100):
        costs.add("update", 0.01)
    for _ in range(100):
        costs.add("update", 0.03)  # updates got slower: the estimate follows within ~20 of them
    assert costs.seconds_left(500, 0) == pytest.approx(500 * 0.03, rel=0.01)


def test_evaluations_left_count_the_final_one():
    assert CostModel(300, 100, 20, 0.25, eval_every=150).evals_left(100) == 2  # 150, 300
    assert CostModel(310, 100, 20, 0.25, eval_every=150).evals_left(150) == 2  # 300, 310
    assert CostModel(300, 100, 20, 0.25, eval_every=0).evals_left(299) == 1
    assert CostModel(300, 100, 20, 0.25, eval_every=150).evals_left(300) == 0


def test_pretraining_that_never_runs_is_not_waited_for():
    costs = CostModel(steps=50, prefill=100, pretrain=20, train_ratio=0.5)  # prefill longer than the run
    costs.add("step", 0.001)
    assert costs.seconds_left(10, 0) == pytest.approx(40 * 0.001)


def test_rate_is_recent_and_restarts_when_learning_starts():
    costs = CostModel(steps=100, prefill=10, pretrain=5, train_ratio=0.5)
    now = 0.0
    for step in range(1, 10):
        now += 0.001
        costs.end_step(step, now)
    assert costs.sps == pytest.approx(1000)
    costs.add("pretrain", 3.0)  # pretraining within step 10 takes no env step: not in the rate
    now += 3.001
    costs.end_step(10, now)
    assert costs.sps == pytest.approx(1000)
    now += 0.05
    costs.end_step(11, now)  # the first policy step: the prefill's speed no longer counts
    assert costs.sps == pytest.approx(20)
    for step in range(12, 40):
        now += 0.1
        costs.end_step(step, now)
    assert 10 < costs.sps < 11


def test_display_texts():
    assert clock(None) == "-"
    assert clock(0.4) == "0:00:00" and clock(59.6) == "0:01:00" and clock(3 * 3600 + 62) == "3:01:02"
    p = Progress(500, 10_000, 7, None, {}, 0.0, "pretrain", 37, 200)
    assert phase_text(p) == "pretrain 37/200"
    assert phase_text(Progress(600, 10_000, 8, None, {}, 30.0)) == "train"
