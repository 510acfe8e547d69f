"""Learning from pixels: frames resized and kept as uint8, the conv encoder and decoder, a pixel run end to end."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Crash, crash_at, rows_without_timings, tiny
from PIL import Image
from safetensors.torch import load_file

from dreamercli import checkpoint, runs
from dreamercli.agent import Agent
from dreamercli.buffer import ReplayBuffer, random_replay
from dreamercli.config import ObservationConfig
from dreamercli.dream_render import run_imagine
from dreamercli.envs import make_env, resize_frame, spec_of
from dreamercli.evaluation import evaluate_policy
from dreamercli.learners.belief import REFRESH_EVERY, SETTLE_CAP, SETTLED_REFRESHES, drift
from dreamercli.models.conv import ConvDecoder, ConvEncoder, conv_layers
from dreamercli.models.rssm import RSSM
from dreamercli.nets import symlog
from dreamercli.training import resume, train

# A pixel CartPole-v1 run small enough for a test: 16x16 frames, checkpoints at steps 80 and 160.
PIXELS = {"algo": "belief", "pixels": True, "frame_size": 16, "steps": 160, "prefill": 60, "pretrain": 10,
          "eval_every": 80, "eval_episodes": 1, "log_every": 40, "sac_ratio": 2.0,
          "settle_drift": 0.0}  # SAC from the prefill's end: a test run is too short for the states to settle


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A tiny pixel CartPole-v1 run folder, written by the real training code."""
    run_dir = tmp_path_factory.mktemp("pixels") / "run"
    train(tiny("CartPole-v1", **PIXELS), run_dir)
    return run_dir


def test_rendered_frames_become_uint8_observations_of_frame_size():
    env = make_env("CartPole-v1", seed=0, observation=ObservationConfig(pixels=True, frame_size=32))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    assert np.array_equal(obs, resize_frame(env.render(), 32))  # the frame of the state reached, resized
    assert env.render().shape == (400, 600, 3)  # the env still renders at its own size
    spec = spec_of(env)
    assert spec.image and spec.obs_shape == (32, 32, 3) and spec.obs_dim == 32 * 32 * 3
    for _ in range(5):  # a step moves the cart by less than a pixel; five show
        moved, *_ = env.step(1)
    assert not np.array_equal(moved, obs)
    env.close()


def test_resizing_keeps_a_flat_colour_and_the_channels():
    grey = np.full((40, 60, 1), 77, np.uint8)
    assert np.array_equal(resize_frame(grey, 16), np.full((16, 16, 1), 77, np.uint8))
    half = np.zeros((32, 32, 3), np.uint8)
    half[:, 16:] = 255  # left black, right white: each side stays so, downscaled
    small = resize_frame(half, 16)
    assert small.dtype == np.uint8 and (small[:, :7] == 0).all() and (small[:, 9:] == 255).all()


def test_the_replay_keeps_images_as_uint8():
    buffer = ReplayBuffer(10, 16 * 16 * 3, 2, (16, 16, 3))
    assert buffer.obs.dtype == buffer.next_obs.dtype == np.uint8 and buffer.obs.shape == (10, 16, 16, 3)
    frame = np.full((16, 16, 3), 200, np.uint8)
    for t in range(4):
        buffer.add(frame, np.eye(2)[t % 2], 1.0, frame, False, 0)
    batch = buffer.sequences_at(np.array([0]), 3, torch.device("cpu"))
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (1, 3, 16, 16, 3) and batch.obs.max() == 200
    assert buffer.obs.nbytes == 10 * 16 * 16 * 3  # a byte a pixel, a quarter of float32


@pytest.mark.parametrize("size, layers", [(16, 2), (32, 3), (64, 4)])
def test_encoder_and_decoder_shapes(size, layers):
    assert conv_layers(size) == layers
    encoder, decoder = ConvEncoder((size, size, 3), 24), ConvDecoder(40, (size, size, 3))
    assert [c.out_channels for c in encoder.convs] == [16, 32, 64, 128][:layers]  # widths double
    assert [c.out_channels for c in decoder.deconvs] == [*[64, 32, 16][4 - layers:], 3]  # mirrored
    frames = torch.randint(0, 256, (2, 5, size, size, 3), dtype=torch.uint8)
    assert encoder(frames).shape == (2, 5, 24)
    assert decoder(torch.randn(2, 5, 40)).shape == (2, 5, size, size, 3)


def test_a_frame_that_does_not_halve_down_to_4x4_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        conv_layers(48)
    with pytest.raises(ValueError, match="at least 16"):
        conv_layers(8)


