"""The agent: world model plus actor-critic, acting on observations and learning from replay."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from .buffer import SequenceBatch, TransitionBatch
from .config import Config
from .envs import EnvSpec
from .learners.imagination import Actor, ActorCritic
from .learners.sac import SAC
from .models import WorldModel
from .nets import symlog
from .optim import FlatAdam
from .streams import ModelStream

GRAD_CLIP = {"world_model": 100.0, "actor": 100.0, "critic": 100.0}


def resolve_device(name: str) -> torch.device:
    """auto picks cuda when present; cuda without a GPU is an error for the user."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(name)


class Agent(nn.Module):
    """One world model (none for model-free) composed with its learners, by config.algo.

    - dreamer: the actor reads latents and learns in imagination only.
    - model-free: the actor reads observations and learns by SAC on real transitions.
    - mbpo: as model-free, on real and branched model transitions (learners/branched.py).
    - hybrid: one actor reading observations, trained by SAC on real and branched data and by
      the imagination actor-critic on decoded latents; the model-trust guard sets how much.
    """

    def __init__(self, config: Config, spec: EnvSpec, device: torch.device | str = "cpu",
                 model_stream: ModelStream | None = None):
        """model_stream: where mbpo's and hybrid's model parts draw their initial weights (streams.py);
        without it, from torch's global generator like the rest."""
        super().__init__()
        self.config, self.spec = config, spec
        wm, ac, ln, algo = config.world_model, config.actor_critic, config.learner, config.algo
        self.device = torch.device(device)
        model_draws = model_stream.active if model_stream is not None else contextlib.nullcontext
        with model_draws():
            self.world_model = None if algo == "model-free" else WorldModel(wm, spec.obs_dim, spec.action_dim)
        obs_actor = None if algo == "dreamer" else Actor(spec.obs_dim, ln.sac_hidden, spec.action_dim,
                                                         spec.discrete, ln.sac_layers)
        if algo in ("dreamer", "hybrid"):
            with model_draws():  # hybrid: the imagination critic is model work; the actor exists already
                self.actor_critic = ActorCritic(ac, wm.latent_dim, wm.hidden_dim, spec.action_dim, spec.discrete,
                                                wm.hidden_layers, actor=obs_actor)
            self.actor = None
        else:
            self.actor_critic, self.actor = None, obs_actor
        self.to(self.device)
        # After .to(device): the optimisers pack each network's parameters into flat tensors.
        self.wm_opt = None if self.world_model is None else FlatAdam(self.world_model, wm.wm_lr,
                                                                      GRAD_CLIP["world_model"])
        self.actor_opt = FlatAdam(self.policy, ac.actor_lr if algo == "dreamer" else ln.sac_lr, GRAD_CLIP["actor"])
        # The imagination path's steps on the policy: dreamer's one optimiser; for hybrid a twin
        # at actor_lr with its own moments, so that SAC's and imagination's gradients, whose
        # scales differ, do not set each other's step size.
        self.imag_actor_opt = self.actor_opt.twin(ac.actor_lr) if algo == "hybrid" else self.actor_opt
        self.critic_opt = None if self.actor_critic is None else FlatAdam(self.actor_critic.critic, ac.critic_lr,
                                                                           GRAD_CLIP["critic"])
        self.sac = None if algo == "dreamer" else SAC(ln, spec.obs_dim, spec.action_dim, spec.discrete,
                                                       self.policy, self.actor_opt)

    @property
    def policy(self) -> Actor:
        """The one actor that acts (and that every learner of this algo trains)."""
        return self.actor_critic.actor if self.actor_critic is not None else self.actor

    def policy_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What the policy reads: the posterior mean (dreamer) or symlog observations."""
        if self.config.algo == "dreamer":
            return self.world_model.encode_mean(obs)
        return symlog(obs)

    def act(self, obs: np.ndarray, deterministic: bool = False, noise: np.ndarray | None = None) -> np.ndarray:
        """The agent-side action for one observation: an index, or a vector in [-1, 1].

        noise: the step's exploration noise (action_dim standard normals, see exploration.py);
        without it a sampled action draws its own from torch's generator.
        """
        batch_noise = None if noise is None else np.asarray(noise)[None]
        return self.act_batch(np.asarray(obs)[None], deterministic, batch_noise)[0]

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, deterministic: bool = False,
                  noise: np.ndarray | None = None) -> np.ndarray:
        """Actions for a batch of observations (n, obs): indices (n,) or vectors (n, act)."""
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        x = self.policy_input(o)
        actor = self.policy
        if deterministic:
            action = actor.mode(x)
        elif noise is not None:
            action = actor.explore(x, torch.as_tensor(np.asarray(noise, np.float32), device=self.device))
        else:
            action = actor.rollout_action(x, actor.noise(x.shape[:1], x.device))[0]
        action = action.cpu().numpy()
        return action.argmax(-1) if self.spec.discrete else action

    def update_sac(self, batch: TransitionBatch, actor: bool = True) -> dict[str, float] | None:
        """One off-policy update on a batch of transitions (actor: the policy's too); None if skipped (NaN or inf)."""
        return self.sac.update(batch, actor)

    def update(self, batch: SequenceBatch, behave: bool = True) -> dict[str, float] | None:
        """One gradient step of the world model, then (with behave) of the actor and critic.

        None when a loss or gradient was NaN or inf: that update changed no weight.
        """
        metrics, post = self.update_world_model(batch)
        if metrics is None:
            return None  # its latents would carry the NaN into the actor-critic too
        # -- actor-critic in imagination from replayed latents ---------------------------------
        if behave:
            ac_metrics = self.behave(post.detach().flatten(0, 1))
            if ac_metrics is None:
                return None
            metrics.update(ac_metrics)
        return metrics

    def update_world_model(self, batch: SequenceBatch) -> tuple[dict[str, float] | None, torch.Tensor | None]:
        """One gradient step of the world model on replayed sequences: its metrics and posterior latents."""
        losses, wm_metrics, post = self.world_model.loss(*batch)
        total = sum(losses.values())
        self.wm_opt.zero_grad()
        total.backward()
        if not self.wm_opt.step():
            return None, None
        metrics = {f"wm/{k}": v.item() for k, v in losses.items()}
        metrics["wm/loss"] = total.item()
        metrics.update({f"wm/{k}": v for k, v in wm_metrics.items()})
        return metrics, post

    def imagined_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the policy reads of an imagined latent: z itself, or (hybrid) its decoding in symlog units."""
        return z if self.config.algo == "dreamer" else self.world_model.decoder(z)

    def behave(self, latents: torch.Tensor) -> dict[str, float] | None:
        """Imagine from a random subset of latents (N, latent); update actor, then critic."""
        ac_cfg = self.config.actor_critic
        ac, wm = self.actor_critic, self.world_model
        n = min(ac_cfg.imag_starts, latents.shape[0])
        starts = latents[torch.randperm(latents.shape[0], device=latents.device)[:n]]
        discrete = self.spec.discrete
        noise = ac.actor.noise((ac_cfg.horizon, n), latents.device)  # (H, N, 1 or act)
        stds: list[torch.Tensor | None] = []
        act = ac.actor.rollout_policy()

        def policy(z: torch.Tensor) -> torch.Tensor:
            # The actor sees a detached latent; continuous actions carry gradients into the
            # next latents (dynamics backpropagation). Log-probs are scored after the rollout.
            action, std = act(self.imagined_input(z.detach()), noise[len(stds)])
            stds.append(std)
            return action

        wm.requires_grad_(False)  # the model is a fixed simulator for the actor
        try:
            # Discrete actions learn by REINFORCE, which needs no graph through the rollout:
            # roll out without one, then score all (H, N) actions in a single actor call.
            with torch.no_grad() if discrete else contextlib.nullcontext():
                traj = wm.imagine(starts, policy, ac_cfg.horizon, sample=self.imagine_samples())
            z, a = traj.latents[:-1], traj.actions  # (H, N, latent), (H, N, act)
            reward = wm.reward(z, a)  # (H, N)
            novelty = None if wm.disagreement is None else wm.disagreement.bonus(z, a)
            if novelty is not None:
                reward = reward + wm.cfg.novelty * novelty
            cont = wm.cont(traj.latents[1:])  # (H, N): does the episode go on after step t?
            returns, values = ac.returns(reward, cont, traj.latents)  # (H, N), (H + 1, N)
        finally:
            wm.requires_grad_(True)
        if discrete:
            with torch.no_grad():  # the decoder is part of the fixed simulator
                seen = self.imagined_input(z)
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
        actor_opt = self.imag_actor_opt
        actor_opt.zero_grad()
        self.critic_opt.zero_grad()
        (actor_loss + critic_loss).backward()
        # Both or neither: a half step would let the actor follow a critic that did not move.
        actor_ok = bool(torch.isfinite(actor_opt.param.grad).all())
        if not (actor_ok and self.critic_opt.step()):
            actor_opt.zero_grad()
            return None
        actor_opt.step()
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

    def imagine_samples(self) -> bool:
        """Whether imagination samples latents from the prior or follows its means.

        auto: means for discrete actions, whose score-function gradient only grows noisier
        with latent noise; samples for continuous ones, whose gradients through the model
        otherwise find action sequences that exploit its errors (Pendulum: measured in README).
        """
        noise = self.config.actor_critic.imag_noise
        return noise == "sample" or (noise == "auto" and not self.spec.discrete)

    def optimisers(self) -> dict[str, FlatAdam]:
        """The optimisers by stable name (part of the checkpoint format)."""
        opts = {"world_model": self.wm_opt, "actor": self.actor_opt, "critic": self.critic_opt}
        if self.imag_actor_opt is not self.actor_opt:
            opts["actor_imagination"] = self.imag_actor_opt
        if self.sac is not None:
            opts.update(self.sac.optimisers())
        return {k: v for k, v in opts.items() if v is not None}

    def finite(self) -> bool:
        """Whether every weight (and slow copy) is a finite number."""
        return all(bool(torch.isfinite(t).all()) for t in self.state_dict().values()
                   if t.is_floating_point())

    def weights(self) -> dict[str, torch.Tensor]:
        """Every network's tensors by stable name, for safetensors."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors written by weights(); ValueError in one line unless names and shapes match."""
        own = self.state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        wrong = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} of the wrong shape (first: {k} is {tuple(tensors[k].shape)}, "
                            f"the config needs {tuple(own[k].shape)})")
        if problems:
            raise ValueError("tensors do not fit the config: " + "; ".join(problems))
        self.load_state_dict({k: v.to(self.device) for k, v in tensors.items()}, strict=True)
