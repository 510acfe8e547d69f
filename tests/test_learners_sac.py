import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dreamercli.learners.off_policy import actor_turns
from dreamercli.learners.policy import Actor
from dreamercli.learners.sac import REWARD_EMA, SAC, SACSettings, TransitionBatch
from dreamercli.nets import symlog
from dreamercli.optim import FlatAdam

KEYS = {"sac/q_loss", "sac/actor_loss", "sac/alpha", "sac/entropy", "sac/q_mean", "sac/reward_unit"}
DIMS = {True: (4, 2), False: (3, 1)}  # CartPole-v1, Pendulum-v1


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: a second thread only waits on the first, and on shared cores far longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(discrete: bool, **overrides) -> tuple[SAC, Actor]:
    """A small plain SAC (no novelty bonus: test_learners_novelty.py has it) over an actor built as the agent does."""
    cfg = dataclasses.replace(SACSettings(), sac_hidden=32, sac_batch=16, **{"sac_novelty": 0.0, **overrides})
    obs_dim, action_dim = DIMS[discrete]
    actor = Actor(obs_dim, cfg.sac_hidden, action_dim, discrete, cfg.sac_layers)
    return SAC(cfg, obs_dim, action_dim, discrete, actor, FlatAdam(actor, cfg.sac_lr, 100.0)), actor


def random_batch(discrete: bool, size: int = 16, reward: torch.Tensor | None = None) -> TransitionBatch:
    obs_dim, action_dim = DIMS[discrete]
    if discrete:
        actions = F.one_hot(torch.randint(action_dim, (size,)), action_dim).float()
    else:
        actions = torch.rand(size, action_dim) * 2 - 1
    return TransitionBatch(torch.randn(size, obs_dim) * 3, actions,
                           torch.randn(size) if reward is None else reward,
                           torch.randn(size, obs_dim) * 3, (torch.rand(size) < 0.2).float(), torch.ones(size))


