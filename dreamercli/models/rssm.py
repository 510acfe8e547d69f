"""The recurrent state-space model (RSSM): a GRU belief h_t, a Gaussian latent z_t, heads on s_t = [h_t, z_t].

h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) carries what the episode has shown so far; the prior p(z_t | h_t)
predicts the step, the posterior q(z_t | h_t, o_t) corrects it with the observation. The flat state
s_t = [h_t, z_t] is what imagination rolls forward, what a latent-reading actor and critic read, and
what the reward, continue and observation heads decode, so the RSSM offers the latent model's
interface (`imagine`, `reward`, `cont`, `decode`, `loss`) with `latent_dim` = deter + stoch.
An episode starts from h = 0 (DreamerV3 resets on its `is_first` flag the same way). Image
observations go through a convolutional encoder and decoder (conv.py), their loss on pixels / 255 - 0.5
summed over the pixels as DreamerV3's; vectors through MLPs in symlog scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import WorldModelConfig
from ..nets import gaussian, gaussian_kl, mlp, symexp, symlog, zero_output
from .conv import ConvDecoder, ConvEncoder
from .latent import Imagined


class RSSM(nn.Module):
    """GRU h, prior p(z|h), posterior q(z|h, o), and reward, continue and decoder heads on [h, z]."""

    recurrent = True
    disagreement = None  # no one-step ensemble: novelty in imagination is the latent model's

    def __init__(self, cfg: WorldModelConfig, obs_dim: int, action_dim: int, obs_shape: tuple[int, ...] = ()):
        """obs_shape: (H, W, C) of image observations (read by convolutions); () for vectors of obs_dim."""
        super().__init__()
        self.cfg = cfg
        deter, stoch, hidden, layers = cfg.deter_dim, cfg.latent_dim, cfg.hidden_dim, cfg.hidden_layers
        self.deter, self.stoch = deter, stoch
        self.latent_dim = deter + stoch
        self.image = bool(obs_shape)
        self.embed = ConvEncoder(obs_shape, hidden) if self.image else mlp(obs_dim, hidden, hidden, 1)
        self.gru_in = mlp(stoch + action_dim, hidden, hidden, 0)
        self.gru = nn.GRUCell(hidden, deter)
        self.prior_net = mlp(deter, hidden, 2 * stoch, 1)
        self.post_net = mlp(deter + hidden, hidden, 2 * stoch, 1)
        feat = deter + stoch
        self.reward_head = zero_output(mlp(feat + action_dim, hidden, 1, layers))
        self.cont_head = mlp(feat, hidden, 1, layers)
        self.decoder = ConvDecoder(feat, obs_shape) if self.image else mlp(feat, hidden, obs_dim, layers)

    # -- the maths -------------------------------------------------------------------------

    def split(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s = [h, z] -> (h, z)."""
        return state[..., :self.deter], state[..., self.deter:]

    def recur(self, h: torch.Tensor, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}]): the deterministic path."""
        return self.gru(F.relu(self.gru_in(torch.cat([z, action], -1))), h)

    def transition(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior step s_t, a_t -> s_{t+1} = [h_{t+1}, prior mean]: that state and the prior's std."""
        h, z = self.split(state)
        h = self.recur(h, z, action)
        mean, std = self.prior(h)
        return torch.cat([h, mean], -1), std

    def prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_t | h_t): mean and std."""
        return gaussian(self.prior_net(h), self.cfg.min_std)

    def posterior(self, h: torch.Tensor, embedded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_t | h_t, o_t) from embed(o_t): mean and std."""
        return gaussian(self.post_net(torch.cat([h, embedded], -1)), self.cfg.min_std)

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """embed(o): vectors enter in symlog scale, images as they are (the encoder scales their pixels)."""
        return self.embed(obs) if self.image else self.embed(symlog(obs))

    def observe_step(self, h: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """s_t = [h_t, posterior mean of z_t]: the belief after seeing o_t (acting and beliefs are deterministic)."""
        return torch.cat([h, self.posterior(h, self.encode_obs(obs))[0]], -1)

    def initial(self, n: int, device: torch.device) -> torch.Tensor:
        """h at an episode's start: zeros (n, deter)."""
        return torch.zeros(n, self.deter, device=device)

    def reward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Predicted reward of taking action in state s, in the env's own units."""
        return symexp(self.reward_head(torch.cat([state, action], -1)).squeeze(-1))

    def cont(self, state: torch.Tensor) -> torch.Tensor:
        """Probability that the episode goes on from state s."""
        return torch.sigmoid(self.cont_head(state).squeeze(-1))

    def decode(self, state: torch.Tensor) -> torch.Tensor:
        """Reconstructed observation in the env's own units (an image's pixels in [0, 255], as floats)."""
        if self.image:
            return ((self.decoder(state) + 0.5) * 255.0).clamp(0.0, 255.0)
        return symexp(self.decoder(state))

    def recon_loss(self, states: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error of each step, summed over the observation: (B, T, obs...) -> (B, T).

        Vectors in symlog scale; images on pixels / 255 - 0.5 (DreamerV3's MSE, summed over the pixels)."""
        if self.image:
            return (self.decoder(states) - (obs.float() / 255.0 - 0.5)).pow(2).sum((-3, -2, -1))
        return (self.decoder(states) - symlog(obs)).pow(2).sum(-1)

    def imagine(self, s0: torch.Tensor, policy: Callable[[torch.Tensor], torch.Tensor], horizon: int,
                sample: bool = False) -> Imagined:
        """Roll the prior forward from states s0 (N, deter + stoch) with actions from policy(s)."""
        states, actions = [s0], []
        h, z = self.split(s0)
        noise = torch.randn((horizon, *z.shape), device=s0.device) if sample else None
        for t in range(horizon):
            a = policy(torch.cat([h, z], -1))
            h = self.recur(h, z, a)
            mean, std = self.prior(h)
            z = mean if noise is None else mean + std * noise[t]
            states.append(torch.cat([h, z], -1))
            actions.append(a)
        return Imagined(torch.stack(states), torch.stack(actions))

    def open_loop(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Prior-mean states (H + 1, N, state) from s0 (N, state) driven by given actions (H, N, act)."""
        states = [s0]
        h, z = self.split(s0)
        for a in actions.unbind(0):
            h = self.recur(h, z, a)
            z = self.prior(h)[0]
            states.append(torch.cat([h, z], -1))
        return torch.stack(states)

    @torch.no_grad()
    def filter(self, obs: torch.Tensor, actions: torch.Tensor, h0: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beliefs along sequences from their start: states s_t (B, L, state) and h_{t+1} (B, L, deter).

        obs (B, L, obs), actions (B, L, act); h0 (B, deter) or zeros (episode starts).
        """
        B, L = obs.shape[:2]
        h = self.initial(B, obs.device) if h0 is None else h0
        embedded = self.encode_obs(obs)
        states, nexts = [], []
        for t in range(L):
            s = torch.cat([h, self.posterior(h, embedded[:, t])[0]], -1)
            h = self.recur(h, self.split(s)[1], actions[:, t])
            states.append(s)
            nexts.append(h)
        return torch.stack(states, 1), torch.stack(nexts, 1)

    # -- learning --------------------------------------------------------------------------

    def observe(self, obs: torch.Tensor, actions: torch.Tensor, h0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Posterior states along sequences o_0 .. o_L (B, L + 1, obs) driven by a_0 .. a_{L-1}.

        Returns the sampled states s_t (B, L + 1, state), the posterior (mean, std) and the prior
        (mean, std) of every z_t (B, L + 1, stoch); h0 as in `loss`.
        """
        B, steps = obs.shape[:2]
        embedded = self.encode_obs(obs)  # (B, L + 1, hidden)
        h = self.initial(B, obs.device) if h0 is None else h0
        hs, q_means, q_stds, zs = [], [], [], []
        noise = torch.randn(B, steps, self.stoch, device=obs.device)
        for t in range(steps):
            if t > 0:
                h = self.recur(h, zs[-1], actions[:, t - 1])
            q_mean, q_std = self.posterior(h, embedded[:, t])
            hs.append(h)
            q_means.append(q_mean)
            q_stds.append(q_std)
            zs.append(q_mean + q_std * noise[:, t])
        h_all = torch.stack(hs, 1)  # (B, L + 1, deter)
        states = torch.cat([h_all, torch.stack(zs, 1)], -1)
        return states, (torch.stack(q_means, 1), torch.stack(q_stds, 1)), self.prior(h_all)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
             terminated: torch.Tensor, mask: torch.Tensor, h0: torch.Tensor | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor]:
        """Sequence loss: reconstruction, reward, continue, and the balanced KL between posterior and prior.

        Shapes: obs/next_obs (B, L, obs), actions (B, L, act), rewards/terminated/mask (B, L); h0 (B, deter),
        the belief carried into the first step (zeros at an episode start). The KL is split as in
        DreamerV2/V3: kl_dyn * max(free, KL(sg(q) || p)) trains the prior, kl_rep * max(free, KL(q || sg(p)))
        the posterior; free nats keep both from collapsing the latent. Returns the named losses,
        diagnostics and the posterior states of obs (B, L, state).
        """
        cfg = self.cfg
        all_obs = torch.cat([obs[:, :1], next_obs], 1)  # o_0 .. o_L
        states, (q_mean, q_std), (p_mean, p_std) = self.observe(all_obs, actions, h0)

        m = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).float()  # o_0 is always valid

        def masked(x: torch.Tensor, weights: torch.Tensor = m) -> torch.Tensor:
            return (x * weights).sum() / weights.sum().clamp(min=1.0)

        free = cfg.kl_free
        dyn = gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std)  # (B, L + 1)
        rep = gaussian_kl(q_mean, q_std, p_mean.detach(), p_std.detach())
        step_mask = mask.float()
        r_pred = self.reward_head(torch.cat([states[:, :-1], actions], -1)).squeeze(-1)
        c_logit = self.cont_head(states[:, 1:]).squeeze(-1)
        term = terminated.float()
        # Terminal states are rare: weigh them up (at most 10x, as the latent model does).
        n_term = (term * step_mask).sum()
        balance = 1.0 + term * ((step_mask.sum() - n_term) / n_term.clamp(min=1.0) - 1.0).clamp(0.0, 9.0)
        losses = {
            "recon": masked(self.recon_loss(states, all_obs)),
            "reward_loss": masked((r_pred - symlog(rewards)).pow(2), step_mask),
            "cont_loss": masked(F.binary_cross_entropy_with_logits(c_logit, 1.0 - term, reduction="none") * balance,
                                step_mask),
            "kl_dyn": cfg.kl_dyn * masked(dyn.clamp(min=free)),
            "kl_rep": cfg.kl_rep * masked(rep.clamp(min=free)),
        }
        with torch.no_grad():
            # Open-loop error: the prior's guess of the last observation, from the first step's belief.
            guess = self.open_loop(states[:, 0], actions.transpose(0, 1))[-1]
            err = (self.decode(guess) - next_obs[:, -1]).abs().flatten(1).mean(-1)  # (B,): over dims or pixels
            last = step_mask[:, -1]
            metrics = {"kl": masked(dyn).item(), "prior_std": masked(p_std.mean(-1)).item(),
                       "open_loop_obs_err": ((err * last).sum() / last.sum().clamp(min=1)).item()}
        return losses, metrics, states[:, :-1]
