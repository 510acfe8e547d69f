import numpy as np
import torch

from dreamercli import DreamerLite, runs
from dreamercli.checkpoint import load_agent


def test_design_document_quick_start(tmp_path):
    agent = DreamerLite(env_name="Pendulum-v1", preset="tiny", latent_dim=6, hidden_dim=16)
    summary = agent.train(120, run_dir=tmp_path / "run")
    assert summary["env_steps"] == 120
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # as `dreamer train` draws
    agent.save_models(tmp_path / "model")
    again = DreamerLite(env_name="CartPole-v1").load_models(tmp_path / "model")
    assert again.config == agent.config
    obs = np.array([1.0, 0.0, 0.5], np.float32)
    assert np.array_equal(agent.act(obs), again.act(obs))
    report = again.evaluate(num_episodes=2, render=True)
    assert len(report["returns"]) == 2 and len(report["frames"]) == 201


def test_loading_a_model_uses_its_thread_setting(tmp_path):
    before = torch.get_num_threads()
    try:
        agent = DreamerLite(env_name="CartPole-v1", preset="tiny", threads=1)
        agent.save_models(tmp_path / "model")
        torch.set_num_threads(2)
        DreamerLite(env_name="CartPole-v1").load_models(tmp_path / "model")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_loading_a_run_uses_its_threads_setting_unless_told(cartpole_run):
    assert runs.read_json(cartpole_run / "config.json")["train"]["threads"] == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        agent, config = load_agent(cartpole_run, "cpu")
        assert torch.get_num_threads() == 1 and config.env == "CartPole-v1" and not agent.training
        load_agent(cartpole_run, "cpu", threads=3)  # --threads overrides the run's setting
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_act_carries_the_belief_within_an_episode_and_first_starts_it_afresh():
    agent = DreamerLite(env_name="Pendulum-v1", preset="tiny")  # the default algo: a recurrent belief
    obs = np.array([1.0, 0.0, 0.5], np.float32)
    agent.act(obs, first=True)
    assert not agent.memory.h.any()  # h = 0 at an episode's first observation
    agent.act(obs)
    carried = agent.memory.h.clone()
    assert carried.any()  # the second step reads the first
    agent.act(obs, first=True)
    assert not agent.memory.h.any() and not torch.equal(agent.memory.h, carried)
