"""Random network distillation: the off-policy learner's novelty bonus (learners/novelty.py)."""

import numpy as np
import pytest
import torch
from conftest import tiny

from dreamercli import checkpoint, runs
from dreamercli.agent import Agent
from dreamercli.buffer import TransitionBatch
from dreamercli.config import ConfigError, validate
from dreamercli.envs import make_env, spec_of
from dreamercli.learners.novelty import MOMENTS_EMA, RandomDistillation, pays, tells_where
from dreamercli.training import train


def test_novelty_falls_where_the_predictor_trained_and_stays_elsewhere():
    torch.manual_seed(0)
    rnd = RandomDistillation(obs_dim=2, hidden_dim=64, layers=2)
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-3)
    seen = torch.randn(256, 2) * 0.1 + torch.tensor([-0.5, 0.0])  # one corner of the space
    unseen = torch.randn(256, 2) * 0.1 + torch.tensor([0.5, 0.05])
    rnd.observe(torch.cat([seen, unseen]))  # moments of both, so that only the training differs
    before_seen = rnd.error(seen).mean().item()
    for _ in range(300):
        opt.zero_grad()
        rnd.error(seen).mean().backward()
        opt.step()
    after_seen, after_unseen = rnd.error(seen).mean().item(), rnd.error(unseen).mean().item()
    assert after_seen < 0.2 * before_seen
    assert after_unseen > 10 * after_seen  # generalisation lowers it too, but far less


def test_observations_are_standardised_per_dimension():
    rnd = RandomDistillation(obs_dim=2, hidden_dim=16, layers=1)
    obs = torch.stack([torch.linspace(-1.2, 0.6, 500), torch.linspace(-0.07, 0.07, 500)], -1)  # MountainCar's ranges
    rnd.observe(obs)
    x = rnd.standardise(obs)
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(2), atol=1e-3)  # velocity as wide as position


def test_the_bonus_is_the_error_over_its_running_mean():
    rnd = RandomDistillation(obs_dim=3, hidden_dim=16, layers=1)
    first = torch.tensor([1.0, 2.0, 3.0])
    rnd.observe_error(first)
    assert torch.allclose(rnd.bonus(first), first / 2.0)  # the first batch sets the mean
    second = torch.tensor([4.0, 4.0, 4.0])
    rnd.observe_error(second)
    mean = (1 - MOMENTS_EMA) * 2.0 + MOMENTS_EMA * 4.0
    assert torch.allclose(rnd.bonus(second), second / mean)


def test_off_builds_nothing_so_older_runs_keep_their_weights():
    env = make_env("Pendulum-v1")
    off = Agent(tiny("Pendulum-v1", algo="model-free", sac_novelty=0.0), spec_of(env))
    on = Agent(tiny("Pendulum-v1", algo="model-free", sac_novelty=0.5), spec_of(env))
    assert off.sac.novelty is None and "sac_novelty" not in off.optimisers()
    extra = set(on.weights()) - set(off.weights())
    assert extra and all(k.startswith("sac.novelty.") for k in extra) and "sac_novelty" in on.optimisers()
    with pytest.raises(ConfigError, match="sac_novelty"):
        validate(tiny("Pendulum-v1", sac_novelty=-1.0))


def test_the_critic_target_carries_the_bonus():
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    agent = Agent(tiny("Pendulum-v1", algo="model-free", sac_novelty=2.0, sac_dropout=0.0), spec_of(env))
    sac = agent.sac
    g = torch.Generator().manual_seed(1)
    batch = TransitionBatch(torch.randn(8, 3, generator=g), torch.rand(8, 1, generator=g) * 2 - 1,
                            torch.zeros(8), torch.randn(8, 3, generator=g), torch.zeros(8), torch.ones(8))
    torch.manual_seed(5)
    losses, _, _ = sac.losses(batch)
    assert "novelty_loss" in losses  # a fresh learner's first update fits the predictor
    error = sac.novelty.error(batch.next_obs).detach()
    assert sac.novelty.error_mean.item() == pytest.approx(error.mean().item())  # the first batch set it
    bonus = sac.novelty.bonus(error)
    paid = TransitionBatch(batch.obs, batch.actions, 2.0 * bonus, batch.next_obs, batch.terminated, batch.steps)
    sac.novelty = None  # the same losses without RND, on rewards that already hold the bonus
    torch.manual_seed(5)
    plain, _, _ = sac.losses(paid)
    assert torch.allclose(losses["q_loss"], plain["q_loss"]) and bonus.std() > 0


