import json
import sys

import numpy as np
import pytest
import torch
from conftest import tiny
from PIL import Image
from typer.testing import CliRunner

from dreamercli import runs
from dreamercli.agent import Agent
from dreamercli.buffer import random_replay
from dreamercli.checkpoint import load_agent
from dreamercli.cli import app
from dreamercli.dream_render import STATE_RENDERERS, has_state_renderer, obs_labels, run_imagine
from dreamercli.envs import make_env, spec_of, to_env_action
from dreamercli.imagine import (
    Rollouts,
    Start,
    choose_starts,
    open_start,
    policy_episode,
    rollout,
    step_metrics,
    table_steps,
)

runner = CliRunner()


@pytest.fixture
def untrained_run(tmp_path):
    """Write a run folder of untrained weights for env_id (quick: no training)."""

    def make(env_id: str, **overrides):
        config = tiny(env_id, **overrides)
        spec = spec_of(make_env(config.env))
        run = tmp_path / "-".join([env_id.replace(":", "_"), *map(str, overrides.values())])
        runs.write_config(run, config, spec)
        runs.save_weights(run, Agent(config, spec).weights())
        return run

    return make


def test_step_metrics_mask_steps_after_the_real_end():
    # Two rollouts, H = 2, one obs dim; rollout 1 terminates at step 1.
    nan = np.nan
    r = Rollouts(
        starts=[Start("reset", 0), Start("reset", 1)],
        real_obs=np.array([[[0.0], [0.0]], [[1.0], [2.0]], [[2.0], [nan]]]),
        imagined_obs=np.array([[[0.0], [0.5]], [[1.5], [1.0]], [[1.0], [9.0]]]),
        real_reward=np.array([[1.0, 1.0], [1.0, nan]]),
        imagined_reward=np.array([[0.0, 1.5], [1.0, 5.0]]),
        real_cont=np.array([[1.0, 0.0], [1.0, nan]]),
        imagined_cont=np.array([[0.9, 0.9], [0.2, 0.9]]),
        actions=np.zeros((2, 2, 1)), env_actions=[[0, 0], [0, 0]],
        ended_at=[None, 1], terminated=[False, True])
    m = step_metrics(r)
    assert m["rollouts_left"] == [2, 1]
    assert m["obs_err_mean"] == pytest.approx([0.75, 1.0])  # |1.5-1|, |1-2|; then only rollout 0
    assert m["obs_err_std"] == pytest.approx([0.25, 0.0])
    assert m["reward_err_mean"] == pytest.approx([0.75, 0.0])
    assert m["cont_agreement"] == pytest.approx([0.5, 0.0])  # rollout 1 missed its termination
    assert m["reconstruction_err"] == pytest.approx(0.25)
    assert table_steps(15) == [1, 5, 10, 15] and table_steps(3) == [1, 3] and table_steps(10) == [1, 5, 10]


def test_starts_split_and_replay_exactly(untrained_run):
    agent, config = load_agent(untrained_run("Pendulum-v1"), "cpu")
    starts = choose_starts(agent, config.env, 5, seed=4, horizon=15)
    assert [s.kind for s in starts] == ["reset"] * 3 + ["episode"] * 2
    assert [s.reset_seed for s in starts] == [4, 5, 6, 4, 4]
    assert all(0 <= s.step <= 200 - 15 for s in starts[3:])
    # Replaying an action prefix reaches the same state as the episode it came from.
    s = starts[-1]
    env = make_env(config.env)
    obs, _ = env.reset(seed=4)
    for a in s.prefix:
        obs = env.step(to_env_action(agent.spec, a))[0]
    assert np.array_equal(open_start(config.env, agent.spec, s)[1], obs)


