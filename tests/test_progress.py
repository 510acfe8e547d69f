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


def steps(costs, first, last, seconds, now):
    """End env steps first..last, each `seconds` long; the clock after them."""
    for step in range(first, last + 1):
        now += seconds
        costs.end_step(step, now)
    return now


def test_time_left_from_measured_costs():
    costs = CostModel(steps=100, prefill=10, pretrain=5, eval_every=50)
    costs.restart_clock(0.0)
    now = steps(costs, 1, 9, 0.001, 0.0)  # random actions: only their own cost is known
    assert costs.seconds_left(9, 0) is None
    costs.add("pretrain", 0.02)  # at step 10, the prefill's last, the pretraining, then the first updates
    assert costs.seconds_left(10, 1, "pretrain") is None  # a learning step's cost is still unknown
    for _ in range(4):
        costs.add("pretrain", 0.02)
    now = steps(costs, 10, 18, 0.04, now + 5 * 0.02)  # the pretraining's seconds are not step 10's
    assert costs.seconds_left(18, 5) is None  # 9 learning steps: the first ones, which warm up, are not enough
    now = steps(costs, 19, 19, 0.04, now)
    # 81 training steps at 0.04; no evaluation or checkpoint timed yet, nor an action (see below)
    assert costs.seconds_left(19, 5) == pytest.approx(81 * 0.04)
    assert costs.seconds_left(9, 0) == pytest.approx(5 * 0.02 + 91 * 0.04)  # as from the prefill's last but one
    costs.add("eval", 0.5)
    costs.add("checkpoint", 0.1)
    now = steps(costs, 20, 60, 0.04, now + 0.6)  # an evaluation and a checkpoint inside step 20: no step's cost
    assert costs.train_step.value == pytest.approx(0.04)
    assert costs.seconds_left(60, 5) == pytest.approx(40 * 0.04 + 0.5 + 0.1)  # evaluated and saved at 100
    assert costs.seconds_left(100, 5, "eval") == pytest.approx(0.5 + 0.1)  # the last ones, under way
    assert costs.seconds_left(100, 5) == 0.0


def test_a_step_costs_all_its_updates_whatever_their_kinds():
    # hybrid: a slow world-model update every other step (train_ratio 0.5) beside ten fast SAC updates
    # each step. Seconds per step, averaged over steps, are the truth; an average per update is not.
    costs = CostModel(steps=1000, prefill=1, pretrain=0)
    costs.restart_clock(0.0)
    now = 0.0
    for step in range(1, 201):
        now += 10 * 0.001 + (0.05 if step % 2 else 0.0)
        costs.end_step(step, now)
    assert costs.seconds_left(200, 0) == pytest.approx(800 * (10 * 0.001 + 0.05 / 2))


def test_recent_steps_outweigh_old_ones_but_noise_is_averaged():
    costs = CostModel(steps=1000, prefill=0, pretrain=0)
    costs.restart_clock(0.0)
    now = steps(costs, 1, 100, 0.01, 0.0)
    now = steps(costs, 101, 400, 0.03, now)  # steps got slower (a guard that opened): the latest 3/4 count
    assert costs.seconds_left(400, 0) == pytest.approx(600 * 0.03)
    for step in range(401, 601):  # a slow step among fast ones moves the estimate by its share alone
        now += 0.3 if step == 500 else 0.03
        costs.end_step(step, now)
    assert costs.seconds_left(600, 0) == pytest.approx(400 * (0.03 + 0.27 / 450))


def test_evaluations_cost_the_latest_one_or_at_first_an_episode_limit_of_actions():
    costs = CostModel(steps=300, prefill=100, pretrain=0, eval_every=100, episode_limit=500)
    costs.restart_clock(0.0)
    steps(costs, 1, 200, 0.002, 0.0)
    for _ in range(10):
        costs.add("collect", 0.0004)  # one action and env step
    assert costs.seconds_left(200, 0) == pytest.approx(100 * 0.002 + 500 * 0.0004)  # before the first evaluation
    costs.add("eval", 0.05)  # short episodes at first
    costs.add("eval", 0.2)  # then longer ones: the latest counts
    assert costs.seconds_left(200, 0) == pytest.approx(100 * 0.002 + 0.2)


def test_evaluations_and_checkpoints_left_count_the_final_ones():
    assert CostModel(300, 100, 20, eval_every=150).evals_left(100) == 2  # 150, 300
    assert CostModel(310, 100, 20, eval_every=150).evals_left(150) == 2  # 300, 310
    assert CostModel(300, 100, 20, eval_every=0).evals_left(299) == 1
    assert CostModel(300, 100, 20, eval_every=150).evals_left(300) == 0
    assert CostModel(300, 100, 20, eval_every=150, checkpoint_every=50).checkpoints_left(100) == 4
    assert CostModel(300, 100, 20, eval_every=150).checkpoints_left(100) == 2


def test_pretraining_that_never_runs_is_not_waited_for():
    costs = CostModel(steps=50, prefill=100, pretrain=20)  # prefill longer than the run
    costs.restart_clock(0.0)
    steps(costs, 1, 10, 0.001, 0.0)
    assert costs.seconds_left(10, 0) == pytest.approx(40 * 0.001)


def test_rate_is_recent_and_restarts_when_learning_starts():
    costs = CostModel(steps=100, prefill=10, pretrain=5)
    now = 0.0
    for step in range(1, 10):
        now += 0.001
        costs.end_step(step, now)
    assert costs.sps == pytest.approx(1000)
    costs.add("pretrain", 3.0)  # pretraining within step 10 takes no env step: not in the rate
    now += 3.05
    costs.end_step(10, now)  # the first step that learns: the prefill's speed no longer counts
    assert costs.sps == pytest.approx(20)
    for step in range(11, 40):
        now += 0.1
        costs.end_step(step, now)
    assert 10 < costs.sps < 11


def test_display_texts():
    assert clock(None) == "-"
    assert clock(0.4) == "0:00:00" and clock(59.6) == "0:01:00" and clock(3 * 3600 + 62) == "3:01:02"
    p = Progress(500, 10_000, 7, None, {}, 0.0, "pretrain", 37, 200)
    assert phase_text(p) == "pretrain 37/200"
    assert phase_text(Progress(600, 10_000, 8, None, {}, 30.0)) == "train"
