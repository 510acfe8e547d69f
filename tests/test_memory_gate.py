"""The memory gate: the off-policy learner reads the belief only once a held-out check says it pays."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny

from dreamercli.agent import Agent
from dreamercli.buffer import ReplayBuffer
from dreamercli.envs import make_env, spec_of
from dreamercli.learners.memory_gate import OPEN_MODEL_SHARE, SHUT_MODEL_SHARE, MemoryGate, history_width
from dreamercli.nets import symlog


def outcomes(gen: torch.Generator, informative: bool, n: int = 2048):
    """Rows of a task whose reward is +1 where the action matches a cue the observation hides, else -1.

    history: as ReplayBuffer.history() gives it, its first observation holding the cue where
    `informative` (a task whose start shows it), or a coin that has nothing to do with it.
    """
    obs = torch.randn(n, 2, generator=gen)
    actions = F.one_hot(torch.randint(0, 2, (n,), generator=gen), 2).float()
    cue = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    rewards = (actions[:, 1] * 2 - 1) * cue
    next_obs = obs + 0.1 * (actions[:, 1:] * 2 - 1)
    other = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    first = torch.stack([cue if informative else other, torch.zeros(n)], -1)
    ones = torch.ones(n, 1)
    history = torch.cat([obs - 0.1, actions, ones, first, ones], -1)
    assert history.shape[1] == history_width(2, 2)
    episodes = torch.randint(0, 1000, (n,), generator=gen)
    return obs, actions, rewards, next_obs, history, episodes


def checked(informative: bool) -> MemoryGate:
    """A gate after one converged check on such rows."""
    torch.manual_seed(0)
    gate = MemoryGate(2, 2, 32, needed_gain=0.3)
    gate.check(*outcomes(torch.Generator().manual_seed(1), informative))
    return gate


def test_a_belief_that_holds_what_the_reward_depends_on_opens_the_gate():
    gate = checked(True)
    assert gate.is_open and gate.gain() >= 0.3


def test_a_belief_that_adds_nothing_to_the_observation_keeps_it_shut():
    gate = checked(False)
    assert not gate.is_open and gate.gain() < 0.3
    assert not torch.isnan(torch.tensor(gate.gain()))  # it was scored, not skipped


def test_too_few_rows_to_hold_out_episodes_leave_the_gate_unscored_and_shut():
    gate = MemoryGate(2, 2, 32, needed_gain=0.3)
    rows = outcomes(torch.Generator().manual_seed(1), True, n=100)
    assert not gate.check(*rows) and not gate.is_open
    assert torch.isnan(torch.tensor(gate.gain()))


def belief_agent() -> Agent:
    config = tiny("CartPole-v1", algo="belief", sac_hidden=16)
    torch.manual_seed(0)
    return Agent(config, spec_of(make_env(config.env)))


def cartpole_replay(steps: int) -> ReplayBuffer:
    """Random-action CartPole-v1 transitions, one-hot actions, episodes numbered from 0."""
    env, rng = make_env("CartPole-v1"), np.random.default_rng(0)
    replay, episode = ReplayBuffer(steps, 4, 2), 0
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        action = int(rng.integers(2))
        nxt, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, np.eye(2, dtype=np.float32)[action], reward, nxt, terminated, episode)
        obs = nxt
        if terminated or truncated:
            (obs, _), episode = env.reset(), episode + 1
    return replay


def test_while_shut_a_memoryless_learner_acts_and_learns_and_opening_hands_over_to_one_reading_h():
    agent = belief_agent()
    obs = torch.randn(5, 4)
    state = torch.randn(5, agent.world_model.latent_dim)
    other = state.clone()
    other[:, :agent.world_model.deter] = torch.randn(5, agent.world_model.deter)  # another h, the same z
    assert not agent.gate.is_open
    assert agent.policy is agent.memoryless_actor and agent.off_policy.sac is agent.memoryless_sac
    assert agent.policy_input(obs, state).shape == (5, 4)  # o_t alone: no columns of zeros to pay for
    assert torch.equal(agent.policy_input(obs, state), agent.policy_input(obs, other))
    before = {k: v.clone() for k, v in agent.weights().items()}
    replay, step = cartpole_replay(200), agent.config.train.prefill
    for _ in agent.learn(replay, step, np.random.default_rng(0)):
        pass
    after = agent.weights()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"memoryless_actor", "memoryless_sac"} <= changed and not changed & {"actor", "sac"}
    agent.gate.open.fill_(1.0)
    assert agent.policy is agent.actor and agent.off_policy.sac is agent.sac
    assert not torch.equal(agent.policy_input(obs, state), agent.policy_input(obs, other))


def test_a_belief_run_saved_before_the_gate_loads_reading_the_belief():
    agent = belief_agent()
    old = {k: v for k, v in agent.weights().items() if not k.startswith(("gate.", "memoryless_", "belief_scale."))}
    fresh = belief_agent()
    fresh.load_weights(old)
    assert fresh.gate.is_open
    h = torch.randn(3, agent.world_model.deter)
    assert torch.equal(fresh.belief_scale(h), h)  # as it read h then: unscaled
    fresh.load_weights(agent.weights())  # a run with the gate: its verdict, shut, comes back
    assert not fresh.gate.is_open


def test_memory_gain_zero_reads_the_belief_from_the_start():
    config = tiny("CartPole-v1", algo="belief", memory_gain=0.0)
    agent = Agent(config, spec_of(make_env(config.env)))
    assert agent.gate is None
    obs, state = torch.randn(3, 4), torch.randn(3, agent.world_model.latent_dim)
    other = state.clone()
    other[:, :agent.world_model.deter] += 1.0
    assert not np.allclose(agent.policy_input(obs, state).numpy(), agent.policy_input(obs, other).numpy())


def test_the_model_defers_most_updates_while_shut_and_catches_up_when_the_gate_opens():
    agent = belief_agent()
    replay, rng = cartpole_replay(300), np.random.default_rng(0)
    tr, learner = agent.config.train, agent.model_learner

    def updates_at(step: int) -> int:
        return sum(1 for _ in learner.learn(replay, step, rng))

    shut = sum(updates_at(tr.prefill + k) for k in range(40))  # pretraining deferred too
    assert shut == math.floor(40 * tr.train_ratio * SHUT_MODEL_SHARE)
    agent.gate.open.fill_(1.0)
    opening = updates_at(tr.prefill + 40)
    # At the opening the deferred pretraining and updates are paid at once, then the model runs at the
    # open rate: as many as a model that never slowed down, and this step's at OPEN_MODEL_SHARE.
    assert shut + opening == math.floor(tr.pretrain + 40 * tr.train_ratio + tr.train_ratio * OPEN_MODEL_SHARE)
    assert updates_at(tr.prefill + 41) + updates_at(tr.prefill + 42) + updates_at(tr.prefill + 43) \
        + updates_at(tr.prefill + 44) == pytest.approx(4 * tr.train_ratio * OPEN_MODEL_SHARE, abs=1)


def test_the_learner_reads_h_standardised_by_its_replayed_spread_when_acting_and_learning():
    agent = belief_agent()
    replay = cartpole_replay(300)
    agent.beliefs.follow(replay, 300)  # the first follow refreshes every replayed belief, and fits the scale
    slots = np.arange(len(replay))
    h = agent.beliefs.inputs(slots)
    spread = agent.world_model.split(agent.beliefs.state[slots])[0].std(0)
    wide = spread > 0.05  # units that move well beyond the floor
    assert wide.sum() > 5
    assert h.mean(0).abs().max() < 1e-3 and torch.allclose(h.std(0)[wide], torch.ones(int(wide.sum())), atol=0.05)
    agent.gate.open.fill_(1.0)
    state = agent.beliefs.state[:4]
    scaled = (agent.world_model.split(state)[0] - agent.belief_scale.mean) / agent.belief_scale.scale
    expected = torch.cat([torch.as_tensor(replay.obs[:4]), scaled], -1)
    assert torch.allclose(agent.policy_input(torch.as_tensor(replay.obs[:4]), state), symlog(expected))