def test_model_free_with_novelty_trains_and_checkpoints_it(tmp_path):
    train(tiny("MountainCarContinuous-v0", algo="model-free", sac_novelty=0.5, steps=200, eval_every=100,
               max_episode_steps=100, sac_ratio=2), tmp_path / "run")
    rows = list(runs.read_metrics(tmp_path / "run"))
    assert any("sac/novelty_error" in r for r in rows)
    ckpt = checkpoint.read(tmp_path / "run")
    assert ckpt.part("opt/sac_novelty") and float(ckpt.part("weights")["sac.novelty.updates"]) > 0


def test_the_bonus_shrinks_as_the_values_spread():
    rnd = RandomDistillation(obs_dim=3, hidden_dim=16, layers=1)
    error = torch.tensor([1.0, 2.0, 3.0])
    rnd.observe_error(error)
    flat = rnd.bonus(error)
    rnd.observe_values(torch.linspace(0.0, 0.5, 101))  # a spread below 1 changes nothing
    assert torch.allclose(rnd.bonus(error), flat)
    rnd.value_spread.zero_()
    rnd.observe_values(torch.linspace(0.0, 100.0, 101))  # 5th to 95th percentile: 90
    assert rnd.value_spread.item() == pytest.approx(90.0)
    assert torch.allclose(rnd.bonus(error), flat / 90.0)


def test_the_predictor_fits_on_an_env_steps_first_update_and_the_others_only_pay():
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    sac = Agent(tiny("Pendulum-v1", algo="model-free", sac_novelty=1.0), spec_of(env)).sac
    g = torch.Generator().manual_seed(1)

    def batch():
        return TransitionBatch(torch.randn(16, 3, generator=g), torch.rand(16, 1, generator=g) * 2 - 1,
                               torch.zeros(16), torch.randn(16, 3, generator=g), torch.zeros(16), torch.ones(16))

    def predictor():
        return [p.detach().clone() for p in sac.novelty.predictor.parameters()]

    def critics():
        return [p.detach().clone() for p in sac.critics.parameters()]

    for step in range(2):
        sac.novelty.fit_due = True  # as the trainer marks each env step
        for update in range(3):
            before, stats, q_before = predictor(), sac.novelty.error_mean.item(), critics()
            logged = sac.update(batch())
            moved = any(not torch.equal(a, b) for a, b in zip(before, predictor(), strict=True))
            assert moved == (update == 0), (step, update)
            assert (sac.novelty.error_mean.item() != stats) == (update == 0)
            assert ("sac/novelty_error" in logged) == (update == 0)
            assert any(not torch.equal(a, b) for a, b in zip(q_before, critics(), strict=True))
    assert sac.novelty.updates.item() == 2  # the moments moved once per env step


def test_a_run_fits_the_predictor_once_per_env_step(tmp_path):
    config = tiny("MountainCar-v0", algo="model-free", sac_novelty=1.0, **SMALL)  # quiet rewards: it pays
    agent, _ = train(config, tmp_path / "run")
    rows = list(runs.read_metrics(tmp_path / "run"))
    fits = sum(1 for r in rows if "sac/novelty_error" in r)
    learned = config.train.steps - config.train.prefill  # env steps with updates after the prefill
    assert agent.sac.novelty.updates.item() == pytest.approx(learned, abs=1)
    assert fits > 0


def learner_rows(run_dir):
    """What the learner logged, row by row, without the novelty's own rows."""
    return [{k: v for k, v in r.items() if k.startswith("sac/") and "novelty" not in k}
            for r in runs.read_metrics(run_dir)]


SMALL = {"steps": 200, "eval_every": 100, "sac_batch": 32, "sac_hidden": 32, "sac_ratio": 2}


def test_the_bonus_takes_no_draw_from_the_learners_random_stream(tmp_path):
    # MountainCar-v0 pays -1 per step and a tiny run never reaches the flag, so the bonus pays
    # throughout; one of 1e-12 cannot change a float32 reward of -1: the run is model-free's, to the
    # bit, only if building and paying the novelty networks drew nothing from the global generator.
    off, _ = train(tiny("MountainCar-v0", algo="model-free", sac_novelty=0.0, **SMALL), tmp_path / "off")
    on, _ = train(tiny("MountainCar-v0", algo="model-free", sac_novelty=1e-12, **SMALL), tmp_path / "on")
    assert on.sac.novelty is not None and off.sac.novelty is None
    assert any("sac/novelty_error" in r for r in runs.read_metrics(tmp_path / "on"))  # it did pay
    off_w, on_w = off.policy.state_dict(), on.policy.state_dict()
    assert all(torch.equal(off_w[k], on_w[k]) for k in off_w)
    assert learner_rows(tmp_path / "off") == learner_rows(tmp_path / "on") and any(learner_rows(tmp_path / "on"))


