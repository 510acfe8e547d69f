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
from .config import Config, ConfigError
from .envs import EnvSpec
from .learners.belief import BeliefOffPolicy, Beliefs, BeliefScale, Memory, perceive, took
from .learners.hybrid import HybridLearner
from .learners.imagination import ActorCritic, ImaginationLearner
from .learners.memory_gate import OPEN_MODEL_SHARE, SHUT_MODEL_SHARE, MemoryGate
from .learners.off_policy import OffPolicyLearner, Update
from .learners.policy import Actor
from .learners.sac import SAC
from .learners.world_model import ModelLearner
from .models import WorldModel
from .models.rssm import RSSM
from .nets import symlog
from .optim import FlatAdam
from .streams import ModelStream

GRAD_CLIP = {"actor": 100.0, "critic": 100.0}


@dataclass(frozen=True)
class Composition:
    """What an algo is made of."""

    world_model: str | None  # the world model it learns by default (config.model 'auto'), or None
    reads_latent: bool  # the policy reads the model's latent (else symlog observations)
    imagination: bool  # the policy learns in imagination (hybrid: as far as the guard trusts the model)
    off_policy: bool  # the policy learns by SAC on replayed transitions
    branching: bool  # ... on branched model rollouts too, behind the trust guard, the model on a stream of its own


COMPOSITIONS = {
    "dreamer": Composition(world_model="latent", reads_latent=True, imagination=True, off_policy=False,
                           branching=False),
    "model-free": Composition(world_model=None, reads_latent=False, imagination=False, off_policy=True,
                              branching=False),
    "mbpo": Composition(world_model="latent", reads_latent=False, imagination=False, off_policy=True,
                        branching=True),
    "hybrid": Composition(world_model="latent", reads_latent=False, imagination=True, off_policy=True,
                          branching=True),
    # SAC reads [o_t, h_t]: the observation and the RSSM's belief (learners/belief.py).
    "belief": Composition(world_model="rssm", reads_latent=False, imagination=False, off_policy=True,
                          branching=False),
}
MODELS = {"latent": WorldModel, "rssm": RSSM}
# Weights a run folder written before them lacks; loading it keeps their fresh values (0: none seen yet).
ADDED_SINCE = ("sac.reward_scale", "belief_scale.mean", "belief_scale.scale")
# The memory gate's tensors and the memoryless learner behind it, which belief runs from before the gate lack.
GATED = ("gate.", "memoryless_")


def model_kind(config: Config) -> str | None:
    """The world model a config learns: its `model` setting, or with 'auto' its algo's own (None: no model)."""
    own = COMPOSITIONS[config.algo].world_model
    return None if own is None else (own if config.world_model.model == "auto" else config.world_model.model)


