import pytest
import torch

from dreamercli.config import ActorCriticConfig
from dreamercli.learners.imagination import ActorCritic, lambda_return
from dreamercli.learners.policy import Actor


def test_lambda_return_hand_worked():
    # H = 2, one rollout: r = [1, 2], disc = [0.5, 0.5], V = [0, 10, 20], lam = 0.5
    # R_1 = 2 + 0.5 * 20 = 12
    # R_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5
    out = lambda_return(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [0.5]]),
                        torch.tensor([[0.0], [10.0], [20.0]]), 0.5)
    assert torch.allclose(out, torch.tensor([[6.5], [12.0]]))


def test_lambda_return_limits():
    r, d, v = torch.rand(5, 3), torch.full((5, 3), 0.9), torch.rand(6, 3)
    td = lambda_return(r, d, v, 0.0)  # one-step targets
    assert torch.allclose(td, r + d * v[1:])
    mc = lambda_return(r, d, v, 1.0)  # discounted sum bootstrapped at the end
    expected = v[5]
    for t in reversed(range(5)):
        expected = r[t] + d[t] * expected
        assert torch.allclose(mc[t], expected)


def test_terminal_cuts_the_return():
    r = torch.ones(3, 1)
    out = lambda_return(r, torch.tensor([[1.0], [0.0], [1.0]]), torch.full((4, 1), 100.0), 0.95)
    assert out[1, 0] == 1.0  # nothing after a predicted end counts


@pytest.mark.parametrize("discrete", [True, False])
def test_actor_samples_and_modes(discrete):
    torch.manual_seed(0)
    actor = Actor(8, 16, 3, discrete)
    z = torch.randn(5, 8)
    action, logp, entropy = actor.sample(z)
    assert action.shape == (5, 3) and logp.shape == (5,) and entropy.shape == (5,)
    mode = actor.mode(z)
    if discrete:
        assert torch.all(action.sum(-1) == 1) and torch.all(mode.sum(-1) == 1)
    else:
        assert action.abs().max() <= 1 and mode.abs().max() <= 1


def test_discrete_sampling_follows_the_probabilities():
    torch.manual_seed(0)
    actor = Actor(2, 8, 2, True)
    z = torch.zeros(20000, 2)
    probs = actor.probs(z[:1])[0]
    freq = actor.sample(z)[0].mean(0)
    assert torch.allclose(freq, probs, atol=0.02)


def test_actor_loss_moves_only_the_actor():
    torch.manual_seed(0)
    ac = ActorCritic(ActorCriticConfig(), 8, 16, 2, discrete=True)
    z = torch.randn(4, 6, 8)
    _action, logp, entropy = ac.actor.sample(z)
    returns = torch.randn(4, 6)
    loss = ac.actor_loss(returns, torch.zeros(4, 6), logp, entropy, torch.ones(4, 6), torch.tensor(1.0))
    loss.backward()
    assert all(p.grad is not None for p in ac.actor.parameters())
    assert all(p.grad is None for p in ac.critic.parameters())
    assert all(p.grad is None for p in ac.slow_critic.parameters())


def test_slow_critic_follows_the_critic():
    ac = ActorCritic(ActorCriticConfig(critic_ema=0.5), 4, 8, 2, discrete=True)
    with torch.no_grad():
        for p in ac.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ac.slow_critic.parameters()]
    ac.update_slow_critic()
    for b, s, f in zip(before, ac.slow_critic.parameters(), ac.critic.parameters(), strict=True):
        assert torch.allclose(s, 0.5 * b + 0.5 * f)


def test_return_scale_is_at_least_one_and_tracks_the_spread():
    ac = ActorCritic(ActorCriticConfig(return_ema=1.0), 4, 8, 2, discrete=True)
    assert ac.return_scale(torch.full((10,), 3.0)) == 1.0
    wide = torch.linspace(0, 100, 1001)
    assert ac.return_scale(wide).item() == pytest.approx(90.0, rel=1e-3)


def test_discrete_log_prob_agrees_with_sample():
    torch.manual_seed(0)
    actor = Actor(8, 16, 3, discrete=True)
    z = torch.randn(4, 6, 8)  # (H, N, latent), scored in one call as imagination does
    action, logp, entropy = actor.sample(z)
    scored_logp, scored_entropy = actor.log_prob(z, action)
    assert torch.allclose(scored_logp, logp) and torch.allclose(scored_entropy, entropy)
    scored_logp.sum().backward()
    assert actor.net[0].weight.grad is not None


def test_squashed_log_prob_is_the_tanh_gaussian_density():
    torch.manual_seed(0)
    actor = Actor(8, 16, 2, discrete=False)
    z = torch.randn(6, 8)
    mean, std = actor._gaussian(z)
    noise = actor.noise((6,), z.device)
    action, rollout_std = actor.rollout_action(z, noise)
    pre = mean + std * noise
    reference = torch.distributions.Normal(mean, std).log_prob(pre).sum(-1)
    reference = reference - torch.log(1 - torch.tanh(pre).pow(2) + 1e-6).sum(-1)
    assert torch.allclose(action, torch.tanh(pre)) and torch.equal(rollout_std, std)
    assert torch.allclose(actor.squashed_log_prob(action, rollout_std, noise), reference, atol=1e-5)
