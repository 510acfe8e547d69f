"""The recall test: it opens the belief gate where the belief predicts what the observation hides, and only there."""

import numpy as np
import torch

from dreamercli.buffer import ReplayBuffer
from dreamercli.config import WorldModelConfig
from dreamercli.learners import recall as recall_module
from dreamercli.learners.recall import RecallTest
from dreamercli.models.rssm import RSSM

torch.set_num_threads(1)
DETER = 8


def hidden_drift_replay(episodes=40, length=25, seed=0):
    """Each episode drifts at a velocity v that the observation (a position) never shows: o' = o + v + a / 10."""
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(episodes * length, obs_dim=1, action_dim=1)
    velocity = np.empty(episodes * length, np.float32)
    for e in range(episodes):
        v, o = rng.choice([-0.3, 0.3]), rng.normal(size=1).astype(np.float32)
        for _ in range(length):
            a = rng.uniform(-1, 1, size=1).astype(np.float32)
            nxt = o + v + a / 10
            velocity[replay.cursor] = v
            replay.add(o, a, 0.0, nxt, False, e)
            o = nxt
    return replay, velocity


def run_test(next_h, replay, steps, threshold=0.25):
    torch.manual_seed(0)
    model = RSSM(WorldModelConfig(latent_dim=4, deter_dim=DETER, hidden_dim=16), obs_dim=1, action_dim=1)
    test = RecallTest(obs_dim=1, action_dim=1, deter=DETER, threshold=threshold)
    rng = np.random.default_rng(0)
    for step in range(steps):
        test.learn(replay, model, next_h, step, rng)
    return test


def test_the_gate_opens_where_the_belief_holds_the_hidden_velocity():
    replay, velocity = hidden_drift_replay()
    steps = recall_module.TEST_EVERY * (recall_module.SCORED_BEFORE_OPEN + 150)
    knowing = torch.zeros(len(velocity), DETER)
    knowing[:, 0] = torch.as_tensor(velocity)  # a belief that has inferred v
    opened = run_test(knowing, replay, steps)
    assert opened.reads_belief and opened.gain() > 0.5
    assert opened.metrics()["hybrid/memory_gain"] == opened.gain()


def test_the_gate_stays_shut_where_the_belief_holds_nothing_the_observation_lacks():
    replay, velocity = hidden_drift_replay()
    steps = recall_module.TEST_EVERY * (recall_module.SCORED_BEFORE_OPEN + 150)
    blind = torch.as_tensor(np.random.default_rng(1).normal(size=(len(velocity), DETER)), dtype=torch.float32)
    shut = run_test(blind, replay, steps)
    assert not shut.reads_belief and shut.gain() < 0.1


def test_the_gate_waits_for_enough_scores_and_zero_threshold_opens_it_at_once():
    replay, velocity = hidden_drift_replay()
    knowing = torch.zeros(len(velocity), DETER)
    knowing[:, 0] = torch.as_tensor(velocity)
    early = run_test(knowing, replay, recall_module.TEST_EVERY * (recall_module.SCORED_BEFORE_OPEN - 10))
    assert not early.reads_belief  # however large the gain, the first scores are the predictors' noise
    assert RecallTest(obs_dim=1, action_dim=1, deter=DETER, threshold=0.0).reads_belief
