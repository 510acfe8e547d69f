"""The latent world model: encoder, transition, reward / continue heads and decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import WorldModelConfig
from .nets import gaussian, gaussian_kl, mlp, symexp, symlog, zero_output


class Imagined(NamedTuple):
    """An open-loop rollout in latent space."""

    latents: torch.Tensor  # (H + 1, N, latent): z_0 .. z_H
    actions: torch.Tensor  # (H, N, action): a_t taken in z_t


class WorldModel(nn.Module):
    """q(z|o), p(z'|z, a), r(z, a), c(z, a) and o(z), all small MLPs over a Gaussian latent."""

    def __init__(self, cfg: WorldModelConfig, obs_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        latent, hidden = cfg.latent_dim, cfg.hidden_dim
        self.encoder = mlp(obs_dim, hidden, 2 * latent)
        self.dynamics = mlp(latent + action_dim, hidden, 2 * latent)
        # The reward belongs to the step (z_t, a_t), as in Gymnasium; whether the episode
        # goes on is a property of the state reached, which is far easier to learn.
        self.reward_head = zero_output(mlp(latent + action_dim, hidden, 1))
        self.cont_head = mlp(latent, hidden, 1)
        self.decoder = mlp(latent, hidden, obs_dim)

    # -- the maths -------------------------------------------------------------------------

    def encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z | o): mean and std; observations enter in symlog scale."""
        return gaussian(self.encoder(symlog(obs)), self.cfg.min_std)

    def transition(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior p(z' | z, a): mean and std; the mean is predicted as a residual on z."""
        mean, std = gaussian(self.dynamics(torch.cat([z, action], -1)), self.cfg.min_std)
        return z + mean, std

    def reward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Predicted reward of taking action in z, in the env's own units."""
        return symexp(self.reward_head(torch.cat([z, action], -1)).squeeze(-1))

    def cont(self, z: torch.Tensor) -> torch.Tensor:
        """Probability that z is not a terminal state, i.e. that the episode goes on from it."""
        return torch.sigmoid(self.cont_head(z).squeeze(-1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed observation in the env's own units."""
        return symexp(self.decoder(z))

    def imagine(
        self,
        z0: torch.Tensor,
        policy: Callable[[torch.Tensor], torch.Tensor],
        horizon: int,
        sample: bool = True,
    ) -> Imagined:
        """Roll the prior forward from z0 (N, latent) with actions from policy(z)."""
        latents, actions = [z0], []
        z = z0
        for _ in range(horizon):
            a = policy(z)
            mean, std = self.transition(z, a)
            z = mean + std * torch.randn_like(std) if sample else mean
            latents.append(z)
            actions.append(a)
        return Imagined(torch.stack(latents), torch.stack(actions))

    # -- learning --------------------------------------------------------------------------

    def loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor]:
        """Sequence loss: posterior fit, open-loop prior over the sequence, heads and decoder.

        Shapes: obs/next_obs (B, L, obs), actions (B, L, act), rewards/terminated/mask (B, L).
        Returns the named losses, diagnostics, and the posterior means of obs (B, L, latent).
        """
        B, L = rewards.shape
        assert obs.shape[:2] == (B, L) and actions.shape[:2] == (B, L), (obs.shape, actions.shape)
        cfg = self.cfg
        # Posterior of o_0 and of every next observation: (B, L + 1, latent).
        all_obs = torch.cat([obs[:, :1], next_obs], 1)
        post_mean, post_std = self.encode(all_obs)
        post = post_mean + post_std * torch.randn_like(post_std)

        # Open-loop prior from the first posterior sample, driven by the real actions.
        z = post[:, 0]
        prior_z, prior_mean, prior_std = [], [], []
        for t in range(L):
            mean, std = self.transition(z, actions[:, t])
            z = mean + std * torch.randn_like(std)
            prior_z.append(z)
            prior_mean.append(mean)
            prior_std.append(std)
        prior = torch.stack(prior_z, 1)  # (B, L, latent): predictions of z_1 .. z_L
        p_mean, p_std = torch.stack(prior_mean, 1), torch.stack(prior_std, 1)
        q_mean, q_std = post_mean[:, 1:], post_std[:, 1:]

        # Valid steps of a sequence stop at its episode's end; normalise by their count.
        m = mask.float()
        count = m.sum().clamp(min=1.0)

        def masked(x: torch.Tensor) -> torch.Tensor:
            return (x * m).sum() / count

        kl_dyn = gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std)
        kl_rep = gaussian_kl(q_mean, q_std, p_mean.detach(), p_std.detach())
        free = cfg.free_nats
        target_obs = symlog(all_obs)
        recon_post = (self.decoder(post) - target_obs).pow(2).sum(-1)  # (B, L + 1)
        recon_prior = (self.decoder(prior) - target_obs[:, 1:]).pow(2).sum(-1)  # (B, L)
        # Heads read posterior means: a termination boundary such as a pole angle of 0.21 rad
        # is too fine to learn through sampling noise, and imagination feeds them prior means
        # (discrete actions) or samples around them (continuous).
        z_in = post_mean[:, :-1]  # z_0 .. z_{L-1}, (B, L, latent)
        r_pred = self.reward_head(torch.cat([z_in, actions], -1)).squeeze(-1)
        c_logit = self.cont_head(post_mean[:, 1:]).squeeze(-1)  # is each next state terminal?
        # Terminal states are rare: weigh them as much as all the others together (at most
        # 100x), so that the head learns where episodes end, and latents it has never seen
        # read as risky rather than as safe, which keeps the actor from exploiting them.
        term = terminated.float() * m
        n_term = term.sum()
        balance = 1.0 + term * ((count - n_term) / n_term.clamp(min=1.0) - 1.0).clamp(0.0, 99.0)
        losses = {
            "kl_dyn": cfg.kl_dyn * masked(kl_dyn.clamp(min=free)),
            "kl_rep": cfg.kl_rep * masked(kl_rep.clamp(min=free)),
            "recon": (recon_post[:, 0].mean() + masked(recon_post[:, 1:])) / 2,
            "recon_open_loop": masked(recon_prior),
            "reward_loss": masked((r_pred - symlog(rewards)).pow(2)),
            "cont_loss": masked(F.binary_cross_entropy_with_logits(
                c_logit, 1.0 - terminated.float(), reduction="none") * balance),
        }
        with torch.no_grad():
            # Diagnostics: raw KL, and the open-loop observation error at the last step.
            err = (self.decode(prior[:, -1]) - next_obs[:, -1]).abs().mean(-1)  # (B,), env units
            metrics = {
                "kl": masked(kl_dyn).item(),
                "open_loop_obs_err": ((err * m[:, -1]).sum() / m[:, -1].sum().clamp(min=1)).item(),
            }
        return losses, metrics, post_mean[:, :-1]
