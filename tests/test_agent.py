import numpy as np
import pytest
import torch
from conftest import tiny

from dreamercli.agent import Agent
from dreamercli.buffer import random_replay


def agent_and_replay(env: str, **overrides):
    torch.manual_seed(0)
    buffer, spec = random_replay(env, 300)
    return Agent(tiny(env, **overrides), spec), buffer


@pytest.mark.parametrize("env,noise,expected", [
    ("CartPole-v1", "auto", False), ("Pendulum-v1", "auto", True),
    ("CartPole-v1", "sample", True), ("Pendulum-v1", "mean", False),
])
def test_imagination_noise_follows_the_action_space_under_auto(env, noise, expected):
    agent, _ = agent_and_replay(env, imag_noise=noise)
    assert agent.imagination.samples() is expected


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_behaviour_update_moves_actor_and_critic_but_not_the_model(env):
    agent, buffer = agent_and_replay(env)
    rng = np.random.default_rng(0)
    for _ in range(5):  # a few model updates, so that predicted rewards (and returns) are not all 0
        agent.model_learner.step(buffer.sample(8, 8, rng, agent.device), behave=False)
    batch = buffer.sample(8, 8, rng, agent.device)
    latents = agent.world_model.loss(*batch)[2].detach().flatten(0, 1)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    agent.model_learner.opt.zero_grad()
    metrics = agent.imagination.update(latents)
    # The model is a fixed simulator here: no gradient may reach it, even through the actions.
    assert not agent.model_learner.opt.param.grad.any()
    after = agent.state_dict()
    changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert {"actor", "critic", "slow_critic"} <= changed, changed
    assert not any(k.startswith("world_model.") and not torch.equal(before[k], after[k]) for k in before)
    assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_model_free_builds_no_world_model():
    agent, _ = agent_and_replay("CartPole-v1", algo="model-free")
    assert agent.world_model is None and agent.actor_critic is None and agent.model_learner is None
    names = set(agent.weights())
    assert not any(n.startswith("world_model.") for n in names)
    assert any(n.startswith("actor.") for n in names) and any(n.startswith("sac.critics.") for n in names)


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_hybrid_has_one_policy_that_both_paths_train(env):
    agent, buffer = agent_and_replay(env, algo="hybrid")
    assert agent.sac.actor is agent.actor_critic.actor is agent.policy  # one policy, stored once
    assert sum(n.startswith("actor_critic.actor.") for n in agent.weights()) > 0
    assert not any(n.startswith("sac.actor.") for n in agent.weights())
    rng = np.random.default_rng(0)
    agent.model_learner.step(buffer.sample(8, 8, rng, agent.device), behave=False)
    policy = [p.detach().clone() for p in agent.policy.parameters()]
    critics = [p.detach().clone() for p in agent.sac.critics.parameters()]
    # the imagination path moves the policy (reading decoded latents) and leaves SAC's critics alone
    assert agent.model_learner.step(buffer.sample(8, 8, rng, agent.device), behave=True) is not None
    assert any(not torch.equal(a, b) for a, b in zip(policy, agent.policy.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(critics, agent.sac.critics.parameters(), strict=True))
    # the off-policy path moves the same policy and SAC's critics
    policy = [p.detach().clone() for p in agent.policy.parameters()]
    assert agent.sac.update(buffer.sample_transitions(32, rng, agent.device)) is not None
    assert any(not torch.equal(a, b) for a, b in zip(policy, agent.policy.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(critics, agent.sac.critics.parameters(), strict=True))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_hybrid_paths_step_the_policy_with_their_own_rates_and_moments(env):
    agent, buffer = agent_and_replay(env, algo="hybrid", actor_lr=1e-5, sac_lr=1e-3)
    opts = agent.optimisers()
    imag, sac = opts["actor_imagination"], opts["actor"]
    assert imag.param is sac.param  # one set of weights, two Adam states
    rng = np.random.default_rng(0)
    agent.model_learner.step(buffer.sample(8, 8, rng, agent.device), behave=False)
    before = imag.param.detach().clone()
    assert agent.model_learner.step(buffer.sample(8, 8, rng, agent.device), behave=True) is not None
    # Adam's first step moves each weight by about lr at most: the imagination path's actor_lr
    moved = (imag.param.detach() - before).abs().max().item()
    assert 0 < moved <= 1.01e-5, moved
    assert imag.state_tensors() and not sac.state_tensors()  # SAC's moments untouched
    before = sac.param.detach().clone()
    assert agent.sac.update(buffer.sample_transitions(32, rng, agent.device)) is not None
    moved = (sac.param.detach() - before).abs().max().item()
    assert 1.01e-5 < moved <= 1.01e-3, moved
    assert int(imag.state_tensors()["step"]) == 1 and int(sac.state_tensors()["step"]) == 1
