import numpy as np
import pytest
import torch

from dreamercli.buffer import random_replay
from dreamercli.config import WorldModelConfig
from dreamercli.models import WorldModel


def pendulum_buffer(steps=600, seed=0):
    return random_replay("Pendulum-v1", steps, seed)


def test_imagine_shapes():
    wm = WorldModel(WorldModelConfig(latent_dim=6, hidden_dim=16), obs_dim=3, action_dim=2)
    traj = wm.imagine(torch.randn(5, 6), lambda z: torch.zeros(z.shape[0], 2), horizon=4)
    assert traj.latents.shape == (5, 5, 6)  # (H + 1, N, latent)
    assert traj.actions.shape == (4, 5, 2)
    assert wm.reward(traj.latents[:-1], traj.actions).shape == (4, 5)
    assert wm.decode(traj.latents).shape == (5, 5, 3)


def test_latent_means_are_normalised_and_imagination_follows_them():
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(latent_dim=6, hidden_dim=16), obs_dim=3, action_dim=2)
    z, std = wm.encode(100.0 * torch.randn(5, 3))
    # Layer-normalised means: zero mean and unit variance over the latent, whatever the input.
    assert torch.allclose(z.mean(-1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(5), atol=1e-3)
    assert torch.all(std >= wm.cfg.min_std)
    action = torch.ones(5, 2)
    traj = wm.imagine(z, lambda _: action, horizon=3)
    step = z
    for t in range(3):
        step = wm.transition(step, action)[0]
        assert torch.allclose(traj.latents[t + 1], step, atol=1e-5)  # split first layer: reassociated sums
    sampled = wm.imagine(z, lambda _: action, horizon=3, sample=True)
    assert not torch.allclose(sampled.latents[1], traj.latents[1])


def test_loss_falls_when_fitting_real_pendulum_data():
    torch.manual_seed(0)
    buf, spec = pendulum_buffer()
    wm = WorldModel(WorldModelConfig(latent_dim=8, hidden_dim=64, seq_len=8), spec.obs_dim, spec.action_dim)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    history = []
    for _ in range(150):
        losses, metrics, post = wm.loss(*buf.sample(16, 8, rng, torch.device("cpu")))
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append((losses["recon_open_loop"].item(), losses["reward_loss"].item()))
    first, last = np.mean(history[:10], 0), np.mean(history[-10:], 0)
    assert last[0] < 0.5 * first[0], (first, last)
    assert last[1] < 0.5 * first[1], (first, last)
    assert post.shape == (16, 8, 8)
    assert set(metrics) == {"kl", "prior_std", "open_loop_obs_err"}


def test_masked_steps_do_not_count():
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(latent_dim=4, hidden_dim=16), 3, 1)
    buf, _ = pendulum_buffer(100)
    batch = buf.sample(4, 6, np.random.default_rng(0), torch.device("cpu"))
    mask = torch.zeros_like(batch.mask)
    mask[:, :2] = True
    noisy = batch._replace(mask=mask, next_obs=batch.next_obs.clone(), rewards=batch.rewards.clone())
    noisy.next_obs[:, 2:] += 1000.0
    noisy.rewards[:, 2:] += 1000.0
    torch.manual_seed(1)
    clean_losses = wm.loss(*batch._replace(mask=mask))[0]
    torch.manual_seed(1)
    noisy_losses = wm.loss(*noisy)[0]
    for key in ("reward_loss", "recon_open_loop", "consistency"):
        assert torch.allclose(clean_losses[key], noisy_losses[key]), key


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_split_transition_and_mean_encoder_match_the_whole_networks(layers):
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(latent_dim=6, hidden_dim=16, hidden_layers=layers), obs_dim=3, action_dim=2)
    obs, z, action = torch.randn(5, 3), torch.randn(5, 6), torch.randn(5, 2)
    assert torch.allclose(wm.encode_mean(obs), wm.encode(obs)[0], atol=1e-5)
    mean, std = wm.transition(z, action)
    step_mean, hidden = wm.mean_step()(z, wm.action_input(action))
    assert torch.allclose(step_mean, mean, atol=1e-5)
    assert torch.allclose(wm.transition_std(hidden), std, atol=1e-5)
    # The functional forward is the Sequential's own maths, module by module.
    plain = obs
    for layer in wm.encoder:
        plain = layer(plain)
    assert torch.allclose(wm.encoder(obs), plain, atol=1e-6)
