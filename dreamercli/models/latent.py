"""The latent world model: encoder, transition, reward / continue heads and decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import WorldModelConfig
from ..nets import gaussian, gaussian_kl, gaussian_nll, hidden_block, mlp, symexp, symlog, zero_output
from .ensemble import Disagreement


class Imagined(NamedTuple):
    """An open-loop rollout in latent space."""

    latents: torch.Tensor  # (H + 1, N, latent): z_0 .. z_H
    actions: torch.Tensor  # (H, N, action): a_t taken in z_t


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Layer-normalise latent means (no affine): a fixed scale, so consistency cannot collapse."""
    return F.layer_norm(x, x.shape[-1:])


class WorldModel(nn.Module):
    """q(z|o), p(z'|z, a), r(z, a), c(z') and o(z), small MLPs over a Gaussian latent.

    The latent mean is the model's deterministic path: it is what imagination rolls forward,
    what the actor and critic read, and what multi-step consistency trains. The stds say how
    sure the encoder and the transition are; they are learned, reported, and sampled only
    where noise helps (reconstruction from the posterior, `imagine(sample=True)`).
    """

    def __init__(self, cfg: WorldModelConfig, obs_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        latent, hidden, layers = cfg.latent_dim, cfg.hidden_dim, cfg.hidden_layers
        self.encoder = mlp(obs_dim, hidden, 2 * latent, layers)
        self.dynamics = mlp(latent + action_dim, hidden, 2 * latent, layers)
        # The reward belongs to the step (z_t, a_t), as in Gymnasium; whether the episode
        # goes on is a property of the state reached, which is far easier to learn.
        self.reward_head = zero_output(mlp(latent + action_dim, hidden, 1, layers))
        self.cont_head = mlp(latent, hidden, 1, layers)
        self.decoder = mlp(latent, hidden, obs_dim, layers)
        # Trained beside the model on the same batches (its own loss term, detached inputs).
        self.disagreement = Disagreement(latent, action_dim, hidden, cfg.novelty_heads) if cfg.novelty > 0 else None

    # -- the maths -------------------------------------------------------------------------

    def encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z | o): mean and std; observations enter in symlog scale."""
        mean, std = gaussian(self.encoder(symlog(obs)), self.cfg.min_std)
        return normalise(mean), std

    def encode_mean(self, obs: torch.Tensor) -> torch.Tensor:
        """Posterior mean alone, for acting: encode()'s first output without its std."""
        last, n = self.encoder[-1], self.cfg.latent_dim
        hidden = self.encoder.hidden(symlog(obs))
        return normalise(F.linear(hidden, last.weight[:n], last.bias[:n]))

    def transition(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior p(z' | z, a): mean and std; the mean is a residual step from z."""
        delta, std = gaussian(self.dynamics(torch.cat([z, action], -1)), self.cfg.min_std)
        return normalise(z + delta), std

    # -- the same transition, split for sequential loops ----------------------------------
    # Each rollout step pays a dispatch cost per small op (on a CPU most of an update's time,
    # docs/update-speed.md), so a loop step computes only the mean
    # path (the part the next step needs), with the weights sliced and transposed once per
    # rollout rather than once per step; the action's share of the first layer and the prior
    # std are computed in one batched op each, before and after the loop. The maths is exactly
    # `transition`'s.

    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """W_a a + b: the action's share of the transition's first layer, bias included."""
        first = self.dynamics[0]
        return F.linear(action, first.weight[:, self.cfg.latent_dim:], first.bias)

    def mean_step(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """step(z, a_in) -> (prior mean, last hidden layer) for latents z (N, latent) and
        action_input a_in (N, hidden), the weights prepared once for a whole rollout."""
        net, n = self.dynamics, self.cfg.latent_dim
        (first, first_norm), *rest = net.blocks
        w_z = first.weight[:, :n].t()
        rest_t = [(linear.weight.t(), linear.bias, norm) for linear, norm in rest]
        last = net[-1]
        w_mean, b_mean = last.weight[:n].t(), last.bias[:n]

        def step(z: torch.Tensor, a_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = hidden_block(torch.addmm(a_in, z, w_z), first_norm)
            for weight_t, bias, norm in rest_t:
                hidden = hidden_block(torch.addmm(bias, hidden, weight_t), norm)
            return normalise(torch.addmm(b_mean, hidden, w_mean).add_(z)), hidden

        return step

    def transition_std(self, hidden: torch.Tensor) -> torch.Tensor:
        """Prior std from mean_step's hidden layer (any leading shape)."""
        last, n = self.dynamics[-1], self.cfg.latent_dim
        return F.softplus(F.linear(hidden, last.weight[n:], last.bias[n:])) + self.cfg.min_std

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
        sample: bool = False,
    ) -> Imagined:
        """Roll the prior forward from z0 (N, latent) with actions from policy(z)."""
        latents, actions = [z0], []
        z = z0
        noise = torch.randn((horizon, *z0.shape), device=z0.device) if sample else None  # one op, not H
        step, first = self.mean_step(), self.dynamics[0]
        w_a = first.weight[:, self.cfg.latent_dim:].t()
        for t in range(horizon):
            a = policy(z)
            z, hidden = step(z, torch.addmm(first.bias, a, w_a))
            if noise is not None:
                z = normalise(z + self.transition_std(hidden) * noise[t])
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
        """Sequence loss: open-loop consistency with the encoder, heads and decoder on both paths.

        Shapes: obs/next_obs (B, L, obs), actions (B, L, act), rewards/terminated/mask (B, L).
        Returns the named losses, diagnostics, and the posterior means of obs (B, L, latent).
        """
        B, L = rewards.shape
        assert obs.shape[:2] == (B, L) and actions.shape[:2] == (B, L), (obs.shape, actions.shape)
        cfg = self.cfg
        all_obs = torch.cat([obs[:, :1], next_obs], 1)  # o_0 .. o_L, (B, L + 1, obs)
        q_mean, q_std = self.encode(all_obs)  # (B, L + 1, latent)

        # Open-loop prior means from z_0, driven by the real actions: exactly what imagination
        # does, so the model is trained for the rollouts the actor will learn from.
        a_in = self.action_input(actions.transpose(0, 1))  # (L, B, hidden), one op for all steps
        z = q_mean[:, 0]
        p_means, hiddens, step = [], [], self.mean_step()
        for a_t in a_in.unbind(0):  # one backward op for all steps, not a select_backward per step
            z, hidden = step(z, a_t)
            p_means.append(z)
            hiddens.append(hidden)
        p_mean = torch.stack(p_means, 1)  # (B, L, latent)
        p_std = self.transition_std(torch.stack(hiddens, 1))  # (B, L, latent)
        target = q_mean[:, 1:]

        # Valid steps of a sequence stop at its episode's end; normalise by their count.
        m = mask.float()
        count = m.sum().clamp(min=1.0)

        def masked(x: torch.Tensor) -> torch.Tensor:
            return (x * m).sum() / count

        # Latents seen by the heads: posterior means of o_0 .. o_L and the open-loop prior means.
        start = q_mean[:, :1]
        z_in = torch.cat([q_mean[:, :-1], torch.cat([start, p_mean[:, :-1]], 1)], 0)  # (2B, L, latent)
        z_next = torch.cat([target, p_mean], 0)  # (2B, L, latent)
        a2 = torch.cat([actions, actions], 0)
        m2 = torch.cat([m, m], 0)

        def masked2(x: torch.Tensor) -> torch.Tensor:
            return (x * m2).sum() / (2 * count)

        r_pred = self.reward_head(torch.cat([z_in, a2], -1)).squeeze(-1)
        c_logit = self.cont_head(z_next).squeeze(-1)
        term = torch.cat([terminated, terminated], 0).float()
        # Terminal states are rare: weigh them up to as much as all the others together, so the
        # head learns where episodes end and unseen latents read as risky, not safe. At most
        # 10x: once a good policy makes ends rare, a single end weighed 100x jolted the whole
        # model (the head's gradient reaches the latent) and the policy with it.
        n_term = (term * m2).sum()
        balance = 1.0 + term * ((2 * count - n_term) / n_term.clamp(min=1.0) - 1.0).clamp(0.0, 9.0)

        post = q_mean + q_std * torch.randn_like(q_std)  # posterior samples for reconstruction
        target_obs = symlog(all_obs)
        recon_post = (self.decoder(post) - target_obs).pow(2).sum(-1)  # (B, L + 1)
        recon_prior = (self.decoder(p_mean) - target_obs[:, 1:]).pow(2).sum(-1)  # (B, L)
        losses = {
            # The main signal: predicted means match the encoder's, many steps ahead.
            "consistency": cfg.consistency * masked((p_mean - target.detach()).pow(2).mean(-1)),
            # The prior std learns how far off its mean is (the mean itself is not moved).
            "prior_nll": masked(gaussian_nll(target.detach(), p_mean.detach(), p_std).mean(-1)),
            # The encoder is drawn toward what the transition can predict (DreamerV3's rep loss).
            "kl_rep": cfg.kl_rep * masked(gaussian_kl(q_mean[:, 1:], q_std[:, 1:],
                                                      p_mean.detach(), p_std.detach()) / cfg.latent_dim),
            "recon": (recon_post[:, 0].mean() + masked(recon_post[:, 1:])) / 2,
            "recon_open_loop": masked(recon_prior),
            "reward_loss": masked2((r_pred - symlog(torch.cat([rewards, rewards], 0))).pow(2)),
            "cont_loss": masked2(F.binary_cross_entropy_with_logits(c_logit, 1.0 - term, reduction="none")
                                 * balance),
        }
        if self.disagreement is not None:
            # Posterior means to posterior means: the heads learn the data, not the model's errors.
            losses["novelty_fit"] = masked(self.disagreement.loss(q_mean[:, :-1].detach(), actions,
                                                                  target.detach()))
        with torch.no_grad():
            # Diagnostics: the open-loop observation error at the last step, in env units.
            err = (self.decode(p_mean[:, -1]) - next_obs[:, -1]).abs().mean(-1)  # (B,)
            metrics = {
                "kl": masked(gaussian_kl(target, q_std[:, 1:], p_mean, p_std)).item(),
                "prior_std": masked(p_std.mean(-1)).item(),
                "open_loop_obs_err": ((err * m[:, -1]).sum() / m[:, -1].sum().clamp(min=1)).item(),
            }
        return losses, metrics, q_mean[:, :-1]
