"""Learning to act in imagination: the critic in latent space, lambda-returns, and the imagination update.

From replayed posterior latents the world model is rolled forward with the policy's own actions;
the critic regresses lambda-returns of the imagined rewards, and the actor climbs them (their own
gradient through the model for continuous actions, REINFORCE for discrete ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ..config import ActorCriticConfig
from ..models import WorldModel
from ..nets import follow_spread_, mlp, symexp, symlog, zero_output
from ..optim import FlatAdam
from .policy import Actor


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


class ImaginationLearner:
    """The imagination update of an ActorCritic in a world model: actor first, then critic, from one rollout.

    policy_input maps an imagined latent to what the policy reads (the latent itself, or its
    decoding where the policy reads observations); actor_opt steps the policy, critic_opt the critic.
    """

    def __init__(self, actor_critic: ActorCritic, world_model: WorldModel, discrete: bool,
                 policy_input: Callable[[torch.Tensor], torch.Tensor], actor_opt: FlatAdam, critic_opt: FlatAdam):
        self.ac, self.wm, self.discrete = actor_critic, world_model, discrete
        self.cfg = actor_critic.cfg
        self.policy_input, self.actor_opt, self.critic_opt = policy_input, actor_opt, critic_opt

    def samples(self) -> bool:
        """Whether imagination samples latents from the prior or follows its means.

        auto: means for discrete actions, whose score-function gradient only grows noisier
        with latent noise; samples for continuous ones, whose gradients through the model
        otherwise find action sequences that exploit its errors (docs/algorithms.md).
        """
        noise = self.cfg.imag_noise
        return noise == "sample" or (noise == "auto" and not self.discrete)

    def update(self, latents: torch.Tensor) -> dict[str, float] | None:
        """Imagine from a random subset of latents (N, latent); update actor, then critic. None: skipped (NaN)."""
        cfg, ac, wm = self.cfg, self.ac, self.wm
        n = min(cfg.imag_starts, latents.shape[0])
        starts = latents[torch.randperm(latents.shape[0], device=latents.device)[:n]]
        noise = ac.actor.noise((cfg.horizon, n), latents.device)  # (H, N, 1 or act)
        stds: list[torch.Tensor | None] = []
        act = ac.actor.rollout_policy()

        def policy(z: torch.Tensor) -> torch.Tensor:
            # The actor sees a detached latent; continuous actions carry gradients into the
            # next latents (dynamics backpropagation). Log-probs are scored after the rollout.
            action, std = act(self.policy_input(z.detach()), noise[len(stds)])
            stds.append(std)
            return action

        wm.requires_grad_(False)  # the model is a fixed simulator for the actor
        try:
            # Discrete actions learn by REINFORCE, which needs no graph through the rollout:
            # roll out without one, then score all (H, N) actions in a single actor call.
            with torch.no_grad() if self.discrete else contextlib.nullcontext():
                traj = wm.imagine(starts, policy, cfg.horizon, sample=self.samples())
            z, a = traj.latents[:-1], traj.actions  # (H, N, latent), (H, N, act)
            reward = wm.reward(z, a)  # (H, N)
            novelty = None if wm.disagreement is None else wm.disagreement.bonus(z, a)
            if novelty is not None:
                reward = reward + wm.cfg.novelty * novelty
            cont = wm.cont(traj.latents[1:])  # (H, N): does the episode go on after step t?
            returns, values = ac.returns(reward, cont, traj.latents)  # (H, N), (H + 1, N)
        finally:
            wm.requires_grad_(True)
        if self.discrete:
            with torch.no_grad():  # the decoder is part of the fixed simulator
                seen = self.policy_input(z)
            logp, entropy = ac.actor.log_prob(seen, a)  # (H, N)
        else:
            logp = ac.actor.squashed_log_prob(a, torch.stack(stds), noise)  # (H, N)
            entropy = -logp  # single-sample entropy estimate of the squashed Gaussian
        # The chance of still being in the episode at step t weighs that step's losses.
        weight = torch.cumprod(torch.cat([torch.ones_like(cont[:1]), cont[:-1]]), 0).detach()
        scale = ac.return_scale(returns)
        baseline = values[:-1].detach()
        actor_loss = ac.actor_loss(returns, baseline, logp, entropy, weight, scale)
        critic_loss = ac.critic_loss(z, returns, weight)
        # One backward pass for both: their parameters are disjoint and the critic reads
        # detached inputs, so each gets exactly the gradient of its own loss.
        self.actor_opt.zero_grad()
        self.critic_opt.zero_grad()
        (actor_loss + critic_loss).backward()
        # Both or neither: a half step would let the actor follow a critic that did not move.
        actor_ok = bool(torch.isfinite(self.actor_opt.param.grad).all())
        if not (actor_ok and self.critic_opt.step()):
            self.actor_opt.zero_grad()
            return None
        self.actor_opt.step()
        ac.update_slow_critic()
        return {
            "ac/actor_loss": actor_loss.item(),
            "ac/critic_loss": critic_loss.item(),
            "ac/entropy": entropy.mean().item(),
            "ac/imagined_return": returns.mean().item(),
            "ac/imagined_reward": reward.mean().item(),
            "ac/return_scale": scale.item(),
            **({} if novelty is None else {"ac/novelty": novelty.mean().item()}),
        }