@pytest.mark.parametrize("env_id", [
    "CartPole-v1",  # its random prefill ends episodes before any update
    "Pendulum-v1",  # its reward runs from -16 to 0 over the random prefill
])
def test_where_the_replay_holds_an_end_or_the_reward_varies_the_bonus_never_pays(tmp_path, env_id):
    # A full-size bonus that never pays: the run is the same seed's without it, to the bit.
    off, _ = train(tiny(env_id, algo="model-free", sac_novelty=0.0, **SMALL), tmp_path / "off")
    on, _ = train(tiny(env_id, algo="model-free", sac_novelty=1.0, **SMALL), tmp_path / "on")
    assert on.sac.novelty is not None and not on.sac.novelty.paying
    assert not any("sac/novelty_error" in r for r in runs.read_metrics(tmp_path / "on"))
    off_w, on_w = off.policy.state_dict(), on.policy.state_dict()
    assert all(torch.equal(off_w[k], on_w[k]) for k in off_w)
    assert learner_rows(tmp_path / "off") == learner_rows(tmp_path / "on")


def test_the_bonus_pays_while_the_replays_rewards_are_quiet_and_no_episode_has_ended():
    quiet, ends = np.full(100, -1.0, np.float32), np.zeros(100, np.float32)
    assert pays(quiet, ends, 1.0)
    ended = ends.copy()
    ended[50] = 1.0
    assert not pays(quiet, ended, 1.0)
    small = quiet + np.where(np.arange(100) % 2 == 0, 0.05, -0.05).astype(np.float32)  # a deviation of 0.05
    assert pays(small, ends, 1.0) and not pays(small, ends, 0.3)  # against a tenth of the bonus's size
    rewarded = np.zeros(100, np.float32)
    rewarded[:5] = 1.0  # a sparse reward found on 5% of the replay: a deviation of 0.22
    assert pays(np.zeros(100, np.float32), ends, 1.0) and not pays(rewarded, ends, 1.0)


def pendulum_like(g: torch.Generator, n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Pendulum-v1's reward on random states and actions: -(theta^2 + 0.1 theta_dot^2 + 0.001 a^2)."""
    theta, speed, a = (torch.rand(n, generator=g) * 2 - 1) * 3.14, (torch.rand(n, generator=g) * 2 - 1) * 8, \
        torch.rand(n, 1, generator=g) * 2 - 1
    return -(theta ** 2 + 0.1 * speed ** 2 + 0.001 * a[:, 0] ** 2), a


@pytest.mark.parametrize("scale", [100.0, 1.0, 0.01])
def test_a_dense_reward_of_the_state_tells_where_to_go_and_a_cost_of_the_action_does_not(scale):
    g = torch.Generator().manual_seed(0)
    reward, a = pendulum_like(g)
    assert tells_where(scale * reward, a)  # in any units: at 0.01 as quiet as the cost below
    cost = -0.1 * a[:, 0] ** 2  # MountainCarContinuous-v0 before the flag: the action's cost alone
    assert not tells_where(scale * cost, a)
    assert not tells_where(scale * cost + 0.001 * scale * torch.randn(128, generator=g), a)  # and a little noise
    sparse = torch.zeros(128)
    sparse[:5] = scale  # a sparse reward (BeaconReach) is left to the replay's own test
    assert not tells_where(sparse, a) and not tells_where(torch.full((128,), -scale), a)
    onehot = torch.nn.functional.one_hot(torch.randint(3, (128,), generator=g), 3).float()
    assert not tells_where(scale * onehot @ torch.tensor([-1.0, -0.5, -2.0]), onehot)  # a cost per discrete action
    assert tells_where(scale * reward, onehot)


def test_a_step_whose_first_batch_tells_where_pays_no_bonus_and_fits_nothing():
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    sac = Agent(tiny("Pendulum-v1", algo="model-free", sac_novelty=1.0), spec_of(env)).sac
    g = torch.Generator().manual_seed(1)
    reward, a = pendulum_like(g, 16)
    obs = torch.randn(16, 3, generator=g)
    for quiet, pays_now in ((0.01 * reward, False), (-0.1 * a[:, 0] ** 2, True)):
        sac.novelty.paying, sac.novelty.fit_due = True, True  # as the trainer sets them from a quiet replay
        logged = sac.update(TransitionBatch(obs, a, quiet, obs, torch.zeros(16), torch.ones(16)))
        assert sac.novelty.paying == pays_now and ("sac/novelty_error" in logged) == pays_now
    assert sac.novelty.updates.item() == 1  # fitted once: on the action's cost
