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
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..buffer import TransitionBatch
from ..config import LearnerConfig
from ..nets import follow_, symlog
from ..optim import FlatAdam
from .novelty import RandomDistillation, tells_where
from .policy import Actor

GRAD_CLIP = 100.0  # like every other optimiser of the project (agent.GRAD_CLIP)
# Target entropy of discrete policies as a share of the uniform policy's log(A). Half of it keeps
# enough exploration early and lets the policy become near-deterministic (the 1% uniform mix
# floors the entropy at 0.03 for two actions); docs/model-free.md.
DISCRETE_ENTROPY_SHARE = 0.5
LN_EPS = 1e-5  # F.layer_norm's default
# Reward units (docs/reward-scale.md): the critics learn rewards divided by max(1, the running 95th
# percentile of |reward|), so a task's rewards times c (large enough that the percentile passes 1)
# trains as the task itself, and every task whose rewards stay within [-1, 1] trains as it did.
REWARD_QUANTILE = 0.95
REWARD_EMA = 0.01  # rate per SAC update at which the percentile moves (the first batch sets it)


# SAC's settings are the sac_* fields of config.LearnerConfig (one place for their defaults);
# the name stays for benchmarks/sac_screen.py.
SACSettings = LearnerConfig


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
        self.rate = dropout
        dims = [in_dim] + [hidden_dim] * layers + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(dims):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default init, per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))
        # (weight, bias) per layer as a plain list: a ParameterList's indexing and iteration cost
        # microseconds per item, some 15 per update. The same Parameter objects (a deepcopy maps them;
        # FlatAdam and load_state_dict change their data, never them).
        self.layers = list(zip(self.weights, self.biases, strict=True))

    def dropped(self, h: torch.Tensor) -> torch.Tensor | None:
        """Flat indices of the units of h that dropout zeroes this time (None: none).

        round(p * n) positions drawn uniformly, with replacement: two small ops, where a Bernoulli
        mask over every unit took three passes over h (draw, compare, fill) that cost a fifth of a
        critics-only update. A unit drawn twice drops once, so the rate is p (1 - p / 2), and the
        count is fixed where a mask's would vary by sqrt(n p); DroQ asks a little noise of each
        unit, not its exact law; against a Bernoulli mask it learned as fast (docs/update-speed.md).
        No 1/(1-p) rescale: the LayerNorm right after would undo it.
        """
        count = round(self.rate * h.numel())
        return torch.randint(h.numel(), (count,), device=h.device) if count else None

    def dropout(self, h: torch.Tensor) -> torch.Tensor:
        """DroQ's dropout, in place, on whenever the critics are used (targets too)."""
        drop = self.dropped(h)
        if drop is not None:
            h.view(-1).index_fill_(0, drop, 0.0)  # in place: baddbmm's backward needs not h
        return h

    @staticmethod
    def output(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The output layer, h (E, B, H) @ w (E, H, O) + b, as the transposed product (w^T h^T)^T: with
        a narrow O, bmm runs that one faster."""
        return torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2).contiguous(), h.transpose(1, 2)).transpose(1, 2)

    def q(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Q of every member: x (B, in) -> (E, B, out). frozen: no gradient reaches the weights."""
        h = x.expand(self.members, *x.shape)  # (E, B, in), a view
        for w, b in self.layers[:-1]:
            if frozen:
                w, b = w.detach(), b.detach()
            h = F.layer_norm(self.dropout(torch.baddbmm(b, h, w)), w.shape[-1:], eps=LN_EPS).relu_()
        w, b = self.layers[-1]
        return self.output(h, w.detach(), b.detach()) if frozen else self.output(h, w, b)

    @torch.no_grad()
    def q_taped(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple]]:
        """q(x) without autograd, and its tape for backward(): per hidden layer its input, its dropped
        units, its (dropped) pre-activation and that one's moments; then the output layer's input."""
        h = x.expand(self.members, *x.shape)
        tape: list[tuple] = []
        for w, b in self.layers[:-1]:
            pre = torch.baddbmm(b, h, w)
            drop = self.dropped(pre)
            if drop is not None:
                pre.view(-1).index_fill_(0, drop, 0.0)
            out, mean, rstd = torch.native_layer_norm(pre, w.shape[-1:], None, None, LN_EPS)
            tape.append((h, drop, pre, mean, rstd))
            h = out.relu_()
        tape.append(h)
        w, b = self.layers[-1]
        return self.output(h, w, b), tape

    @torch.no_grad()
    def backward(self, tape: list[tuple], grad: torch.Tensor) -> None:
        """d loss / d weights from d loss / d q (E, B, out) along q_taped's tape, written over each .grad.

        By hand: the chain rule of three small layers is a dozen ops, and autograd's graph,
        saved tensors and engine cost more than they do on a CPU (docs/update-speed.md).
        """
        h = tape[-1]
        w, b = self.layers[-1]
        w.grad.copy_(torch.bmm(grad.transpose(1, 2), h).transpose(1, 2))  # (g^T h)^T: narrow products as in output()
        torch.sum(grad, 1, keepdim=True, out=b.grad)
        # d loss / d h: an outer product when O = 1, for which bmm's kernel is slow
        grad = grad * w.transpose(1, 2) if w.shape[-1] == 1 else torch.bmm(grad, w.transpose(1, 2).contiguous())
        for i in reversed(range(len(tape) - 1)):
            h_in, drop, pre, mean, rstd = tape[i]
            grad = torch.ops.aten.threshold_backward(grad, h, 0)  # h: the ReLU's output
            grad = torch.ops.aten.native_layer_norm_backward(grad, pre, pre.shape[-1:], mean, rstd, None, None,
                                                             [True, False, False])[0]
            if drop is not None:
                grad.view(-1).index_fill_(0, drop, 0.0)
            w, b = self.layers[i]
            torch.bmm(h_in.transpose(1, 2), grad, out=w.grad)
            torch.sum(grad, 1, keepdim=True, out=b.grad)
            if i > 0:
                grad, h = torch.bmm(grad, w.transpose(1, 2)), h_in