def snapshot(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("critics", [2, 3])
def test_update_shapes_and_metrics(discrete, critics):
    torch.manual_seed(0)
    sac, _ = build(discrete, sac_critics=critics)
    action_dim = DIMS[discrete][1]
    batch = random_batch(discrete)
    f = sac.features(batch.obs)
    assert torch.equal(f, symlog(batch.obs))
    x = f if discrete else torch.cat([f, batch.actions], -1)
    assert sac.critics.q(x).shape == (critics, 16, action_dim if discrete else 1)
    metrics = sac.update(batch)
    assert metrics is not None and set(metrics) == KEYS
    assert all(isinstance(v, float) and v == v for v in metrics.values()), metrics
    assert metrics["sac/alpha"] == pytest.approx(sac.log_alpha.exp().item(), rel=1e-6)


@pytest.mark.parametrize("discrete", [True, False])
def test_target_critics_move_by_tau(discrete):
    torch.manual_seed(1)
    sac, _ = build(discrete, sac_tau=0.1)
    before = snapshot(sac.target_critics)
    assert sac.update(random_batch(discrete)) is not None
    tau = sac.cfg.sac_tau
    for old, new, online in zip(before, sac.target_critics.parameters(), sac.critics.parameters(), strict=True):
        assert not new.requires_grad
        assert torch.allclose(new, old + tau * (online - old), atol=1e-6)


@pytest.mark.parametrize("discrete", [True, False])
def test_actor_loss_reaches_only_the_actor(discrete):
    torch.manual_seed(2)
    sac, actor = build(discrete)
    losses, _, _ = sac.losses(random_batch(discrete))
    losses["actor_loss"].backward()
    assert sac.critic_opt.param.grad.abs().sum() == 0  # the critics are read, never pushed up
    assert sac.alpha_opt.param.grad.abs().sum() == 0
    assert actor.net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("discrete", [True, False])
def test_critic_fits_a_known_reward(discrete):
    torch.manual_seed(3)
    sac, _ = build(discrete, sac_dropout=0.0, sac_lr=3e-3)
    batch = random_batch(discrete, reward=torch.linspace(-2.0, 2.0, 16))
    batch = batch._replace(terminated=torch.ones(16))  # no bootstrap: Q(s, a) should reach r exactly
    first = sac.update(batch)["sac/q_loss"]
    for _ in range(300):
        last = sac.update(batch)["sac/q_loss"]
    assert last < 0.05 * first, (first, last)


@pytest.mark.parametrize("discrete", [True, False])
def test_non_finite_reward_changes_nothing(discrete):
    torch.manual_seed(4)
    sac, actor = build(discrete)
    sac.update(random_batch(discrete))  # Adam moments exist, so a stray step would show
    before = snapshot(sac, actor)
    for bad in (float("nan"), float("inf")):
        reward = torch.randn(16)
        reward[3] = bad
        assert sac.update(random_batch(discrete, reward=reward)) is None
        for old, new in zip(before, snapshot(sac, actor), strict=True):
            assert torch.equal(old, new)
    assert sac.update(random_batch(discrete)) is not None  # and the next good batch trains again


@pytest.mark.parametrize("discrete", [True, False])
def test_trains_the_agents_actor(discrete):
    torch.manual_seed(5)
    sac, actor = build(discrete)
    assert sac.actor is actor
    assert not any(isinstance(m, Actor) for m in sac.modules())  # no policy of its own
    assert not any(key.startswith("actor") for key in sac.state_dict())  # nor its weights
    assert {"critics.weights.0", "target_critics.weights.0", "log_alpha"} <= set(sac.state_dict())
    before = snapshot(actor)
    sac.update(random_batch(discrete))
    assert any(not torch.equal(old, new) for old, new in zip(before, snapshot(actor), strict=True))


def test_temperature_follows_the_entropy():
    torch.manual_seed(6)
    sac, _ = build(True)
    sac.target_entropy = 10.0  # unreachable: the temperature can only rise
    start = sac.log_alpha.item()
    for _ in range(5):
        sac.update(random_batch(True))
    assert sac.log_alpha.item() > start


@pytest.mark.parametrize("p", [0.0, 0.01, 0.1])
def test_dropout_drops_units_at_the_configured_rate_anywhere(p):
    torch.manual_seed(5)
    sac, _ = build(False, sac_dropout=p)
    h = torch.rand(2, 256, 128) + 1.0  # never zero before dropout
    first = sac.critics.dropout(h.clone()) == 0
    second = sac.critics.dropout(h.clone()) == 0
    n = h.numel()
    for zeros in (first, second):
        # round(p n) draws with replacement: p (1 - p / 2) of the units, give or take a few repeats.
        assert abs(zeros.sum().item() - p * (1 - p / 2) * n) <= 3 * (p * p * n) ** 0.5 + 1, (zeros.sum(), p * n)
        for quarter in zeros.view(4, -1):  # spread over the whole tensor, not bunched at its start
            assert abs(quarter.sum().item() - zeros.sum().item() / 4) <= 5 * (p * n / 4) ** 0.5 + 1
    if p > 0:
        assert not torch.equal(first, second)  # fresh draws each call
        assert (first & second).sum().item() < 2 * p * first.sum().item() + 5  # independent, not one mask


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize(("critics", "p"), [(2, 0.0), (2, 0.2), (3, 0.05)])
def test_the_critics_gradient_by_hand_is_autograds(discrete, critics, p):
    torch.manual_seed(11)
    sac, _ = build(discrete, sac_critics=critics, sac_dropout=p)
    x = torch.randn(16, 4) * 2  # CartPole-v1 obs, or Pendulum-v1 obs and action
    upstream = torch.randn(critics, 16, DIMS[discrete][1] if discrete else 1)  # any d loss / d q
    torch.manual_seed(12)  # the same dropout draws for both
    (sac.critics.q(x) * upstream).sum().backward()
    by_autograd = sac.critic_opt.param.grad.clone()
    sac.critic_opt.param.grad.fill_(7.0)  # backward() writes over whatever is there
    torch.manual_seed(12)
    q, tape = sac.critics.q_taped(x)
    sac.critics.backward(tape, upstream)
    torch.manual_seed(12)
    assert torch.allclose(q, sac.critics.q(x), atol=1e-6)
    assert by_autograd.abs().sum() > 0
    assert torch.allclose(sac.critic_opt.param.grad, by_autograd, atol=1e-5), \
        (sac.critic_opt.param.grad - by_autograd).abs().max()


@pytest.mark.parametrize("discrete", [True, False])
def test_a_steps_updates_read_the_policy_at_s_prime_as_each_would_alone(discrete):
    # One pass of the policy over the critics-only updates' s' before the first actor turn, fresh ones after.
    torch.manual_seed(13)
    batch = random_batch(discrete, size=64)
    turns = [False, False, True, False]  # the last reads the policy the third one moved
    results = []
    for together in (True, False):
        torch.manual_seed(14)
        sac, actor = build(discrete)
        if not discrete:  # sampled actions at s': the same (zero) noise whatever the draw's size
            sac.actor.noise = lambda shape, device: torch.zeros(*shape, 1)
        if together:
            metrics = list(sac.updates(batch, turns))
        else:
            parts = [TransitionBatch(*(x[16 * k:16 * (k + 1)] for x in batch)) for k in range(4)]
            metrics = [sac.update(part, actor_turn) for part, actor_turn in zip(parts, turns, strict=True)]
        results.append((metrics, snapshot(sac.critics, actor)))
    (together, weights_together), (alone, weights_alone) = results
    assert [set(m) for m in together] == [set(m) for m in alone] and "sac/actor_loss" in together[2]
    assert together == alone
    assert all(torch.equal(a, b) for a, b in zip(weights_together, weights_alone, strict=True))


@pytest.mark.parametrize("discrete", [True, False])
def test_a_critic_update_moves_the_critics_and_leaves_actor_and_temperature(discrete):
    torch.manual_seed(7)
    sac, actor = build(discrete)
    sac.update(random_batch(discrete))  # Adam moments exist, so a stray actor step would show
    policy, critics, alpha = snapshot(actor), snapshot(sac.critics), sac.log_alpha.item()
    grad = sac.actor_opt.param.grad.clone()  # the full update's, still there
    metrics = sac.update(random_batch(discrete), actor=False)
    assert set(metrics) == {"sac/q_loss", "sac/q_mean", "sac/reward_unit"}
    assert all(torch.equal(old, new) for old, new in zip(policy, snapshot(actor), strict=True))
    assert sac.log_alpha.item() == alpha
    assert any(not torch.equal(old, new) for old, new in zip(critics, snapshot(sac.critics), strict=True))
    assert torch.equal(sac.actor_opt.param.grad, grad)  # no backward reached the actor


@pytest.mark.parametrize("discrete", [True, False])
def test_a_critic_update_fits_the_critics_as_a_full_update_does(discrete):
    # The same target and critic loss: with the actor and temperature fixed, the critics' step is the same.
    torch.manual_seed(8)
    batch = random_batch(discrete)
    noise = torch.randn(32, 1)
    steps = []
    for actor in (True, False):
        torch.manual_seed(9)
        sac, _ = build(discrete, sac_dropout=0.0)
        if not discrete:  # the same action noise for s' in both: the full update draws s's first
            sac.actor.noise = lambda shape, device: noise[-shape[0]:]
        sac.update(batch, actor)
        steps.append(snapshot(sac.critics))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*steps, strict=True))