def test_the_rssm_learns_to_reconstruct_frames_on_pixels_in_half_units():
    torch.set_num_threads(1)  # as every run does: two threads on busy cores take several times as long
    torch.manual_seed(0)
    model = RSSM(tiny("CartPole-v1").world_model, 16 * 16 * 3, 2, (16, 16, 3))
    frames = torch.randint(0, 256, (4, 4, 16, 16, 3), dtype=torch.uint8)
    args = (frames, torch.zeros(4, 4, 2), torch.zeros(4, 4), frames, torch.zeros(4, 4), torch.ones(4, 4, dtype=bool))
    states = model.observe(frames, torch.zeros(4, 3, 2))[0]
    expected = (model.decoder(states) - (frames / 255 - 0.5)).pow(2).sum((-3, -2, -1))  # summed over pixels
    assert torch.allclose(model.recon_loss(states, frames), expected)
    decoded = model.decode(states)
    assert decoded.shape == (4, 4, 16, 16, 3) and decoded.min() >= 0 and decoded.max() <= 255
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(12):
        losses = model.loss(*args)[0]
        first = first or losses["recon"].item()
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert losses["recon"].item() < 0.8 * first


def test_the_learner_reads_the_model_state_never_raw_pixels():
    config = tiny("CartPole-v1", **PIXELS)
    spec = spec_of(make_env("CartPole-v1", observation=config.observation))
    agent = Agent(config, spec)
    state_dim = agent.world_model.latent_dim
    assert agent.reads_state and agent.sac.critics.weights[0].shape[1] == state_dim  # s_t = [h_t, z_t] only
    memory = agent.memory()
    obs = make_env("CartPole-v1", observation=config.observation).reset(seed=0)[0].copy()
    agent.act(obs, deterministic=True, memory=memory)
    state = torch.cat([memory.h, memory.z], -1)
    assert torch.equal(agent.policy_input(torch.as_tensor(obs[None], dtype=torch.float32), state), symlog(state))


def test_a_pixel_run_trains_evaluates_and_stores_frames_as_uint8(pixel_run):
    config, spec = runs.load_config(pixel_run)
    assert config.observation.pixels and spec.obs_shape == (16, 16, 3)
    assert json.loads((pixel_run / "config.json").read_text())["observation"] == {"pixels": True, "frame_size": 16}
    assert "CartPole-v1-pixels16-belief-s0-" in runs.default_name(config)
    saved = checkpoint.read(pixel_run).part("replay")
    assert saved["obs"].dtype == saved["next_obs"].dtype == torch.uint8 and saved["obs"].shape == (160, 16, 16, 3)
    weights = load_file(str(pixel_run / runs.WEIGHTS_FILE))
    assert weights["world_model.embed.convs.0.weight"].shape == (16, 3, 4, 4)  # the conv encoder, trained
    summary = json.loads((pixel_run / "summary.json").read_text())
    assert summary["env_steps"] == 160 and summary["final_eval"] > 0
    agent, _ = checkpoint.load_agent(pixel_run, "cpu")
    result = evaluate_policy(agent, config.env, 2, seed=5, record=True)
    assert len(result.frames) == result.lengths[0] + 1  # the frames the agent saw: the reset's and each step's
    first = make_env("CartPole-v1", observation=config.observation).reset(seed=5)[0]
    assert np.array_equal(result.frames[0], first) and result.frames[0].shape == (16, 16, 3)


def test_imagine_on_a_pixel_run_shows_real_frames_beside_the_dream(pixel_run):
    report = run_imagine(pixel_run, horizon=4, rollouts=2, device="cpu", note=lambda _: None)
    assert report["gif_kind"] == "pixels" and report["obs_labels"] == []
    errors = report["metrics"]["obs_err_mean"]
    assert len(errors) == 4 and all(0 < e < 255 for e in errors)  # in pixel units, against the horizon
    gif = Image.open(report["gif"])
    assert gif.n_frames == 2 * (4 + 1)  # two recorded rollouts, steps 0..4
    assert gif.size[0] == 2 * 240 + 6  # real and dream side by side, each a square 240-pixel panel
    assert (pixel_run / "imagine" / "imagine.png").stat().st_size > 0
    assert "real_obs" not in json.loads((pixel_run / "imagine" / "imagine.json").read_text())["rollouts"][0]


def test_an_interrupted_pixel_run_resumed_equals_the_uninterrupted_one(pixel_run, tmp_path):
    config = tiny("CartPole-v1", **PIXELS)
    cut = tmp_path / "cut"
    with pytest.raises(Crash):
        train(config, cut, on_progress=crash_at(120))
    trainer = resume(cut)
    assert (trainer.state.step, len(trainer.buffer)) == (80, 80) and trainer.buffer.obs.dtype == np.uint8
    trainer.run()
    whole = pixel_run
    assert rows_without_timings(cut) == rows_without_timings(whole)
    weights, resumed = runs.load_weights(whole), runs.load_weights(cut)
    assert set(weights) == set(resumed) and all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_an_env_that_observes_images_learns_from_them_without_the_flag(tmp_path):
    config = tiny("custom_env:MovingDot", **{**PIXELS, "pixels": False})
    spec = spec_of(make_env(config.env, observation=config.observation))
    assert spec.obs_shape == (16, 16, 3)  # its own 20x20 images, resized to frame_size
    _, summary = train(config, tmp_path / "dot")
    assert summary["env_steps"] == 160
    assert checkpoint.read(tmp_path / "dot").part("replay")["obs"].dtype == torch.uint8
    assert "pixels" not in runs.default_name(config)  # the flag's name marks rendered frames only