class SAC(nn.Module):
    """Critics, target critics and temperature of soft actor-critic, training the agent's actor."""

    def __init__(self, cfg: SACSettings, obs_dim: int, action_dim: int, discrete: bool, actor: Actor,
                 actor_opt: FlatAdam, novelty_dim: int | None = None):
        """novelty_dim: the leading inputs that are the observation (the novelty bonus reads those alone;
        the rest, a world model's belief, changes as the model learns); all of them by default."""
        super().__init__()
        self.novelty_dim = obs_dim if novelty_dim is None else novelty_dim
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
        # The Polyak step's operands, listed once (parameters() walks the module tree each call).
        self.critic_params, self.target_params = list(self.critics.parameters()), list(self.target_critics.parameters())
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.sac_alpha), device=device))
        # Maximum entropy of a categorical is log(A); -dim(A) is the usual continuous choice.
        self.target_entropy = (DISCRETE_ENTROPY_SHARE * math.log(action_dim) if discrete
                               else -float(action_dim))
        self.critic_opt = FlatAdam(self.critics, cfg.sac_lr, GRAD_CLIP)
        # Built only when on, so that runs without it draw the same initial weights as before it existed.
        self.novelty = RandomDistillation(self.novelty_dim, cfg.sac_hidden, cfg.sac_layers).to(device) \
            if cfg.sac_novelty > 0 else None
        self.novelty_opt = None if self.novelty is None else FlatAdam(self.novelty.predictor, cfg.sac_lr, GRAD_CLIP)
        # FlatAdam reads parameters from a module; the list wrapper is not kept, log_alpha stays ours.
        self.alpha_opt = FlatAdam(nn.ParameterList([self.log_alpha]), cfg.sac_lr, GRAD_CLIP)
        # The running 95th percentile of |reward| (0: no batch seen yet); reward_unit() reads it.
        self.register_buffer("reward_scale", torch.zeros((), device=device))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What actor and critics read: symlog of the raw observation."""
        return symlog(obs)

    def reward_unit(self) -> torch.Tensor:
        """What the critics' rewards are divided by: max(1, running 95th percentile of |reward|), 0-d.

        Never below 1, as DreamerV3's max(1, S) of return ranges: rewards already within [-1, 1] are
        left as they are (a task of +-1 or sparse 0/1 rewards trains bit for bit as without it), and
        larger ones are brought to that size, so Q, the temperature and the novelty bonus all work in
        units that do not depend on the task's.
        """
        return self.reward_scale.clamp_min(1.0)

    @torch.no_grad()
    def observe_rewards(self, rewards: torch.Tensor) -> None:
        """Move reward_scale toward a batch's 95th percentile of |reward|; a non-finite batch is ignored."""
        size = rewards.abs()
        high = size.kthvalue(max(1, math.ceil(REWARD_QUANTILE * size.numel()))).values  # an order statistic
        if math.isfinite(high.item()):
            follow_(self.reward_scale, high, REWARD_EMA)

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

    def bootstrap(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's rewards in reward_unit()s (RND bonus added while it pays), the factor on the value
        of s', and the predictor's loss when this update fits it."""
        gamma = self.cfg.sac_discount if self.cfg.sac_nstep == 1 else self.cfg.sac_discount ** batch.steps  # gamma^n
        keep = gamma * (1 - batch.terminated)  # (B,)
        unit = self.reward_unit()
        rewards, extra = (batch.rewards if unit.item() == 1.0 else batch.rewards / unit), {}
        if self.novelty is not None and self.novelty.paying and self.novelty.fit_due \
                and tells_where(batch.rewards, batch.actions):
            self.novelty.paying = False  # for this env step: its first batch has a reward that says where to go
        if self.novelty is not None and self.novelty.paying:  # RND: pay for arriving where the replay has little data
            # The loss on the env step's first update only.
            bonus, novelty_loss = self.novelty.pay(batch.next_obs[:, :self.novelty_dim])
            rewards = rewards + self.cfg.sac_novelty * bonus
            extra = {} if novelty_loss is None else {"novelty_loss": novelty_loss}
        return rewards, keep, extra

    @torch.no_grad()
    def next_policy(self, f_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy at s' (features), without a graph: probabilities and their logs (discrete), or a
        sampled action and its log-prob (continuous)."""
        if self.discrete:
            probs = self.actor.probs(f_next)
            return probs, probs.log()
        noise = self.actor.noise(f_next.shape[:1], f_next.device)
        actions, std = self.actor.rollout_action(f_next, noise)
        return actions, self.actor.squashed_log_prob(actions, std, noise)

    def losses(self, batch: TransitionBatch, actor: bool = True,
               next_policy: tuple[torch.Tensor, torch.Tensor] | None = None,
               features: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[
            dict[str, torch.Tensor], dict[str, torch.Tensor], Callable[[], None]]:
        """Critic, actor and temperature losses at the current weights (actor=False: the critics' alone),
        metrics, and the critics' backward pass. next_policy: next_policy() of the batch, already
        computed (critics-only updates); features: features() of its obs and next_obs, already computed.

        q_loss carries no graph: its gradient is taken by hand (QEnsemble.backward), which the
        returned function writes into the critics' .grad. The actor's and temperature's losses
        (and the RND predictor's, when this update fits it) go through autograd. All come from
        the same weights, and a non-finite gradient anywhere can skip the whole update before
        anything steps.
        """
        B = batch.rewards.shape[0]
        if features is None:
            feats = self.features(torch.cat([batch.obs, batch.next_obs]))  # (2B, obs)
            f, f_next = feats[:B], feats[B:]
        else:  # elementwise, so a slice of the step's features is this batch's
            f, f_next = features
            feats = torch.cat(features) if actor else None
        alpha = self.log_alpha.exp().detach()
        rewards, keep, extra = self.bootstrap(batch)
        if self.discrete:
            # One actor pass for s and s' when the actor learns; s' alone, without a graph, when not.
            if actor:
                probs_all = self.actor.probs(feats)  # (2B, A)
                logp_all = probs_all.log()
            else:
                probs_all, logp_all = next_policy or self.next_policy(f_next)  # (B, A)
            with torch.no_grad():
                # Soft value of s' as an expectation over the policy, not a sampled action.
                q_next = self.pessimistic(self.target_critics.q(f_next))  # (B, A)
                v_next = (probs_all[-B:] * (q_next - alpha * logp_all[-B:])).sum(-1)
                target = rewards + keep * v_next  # (B,)
            q_all, tape = self.critics.q_taped(f)  # (E, B, A)
            q = (q_all * batch.actions).sum(-1)  # (E, B)
            if actor:
                probs, logp = probs_all[:B], logp_all[:B]
                actor_loss = (probs * (alpha * logp - self.actor_value(q_all))).sum(-1).mean()
                entropy = -(probs * logp).sum(-1).mean()
        else:
            if actor:
                noise = self.actor.noise(feats.shape[:1], feats.device)
                actions_all, std = self.actor.rollout_action(feats, noise)  # (2B, act), reparameterised
                logp_all = self.actor.squashed_log_prob(actions_all, std, noise)  # (2B,)
            else:
                actions_all, logp_all = next_policy or self.next_policy(f_next)  # (B, act), (B,)
            with torch.no_grad():
                q_next = self.pessimistic(self.target_critics.q(torch.cat([f_next, actions_all[-B:]], -1)))
                target = rewards + keep * (q_next.squeeze(-1) - alpha * logp_all[-B:])  # (B,)
            q_all, tape = self.critics.q_taped(torch.cat([f, batch.actions], -1))  # (E, B, 1)
            q = q_all.squeeze(-1)  # (E, B)
            if actor:
                # Frozen weights: the actor's loss must move the actor only, not the critics.
                q_pi = self.critics.q(torch.cat([f, actions_all[:B]], -1), frozen=True).squeeze(-1)  # (E, B)
                actor_loss = (alpha * logp_all[:B] - self.actor_value(q_pi)).mean()
                entropy = -logp_all[:B].mean()
        assert q.shape == (self.cfg.sac_critics, B) and target.shape == (B,), (q.shape, target.shape)
        if "novelty_loss" in extra:  # the next batch's bonus shrinks as the values spread
            self.novelty.observe_values(q.min(0).values)
        error = q - target  # (E, B)
        losses = {"q_loss": error.pow(2).mean(-1).sum(), **extra}
        metrics = {"q_mean": q.mean()}
        if actor:
            # d/d log_alpha = H - target: the temperature rises while the entropy is below target.
            losses.update(actor_loss=actor_loss, alpha_loss=self.log_alpha * (entropy.detach() - self.target_entropy))
            metrics["entropy"] = entropy.detach()
        grad_q = (error * (2.0 / B)).unsqueeze(-1)  # d q_loss / d q, (E, B, 1)
        return losses, metrics, lambda: self.critics.backward(tape, grad_q * batch.actions if self.discrete
                                                              else grad_q)

    def updates(self, batch: TransitionBatch, turns: list[bool]) -> Iterator[dict[str, float] | None]:
        """An env step's updates, one per turn, on equal consecutive slices of batch; the actor learns where
        its turn is True. Yields each update's metrics (None: skipped) as it is made.

        The critics-only updates before the first actor turn read the policy at s' from one pass
        over all their batches: the actor does not move before then, so each reads what it would
        have computed alone, at one call instead of nine (a pass costs its dispatch more than its rows).
        """
        size = batch.rewards.shape[0] // len(turns)
        parts = [TransitionBatch(*(x[k * size:(k + 1) * size] for x in batch)) for k in range(len(turns))]
        lead = turns.index(True) if True in turns else len(turns)
        # The features too, once for the step: five ops an update less (symlog is elementwise).
        f_all, f_next_all = self.features(batch.obs), self.features(batch.next_obs)
        shared = self.next_policy(f_next_all[:lead * size]) if lead > 1 else None
        for k, (part, actor) in enumerate(zip(parts, turns, strict=True)):
            rows = slice(k * size, (k + 1) * size)
            next_policy = None if k >= lead or shared is None else tuple(x[rows] for x in shared)
            yield self.update(part, actor, next_policy, (f_all[rows], f_next_all[rows]))

    def update(self, batch: TransitionBatch, actor: bool = True,
               next_policy: tuple[torch.Tensor, torch.Tensor] | None = None,
               features: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float] | None:
        """One step of critics (and with actor, of actor and temperature), then the targets; None on a NaN/inf.

        The batch's rewards first move the reward scale, so that even the run's first update sees its units."""
        self.observe_rewards(batch.rewards)
        losses, metrics, critics_backward = self.losses(batch, actor, next_policy, features)
        total = losses["q_loss"] if len(losses) == 1 else sum(losses.values())
        if not math.isfinite(total.item()):
            return None  # e.g. a NaN reward: no backward, no step
        opts = [self.critic_opt]
        if actor:
            opts += [self.actor_opt, self.alpha_opt]
        if "novelty_loss" in losses:
            opts.append(self.novelty_opt)
        critics_backward()  # overwrites the critics' gradient
        if len(opts) > 1:  # the others' gradients through autograd
            for opt in opts[1:]:
                opt.zero_grad()
            sum(v for k, v in losses.items() if k != "q_loss").backward()
            # A finite loss can still give an inf gradient; check all of them before any of them steps.
            if not torch.isfinite(torch.stack(torch._foreach_norm([opt.param.grad for opt in opts]))).all():
                for opt in opts:
                    opt.zero_grad()
                return None
        for opt in opts:
            if not opt.step():  # checks its own gradient (all that a critics-only update has)
                return None
        self.update_targets()
        unit = self.reward_unit()
        # Q in the task's reward units; q_loss in reward_unit()s squared, as the critics minimise it.
        logged = {"sac/q_loss": losses["q_loss"], "sac/q_mean": metrics["q_mean"] * unit, "sac/reward_unit": unit}
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
        torch._foreach_lerp_(self.target_params, self.critic_params, self.cfg.sac_tau)