def check_composition(config: Config, image: bool = False) -> None:
    """ConfigError in one line for a model the algo cannot use, or (image: observations are images) one that
    would read raw pixels."""
    kind, parts = model_kind(config), COMPOSITIONS[config.algo]
    if (image or config.observation.pixels) and kind != "rssm":
        model = f"--model {kind}" if kind else "no world model"
        raise ConfigError(f"image observations are read through the RSSM's state, but {config.algo} with {model} "
                          "would read raw pixels: use --algo belief, or --algo dreamer --model rssm")
    if kind == "rssm" and parts.branching:
        raise ConfigError(f"{config.algo} branches rollouts from single replayed observations, which an RSSM cannot "
                         "start from (it needs the episode so far): use --model latent, or --algo belief or dreamer")
    if kind == "latent" and not parts.branching and parts.off_policy:
        raise ConfigError(f"{config.algo} reads the RSSM's belief: --model latent has none (use --model rssm)")
    if parts.world_model is None and config.world_model.model != "auto":
        raise ConfigError(f"{config.algo} learns no world model, so --model {config.world_model.model} has no effect")


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
        check_composition(config, spec.image)
        kind = model_kind(config)
        self.recurrent = kind == "rssm"
        # The belief composition's policy reads [o_t, h_t]; other observation policies o_t alone.
        self.reads_belief = self.recurrent and not parts.reads_latent
        # ... but never raw pixels: from images it reads the model state s_t = [h_t, z_t] instead.
        self.reads_state = self.reads_belief and spec.image
        # From vectors the learner reads h only once a held-out test says it pays (learners/memory_gate.py).
        gated = self.reads_belief and not self.reads_state and ln.memory_gain > 0
        # Beside an off-policy learner the model draws from a stream of its own (streams.py); behind a shut
        # memory gate so does everything that reads the model, which leaves the learner model-free's.
        self.stream = ModelStream(config.train.seed, self.device) if parts.branching or gated else None
        frames = {"obs_shape": spec.obs_shape} if spec.image else {}  # images: the RSSM's conv encoder and decoder
        with self.model_draws():
            self.world_model = None if kind is None else MODELS[kind](wm, spec.obs_dim, spec.action_dim, **frames)
            self.gate = MemoryGate(spec.obs_dim, spec.action_dim, ln.sac_hidden, ln.memory_gain) if gated else None
        settle = ln.settle_drift if self.reads_state else None  # from images SAC waits for the states to settle
        # From vectors the learner reads h standardised by its replayed spread (learners/belief.py).
        self.belief_scale = BeliefScale(wm.deter_dim) if self.reads_belief and not self.reads_state else None
        self.beliefs = Beliefs(self.world_model, self.device, settle, self.belief_scale) if self.recurrent else None
        obs_in = self.world_model.latent_dim if self.reads_state else \
            spec.obs_dim + (wm.deter_dim if self.reads_belief else 0)
        # While the gate is shut the agent is model-free's: an actor and critics of their own on o_t alone, drawn
        # first from the learner's stream as model-free's are.
        self.memoryless_actor = None if self.gate is None else Actor(spec.obs_dim, ln.sac_hidden, spec.action_dim,
                                                                     spec.discrete, ln.sac_layers)
        with self.model_draws() if gated else contextlib.nullcontext():
            obs_actor = None if parts.reads_latent else Actor(obs_in, ln.sac_hidden, spec.action_dim,
                                                              spec.discrete, ln.sac_layers)
        state_dim = self.world_model.latent_dim if self.recurrent else wm.latent_dim
        if parts.imagination:
            with self.model_draws():  # the imagination critic is model work; an observation actor exists already
                self.actor_critic = ActorCritic(ac, state_dim, wm.hidden_dim, spec.action_dim, spec.discrete,
                                                wm.hidden_layers, actor=obs_actor)
            self.actor = None
        else:
            self.actor_critic, self.actor = None, obs_actor
        self.to(self.device)
        # The learners, after .to(device): their optimisers pack each network's parameters into flat tensors.
        trained = self.actor_critic.actor if self.actor_critic is not None else self.actor
        self.actor_opt = FlatAdam(trained, ln.sac_lr if parts.off_policy else ac.actor_lr, GRAD_CLIP["actor"])
        self.memoryless_sac = None
        if self.gate is not None:
            self.gate.optimiser()
            self.memoryless_sac = SAC(ln, spec.obs_dim, spec.action_dim, spec.discrete, self.memoryless_actor,
                                      FlatAdam(self.memoryless_actor, ln.sac_lr, GRAD_CLIP["actor"]))
        with self.model_draws() if gated else contextlib.nullcontext():
            self.sac = SAC(ln, obs_in, spec.action_dim, spec.discrete, trained, self.actor_opt,
                           obs_in if self.reads_state else spec.obs_dim) if parts.off_policy else None
        self.off_policy: OffPolicyLearner | None = None
        if self.reads_belief:
            self.off_policy = BeliefOffPolicy(self.sac, ln, self.device, self.beliefs, spec.obs_dim, self.reads_state,
                                              self.gate, self.memoryless_sac, self.model_draws)
        elif parts.branching:
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
            self.world_model, config, self.device, self.model_draws, self.imagination, imagine_due, self.beliefs,
            self.model_share, None if self.gate is None else self.model_starts)

    def model_share(self) -> float:
        """The multiple of train_ratio the world model trains at now: behind a memory gate SHUT_MODEL_SHARE while
        shut and OPEN_MODEL_SHARE once open; 1 without one."""
        if self.gate is None:
            return 1.0
        return SHUT_MODEL_SHARE if self.shut else OPEN_MODEL_SHARE

    def model_starts(self, replay: ReplayBuffer, n: int, rng: np.random.Generator) -> np.ndarray:
        """Where the model's n training sequences start. While the gate is shut, at uniformly drawn steps, each
        moved back to its episode's first step where that is fewer than seq_len steps before: what the check
        asks of h (a cue) is then learned in windows that begin where it was seen, from h = 0, and the rest of
        a long episode is still fitted (a velocity). Once open, Beliefs' default."""
        if not self.shut:
            return Beliefs.sequence_starts(replay, n, rng)
        return Beliefs.sequence_starts(replay, n, rng, firsts_share=0.0, snap=self.config.world_model.seq_len)

    @property
    def shut(self) -> bool:
        """Whether a memory gate keeps the learner off the belief: it reads o_t alone, with actor and critics
        of its own."""
        return self.gate is not None and not self.gate.is_open

    @property
    def policy(self) -> Actor:
        """The actor that acts now, and that the algo's learners train: behind a shut memory gate the
        memoryless one."""
        if self.shut:
            return self.memoryless_actor
        return self.actor_critic.actor if self.actor_critic is not None else self.actor

    def policy_input(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """What the policy reads of an observation (and, for a recurrent model, the belief state after it):
        the latent (posterior mean or RSSM state), symlog [o, h], symlog s (from images), or symlog observations."""
        if self.recurrent and state is None:
            raise ValueError("a recurrent model's policy reads its belief: act with a Memory (agent.memory(n))")
        if self.parts.reads_latent:
            return state if self.recurrent else self.world_model.encode_mean(obs)
        if self.reads_state:
            return symlog(state)
        if self.reads_belief and not self.shut:
            return symlog(torch.cat([obs, self.belief_scale(self.world_model.split(state)[0])], -1))
        return symlog(obs)

    def imagined_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the policy reads of an imagined latent: z itself, or its decoding in symlog units (beside the
        belief h in symlog, where the policy reads [o, h])."""
        if self.parts.reads_latent:
            return z
        if self.reads_state:
            return symlog(z)
        if self.reads_belief and not self.shut:
            return torch.cat([self.world_model.decoder(z), symlog(self.belief_scale(self.world_model.split(z)[0]))], -1)
        return self.world_model.decoder(z)

    def model_draws(self, rng: np.random.Generator | None = None
                    ) -> contextlib.AbstractContextManager[np.random.Generator | None]:
        """The generators of world-model work: the model's own stream where it has one, else rng."""
        return self.stream.active() if self.stream is not None else contextlib.nullcontext(rng)

    # -- acting ----------------------------------------------------------------------------------

    def act(self, obs: np.ndarray, deterministic: bool = False, noise: np.ndarray | None = None,
            memory: Memory | None = None) -> np.ndarray:
        """The agent-side action for one observation: an index, or a vector in [-1, 1].

        noise: the step's exploration noise (action_dim standard normals, see exploration.py);
        without it a sampled action draws its own from torch's generator. memory: a one-env
        belief (agent.memory()) where the model is recurrent.
        """
        batch_noise = None if noise is None else np.asarray(noise)[None]
        return self.act_batch(np.asarray(obs)[None], deterministic, batch_noise, memory)[0]

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, deterministic: bool = False, noise: np.ndarray | None = None,
                  memory: Memory | None = None, rows: list[int] | None = None) -> np.ndarray:
        """Actions for a batch of observations (n, obs): indices (n,) or vectors (n, act).

        memory: the recurrent model's belief of these envs (its `rows`), advanced by the observations
        and the actions chosen; required where the model is recurrent, ignored otherwise.
        """
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        state = perceive(self.world_model, memory, o, rows) if self.recurrent and memory is not None else None
        x = self.policy_input(o, state)
        actor = self.policy
        if deterministic:
            action = actor.mode(x)
        elif noise is not None:
            action = actor.explore(x, torch.as_tensor(np.asarray(noise, np.float32), device=self.device))
        else:
            action = actor.rollout_action(x, actor.noise(x.shape[:1], x.device))[0]
        if state is not None:  # every actor path gives discrete actions one-hot: the encoded action already
            took(memory, action, rows)
        action = action.cpu().numpy()
        return action.argmax(-1) if self.spec.discrete else action

    def memory(self, n: int = 1) -> Memory | None:
        """A fresh belief for n envs at their episodes' starts (None: the model, if any, has no memory)."""
        return Memory(n, self.world_model, self.spec.action_dim, self.device) if self.recurrent else None

    @torch.no_grad()
    def track(self, obs: np.ndarray, action: np.ndarray, memory: Memory | None) -> None:
        """Advance a one-env memory by an observation and the encoded action taken without the policy (prefill)."""
        if memory is not None:
            perceive(self.world_model, memory, torch.as_tensor(np.asarray(obs, np.float32)[None], device=self.device))
            took(memory, torch.as_tensor(np.asarray(action, np.float32)[None], device=self.device))

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
        if self.beliefs is not None and step >= self.config.train.prefill:
            self.beliefs.follow(replay, step)  # after the model's updates, before the learner reads them
        if self.off_policy is not None and step >= self.config.train.prefill:
            yield from self.off_policy.learn(replay, rng)

    def pretrain_updates(self) -> int:
        """World-model-only updates learn() makes at the prefill's last env step: none behind a shut memory gate,
        which defers them to its opening (learners/world_model.py)."""
        if self.shut:
            return 0
        return self.config.train.pretrain if self.parts.world_model else 0

    def learner_metrics(self) -> dict[str, float]:
        """What the learners allow right now, for the log rows (the trust guard's hybrid/... keys)."""
        return self.off_policy.metrics() if isinstance(self.off_policy, HybridLearner | BeliefOffPolicy) else {}

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
        if self.gate is not None:
            opts["memory_gate"] = self.gate.optimiser()
            opts["memoryless_actor"] = self.memoryless_sac.actor_opt
            opts.update({f"memoryless_{k}": v for k, v in self.memoryless_sac.optimisers().items()})
        return {k: v for k, v in opts.items() if v is not None}

    def buffers(self) -> dict[str, ReplayBuffer]:
        """The learners' own replay by checkpoint name (branched transitions)."""
        return {"model_replay": self.off_policy.model_buffer} if isinstance(self.off_policy, HybridLearner) else {}

    def counters(self) -> dict[str, float]:
        """The learners' carried-over counters, saved with the loop's state."""
        found: dict[str, float] = {}
        for learner in (self.model_learner, self.off_policy, self.beliefs):
            if learner is not None:
                found.update(learner.counters())
        return found

    def load_counters(self, state: dict[str, float]) -> None:
        """Restore counters() from a checkpoint's state."""
        for learner in (self.model_learner, self.off_policy, self.beliefs):
            if learner is not None:
                learner.load_counters(state)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The trust guard's window and the model stream's position, by full checkpoint name."""
        found = {}
        if isinstance(self.off_policy, HybridLearner):
            found.update({f"guard/{k}": v for k, v in self.off_policy.guard.state_tensors().items()})
        if self.stream is not None:
            found.update({f"stream/{k}": v for k, v in self.stream.state_tensors().items()})
        if self.beliefs is not None:
            found.update({f"belief/{k}": v for k, v in self.beliefs.state_tensors().items()})
        return found

    def load_state_tensors(self, part: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore state_tensors(), given each prefix's tensors ({'guard': ..., 'stream': ...})."""
        if isinstance(self.off_policy, HybridLearner):
            self.off_policy.guard.load_state_tensors(part["guard"], self.device)
        if self.stream is not None:
            self.stream.load_state_tensors(part["stream"])
        if self.beliefs is not None:
            self.beliefs.load_state_tensors(part["belief"])

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
        # Tensors added since older run folders were written keep their fresh values there.
        missing = sorted(set(own) - set(tensors) - set(ADDED_SINCE) - {k for k in own if k.startswith(GATED)})
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
        kept = [k for k in own if (k in ADDED_SINCE or k.startswith(GATED)) and k not in tensors]
        self.load_state_dict({**{k: own[k] for k in kept},
                              **{k: v.to(self.device) for k, v in tensors.items()}}, strict=True)
        if self.gate is not None and "gate.open" not in tensors:  # a belief run from before the gate read h
            self.gate.open.fill_(1.0)
