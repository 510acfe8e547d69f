"""Coloured exploration noise: its spectrum, exact marginals, replay on resume, and what it reaches."""

import numpy as np
import pytest
import torch

from dreamercli.envs import EnvSpec, make_env, spec_of, to_env_action
from dreamercli.exploration import EpisodeNoise, colored_noise, normal_cdf, random_action_from
from dreamercli.learners.policy import Actor


def spectral_slope(x: np.ndarray) -> float:
    """Least-squares slope of log power against log frequency, averaged over columns."""
    power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).mean(axis=1)[1:]
    freqs = np.fft.rfftfreq(len(x))[1:]
    return float(np.polyfit(np.log(freqs), np.log(power), 1)[0])


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_the_power_spectrum_falls_as_one_over_f_to_the_exponent(exponent):
    x = colored_noise(1000, 200, exponent, np.random.default_rng(0))
    assert x.shape == (1000, 200)
    assert spectral_slope(x) == pytest.approx(-exponent, abs=0.1)
    assert np.allclose(x.mean(axis=0), 0.0, atol=1e-9) and np.allclose(x.std(axis=0), 1.0, atol=1e-6)


def test_higher_exponents_drift_for_longer():
    rng = np.random.default_rng(1)
    lag1 = [np.mean([np.corrcoef(c[:-1], c[1:])[0, 1] for c in colored_noise(500, 50, e, rng).T])
            for e in (0.0, 1.0, 2.0)]
    assert abs(lag1[0]) < 0.05 and lag1[0] < lag1[1] < lag1[2]


def test_random_actions_from_noise_are_uniform():
    rng = np.random.default_rng(2)
    discrete = EnvSpec(obs_dim=2, action_dim=3, discrete=True)
    counts = np.bincount([int(random_action_from(discrete, n)) for n in rng.standard_normal((6000, 3))], minlength=3)
    assert np.all(np.abs(counts / 6000 - 1 / 3) < 0.025), counts
    box = EnvSpec(obs_dim=2, action_dim=2, discrete=False)
    actions = np.stack([random_action_from(box, n) for n in rng.standard_normal((6000, 2))])
    assert actions.min() >= -1 and actions.max() <= 1
    assert np.allclose(actions.mean(0), 0.0, atol=0.03) and np.allclose(actions.var(0), 1 / 3, atol=0.02)
    assert normal_cdf(np.array([0.0, 1.96]))[1] == pytest.approx(0.975, abs=1e-3)


def test_discrete_explore_samples_the_policys_probabilities():
    torch.manual_seed(0)
    actor = Actor(latent_dim=4, hidden_dim=16, action_dim=3, discrete=True)
    z = torch.randn(1, 4).expand(20000, 4)
    actions = actor.explore(z, torch.randn(20000, 3))
    assert torch.all(actions.sum(-1) == 1)
    with torch.no_grad():
        probs = actor.probs(z[:1])[0]
    assert torch.allclose(actions.mean(0), probs, atol=0.015), (actions.mean(0), probs)


def test_continuous_explore_is_the_reparameterised_sample():
    torch.manual_seed(0)
    actor = Actor(latent_dim=4, hidden_dim=16, action_dim=2, discrete=False)
    z, noise = torch.randn(5, 4), torch.randn(5, 2)
    assert torch.equal(actor.explore(z, noise), actor.rollout_action(z, noise)[0])


def test_a_restarted_sequence_continues_where_it_stopped_even_past_the_episode_limit():
    first = EpisodeNoise(dims=2, exponent=1.0, length=10)
    first.restart(seed=7)
    drawn = np.stack([first.next() for _ in range(25)])  # three chunks of the episode limit
    again = EpisodeNoise(dims=2, exponent=1.0, length=10)
    again.restart(seed=7, consumed=13)
    assert np.array_equal(np.stack([again.next() for _ in range(12)]), drawn[13:])
    assert not np.array_equal(drawn[:10], drawn[10:20])  # a new chunk, not the old one again


def goals_reached(exponent: float, episodes: int) -> int:
    """Episodes of random actions with this noise that reach MountainCarContinuous-v0's goal."""
    env = make_env("MountainCarContinuous-v0", seed=0)
    spec, noise, reached = spec_of(env), EpisodeNoise(1, exponent, 999), 0
    for episode in range(episodes):
        env.reset(seed=episode)
        noise.restart(seed=episode)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(to_env_action(spec, random_action_from(spec, noise.next())))
        reached += terminated
    return reached


def test_pink_random_actions_find_a_goal_that_white_ones_never_reach():
    assert goals_reached(0.0, 4) == 0
    assert goals_reached(1.0, 4) >= 2
