"""The agent: one table of compositions (algo -> world model and learners), acting, and learning a step.

Every `--algo` is a row of COMPOSITIONS; nothing else in the package compares the algo string.
The loop hands the agent its real replay once per env step (`learn`) and each fresh transition
(`observe`); which networks learn, and from what, is the composition's business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .buffer import ReplayBuffer
from .config import Config
from .envs import EnvSpec
from .learners.hybrid import HybridLearner
from .learners.imagination import ActorCritic, ImaginationLearner
from .learners.off_policy import OffPolicyLearner, Update
from .learners.policy import Actor
from .learners.sac import SAC
from .learners.world_model import ModelLearner
from .models import WorldModel
from .nets import symlog
from .optim import FlatAdam
from .streams import ModelStream

GRAD_CLIP = {"actor": 100.0, "critic": 100.0}


@dataclass(frozen=True)
class Composition:
    """What an algo is made of."""

    world_model: bool  # learns a world model of the env
    reads_latent: bool  # the policy reads the model's latent (else symlog observations)
    imagination: bool  # the policy learns in imagination (hybrid: as far as the guard trusts the model)
    off_policy: bool  # the policy learns by SAC on replayed transitions
    branching: bool  # ... on branched model rollouts too, behind the trust guard, the model on a stream of its own


COMPOSITIONS = {
    "dreamer": Composition(world_model=True, reads_latent=True, imagination=True, off_policy=False, branching=False),
    "model-free": Composition(world_model=False, reads_latent=False, imagination=False, off_policy=True,
                              branching=False),
    "mbpo": Composition(world_model=True, reads_latent=False, imagination=False, off_policy=True, branching=True),
    "hybrid": Composition(world_model=True, reads_latent=False, imagination=True, off_policy=True, branching=True),
}


def resolve_device(name: str) -> torch.device:
    """auto picks cuda when present; cuda without a GPU is an error for the user."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(name)


