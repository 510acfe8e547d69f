"""Dream versus reality: open-loop world-model rollouts beside the real env, their errors, JSON.

Start states: half the rollouts begin at fresh resets (seeds seed, seed + 1, ...), half at
states along one real episode of the deterministic policy from reset(seed), at steps drawn
with np.random.default_rng(seed). A mid-episode state is rebuilt by resetting a fresh env
with the same seed and replaying the same action prefix: exact for deterministic envs such
as classic control, and checked against the recorded observation.

From each start the model rolls the prior MEAN forward (deterministic), beginning at the
posterior mean of the real start observation; the real env takes the very same actions in
lockstep. Policy actions are the actor's deterministic action on the IMAGINED latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_MAX_EPISODE_STEPS, ObservationConfig
from .envs import EnvSpec, encode_action, make_env, random_action, to_env_action
from .learners.belief import perceive, took

ACTION_SOURCES = ("policy", "random")
TABLE_STEPS = (1, 5, 10)  # and H: the steps shown in the terminal table
OUT_DIR = "imagine"


@dataclass(frozen=True)
class Start:
    """Where a rollout begins: reset(reset_seed), then the agent-side actions of prefix."""

    kind: str  # "reset" or "episode"
    reset_seed: int
    prefix: tuple = ()  # agent-side actions (indices or [-1, 1] vectors) from reset to the start

    @property
    def step(self) -> int:
        """Env steps from reset to the start state."""
        return len(self.prefix)


@dataclass
class Rollouts:
    """N lockstep rollouts of horizon H; real entries after the real episode ended are NaN."""

    starts: list[Start]
    real_obs: np.ndarray  # (H + 1, N, obs): o_0 .. o_H
    imagined_obs: np.ndarray  # (H + 1, N, obs): decode(z_0) .. decode(z_H)
    real_reward: np.ndarray  # (H, N): r_t of taking a_t
    imagined_reward: np.ndarray  # (H, N)
    real_cont: np.ndarray  # (H, N): 0 where the step terminated the episode, else 1
    imagined_cont: np.ndarray  # (H, N): predicted probability of going on
    actions: np.ndarray  # (H, N, act): what the model was given (one-hot or [-1, 1])
    env_actions: list[list]  # [N][H]: the same actions in the env's own units
    ended_at: list[int | None]  # real step at which each episode ended (terminated or truncated)
    terminated: list[bool]  # whether that end was a termination (not a time limit)
    frames: dict[int, list[np.ndarray]] = field(default_factory=dict)  # rollout -> real frames

    @property
    def horizon(self) -> int:
        """H, the number of imagined steps."""
        return self.real_reward.shape[0]


def policy_episode(agent, env_id: str, seed: int, max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> list:
    """Agent-side actions of one deterministic-policy episode from reset(seed)."""
    env = make_env(env_id, max_episode_steps=max_episode_steps, observation=agent.config.observation)
    try:
        obs, _ = env.reset(seed=seed)
        actions, done, memory = [], False, agent.memory()
        while not done:
            action = agent.act(obs, deterministic=True, memory=memory)
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(to_env_action(agent.spec, action))
            done = terminated or truncated
    finally:
        env.close()
    return actions


def choose_starts(agent, env_id: str, rollouts: int, seed: int, horizon: int,
                  max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> list[Start]:
    """Half fresh resets (seed, seed + 1, ...), half states along one policy episode."""
    n_reset = (rollouts + 1) // 2
    starts = [Start("reset", seed + i) for i in range(n_reset)]
    n_episode = rollouts - n_reset
    if n_episode:
        actions = policy_episode(agent, env_id, seed, max_episode_steps)
        # Prefer starts with H steps left, so the episode's own time limit rarely cuts them.
        room = max(1, len(actions) - horizon + 1)
        rng = np.random.default_rng(seed)
        steps = np.sort(rng.choice(room, size=n_episode, replace=n_episode > room))
        starts += [Start("episode", seed, tuple(actions[:s])) for s in steps]
    return starts


def open_start(env_id: str, spec: EnvSpec, start: Start, render_mode: str | None = None,
               max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
               track: Callable[[np.ndarray, np.ndarray], None] | None = None,
               observation: ObservationConfig | None = None):
    """A fresh env brought to the start state; returns (env, observation).

    track(obs, action) sees each observation of the prefix and the agent-side action taken in it
    (a recurrent model's belief follows the episode so far); observation: the run's (pixels)."""
    env = make_env(env_id, render_mode=render_mode, max_episode_steps=max_episode_steps, observation=observation)
    obs, _ = env.reset(seed=start.reset_seed)
    for action in start.prefix:
        if track is not None:
            track(obs, np.asarray(action))
        obs, _, terminated, truncated, _ = env.step(to_env_action(spec, action))
        if terminated or truncated:
            env.close()
            raise ValueError(f"replaying the start prefix of {env_id} ended the episode early: "
                             "the env is not deterministic given its seed")
    return env, obs


@torch.no_grad()
def rollout(agent, env_id: str, starts: Sequence[Start], horizon: int, actions: str = "policy",
            seed: int = 0, record: Sequence[int] = (),
            max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> Rollouts:
    """Imagine open-loop from each start and step the real env with the same actions.

    actions: "policy" (the actor's mode on the imagined latent) or "random" (uniform, drawn
    from np.random.default_rng(seed), so they are the same whatever the weights). The real
    envs of the rollouts in record render rgb_array frames. Real episodes end at the env's
    step limit, or at max_episode_steps for an env without one, as in evaluation. From image
    observations the real frames are the observations themselves (real_obs), and none is rendered.
    """
    if actions not in ACTION_SOURCES:
        raise ValueError(f"unknown action source '{actions}' (choose from {', '.join(ACTION_SOURCES)})")
    spec, wm, actor = agent.spec, agent.world_model, agent.policy
    device, n, H = agent.device, len(starts), horizon
    rng = np.random.default_rng(seed)
    memories = [agent.memory() for _ in starts]  # a recurrent model's belief along each start's prefix

    def tracker(i: int) -> Callable[[np.ndarray, np.ndarray], None] | None:
        return None if memories[i] is None else \
            (lambda o, a: agent.track(o, encode_action(spec, a), memories[i]))

    render = record if not spec.image else ()
    opened = [open_start(env_id, spec, s, "rgb_array" if i in render else None, max_episode_steps, tracker(i),
                         agent.config.observation) for i, s in enumerate(starts)]
    envs = [env for env, _ in opened]
    obs0 = np.stack([o for _, o in opened]).astype(np.float32)  # (N, obs) or (N, H, W, C)
    real_obs = np.full((H + 1, n, *spec.obs_dims), np.nan, np.float32 if spec.image else np.float64)
    real_obs[0] = obs0
    real_reward, real_cont = np.full((H, n), np.nan), np.full((H, n), np.nan)
    frames = {i: [frame] for i in render if (frame := _render(envs[i])) is not None}
    ended_at: list[int | None] = [None] * n
    terminated_flags = [False] * n
    env_actions: list[list] = [[] for _ in range(n)]
    try:
        if agent.recurrent:  # the belief after the prefix and the start's observation
            z = torch.cat([perceive(wm, m, torch.as_tensor(o[None], device=device))
                           for m, o in zip(memories, obs0, strict=True)])
        else:
            z = wm.encode(torch.as_tensor(obs0, device=device))[0]  # (N, latent): posterior mean
        latents, model_actions, rewards, conts = [z], [], [], []
        for t in range(H):
            if actions == "policy":
                a = actor.mode(agent.imagined_input(z))  # (N, act): the dream acts on what it believes
                agent_side = a.argmax(-1).cpu().numpy() if spec.discrete else a.cpu().numpy()
            else:
                agent_side = np.stack([random_action(spec, rng) for _ in range(n)])
                a = torch.as_tensor(np.stack([encode_action(spec, x) for x in agent_side]), device=device)
            rewards.append(wm.reward(z, a))  # (N,)
            z_next = wm.transition(z, a)[0]  # (N, latent): prior mean, no sampling
            conts.append(wm.cont(z_next))  # (N,): does the episode go on from the state reached?
            z = z_next
            latents.append(z)
            model_actions.append(a)
            for i, env in enumerate(envs):
                env_action = to_env_action(spec, agent_side[i])
                env_actions[i].append(np.asarray(env_action).tolist())
                if ended_at[i] is not None:
                    continue  # the real episode is over: nothing left to compare
                o, r, term, trunc, _ = env.step(env_action)
                real_obs[t + 1, i], real_reward[t, i], real_cont[t, i] = o, r, 0.0 if term else 1.0
                if i in frames:
                    frames[i].append(_render(env))
                if term or trunc:
                    ended_at[i], terminated_flags[i] = t + 1, bool(term)
        imagined_obs = wm.decode(torch.stack(latents))  # (H + 1, N, obs) or (H + 1, N, H, W, C)
    finally:
        for env in envs:
            env.close()
    imagined_obs = imagined_obs.cpu().numpy() if spec.image else imagined_obs.cpu().double().numpy()
    return Rollouts(
        starts=list(starts), real_obs=real_obs, imagined_obs=imagined_obs,
        real_reward=real_reward, imagined_reward=torch.stack(rewards).cpu().double().numpy(),
        real_cont=real_cont, imagined_cont=torch.stack(conts).cpu().double().numpy(),
        actions=torch.stack(model_actions).cpu().numpy(), env_actions=env_actions,
        ended_at=ended_at, terminated=terminated_flags, frames=frames)


def _render(env) -> np.ndarray | None:
    """An rgb_array frame, or None for envs that cannot render (the GIF then goes without)."""
    try:
        frame = env.render()
    except Exception:  # custom envs may not implement render at all
        return None
    return frame if isinstance(frame, np.ndarray) and frame.ndim == 3 else None


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over rollouts (axis 1), ignoring NaN; NaN where no rollout is left."""
    valid = ~np.isnan(x)
    count = valid.sum(1)
    safe = np.where(valid, x, 0.0)
    mean = safe.sum(1) / np.maximum(count, 1)
    var = (np.where(valid, x - np.expand_dims(mean, 1), 0.0) ** 2).sum(1) / np.maximum(count, 1)
    return np.where(count > 0, mean, np.nan), np.where(count > 0, np.sqrt(var), np.nan)


def step_metrics(r: Rollouts) -> dict[str, Any]:
    """Per imagined step k = 1..H: errors (mean and std over the rollouts still real) and agreement.

    Images get no per-dimension errors (one per pixel): their obs error is the mean over the pixels."""
    obs_err = np.abs(r.imagined_obs[1:] - r.real_obs[1:])  # (H, N, obs) or (H, N, H, W, C), NaN after the end
    image = obs_err.ndim > 3
    obs_err = obs_err.reshape(*obs_err.shape[:2], -1)
    dim_mean, dim_std = _mean_std(obs_err) if not image else np.zeros((2, r.horizon, 0))  # (H, obs)
    all_mean, all_std = _mean_std(obs_err.mean(-1))  # (H,)
    rew_mean, rew_std = _mean_std(np.abs(r.imagined_reward - r.real_reward))  # (H,)
    valid = ~np.isnan(r.real_cont)  # (H, N)
    agree = ((r.imagined_cont > 0.5) == (r.real_cont > 0.5)) & valid
    count = valid.sum(1)
    return {
        "step": list(range(1, r.horizon + 1)),
        "rollouts_left": count.tolist(),
        "obs_err_mean": all_mean.tolist(), "obs_err_std": all_std.tolist(),
        "obs_err_dim_mean": dim_mean.tolist(), "obs_err_dim_std": dim_std.tolist(),
        "reward_err_mean": rew_mean.tolist(), "reward_err_std": rew_std.tolist(),
        "cont_agreement": np.where(count > 0, agree.sum(1) / np.maximum(count, 1), np.nan).tolist(),
        "reconstruction_err": float(np.abs(r.imagined_obs[0] - r.real_obs[0]).mean(dtype=np.float64)),
    }


def table_steps(horizon: int) -> list[int]:
    """Steps 1, 5, 10 and H that fit the horizon, without repeats."""
    return sorted({k for k in (*TABLE_STEPS, horizon) if k <= horizon})


def to_json(r: Rollouts, metrics: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to redraw the figures: meta, per-step metrics and every rollout (images without their
    frames: dream.gif shows those)."""
    rollouts = []
    image = r.real_obs.ndim > 3
    for i, s in enumerate(r.starts):
        rollouts.append({
            "start": s.kind, "reset_seed": s.reset_seed, "start_step": s.step,
            "ended_at": r.ended_at[i], "terminated": r.terminated[i],
            "actions": r.actions[:, i].tolist(), "env_actions": r.env_actions[i],
            **({} if image else {"real_obs": r.real_obs[:, i].tolist(), "imagined_obs": r.imagined_obs[:, i].tolist()}),
            "real_reward": r.real_reward[:, i].tolist(), "imagined_reward": r.imagined_reward[:, i].tolist(),
            "real_cont": r.real_cont[:, i].tolist(), "imagined_cont": r.imagined_cont[:, i].tolist(),
        })
    return {**meta, "horizon": r.horizon, "metrics": metrics, "rollouts": rollouts}


PROBE_STEPS = 600  # real steps of the deterministic policy the probe fits and tests on
RIDGE = 1e-3  # ridge penalty of the probe (relative to the mean squared input)


def _probe_r2(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """R^2 per output of a ridge-regularised linear map x -> y fitted on one half, scored on the other."""
    def padded(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.ones((len(x), 1))], 1)

    a = padded(x_fit)
    penalty = RIDGE * np.mean(a**2) * len(a) * np.eye(a.shape[1])
    w = np.linalg.solve(a.T @ a + penalty, a.T @ y_fit)
    residual = ((padded(x_test) @ w - y_test) ** 2).mean(0)
    return 1.0 - residual / np.maximum(y_test.var(0), 1e-12)


@torch.no_grad()
def belief_probe(agent, env_id: str, seed: int,
                 max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> dict[str, Any] | None:
    """How well a recurrent model's belief recovers what the observation hides (None: nothing to say).

    Where the env names what it hides (`hidden`, `hidden_names`, `true_state()`: benchmarks/suite_envs.py),
    deterministic policy episodes from reset(seed), reset(seed + 1), ... give the belief s_t and the hidden
    values at each step; a linear probe fitted on the first half of the episodes is scored (R^2) on the
    rest, beside the same probe from the observation alone: 1 is a perfect read-out, 0 no better than
    the mean.
    """
    if not agent.recurrent or agent.spec.image:  # a probe from pixels would fit a weight per pixel
        return None
    env = make_env(env_id, max_episode_steps=max_episode_steps)
    try:
        try:
            hidden, names = env.get_wrapper_attr("hidden"), env.get_wrapper_attr("hidden_names")
            true_state = env.get_wrapper_attr("true_state")
        except AttributeError:
            return None
        beliefs, observations, truths, episode_of = [], [], [], []
        episode = 0
        while len(truths) < PROBE_STEPS or episode < 2:
            obs, _ = env.reset(seed=seed + episode)
            memory, done = agent.memory(), False
            while not done:
                beliefs.append(perceive(agent.world_model, memory, torch.as_tensor(obs[None], dtype=torch.float32,
                                                                                    device=agent.device))[0])
                observations.append(np.asarray(obs, np.float64))
                truths.append(np.asarray(true_state(), np.float64)[list(hidden)])
                episode_of.append(episode)
                action = agent.policy.mode(agent.policy_input(torch.as_tensor(obs[None], dtype=torch.float32,
                                                                              device=agent.device),
                                                              beliefs[-1][None]))
                took(memory, action)
                agent_side = action[0].argmax().item() if agent.spec.discrete else action[0].cpu().numpy()
                obs, _, terminated, truncated, _ = env.step(to_env_action(agent.spec, agent_side))
                done = terminated or truncated
            episode += 1
    finally:
        env.close()
    x_belief = torch.stack(beliefs).cpu().double().numpy()
    x_obs, y = np.stack(observations), np.stack(truths)
    fit = np.asarray(episode_of) < episode // 2
    test = ~fit
    r2_belief = _probe_r2(x_belief[fit], y[fit], x_belief[test], y[test])
    r2_obs = _probe_r2(x_obs[fit], y[fit], x_obs[test], y[test])
    return {"hidden": list(names), "r2_belief": r2_belief.tolist(), "r2_observation": r2_obs.tolist(),
            "steps": len(y), "episodes": episode, "fit_steps": int(fit.sum())}