def test_the_actor_takes_the_last_of_a_steps_updates_as_many_as_are_owed():
    assert actor_turns(10, 1.0) == [False] * 9 + [True]
    assert actor_turns(10, 2.7) == [False] * 8 + [True] * 2  # whole turns only; the rest waits for the next step
    assert actor_turns(3, 10.0) == [True] * 3 and actor_turns(4, 0.5) == [False] * 4 and actor_turns(0, 3.0) == []


def trained(discrete: bool, rewards: list[torch.Tensor], seed: int = 15) -> SAC:
    """A SAC after one update per reward tensor, on batches that differ in nothing else; the actor in every
    third update. The same seed draws the same weights, batches, dropout and action noise."""
    torch.manual_seed(seed)
    sac, _ = build(discrete)
    g = torch.Generator().manual_seed(seed)
    for k, reward in enumerate(rewards):
        torch.manual_seed(seed + 1 + k)  # the same draws inside the update, whatever the rewards
        batch = random_batch(discrete, reward=reward)
        obs_dim = DIMS[discrete][0]
        batch = batch._replace(obs=torch.randn(16, obs_dim, generator=g),
                               next_obs=torch.randn(16, obs_dim, generator=g))
        assert sac.update(batch, actor=k % 3 == 2) is not None
    return sac


