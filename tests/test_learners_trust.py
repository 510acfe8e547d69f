"""The model-trust guard: a trained model earns trust, a re-initialised one (or noise) loses it."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny

from dreamercli.buffer import random_replay
from dreamercli.config import LearnerConfig
from dreamercli.envs import encode_action, make_env, random_action, to_env_action
from dreamercli.learners.trust import END_EVENTS, TrustGuard
from dreamercli.models import WorldModel
from dreamercli.optim import FlatAdam

# A short learner horizon (H = 1 / (1 - 0.5) = 2): on random-action CartPole a fitted head calls a few
# near-boundary states an end too early (4-7% of steps), which costs a horizon of 2 little and one of
# 100 most of a value (the default; the last test).
CFG = LearnerConfig(branch_length=4, trust_window=200, real_share=0.25, trust_threshold=0.25, sac_discount=0.5)


def trained_model(env_id: str, updates: int = 400) -> WorldModel:
    """A small world model fitted to random-action data of env_id."""
    torch.manual_seed(0)
    buffer, spec = random_replay(env_id, 1000, seed=0)
    wm = WorldModel(tiny(env_id).world_model, spec.obs_dim, spec.action_dim)
    opt, rng = FlatAdam(wm, 3e-3, 100.0), np.random.default_rng(0)
    for _ in range(updates):
        losses, _, _ = wm.loss(*buffer.sample(16, 8, rng, torch.device("cpu")))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return wm


def watch(guard: TrustGuard, wm: WorldModel, env_id: str, steps: int = 200) -> TrustGuard:
    """Feed the guard fresh random-action transitions the model never trained on."""
    env = make_env(env_id, seed=1)
    obs, _ = env.reset(seed=1)
    from dreamercli.envs import spec_of

    spec, rng = spec_of(env), np.random.default_rng(1)
    for _ in range(steps):
        action = random_action(spec, rng)
        nxt, _, term, trunc, _ = env.step(to_env_action(spec, action))
        guard.observe(wm, obs, encode_action(spec, action), nxt, term, trunc)
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
    return guard


@pytest.fixture(scope="module")
def cartpole_model():
    return trained_model("CartPole-v1")


def test_the_guard_trusts_nothing_until_it_has_measured(cartpole_model):
    guard = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1", steps=CFG.trust_window // 4 - 1)
    s = guard.settings()
    assert (s.branch_length, s.imag_weight, s.real_share) == (0, 0.0, 1.0)


def test_a_fitted_model_earns_branches_and_a_bad_one_loses_them(cartpole_model):
    good = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1").settings()
    assert good.branch_length >= 1 and good.real_share < 1.0 and good.imag_weight > 0.0
    bad_model = trained_model("CartPole-v1", updates=0)  # as if its weights were re-initialised
    bad = watch(TrustGuard(CFG), bad_model, "CartPole-v1")
    assert bad.errors()[0] > 1.0  # worse than "nothing changes"
    s = bad.settings()
    assert s.branch_length < good.branch_length and s.real_share > good.real_share
    assert (s.branch_length, s.imag_weight, s.real_share) == (0, 0.0, 1.0)  # pure model-free
    rows = bad.metrics()
    assert set(rows) == {"hybrid/err_1", "hybrid/err_k", "hybrid/err_end", "hybrid/branch_length",
                         "hybrid/imag_weight", "hybrid/real_share"} and rows["hybrid/real_share"] == 1.0


def test_noise_that_no_model_can_predict_gets_no_trust():
    wm = trained_model("faulty_envs:RandomObs")
    guard = watch(TrustGuard(CFG), wm, "faulty_envs:RandomObs")
    assert np.all(guard.errors() > 2 * CFG.trust_threshold)  # at best the mean: half the reference's error
    assert guard.settings().branch_length == 0 and guard.settings().real_share == 1.0


def test_k_step_errors_are_scored_per_horizon(cartpole_model):
    guard = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1", steps=3)
    # three steps into an episode: 1-step predictions on all 3, 2-step on 2, 3-step on 1, 4-step on none
    assert guard.seen[:3].sum(0).tolist() == [3, 2, 1, 0]
    assert np.isnan(guard.errors()[3])


def test_guard_state_round_trips(cartpole_model):
    guard = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1", steps=77)
    twin = TrustGuard(CFG)
    twin.load_state_tensors(guard.state_tensors(), torch.device("cpu"))
    assert np.array_equal(twin.errors(), guard.errors(), equal_nan=True)
    assert twin.settings() == guard.settings() and torch.equal(twin.latents, guard.latents)
    assert np.array_equal(twin.ends, guard.ends) and guard.ends[:77, 0].any()  # CartPole ends within 77 steps
    assert twin.real_ends == guard.real_ends > 0 and np.array_equal(twin.caught, guard.caught)
    assert twin.end_error() == guard.end_error()
    # A checkpoint from before ends were scored.
    old = {k: v for k, v in guard.state_tensors().items() if k not in ("ends", "caught", "real_ends")}
    twin.load_state_tensors(old, torch.device("cpu"))
    assert twin.end_error() == 0.0 and np.array_equal(twin.errors(), guard.errors(), equal_nan=True)


@pytest.mark.parametrize("verdict", ["never", "always"])
def test_a_continue_head_no_better_than_chance_loses_branches_and_imagination(cartpole_model, verdict):
    good = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1")
    assert good.end_error() <= CFG.trust_threshold and good.settings().branch_length >= 1
    wm = copy.deepcopy(cartpole_model)  # same observations and latents, a head that calls every step alike
    last = wm.cont_head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 20.0 if verdict == "never" else -20.0)
    guard = watch(TrustGuard(CFG), wm, "CartPole-v1")
    assert np.allclose(guard.errors(), good.errors())  # the observations are predicted as well as before
    horizon = 1.0 / (1.0 - CFG.sac_discount)
    # every end missed, or every step that went on called an end: the value share it cuts, 1 - 1 / (1 + H)
    assert guard.end_error() == pytest.approx(1.0 if verdict == "never" else horizon / (1.0 + horizon))
    s = guard.settings()
    assert good.settings().imag_weight > 0.0  # the same observations earned imagination before
    assert (s.branch_length, s.imag_weight, s.real_share) == (0, 0.0, 1.0)


def test_a_time_limit_is_no_end_to_predict(cartpole_model):
    guard, obs = TrustGuard(CFG), np.zeros(4, np.float32)
    guard.observe(cartpole_model, obs, np.array([1.0, 0.0], np.float32), obs, terminated=False, truncated=True)
    guard.observe(cartpole_model, obs, np.array([1.0, 0.0], np.float32), obs, terminated=True)
    assert guard.ends[:2, 0].tolist() == [False, True]
    assert guard.latents is None  # the termination cleared the open predictions


def test_one_missed_end_after_many_caught_is_one_miss_in_the_last_ends(cartpole_model):
    guard = watch(TrustGuard(CFG), cartpole_model, "CartPole-v1", steps=3 * CFG.trust_window)
    assert guard.real_ends >= END_EVENTS and guard.end_error() <= CFG.trust_threshold
    before = guard.end_error()
    # A policy good enough that the window holds a single end, and the model misses it: an upright
    # pole the model calls "goes on" that the env ended anyway.
    upright, push = np.zeros(4, np.float32), np.array([1.0, 0.0], np.float32)
    for _ in range(CFG.trust_window - 1):
        guard.observe(cartpole_model, upright, push, upright, terminated=False)
    guard.observe(cartpole_model, upright, push, upright, terminated=True)
    assert guard.ends[:, 0].sum() == 1 and not guard.ends[:, 1].any()  # one real end in the window, missed
    missed = 1.0 - guard.caught.mean()
    assert guard.end_error() == pytest.approx(missed)  # no false end in the window
    assert missed <= before + 1.0 / END_EVENTS  # one miss more, not a miss rate of 1.0
    assert guard.end_error() < 0.5  # the end check still trusts the head (a miss rate of 1.0 would not)


def test_a_false_end_in_ten_steps_costs_most_of_a_value(cartpole_model):
    cfg = replace(CFG, sac_discount=LearnerConfig().sac_discount)  # the default horizon, 100 steps
    guard = watch(TrustGuard(cfg), cartpole_model, "CartPole-v1", steps=3 * cfg.trust_window)
    # A policy that keeps the pole up for the whole window, where the head calls every tenth state (a pole
    # swinging fast toward the edge, which the policy catches in time) an end. Real CartPole physics from
    # states set by hand: near upright, and every tenth one that swing.
    env, rng, push = make_env("CartPole-v1", seed=2), np.random.default_rng(2), np.array([1.0, 0.0], np.float32)
    env.reset(seed=2)
    for i in range(cfg.trust_window):
        state = np.array([0.0, 0.0, 0.15, 2.0]) if i % 10 == 9 else rng.uniform(-0.05, 0.05, 4)
        env.unwrapped.state = state
        nxt, _, term, _, _ = env.step(0)
        # truncated: each hand-set state starts afresh, so no k-step prediction runs across two of them
        guard.observe(cartpole_model, state.astype(np.float32), push, nxt, term, truncated=True)
    real, predicted = guard.ends.T
    assert not real.any() and predicted.sum() == cfg.trust_window // 10  # a false-end rate of 0.1
    missed = 1.0 - guard.caught.mean()
    assert guard.end_error() == pytest.approx(missed + 0.1 * 100 / (1 + 0.1 * 100))  # 0.91 of a value
    assert missed + 0.1 <= cfg.trust_threshold  # read as a plain rate, it would have kept full trust
    # (The hand-set states leave the k-step errors above tau as well, so the settings below would hold
    # without the end check; the value share above is what this test pins.)
    s = guard.settings()
    assert (s.branch_length, s.imag_weight, s.real_share) == (0, 0.0, 1.0)