class Agent(nn.Module):
    """One world model (or none) and one policy, with the learners that train them, as config.algo composes."""

    def __init__(self, config: Config, spec: EnvSpec, device: torch.device | str = "cpu"):
        super().__init__()
        self.config, self.spec = config, spec
        self.parts = parts = COMPOSITIONS[config.algo]
        wm, ac, ln = config.world_model, config.actor_critic, config.learner
        self.device = torch.device(device)
        # Beside an off-policy learner the model draws from a stream of its own (streams.py).
        self.stream = ModelStream(config.train.seed, self.device) if parts.branching else None
        with self.model_draws():
            self.world_model = WorldModel(wm, spec.obs_dim, spec.action_dim) if parts.world_model else None
        obs_actor = None if parts.reads_latent else Actor(spec.obs_dim, ln.sac_hidden, spec.action_dim,
                                                          spec.discrete, ln.sac_layers)
        if parts.imagination:
            with self.model_draws():  # the imagination critic is model work; an observation actor exists already
                self.actor_critic = ActorCritic(ac, wm.latent_dim, wm.hidden_dim, spec.action_dim, spec.discrete,
                                                wm.hidden_layers, actor=obs_actor)
            self.actor = None
        else:
            self.actor_critic, self.actor = None, obs_actor
        self.to(self.device)
        # The learners, after .to(device): their optimisers pack each network's parameters into flat tensors.
        self.actor_opt = FlatAdam(self.policy, ln.sac_lr if parts.off_policy else ac.actor_lr, GRAD_CLIP["actor"])
        self.sac = SAC(ln, spec.obs_dim, spec.action_dim, spec.discrete, self.policy, self.actor_opt) \
            if parts.off_policy else None
        self.off_policy: OffPolicyLearner | None = None
        if parts.branching:
            self.off_policy = HybridLearner(self.sac, ln, self.device, self.world_model, self.policy,
                                            spec.obs_dim, spec.action_dim, self.model_draws)
        elif parts.off_policy:
            self.off_policy = OffPolicyLearner(self.sac, ln, self.device)
        self.imagination = None
        if parts.imagination:
            # Beside SAC, imagination steps the policy with a twin optimiser at actor_lr and moments of its
            # own, so that the two learners' gradients, whose scales differ, do not set each other's steps.
            imag_opt = self.actor_opt.twin(ac.actor_lr) if parts.off_policy else self.actor_opt
            self.imagination = ImaginationLearner(
                self.actor_critic, self.world_model, spec.discrete, self.imagined_input, imag_opt,
                FlatAdam(self.actor_critic.critic, ac.critic_lr, GRAD_CLIP["critic"]))
        # hybrid imagines after as many model updates as the guard's trust allows; dreamer after each.
        imagine_due = self.off_policy.imagine_due if parts.branching else lambda: True
        self.model_learner = None if self.world_model is None else ModelLearner(
            self.world_model, config, self.device, self.model_draws, self.imagination, imagine_due)

    @property
    def policy(self) -> Actor:
        """The one actor that acts (and that every learner of this algo trains)."""
        return self.actor_critic.actor if self.actor_critic is not None else self.actor

    def policy_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What the policy reads of an observation: the posterior mean, or symlog observations."""
        return self.world_model.encode_mean(obs) if self.parts.reads_latent else symlog(obs)

    def imagined_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the policy reads of an imagined latent: z itself, or its decoding in symlog units."""
        return z if self.parts.reads_latent else self.world_model.decoder(z)

    def model_draws(self, rng: np.random.Generator | None = None
                    ) -> contextlib.AbstractContextManager[np.random.Generator | None]:
        """The generators of world-model work: the model's own stream where it has one, else rng."""
        return self.stream.active() if self.stream is not None else contextlib.nullcontext(rng)

    # -- acting ----------------------------------------------------------------------------------

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

    # -- learning --------------------------------------------------------------------------------

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, terminated: bool,
                truncated: bool) -> None:
        """A fresh real transition (encoded action), before any update has trained on it."""
        if isinstance(self.off_policy, HybridLearner):
            self.off_policy.observe(obs, action, next_obs, terminated, truncated)

    def learn(self, replay: ReplayBuffer, step: int, rng: np.random.Generator) -> Iterator[Update]:
        """Env step `step`'s updates in order (the model's, then the off-policy learner's), each yielded as
        (kind, metrics) as it is made: kind 'pretrain' or 'update', metrics None where NaN skipped it."""
        if self.model_learner is not None:
            yield from self.model_learner.learn(replay, step, rng)
        if self.off_policy is not None and step >= self.config.train.prefill:
            yield from self.off_policy.learn(replay, rng)

    def pretrain_updates(self) -> int:
        """World-model-only updates learn() makes at the prefill's last env step."""
        return self.config.train.pretrain if self.parts.world_model else 0

    def learner_metrics(self) -> dict[str, float]:
        """What the learners allow right now, for the log rows (the trust guard's hybrid/... keys)."""
        return self.off_policy.metrics() if isinstance(self.off_policy, HybridLearner) else {}

    # -- state -----------------------------------------------------------------------------------

    def optimisers(self) -> dict[str, FlatAdam]:
        """The optimisers by stable name (part of the checkpoint format)."""
        opts = {"world_model": None if self.model_learner is None else self.model_learner.opt, "actor": self.actor_opt}
        if self.imagination is not None:
            opts["critic"] = self.imagination.critic_opt
            if self.imagination.actor_opt is not self.actor_opt:
                opts["actor_imagination"] = self.imagination.actor_opt
        if self.sac is not None:
            opts.update(self.sac.optimisers())
        return {k: v for k, v in opts.items() if v is not None}

    def buffers(self) -> dict[str, ReplayBuffer]:
        """The learners' own replay by checkpoint name (branched transitions)."""
        return {"model_replay": self.off_policy.model_buffer} if isinstance(self.off_policy, HybridLearner) else {}

    def counters(self) -> dict[str, float]:
        """The learners' carried-over counters, saved with the loop's state."""
        found: dict[str, float] = {}
        for learner in (self.model_learner, self.off_policy):
            if learner is not None:
                found.update(learner.counters())
        return found

    def load_counters(self, state: dict[str, float]) -> None:
        """Restore counters() from a checkpoint's state."""
        for learner in (self.model_learner, self.off_policy):
            if learner is not None:
                learner.load_counters(state)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The trust guard's window and the model stream's position, by full checkpoint name."""
        found = {}
        if isinstance(self.off_policy, HybridLearner):
            found.update({f"guard/{k}": v for k, v in self.off_policy.guard.state_tensors().items()})
        if self.stream is not None:
            found.update({f"stream/{k}": v for k, v in self.stream.state_tensors().items()})
        return found

    def load_state_tensors(self, part: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore state_tensors(), given each prefix's tensors ({'guard': ..., 'stream': ...})."""
        if isinstance(self.off_policy, HybridLearner):
            self.off_policy.guard.load_state_tensors(part["guard"], self.device)
        if self.stream is not None:
            self.stream.load_state_tensors(part["stream"])

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
