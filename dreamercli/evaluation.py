"""Policy evaluation: deterministic episodes on separate envs, several in lockstep."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .agent import Agent
from .config import DEFAULT_MAX_EPISODE_STEPS
from .envs import EnvError, check_observation, checked_reward, make_env, render_failure, to_env_action

EVAL_SEED_OFFSET = 10_000  # eval episodes during training use seeds far from the training env's


@dataclass
class EvalResult:
    """Returns of deterministic episodes, with the frames of the first when recorded."""

    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray] = field(default_factory=list)
    render_error: str | None = None  # why recording stopped (e.g. the env's render dependency is missing)

    def record(self, env, seen: np.ndarray | None = None) -> None:
        """Keep env's rgb_array frame, or `seen`, the image the agent observed (RGB); if rendering fails, keep no
        frames and the reason, not the error."""
        if self.render_error is not None:
            return
        if seen is not None:
            self.frames.append(np.repeat(seen, 3, -1) if seen.shape[-1] == 1 else seen)
            return
        try:
            self.frames.append(env.render())
        except Exception as err:  # a GIF is a nicety: the returns must not be lost over it
            self.render_error = render_failure(err)
            self.frames.clear()

    def stats(self) -> dict[str, float]:
        """mean, std, min and max of the returns."""
        r = np.asarray(self.returns, dtype=np.float64)
        return {"return_mean": float(r.mean()), "return_std": float(r.std()),
                "return_min": float(r.min()), "return_max": float(r.max()),
                "length_mean": float(np.mean(self.lengths)), "episodes": len(r)}


def evaluate_policy(agent: Agent, env_id: str, episodes: int, seed: int, record: bool = False,
                    batch: int = 16, max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> EvalResult:
    """Run the deterministic policy for some episodes, `batch` envs in lockstep.

    Episode i resets with seed + i, so results do not depend on the batch size. With record,
    the rgb_array frames of episode 0 are kept; from image observations, the images the agent saw.
    """
    seen = agent.spec.image
    result = EvalResult([0.0] * episodes, [0] * episodes)
    for first in range(0, episodes, batch):
        ids = list(range(first, min(first + batch, episodes)))
        envs = [make_env(env_id, render_mode="rgb_array" if record and i == 0 and not seen else None,
                         max_episode_steps=max_episode_steps, observation=agent.config.observation) for i in ids]
        try:
            obs = [env.reset(seed=seed + i)[0] for env, i in zip(envs, ids, strict=True)]
            for o, i in zip(obs, ids, strict=True):  # a NaN here would only show as a NaN return
                check_observation(env_id, o, agent.spec, f"at the reset of evaluation episode {i}")
            if record and first == 0:
                result.record(envs[0], obs[0] if seen else None)
            live = list(range(len(ids)))
            memory = agent.memory(len(ids))  # a recurrent model's belief, one row per episode
            while live:
                actions = agent.act_batch(np.stack([obs[j] for j in live]), deterministic=True, memory=memory,
                                          rows=live)
                still = []
                for j, action in zip(live, actions, strict=True):
                    try:
                        obs[j], reward, terminated, truncated, _ = envs[j].step(to_env_action(agent.spec, action))
                    except Exception as err:
                        raise EnvError(f"environment '{env_id}' raised during evaluation: "
                                       f"{type(err).__name__}: {err}") from None
                    where = f"during evaluation episode {ids[j]}"
                    check_observation(env_id, obs[j], agent.spec, where)
                    result.returns[ids[j]] += checked_reward(env_id, reward, where)
                    result.lengths[ids[j]] += 1
                    if record and ids[j] == 0:
                        result.record(envs[j], obs[j] if seen else None)
                    if not (terminated or truncated):
                        still.append(j)
                live = still
        finally:
            for env in envs:
                env.close()
    return result