def test_the_benchmark_measures_an_update_and_the_replays_bytes():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pixel_update.py"
    spec = importlib.util.spec_from_file_location("pixel_update", path)  # benchmarks is not a package
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(16, batch=2, seq=3, repeats=1, rate=1e11)
    assert row["replay_obs_and_next_bytes"] == 2 * 100_000 * 16 * 16 * 3  # uint8 obs and next_obs
    assert row["update_s"] > 0 and row["gflops"] > 0 and row["floor_s"] == row["gflops"] * 1e9 / 1e11


def test_the_next_state_is_the_posterior_of_the_next_frame_inside_episodes_and_at_their_ends():
    torch.manual_seed(0)
    config = tiny("custom_env:MovingDot", **{**PIXELS, "pixels": False})
    buffer, spec = random_replay("custom_env:MovingDot", 70)  # episodes of 30 steps: two ends and an open one
    buffer.obs, buffer.next_obs = (np.stack([resize_frame(f, 16) for f in x]) for x in (buffer.obs, buffer.next_obs))
    agent = Agent(config, dataclasses.replace(spec, obs_dim=16 * 16 * 3, obs_shape=(16, 16, 3)))
    beliefs = agent.beliefs
    beliefs.follow(buffer, 70)
    slots = np.arange(70)
    with torch.no_grad():
        direct = agent.world_model.observe_step(beliefs.next_h[slots], torch.as_tensor(buffer.next_obs[slots]))
    assert torch.allclose(beliefs.next_states(buffer, slots), direct, atol=1e-5)


def moving_dot_agent(**overrides) -> tuple[Agent, ReplayBuffer]:
    """A pixel-reading belief agent and a replay of 16x16 MovingDot frames (episodes of 30 steps)."""
    torch.manual_seed(0)
    config = tiny("custom_env:MovingDot", **{**PIXELS, "pixels": False, **overrides})
    buffer, spec = random_replay("custom_env:MovingDot", 70)
    buffer.obs, buffer.next_obs = (np.stack([resize_frame(f, 16) for f in x]) for x in (buffer.obs, buffer.next_obs))
    return Agent(config, dataclasses.replace(spec, obs_dim=16 * 16 * 3, obs_shape=(16, 16, 3))), buffer


def test_drift_is_the_states_mean_squared_change_over_their_variance():
    old = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # variance: each row 1 from the mean in x
    assert drift(old, old) == 0.0
    assert drift(old, old + torch.tensor([0.0, 1.0])) == pytest.approx(1.0)  # moved by one spread
    assert drift(old, old + torch.tensor([0.0, 0.5])) == pytest.approx(0.25)


def test_sac_waits_until_the_replayed_states_hold_still_for_five_refreshes():
    agent, buffer = moving_dot_agent(settle_drift=0.05)
    beliefs, learner, rng = agent.beliefs, agent.off_policy, np.random.default_rng(0)
    beliefs.follow(buffer, 70)
    for step in range(71, 401):
        beliefs.follow(buffer, step)
        if step % REFRESH_EVERY == 0:
            assert beliefs.drift == 0.0 and not beliefs.settled  # an unchanged model: the states do not move
    assert list(learner.learn(buffer, rng)) == [] and learner.sac_owed == 0  # nothing done, nothing owed
    for step in range(401, 501):
        beliefs.follow(buffer, step)
    assert beliefs.calm == SETTLED_REFRESHES and beliefs.settled_at == 500  # refreshes at 100, 200, ..., 500
    assert len(list(learner.learn(buffer, rng))) == 2  # sac_ratio 2: SAC reads the states now
    again = Agent(agent.config, agent.spec).beliefs
    again.load_counters(beliefs.counters())
    assert again.counters() == beliefs.counters()  # a resume waits (or not) as the run did
    older = Agent(agent.config, agent.spec).beliefs
    older.load_counters({"believed": 900})  # a checkpoint from before SAC waited: SAC was on, and stays on
    assert older.settled and older.settled_at == 900


def test_states_that_keep_moving_hold_sac_back_until_the_cap():
    agent, buffer = moving_dot_agent(settle_drift=0.05)
    beliefs = agent.beliefs
    beliefs.follow(buffer, 70)
    for step in range(71, 1001):
        if step % REFRESH_EVERY == 0:
            with torch.no_grad():  # a model still learning: its encoder changes between refreshes
                for w in agent.world_model.embed.parameters():
                    w.add_(0.3 * torch.randn_like(w))
        beliefs.follow(buffer, step)
    assert beliefs.drift > 0.05 and beliefs.calm == 0 and not beliefs.settled
    beliefs.follow(buffer, SETTLE_CAP)
    assert beliefs.settled_at == SETTLE_CAP
