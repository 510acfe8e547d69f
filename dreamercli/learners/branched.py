"""MBPO-style branched rollouts: short model rollouts from real states, as transitions for SAC.

From replayed real observations, the world model is rolled k steps with the learner's own
actions: encode, transition (prior mean), reward, continue, decode. Each step becomes a
transition in observation space, (o, a, r, o', terminated), so the off-policy learner reads
model data and real data alike. A rollout stops at the first state the continue head calls
terminal (it is stored with terminated = 1, as a real episode end would be).
"""

from __future__ import annotations

import numpy as np
import torch

from ..buffer import ReplayBuffer, TransitionBatch
from ..models import WorldModel
from ..nets import symexp, symlog
from .policy import Actor

CONTINUE_BELOW = 0.5  # a predicted continue probability below this ends the branch


@torch.no_grad()
def branch(world_model: WorldModel, actor: Actor, obs: torch.Tensor, length: int) -> TransitionBatch:
    """Branched rollouts of `length` steps from real observations (N, obs); up to N * length transitions."""
    z = world_model.encode_mean(obs)  # (N, latent)
    seen = symlog(obs)  # what the actor reads: symlog observations, real at the first step
    alive = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
    steps: list[tuple[torch.Tensor, ...]] = []
    noise = actor.noise((length, obs.shape[0]), obs.device)  # (k, N, 1 or act)
    for t in range(length):
        action = actor.rollout_action(seen, noise[t])[0]  # (N, act)
        reward = world_model.reward(z, action)  # (N,)
        z_next = world_model.transition(z, action)[0]
        terminated = world_model.cont(z_next) < CONTINUE_BELOW  # (N,)
        seen_next = world_model.decoder(z_next)  # symlog units
        steps.append((seen[alive], action[alive], reward[alive], seen_next[alive], terminated[alive]))
        alive = alive & ~terminated
        if not alive.any():
            break
        z, seen = z_next, seen_next
    obs_s, act, rew, next_s, term = (torch.cat(parts) for parts in zip(*steps, strict=True))
    return TransitionBatch(symexp(obs_s), act, rew, symexp(next_s), term.float(), torch.ones_like(rew))


def fill(model_buffer: ReplayBuffer, batch: TransitionBatch) -> None:
    """Append branched transitions to the model buffer (a ring: the oldest go first)."""
    def arr(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    model_buffer.add_batch(arr(batch.obs), arr(batch.actions), arr(batch.rewards), arr(batch.next_obs),
                           arr(batch.terminated))


def mixed_batch(real: ReplayBuffer, model: ReplayBuffer, size: int, real_share: float,
                rng: np.random.Generator, device: torch.device, nstep: int = 1,
                discount: float = 1.0) -> TransitionBatch:
    """A learner batch with round(size * real_share) real transitions (n-step ones with nstep > 1)
    and the rest single steps from the model buffer."""
    n_real = size if len(model) == 0 else round(size * real_share)
    parts = [real.sample_transitions(n_real, rng, device, nstep, discount)] if n_real else []
    if n_real < size:
        parts.append(model.sample_transitions(size - n_real, rng, device))
    if len(parts) == 1:
        return parts[0]
    return TransitionBatch(*(torch.cat(xs) for xs in zip(*parts, strict=True)))
