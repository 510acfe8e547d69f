"""The recurrent state-space model: shapes, a prior that learns what is predictable, and a belief that
remembers within an episode and forgets at its start."""

import dataclasses

import numpy as np
import pytest
import torch

from dreamercli.config import WorldModelConfig
from dreamercli.learners.belief import Memory, perceive, took
from dreamercli.models.rssm import RSSM
from dreamercli.nets import gaussian_kl

torch.set_num_threads(1)  # small nets: one thread each, as training runs them
SMALL = WorldModelConfig(latent_dim=4, deter_dim=16, hidden_dim=32, kl_free=0.0)


def fit(model, batches, updates, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(updates):
        losses, _, _ = model.loss(*batches())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()


def test_shapes_of_the_state_the_loss_and_imagination():
    torch.manual_seed(0)
    model = RSSM(SMALL, obs_dim=3, action_dim=2)
    B, L = 5, 7
    obs, next_obs = torch.randn(B, L, 3), torch.randn(B, L, 3)
    actions, rewards = torch.rand(B, L, 2) * 2 - 1, torch.randn(B, L)
    terminated, mask = torch.zeros(B, L), torch.ones(B, L, dtype=torch.bool)
    losses, _, post = model.loss(obs, actions, rewards, next_obs, terminated, mask)
    assert model.latent_dim == 16 + 4 and post.shape == (B, L, 20)
    assert set(losses) == {"recon", "reward_loss", "cont_loss", "kl_dyn", "kl_rep"}
    assert all(v.shape == () and torch.isfinite(v) for v in losses.values())
    traj = model.imagine(post[:, 0], lambda s: torch.tanh(s[:, :2]), horizon=4, sample=True)
    assert traj.latents.shape == (5, B, 20) and traj.actions.shape == (4, B, 2)
    assert model.reward(traj.latents[:-1], traj.actions).shape == (4, B)
    assert model.cont(traj.latents).shape == (5, B) and model.decode(traj.latents).shape == (5, B, 3)
    states, nexts = model.filter(obs, actions)
    assert states.shape == (B, L, 20) and nexts.shape == (B, L, 16)
    # filter's next h is the following step's h: the belief is carried, not recomputed from scratch.
    assert torch.allclose(nexts[:, :-1], states[:, 1:, :16])


def test_the_prior_learns_to_agree_with_the_posterior_on_a_predictable_sequence():
    # A rotating phase: each observation fixes the next one, so a good prior leaves the posterior
    # nothing to add (KL -> 0) and its open-loop guesses decode to the real observations.
    torch.manual_seed(0)
    model = RSSM(SMALL, obs_dim=2, action_dim=1)
    B, L = 16, 10

    def batch():
        phase = torch.rand(B, 1) * 6.3 + 0.5 * torch.arange(L + 1)
        o = torch.stack([phase.sin(), phase.cos()], -1)
        return (o[:, :-1], torch.zeros(B, L, 1), torch.zeros(B, L), o[:, 1:], torch.zeros(B, L),
                torch.ones(B, L, dtype=torch.bool))

    def agreement(data):  # steps 1..L: the first observation is news to any prior
        obs, actions, *_ = data
        with torch.no_grad():
            _, (q_mean, q_std), (p_mean, p_std) = model.observe(torch.cat([obs[:, :1], data[3]], 1), actions)
        kl = gaussian_kl(q_mean, q_std, p_mean, p_std)[:, 1:].mean().item()
        gap = ((q_mean - p_mean).abs() / q_std)[:, 1:].mean().item()  # in posterior stds
        return kl, gap, model.loss(*data)[1]["open_loop_obs_err"]

    data = batch()
    kl_before, gap_before, err_before = agreement(data)
    fit(model, batch, 500)
    kl_after, gap_after, err_after = agreement(data)
    assert kl_after < 0.5 * kl_before
    assert gap_after < 0.5 < gap_before  # the prior's mean lies within half a posterior std of it
    assert err_after < 0.5 * err_before  # and its open-loop guesses decode to the real observations


def cue_batch(B, L, rng):
    """A cue (+-1) shown at step 0 only; the last step pays 1 when the action's sign matches it."""
    cue = rng.choice([-1.0, 1.0], size=B)
    obs = np.zeros((B, L + 1, 2), np.float32)
    obs[:, 0] = np.stack([cue, np.ones(B)], -1)
    actions = rng.uniform(-1, 1, size=(B, L, 1)).astype(np.float32)
    rewards = np.zeros((B, L), np.float32)
    rewards[:, -1] = (np.sign(actions[:, -1, 0]) == cue).astype(np.float32)
    t = torch.as_tensor
    return (t(obs[:, :-1]), t(actions), t(rewards), t(obs[:, 1:]), torch.zeros(B, L),
            torch.ones(B, L, dtype=torch.bool))


@pytest.fixture(scope="module")
def cue_model():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    model = RSSM(dataclasses.replace(SMALL, kl_free=1.0), obs_dim=2, action_dim=1)
    fit(model, lambda: cue_batch(64, 6, rng), 400)
    return model


def predicted_last_rewards(model, obs, actions, reset_each_step):
    """The reward head's guess at the last step, the belief built step by step as acting builds it."""
    memory = Memory(len(obs), model, 1, torch.device("cpu"))
    for t in range(obs.shape[1]):
        if reset_each_step:
            memory.reset()
        state = perceive(model, memory, obs[:, t])
        took(memory, actions[:, t])
    with torch.no_grad():
        return model.reward(state, actions[:, -1])


def test_the_belief_carries_a_cue_within_an_episode_and_a_reset_each_step_loses_it(cue_model):
    obs, actions, rewards, *_ = cue_batch(256, 6, np.random.default_rng(7))
    target = rewards[:, -1]
    carried = predicted_last_rewards(cue_model, obs, actions, reset_each_step=False)
    reset = predicted_last_rewards(cue_model, obs, actions, reset_each_step=True)
    right = lambda guess: ((guess > 0.5).float() == target).float().mean().item()  # noqa: E731
    assert right(carried) > 0.9  # it remembers what step 0 showed
    assert right(reset) < 0.7  # without the memory it is a coin toss


def test_a_reset_row_starts_afresh_and_other_rows_keep_their_belief(cue_model):
    obs, actions, *_ = cue_batch(4, 3, np.random.default_rng(3))
    memory = Memory(4, cue_model, 1, torch.device("cpu"))
    for t in range(3):
        perceive(cue_model, memory, obs[:, t])
        took(memory, actions[:, t])
    kept = memory.h.clone()
    memory.reset([1, 3])
    state = perceive(cue_model, memory, obs[:, 0], rows=None)
    fresh = perceive(cue_model, Memory(4, cue_model, 1, torch.device("cpu")), obs[:, 0])
    assert torch.equal(state[[1, 3]], fresh[[1, 3]])  # an episode start forgets everything before it
    assert not torch.equal(state[[0, 2]], fresh[[0, 2]])  # the others go on from what they had
    assert not torch.equal(memory.h[[0, 2]], kept[[0, 2]])  # ... and moved on by one step
