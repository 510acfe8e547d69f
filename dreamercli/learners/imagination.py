"""Actor and critic in latent space, lambda-returns, and the imagination losses."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ActorCriticConfig
from ..nets import follow_spread_, mlp, symexp, symlog, zero_output

UNIMIX = 0.01  # share of the uniform distribution mixed into discrete policies
STD_MIN, STD_MAX = 0.1, 1.0  # bounds of the continuous policy's pre-tanh std


def lambda_return(
    reward: torch.Tensor, disc: torch.Tensor, value: torch.Tensor, lam: float
) -> torch.Tensor:
    """R_t = r_t + disc_t * ((1 - lam) * V_{t+1} + lam * R_{t+1}), with R_H = V_H.

    reward, disc: (H, N); value: (H + 1, N); returns (H, N).
    """
    H = reward.shape[0]
    assert value.shape[0] == H + 1 and disc.shape == reward.shape, (reward.shape, value.shape)
    returns = []
    last = value[H]
    for t in reversed(range(H)):
        last = reward[t] + disc[t] * ((1 - lam) * value[t + 1] + lam * last)
        returns.append(last)
    return torch.stack(returns[::-1])


class Actor(nn.Module):
    """pi(a | z): categorical (with 1% uniform mix) or tanh-squashed Gaussian."""

    def __init__(self, latent_dim: int, hidden_dim: int, action_dim: int, discrete: bool, layers: int = 2):
        super().__init__()
        self.discrete = discrete
        self.action_dim = action_dim
        out = action_dim if discrete else 2 * action_dim
        self.net = mlp(latent_dim, hidden_dim, out, layers)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of the discrete policy, uniform mix included."""
        return self._probs(self.net(z))

    def _probs(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(-1).mul(1 - UNIMIX).add(UNIMIX / self.action_dim)

    def _gaussian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.net(z))

    @staticmethod
    def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out.chunk(2, -1)
        std = (STD_MAX - STD_MIN) * torch.sigmoid(raw + 2.0) + STD_MIN
        return mean, std

    def sample(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action (one-hot, or in [-1, 1], reparameterised), its log-prob and entropy."""
        if self.discrete:
            probs = self.probs(z)
            logp = probs.log()
            with torch.no_grad():
                action = self._one_hot_sample(probs, self.noise(probs.shape[:-1], z.device))
            entropy = -(probs * logp).sum(-1)
            return action, (logp * action).sum(-1), entropy
        noise = self.noise(z.shape[:-1], z.device)
        action, std = self.rollout_action(z, noise)
        logp = self.squashed_log_prob(action, std, noise)
        return action, logp, -logp  # single-sample entropy estimate of the squashed Gaussian

    def _one_hot_sample(self, probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling, one uniform (..., 1) per row: far cheaper than multinomial on CPU."""
        index = (probs.cumsum(-1) < uniform).sum(-1, keepdim=True).clamp_(max=self.action_dim - 1)
        return torch.zeros_like(probs).scatter_(-1, index, 1.0)

    def noise(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Pre-drawn randomness of `shape` rollout steps: one op instead of one per step."""
        if self.discrete:
            return torch.rand((*shape, 1), device=device)
        return torch.randn((*shape, self.action_dim), device=device)

    def rollout_action(self, z: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The action sample() would draw with this noise, without its log-prob; and the std.

        A rollout step runs only what the next step needs; log-probs and entropies are
        scored for all steps at once afterwards (log_prob, squashed_log_prob).
        """
        return self._action(self.net(z), noise)

    def rollout_policy(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
        """rollout_action as a function with the net's weights prepared once for a whole rollout."""
        net = self.net.prepared()
        return lambda z, noise: self._action(net(z), noise)

    def _action(self, out: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.discrete:
            return self._one_hot_sample(self._probs(out), noise), None
        mean, std = self._split(out)
        return torch.tanh(torch.addcmul(mean, std, noise)), std

    def explore(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A sampled action driven by given standard-normal noise (..., action_dim), which may be
        correlated in time: Gumbel-max over the policy's probabilities (the Gumbel noise made from
        the normal through its CDF) or the reparameterised squashed Gaussian."""
        out = self.net(z)
        if not self.discrete:
            return self._action(out, noise)[0]
        uniform = torch.special.ndtr(noise).clamp(1e-12, 1.0 - 1e-12)
        choice = (self._probs(out).log() - torch.log(-torch.log(uniform))).argmax(-1)
        return F.one_hot(choice, self.action_dim).to(z.dtype)

    @staticmethod
    def squashed_log_prob(action: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """log pi(a) of a = tanh(mean + std * noise): the Gaussian log-density of the pre-tanh
        value, whose standardised form is the noise itself, less log|d tanh|."""
        logp = (-0.5 * noise.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)

    def log_prob(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of one-hot actions (discrete policies) and the policy's entropy."""
        assert self.discrete, "log_prob of given actions is for discrete policies"
        logp = self.probs(z).log()
        return (logp * action).sum(-1), -(logp.exp() * logp).sum(-1)

    def mode(self, z: torch.Tensor) -> torch.Tensor:
        """The deterministic action used for evaluation."""
        if self.discrete:
            return F.one_hot(self.net(z).argmax(-1), self.action_dim).to(z.dtype)
        return torch.tanh(self._gaussian(z)[0])


class Critic(nn.Module):
    """V(z), regressed in symlog space so that one setting fits any scale of returns."""

    def __init__(self, latent_dim: int, hidden_dim: int, layers: int = 2):
        super().__init__()
        self.net = zero_output(mlp(latent_dim, hidden_dim, 1, layers))

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """Expected return from z, in the env's units."""
        return symexp(self.net(z).squeeze(-1))

    def loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error against symlog(target)."""
        return (self.net(z).squeeze(-1) - symlog(target)).pow(2)


class ActorCritic(nn.Module):
    """The behaviour learner: actor, critic, its slow copy and the return scale."""

    def __init__(self, cfg: ActorCriticConfig, latent_dim: int, hidden_dim: int,
                 action_dim: int, discrete: bool, layers: int = 2, actor: Actor | None = None):
        super().__init__()
        self.cfg = cfg
        # hybrid passes a policy that reads observations (shared with the off-policy learner);
        # imagination then feeds it decoded latents.
        self.actor = actor if actor is not None else Actor(latent_dim, hidden_dim, action_dim, discrete, layers)
        self.critic = Critic(latent_dim, hidden_dim, layers)
        self.slow_critic = Critic(latent_dim, hidden_dim, layers)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        # EMA of the 5th-95th percentile range of imagined returns (saved with the weights).
        self.register_buffer("return_range", torch.zeros(()))
        self.register_buffer("quantiles", torch.tensor([0.05, 0.95]), persistent=False)

    def returns(self, reward: torch.Tensor, cont: torch.Tensor,
                latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lambda-returns (H, N) of an imagined rollout and the slow critic's values (H + 1, N)."""
        value = self.slow_critic.value(latents)
        return lambda_return(reward, self.cfg.discount * cont, value, self.cfg.lam), value

    def return_scale(self, returns: torch.Tensor) -> torch.Tensor:
        """Update the percentile-range EMA and return max(1, range) to divide returns by."""
        return follow_spread_(self.return_range, returns, self.quantiles, self.cfg.return_ema).clamp(min=1.0)

    def actor_loss(self, returns: torch.Tensor, baseline: torch.Tensor, logp: torch.Tensor,
                   entropy: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """REINFORCE with a baseline (discrete) or the return's own gradient (continuous)."""
        if self.actor.discrete:
            advantage = ((returns - baseline) / scale).detach()
            # Centre on the batch: early on the critic knows nothing, and an advantage that is
            # positive for every action only drives the policy to whatever it sampled most.
            advantage = advantage - (weight * advantage).sum() / weight.sum().clamp(min=1e-6)
            objective = logp * advantage
        else:
            objective = returns / scale
        return -(weight * (objective + self.cfg.entropy * entropy)).mean()

    def critic_loss(self, latents: torch.Tensor, returns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Regression of V(z_t) onto the lambda-returns, weighted by reach probability."""
        return (weight * self.critic.loss(latents.detach(), returns.detach())).mean()

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """Move the slow critic a step toward the critic."""
        torch._foreach_lerp_(list(self.slow_critic.parameters()), list(self.critic.parameters()),
                             self.cfg.critic_ema)