def test_a_never_ending_env_is_cut_at_its_step_limit(tmp_path):
    config = tiny("custom_env:NeverEnds", max_episode_steps=7)
    spec = spec_of(make_env(config.env))
    agent = Agent(config, spec)
    assert len(policy_episode(agent, config.env, 0, max_episode_steps=7)) == 7
    starts = choose_starts(agent, config.env, 2, seed=0, horizon=10, max_episode_steps=7)
    r = rollout(agent, config.env, starts, 10, max_episode_steps=7)
    assert r.ended_at == [7, 7] and r.terminated == [False, False]
    # run_imagine takes the limit from the run's config.json.
    run = tmp_path / "never-ends"
    runs.write_config(run, config, spec)
    runs.save_weights(run, agent.weights())
    report = run_imagine(run, horizon=10, rollouts=2, device="cpu", note=lambda _: None,
                         env="custom_env:NeverEnds")
    assert report["metrics"]["rollouts_left"] == [2] * 7 + [0] * 3


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                                    "MountainCarContinuous-v0", "Acrobot-v1"])
def test_state_renderers_invert_the_observation(env_id):
    env = make_env(env_id, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs = env.step(env.action_space.sample())[0]
    copy = make_env(env_id)
    copy.reset(seed=1)
    set_state, labels = STATE_RENDERERS[type(env.unwrapped)]
    set_state(copy.unwrapped, obs, None)
    assert np.allclose(copy.unwrapped.state, env.unwrapped.state, atol=1e-5)
    assert len(labels) == len(obs) and has_state_renderer(env_id)
    assert not has_state_renderer("custom_env:Reach")
    assert obs_labels("custom_env:Reach", 1) == ["obs[0]"]


def _world_model_only(agent: Agent, env_id: str, updates: int) -> None:
    """Fit only the world model, briefly, on 400 random-action steps."""
    buffer, _ = random_replay(env_id, 400)
    rng = np.random.default_rng(0)
    opt = agent.optimisers()["world_model"]  # by its stable name in the checkpoint format
    for _ in range(updates):
        batch = buffer.sample(16, agent.config.world_model.seq_len, rng, agent.device)
        losses, _, _ = agent.world_model.loss(*batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()


def test_trained_model_imagines_better_than_untrained():
    # Same architecture, same initial weights, same start states, same random actions.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = tiny("CartPole-v1", wm_lr=3e-3)
    spec = spec_of(make_env(config.env))
    trained, untrained = Agent(config, spec), Agent(config, spec)
    untrained.load_weights(trained.weights())
    _world_model_only(trained, config.env, updates=150)
    starts = [Start("reset", 100 + i) for i in range(16)]
    metrics = [step_metrics(rollout(a, config.env, starts, 15, "random", seed=7)) for a in (trained, untrained)]
    assert metrics[0]["rollouts_left"][14] >= 4  # enough real episodes last 15 random steps
    errors = [m["obs_err_mean"] for m in metrics]
    assert errors[0][14] < 0.7 * errors[1][14], errors
    assert np.mean(errors[0]) < 0.7 * np.mean(errors[1]), errors


def test_cli_imagine_writes_all_outputs(untrained_run):
    cartpole_run = untrained_run("CartPole-v1")
    result = runner.invoke(app, ["imagine", str(cartpole_run), "--horizon", "6", "--rollouts", "4",
                                 "--seed", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "beyond the training horizon 5" in result.output
    assert "reward" in result.output and "no state renderer" not in result.output
    out = cartpole_run / "imagine"
    data = json.loads((out / "imagine.json").read_text())
    assert data["horizon"] == 6 and data["seed"] == 2 and data["actions"] == "policy"
    assert [r["start"] for r in data["rollouts"]] == ["reset", "reset", "episode", "episode"]
    first = data["rollouts"][0]
    assert len(first["real_obs"]) == len(first["imagined_obs"]) == 7
    assert len(first["imagined_reward"]) == len(first["imagined_cont"]) == 6
    assert len(data["metrics"]["obs_err_mean"]) == 6
    assert (out / "imagine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gif = Image.open(out / "dream.gif")
    assert gif.n_frames == 2 * 7  # two recorded rollouts of H + 1 frames


def test_env_without_state_renderer_falls_back_to_plots(untrained_run):
    run = untrained_run("custom_env:Reach")
    result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2",
                                 "--actions", "random", "--env", "custom_env:Reach"])
    assert result.exit_code == 0, result.output
    assert "no state renderer" in result.output and "line plots" in result.output
    assert Image.open(run / "imagine" / "dream.gif").n_frames == 2 * 4


def test_without_pygame_the_dream_is_plotted_and_nothing_is_lost(untrained_run, monkeypatch):
    # CartPole's renderer imports pygame at its first render: a None entry in sys.modules makes that
    # import fail as on an install without gymnasium's classic-control extra.
    monkeypatch.setitem(sys.modules, "pygame", None)
    run = untrained_run("CartPole-v1")
    result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "pygame" in result.output and "line plots" in result.output
    assert json.loads((run / "imagine" / "imagine.json").read_text())["horizon"] == 3
    assert Image.open(run / "imagine" / "dream.gif").n_frames == 2 * 4


@pytest.mark.parametrize("args,message", [
    (["--horizon", "0"], "--horizon must be > 0"),
    (["--horizon", "-2"], "--horizon must be > 0"),
    (["--rollouts", "0"], "--rollouts must be > 0"),
    (["--actions", "bogus"], "bogus"),
])
def test_bad_imagine_input_exits_2(untrained_run, args, message):
    result = runner.invoke(app, ["imagine", str(untrained_run("CartPole-v1")), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_imagine_needs_a_run_folder(tmp_path):
    missing = runner.invoke(app, ["imagine", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not found" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["imagine", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "not a dreamer run folder" in empty.output
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_run_without_a_world_model_says_what_to_do_instead(untrained_run):
    run = untrained_run("CartPole-v1", algo="model-free")
    result = runner.invoke(app, ["imagine", str(run)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "is a model-free run: it has no world model to imagine with" in result.output
    assert "Train with --algo dreamer, mbpo, hybrid or belief to get a model to imagine with" in result.output
    assert f"`dreamer evaluate {run}` shows this run's policy" in result.output
    assert not (run / "imagine").exists()


def test_the_probe_scores_a_linear_read_out_on_held_out_steps():
    from dreamercli.imagine import _probe_r2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = np.stack([x @ rng.normal(size=6), rng.normal(size=400)], 1)  # one readable output, one noise
    r2 = _probe_r2(x[:200], y[:200], x[200:], y[200:])
    assert r2[0] > 0.99 and abs(r2[1]) < 0.1


def test_imagine_on_a_belief_run_says_what_the_belief_recovers_of_the_hidden_state(untrained_run):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # suite_envs, as the suite runs
    run = untrained_run("suite_envs:CartPoleNoVel", algo="belief")
    result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2", "--trust-env-code"])
    assert result.exit_code == 0, result.output
    assert "cart velocity" in result.output and "from the belief" in result.output
    probe = json.loads((run / "imagine" / "imagine.json").read_text())["belief_probe"]
    assert probe["hidden"] == ["cart velocity", "pole angular velocity"] and probe["steps"] >= 600
    assert all(np.isfinite(probe["r2_belief"])) and all(np.isfinite(probe["r2_observation"]))
    plain = untrained_run("CartPole-v1", algo="belief")  # an env that names nothing hidden: no probe
    assert runner.invoke(app, ["imagine", str(plain), "--horizon", "3", "--rollouts", "2"]).exit_code == 0
    assert "belief_probe" not in json.loads((plain / "imagine" / "imagine.json").read_text())
