"""The disagreement ensemble: its heads' maths, novelty that falls where data is, and its wiring."""

import pytest
import torch

from dreamercli.agent import Agent
from dreamercli.buffer import SequenceBatch
from dreamercli.config import ConfigError, from_preset, validate, with_overrides
from dreamercli.envs import make_env, spec_of
from dreamercli.models.ensemble import Disagreement


def test_every_head_is_its_own_one_hidden_layer_mlp():
    torch.manual_seed(0)
    ens = Disagreement(latent_dim=4, action_dim=2, hidden_dim=8, heads=3)
    z, a = torch.randn(2, 5, 4), torch.randn(2, 5, 2)
    out = ens.predict(z, a)
    assert out.shape == (3, 2, 5, 4)
    x = torch.cat([z, a], -1)
    for k in range(3):
        hidden = (x @ ens.w_in[k] + ens.b_in[k, 0]).relu()
        assert torch.allclose(out[k], hidden @ ens.w_out[k] + ens.b_out[k, 0], atol=1e-6)
    assert torch.allclose(ens.novelty(z, a), out.var(0).mean(-1))


def test_novelty_falls_where_the_heads_were_trained_and_stays_elsewhere():
    torch.manual_seed(0)
    ens = Disagreement(latent_dim=4, action_dim=1, hidden_dim=32, heads=5)
    seen_z, seen_a = torch.randn(256, 4) * 0.3 + 1.0, torch.zeros(256, 1)
    target = seen_z.roll(1, -1)  # some fixed function of the input
    unseen_z = torch.randn(256, 4) * 0.3 - 2.0
    before = ens.novelty(seen_z, seen_a).mean().item()
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        ens.loss(seen_z, seen_a, target).mean().backward()
        opt.step()
    with torch.no_grad():
        seen, unseen = ens.novelty(seen_z, seen_a).mean().item(), ens.novelty(unseen_z, seen_a).mean().item()
    assert seen < before / 10 and unseen > 10 * seen, (before, seen, unseen)


def test_the_bonus_is_novelty_over_its_running_mean():
    torch.manual_seed(0)
    ens = Disagreement(latent_dim=4, action_dim=1, hidden_dim=8, heads=3)
    z1, z2, a = torch.randn(64, 4), 3 * torch.randn(64, 4), torch.zeros(64, 1)
    with torch.no_grad():
        first = ens.bonus(z1, a)
        assert first.mean().item() == pytest.approx(1.0, rel=1e-5)
        n1, n2 = ens.novelty(z1, a).mean(), ens.novelty(z2, a).mean()
        second = ens.bonus(z2, a, rate=0.01)
    expected_mean = 0.99 * n1 + 0.01 * n2
    assert ens.novelty_mean.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert torch.allclose(second, ens.novelty(z2, a) / expected_mean, rtol=1e-5)


def agent_with(novelty: float, env: str = "CartPole-v1") -> Agent:
    config = validate(with_overrides(from_preset("tiny"), {"env": env, "algo": "dreamer", "novelty": novelty}))
    return Agent(config, spec_of(make_env(env)))


def test_no_ensemble_unless_novelty_is_on_so_older_runs_keep_their_weight_names():
    assert not any("disagreement" in k for k in agent_with(0.0).weights())
    names = [k for k in agent_with(0.5).weights() if "disagreement" in k]
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["b_in", "b_out", "novelty_mean", "w_in", "w_out"]


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_novelty_is_fitted_with_the_model_and_paid_in_imagination(env):
    torch.manual_seed(0)
    agent = agent_with(0.5, env)
    spec = agent.spec
    B, L = 4, 8
    obs = torch.randn(B, L, spec.obs_dim)
    actions = torch.nn.functional.one_hot(torch.randint(spec.action_dim, (B, L)), spec.action_dim).float() \
        if spec.discrete else torch.rand(B, L, spec.action_dim) * 2 - 1
    batch = SequenceBatch(obs, actions, torch.zeros(B, L), torch.randn(B, L, spec.obs_dim), torch.zeros(B, L),
                          torch.ones(B, L, dtype=torch.bool))
    first = agent.model_learner.step(batch)
    assert first is not None and first["wm/novelty_fit"] > 0 and first["ac/novelty"] > 0
    for _ in range(30):
        last = agent.model_learner.step(batch)
    assert last["wm/novelty_fit"] < 0.8 * first["wm/novelty_fit"]  # its targets move with the encoder


def test_novelty_settings_are_checked():
    with pytest.raises(ConfigError, match="novelty must be >= 0"):
        validate(with_overrides(from_preset("tiny"), {"novelty": -1.0}))
    with pytest.raises(ConfigError, match="novelty_heads must be >= 2"):
        validate(with_overrides(from_preset("tiny"), {"novelty_heads": 1}))


def test_the_imagined_reward_carries_the_bonus_times_novelty():
    # Same seed, same data: only the bonus's weight differs, so the imagined rewards differ by
    # exactly the change of weight times the (identical) mean bonus.
    def first_update(novelty: float) -> dict[str, float]:
        torch.manual_seed(0)
        agent = agent_with(novelty)
        B, L, spec = 4, 8, agent.spec
        gen = torch.Generator().manual_seed(1)
        actions = torch.nn.functional.one_hot(torch.randint(spec.action_dim, (B, L), generator=gen),
                                              spec.action_dim).float()
        batch = SequenceBatch(torch.randn(B, L, spec.obs_dim, generator=gen), actions, torch.zeros(B, L),
                              torch.randn(B, L, spec.obs_dim, generator=gen), torch.zeros(B, L),
                              torch.ones(B, L, dtype=torch.bool))
        return agent.model_learner.step(batch)

    low, high = first_update(0.5), first_update(1.0)
    assert low["ac/novelty"] == pytest.approx(high["ac/novelty"], rel=1e-6)
    assert high["ac/imagined_reward"] - low["ac/imagined_reward"] == pytest.approx(0.5 * low["ac/novelty"], rel=1e-4)