@pytest.mark.parametrize("discrete", [True, False])
def test_rewards_times_c_train_as_the_rewards_in_units_of_their_size(discrete):
    # Rewards of Pendulum-v1's size (-16 to 0), and the same times 100 and times 0.25: the critics learn
    # rewards / max(1, running 95th percentile of |reward|), the same numbers in all three.
    g = torch.Generator().manual_seed(0)
    rewards = [-16 * torch.rand(16, generator=g) for _ in range(12)]
    base = trained(discrete, rewards)
    assert base.reward_unit().item() > 10
    for c in (100.0, 0.25):
        scaled = trained(discrete, [c * r for r in rewards])
        assert scaled.reward_scale.item() == pytest.approx(c * base.reward_scale.item(), rel=1e-5)
        for a, b in zip(snapshot(base.critics, base.actor), snapshot(scaled.critics, scaled.actor), strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (c, (a - b).abs().max())
        assert scaled.log_alpha.item() == pytest.approx(base.log_alpha.item(), abs=1e-6)


@pytest.mark.parametrize("discrete", [True, False])
def test_a_constant_reward_times_100_trains_to_the_bit_as_a_reward_of_1(discrete):
    # CartPole-v1 and the same task times 100: 100 / 100 is 1 exactly, and so is every later step.
    ones = [torch.ones(16) for _ in range(12)]
    plain, scaled = trained(discrete, ones), trained(discrete, [100 * r for r in ones])
    assert plain.reward_unit().item() == 1.0 and scaled.reward_unit().item() == 100.0
    for a, b in zip(snapshot(plain.critics, plain.actor), snapshot(scaled.critics, scaled.actor), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("discrete", [True, False])
def test_rewards_within_one_reach_the_critics_as_they_are(discrete):
    # Rewards of +-1 or less (CartPole, Acrobot, the sparse goals): the unit stays exactly 1, and the
    # targets are built from the batch's own reward tensor, so such a task trains as it did before.
    g = torch.Generator().manual_seed(1)
    sac = trained(discrete, [torch.rand(16, generator=g) * 2 - 1 for _ in range(6)] + [torch.ones(16), -torch.ones(16)])
    assert 0.9 < sac.reward_scale.item() <= 1.0 and sac.reward_unit().item() == 1.0
    batch = random_batch(discrete, reward=torch.rand(16) * 2 - 1)
    rewards, _, _ = sac.bootstrap(batch)
    assert rewards is batch.rewards


def test_the_reward_scale_follows_the_95th_percentile_of_the_batches():
    torch.manual_seed(16)
    sac, _ = build(False)
    assert sac.reward_scale.item() == 0.0 and sac.reward_unit().item() == 1.0  # unset: the first batch sets it
    first = -torch.arange(1.0, 101.0)  # |r| = 1 .. 100: its 95th percentile (an order statistic) is 95
    sac.observe_rewards(first)
    assert sac.reward_scale.item() == 95.0 and sac.reward_unit().item() == 95.0
    sac.observe_rewards(first * 3)  # then a step of REWARD_EMA toward each batch's
    assert sac.reward_scale.item() == pytest.approx(95.0 + REWARD_EMA * (285.0 - 95.0))
    before = sac.reward_scale.item()
    sac.observe_rewards(torch.tensor([1.0, float("nan")]))  # a non-finite batch moves nothing
    assert sac.reward_scale.item() == before
    for _ in range(2000):
        sac.observe_rewards(torch.full((16,), 0.5))  # rewards inside [-1, 1]: the unit falls back to 1
    assert sac.reward_scale.item() == pytest.approx(0.5, abs=1e-3) and sac.reward_unit().item() == 1.0
    assert "reward_scale" in sac.state_dict()  # saved with the weights, so that a resumed run goes on
