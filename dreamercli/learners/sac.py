"""Soft actor-critic on transitions: an ensemble of Q critics, their slow targets, a tuned temperature.

The policy is the agent's `Actor` (learners/imagination.py), passed in rather than built here,
so that the hybrid learner can train the same policy in imagination too. For discrete actions
this is discrete SAC (Christodoulou 2019), not a double DQN: the policy has to stay a
distribution that both learners share, and discrete SAC trains exactly such a distribution,
with expectations over its probabilities where continuous SAC samples.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..buffer import TransitionBatch
from ..config import LearnerConfig
from ..nets import symlog
from ..optim import FlatAdam
from .imagination import Actor
from .novelty import RandomDistillation

GRAD_CLIP = 100.0  # like every other optimiser of the project (agent.GRAD_CLIP)
# Target entropy of discrete policies as a share of the uniform policy's log(A). Half of it keeps
# enough exploration early and lets the policy become near-deterministic (the 1% uniform mix
# floors the entropy at 0.03 for two actions): CartPole-v1 reached 475 at 1,500 / 3,500 / 1,000
# env steps with sac_lr 3e-4 (benchmarks/sac_screen.py), and at a median 1,000 over seeds 0-4
# with 1e-3 (LearnerConfig); other shares were not screened.
DISCRETE_ENTROPY_SHARE = 0.5


# SAC's settings are the sac_* fields of config.LearnerConfig (one place for their defaults,
# which the screen in benchmarks/sac_screen.py chose); the name stays for the screen's use.
SACSettings = LearnerConfig


def actor_turns(updates: int, actor_owed: float) -> list[bool]:
    """Which of an env step's SAC updates train the actor too: the last ones, as many whole ones as are owed.

    Last, so that the policy climbs the freshest critics (REDQ steps its policy after the step's
    critic updates); the others train the critics alone.
    """
    turns = max(0, min(updates, math.floor(actor_owed)))
    return [False] * (updates - turns) + [True] * turns


class QEnsemble(nn.Module):
    """E critics as one network with stacked weights: Linear -> Dropout -> LayerNorm -> ReLU blocks.

    Each layer is one batched matmul over the members instead of one per member. The
    LayerNorm has no affine part: a per-unit gain before a ReLU is a gain on its output,
    which the next layer absorbs, and the per-unit bias survives in the Linear before it;
    on this CPU the affine's forward and backward add 40% to the LayerNorm's cost.
    """

    def __init__(self, members: int, in_dim: int, hidden_dim: int, out_dim: int, layers: int, dropout: float):
        super().__init__()
        self.members = members
        # Dropping a unit with probability p: a signed 16-bit random number below this threshold.
        self.drop_below = -(2**15) + round(dropout * 2**16) if dropout > 0 else None
        dims = [in_dim] + [hidden_dim] * layers + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(dims):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default init, per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def dropout(self, h: torch.Tensor) -> torch.Tensor:
        """DroQ's dropout, on whenever the critics are used (targets too), without the 1/(1-p) rescale
        that the LayerNorm right after would undo; 64-bit random words cut into 16-bit draws
        take about half the time of torch's per-element Bernoulli draws."""
        if self.drop_below is None:
            return h
        # From -2^63: random_() alone draws in [0, 2^63), whose top 16-bit piece is never negative,
        # and every fourth unit would never be dropped (a rate of 0.75 p, measured).
        bits = torch.empty(h.numel() // 4 + 1, dtype=torch.int64, device=h.device).random_(-(2**63), None)
        draws = bits.view(torch.int16)[:h.numel()].view(h.shape)
        return h.masked_fill_(draws < self.drop_below, 0.0)  # in place: baddbmm's backward needs not h

    def q(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Q of every member: x (B, in) -> (E, B, out). frozen: no gradient reaches the weights."""
        h = x.expand(self.members, *x.shape)  # (E, B, in), a view
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if frozen:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.layer_norm(self.dropout(h), h.shape[-1:]).relu_()
        return h


class SAC(nn.Module):
    """Critics, target critics and temperature of soft actor-critic, training the agent's actor."""

    def __init__(self, cfg: SACSettings, obs_dim: int, action_dim: int, discrete: bool, actor: Actor,
                 actor_opt: FlatAdam):
        super().__init__()
        self.cfg, self.discrete, self.action_dim = cfg, discrete, action_dim
        # Not registered as a submodule: the agent owns the actor and its weights' names.
        object.__setattr__(self, "actor", actor)
        self.actor_opt = actor_opt
        device = next(actor.parameters()).device
        in_dim = obs_dim if discrete else obs_dim + action_dim
        out_dim = action_dim if discrete else 1  # Q(s, .) per action, or Q(s, a)
        self.critics = QEnsemble(cfg.sac_critics, in_dim, cfg.sac_hidden, out_dim, cfg.sac_layers,
                                 cfg.sac_dropout).to(device)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.sac_alpha), device=device))
        # Maximum entropy of a categorical is log(A); -dim(A) is the usual continuous choice.
        self.target_entropy = (DISCRETE_ENTROPY_SHARE * math.log(action_dim) if discrete
                               else -float(action_dim))
        self.critic_opt = FlatAdam(self.critics, cfg.sac_lr, GRAD_CLIP)
        # Built only when on, so that runs without it draw the same initial weights as before it existed.
        self.novelty = RandomDistillation(obs_dim, cfg.sac_hidden, cfg.sac_layers).to(device) \
            if cfg.sac_novelty > 0 else None
        self.novelty_opt = None if self.novelty is None else FlatAdam(self.novelty.predictor, cfg.sac_lr, GRAD_CLIP)
        # FlatAdam reads parameters from a module; the list wrapper is not kept, log_alpha stays ours.
        self.alpha_opt = FlatAdam(nn.ParameterList([self.log_alpha]), cfg.sac_lr, GRAD_CLIP)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What actor and critics read: symlog of the raw observation."""
        return symlog(obs)

    def optimisers(self) -> dict[str, FlatAdam]:
        """SAC's own optimisers (the actor's belongs to the agent), for checkpoints."""
        opts = {"sac_critic": self.critic_opt, "sac_alpha": self.alpha_opt}
        if self.novelty_opt is not None:
            opts["sac_novelty"] = self.novelty_opt
        return opts

    def pessimistic(self, q: torch.Tensor) -> torch.Tensor:
        """min over two members (E, ...) -> (...): all of them if E = 2, two random ones if more (REDQ)."""
        if q.shape[0] > 2:
            q = q[torch.randperm(q.shape[0], device=q.device)[:2]]
        return q.min(0).values

    def actor_value(self, q: torch.Tensor) -> torch.Tensor:
        """Q the actor climbs, (E, ...) -> (...): min of a pair, the ensemble mean beyond (REDQ)."""
        return q.min(0).values if q.shape[0] == 2 else q.mean(0)

    def losses(self, batch: TransitionBatch, actor: bool = True) -> tuple[dict[str, torch.Tensor],
                                                                           dict[str, torch.Tensor]]:
        """Critic, actor and temperature losses at the current weights (actor=False: the critics' alone), and metrics.

        All of them come from the same weights so that one backward pass serves them, and a
        non-finite gradient anywhere can skip the whole update before anything steps.
        """
        B = batch.rewards.shape[0]
        feats = self.features(torch.cat([batch.obs, batch.next_obs]))  # (2B, obs)
        f, f_next = feats[:B], feats[B:]
        alpha = self.log_alpha.exp().detach()
        gamma = self.cfg.sac_discount if self.cfg.sac_nstep == 1 else self.cfg.sac_discount ** batch.steps  # gamma^n
        keep = gamma * (1 - batch.terminated)  # (B,)
        rewards, extra = batch.rewards, {}
        if self.novelty is not None and self.novelty.paying:  # RND: pay for arriving where the replay has little data
            bonus, novelty_loss = self.novelty.pay(batch.next_obs)  # the loss on the env step's first update only
            rewards = rewards + self.cfg.sac_novelty * bonus
            extra = {} if novelty_loss is None else {"novelty_loss": novelty_loss}
        if self.discrete:
            # One actor pass for s and s' when the actor learns; s' alone, without a graph, when not.
            with torch.set_grad_enabled(actor and torch.is_grad_enabled()):
                probs_all = self.actor.probs(feats if actor else f_next)  # (2B or B, A)
                logp_all = probs_all.log()
            with torch.no_grad():
                # Soft value of s' as an expectation over the policy, not a sampled action.
                q_next = self.pessimistic(self.target_critics.q(f_next))  # (B, A)
                v_next = (probs_all[-B:] * (q_next - alpha * logp_all[-B:])).sum(-1)
                target = rewards + keep * v_next  # (B,)
            q_all = self.critics.q(f)  # (E, B, A)
            q = (q_all * batch.actions).sum(-1)  # (E, B)
            if actor:
                probs, logp = probs_all[:B], logp_all[:B]
                actor_loss = (probs * (alpha * logp - self.actor_value(q_all.detach()))).sum(-1).mean()
                entropy = -(probs * logp).sum(-1).mean()
        else:
            rows = feats if actor else f_next
            with torch.set_grad_enabled(actor and torch.is_grad_enabled()):
                noise = self.actor.noise(rows.shape[:1], feats.device)
                actions_all, std = self.actor.rollout_action(rows, noise)  # (2B or B, act), reparameterised
                logp_all = self.actor.squashed_log_prob(actions_all, std, noise)  # (2B or B,)
            with torch.no_grad():
                q_next = self.pessimistic(self.target_critics.q(torch.cat([f_next, actions_all[-B:]], -1)))
                target = rewards + keep * (q_next.squeeze(-1) - alpha * logp_all[-B:])  # (B,)
            q = self.critics.q(torch.cat([f, batch.actions], -1)).squeeze(-1)  # (E, B)
            if actor:
                # Frozen weights: the actor's loss must move the actor only, not the critics.
                q_pi = self.critics.q(torch.cat([f, actions_all[:B]], -1), frozen=True).squeeze(-1)  # (E, B)
                actor_loss = (alpha * logp_all[:B] - self.actor_value(q_pi)).mean()
                entropy = -logp_all[:B].mean()
        assert q.shape == (self.cfg.sac_critics, B) and target.shape == (B,), (q.shape, target.shape)
        if "novelty_loss" in extra:  # the next batch's bonus shrinks as the values spread
            self.novelty.observe_values(q.min(0).values)
        losses = {"q_loss": (q - target).pow(2).mean(-1).sum(), **extra}
        metrics = {"q_mean": q.detach().mean()}
        if actor:
            # d/d log_alpha = H - target: the temperature rises while the entropy is below target.
            losses.update(actor_loss=actor_loss, alpha_loss=self.log_alpha * (entropy.detach() - self.target_entropy))
            metrics["entropy"] = entropy.detach()
        return losses, metrics

    def update(self, batch: TransitionBatch, actor: bool = True) -> dict[str, float] | None:
        """One step of critics (and with actor, of actor and temperature), then the targets; None on a NaN/inf."""
        losses, metrics = self.losses(batch, actor)
        total = sum(losses.values())
        if not torch.isfinite(total):
            return None  # e.g. a NaN reward: no backward, no step
        opts = [self.critic_opt]
        if actor:
            opts += [self.actor_opt, self.alpha_opt]
        if "novelty_loss" in losses:
            opts.append(self.novelty_opt)
        for opt in opts:
            opt.zero_grad()
        total.backward()
        # A finite loss can still give an inf gradient; check all of them before any of them steps.
        if not torch.isfinite(torch.stack(torch._foreach_norm([opt.param.grad for opt in opts]))).all():
            for opt in opts:
                opt.zero_grad()
            return None
        for opt in opts:
            opt.step()
        self.update_targets()
        logged = {"sac/q_loss": losses["q_loss"], "sac/q_mean": metrics["q_mean"]}
        if actor:
            logged.update({"sac/actor_loss": losses["actor_loss"], "sac/alpha": self.log_alpha.exp(),
                           "sac/entropy": metrics["entropy"]})
        if "novelty_loss" in losses:
            logged["sac/novelty_error"] = losses["novelty_loss"]
            logged["sac/novelty_scale"] = 1.0 / self.novelty.value_spread.clamp_min(1.0)
        values = torch.stack(list(logged.values())).detach().tolist()  # one conversion, not five
        return dict(zip(logged, values, strict=True))

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak step: target <- target + tau * (critic - target)."""
        torch._foreach_lerp_(list(self.target_critics.parameters()), list(self.critics.parameters()),
                             self.cfg.sac_tau)
