"""Branched rollouts: the set length, termination, the model buffer and the real share of a batch."""

import numpy as np
import torch
from conftest import tiny

from dreamercli.buffer import ReplayBuffer
from dreamercli.learners import branched
from dreamercli.learners.policy import Actor
from dreamercli.models import WorldModel

OBS, ACT = 3, 2


def model_and_actor(cont_bias: float) -> tuple[WorldModel, Actor]:
    """A small world model whose continue head always says cont_bias's way, and a discrete actor."""
    torch.manual_seed(0)
    wm = WorldModel(tiny("CartPole-v1").world_model, OBS, ACT)
    with torch.no_grad():
        last = wm.cont_head[-1]
        last.weight.zero_()
        last.bias.fill_(cont_bias)
    return wm, Actor(OBS, 16, ACT, discrete=True)


def test_branches_have_the_set_length_and_fill_the_model_buffer():
    wm, actor = model_and_actor(+10.0)  # never terminal
    starts = torch.randn(8, OBS)
    batch = branched.branch(wm, actor, starts, length=3)
    assert batch.obs.shape == (24, OBS) and batch.actions.shape == (24, ACT) and batch.rewards.shape == (24,)
    assert torch.allclose(batch.obs[:8], starts, atol=1e-5)  # the first step starts from the real states
    assert torch.equal(batch.next_obs[:8], batch.obs[8:16])  # each step starts where the last ended
    assert not batch.terminated.any() and batch.actions.sum(-1).eq(1).all()  # one-hot actions
    buffer = ReplayBuffer(100, OBS, ACT)
    branched.fill(buffer, batch)
    branched.fill(buffer, branched.branch(wm, actor, starts, length=3))
    assert len(buffer) == 48


def test_a_terminal_prediction_ends_its_branch():
    wm, actor = model_and_actor(-10.0)  # every next state is terminal
    batch = branched.branch(wm, actor, torch.randn(5, OBS), length=4)
    assert len(batch.rewards) == 5 and batch.terminated.eq(1).all()


def test_the_real_share_of_a_batch_is_what_was_asked():
    rng = np.random.default_rng(0)
    real, model = ReplayBuffer(50, OBS, ACT), ReplayBuffer(50, OBS, ACT)
    for _ in range(50):
        real.add(np.ones(OBS), np.zeros(ACT), 0.0, np.ones(OBS), False, 0)
    model.add_batch(-np.ones((50, OBS)), np.zeros((50, ACT)), np.zeros(50), -np.ones((50, OBS)), np.zeros(50))
    for share, size in ((0.25, 256), (0.05, 100), (1.0, 64)):
        batch = branched.mixed_batch(real, model, size, share, rng, torch.device("cpu"))
        assert len(batch.rewards) == size
        assert int((batch.obs[:, 0] > 0).sum()) == round(size * share)
    empty = ReplayBuffer(10, OBS, ACT)  # no branched data yet: all real
    assert (branched.mixed_batch(real, empty, 32, 0.25, rng, torch.device("cpu")).obs > 0).all()
