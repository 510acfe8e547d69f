"""The training loop (collect, update, evaluate, log, save) and policy evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .agent import Agent, resolve_device
from .buffer import ReplayBuffer
from .config import Config
from .envs import encode_action, make_env, random_action, spec_of, threshold_of, to_env_action
from .progress import CostModel, Progress

EVAL_SEED_OFFSET = 10_000  # eval episodes use seeds far from the training env's


@dataclass
class EvalResult:
    """Returns of deterministic episodes, with the frames of the first when recorded."""

    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        """mean, std, min and max of the returns."""
        r = np.asarray(self.returns, dtype=np.float64)
        return {"return_mean": float(r.mean()), "return_std": float(r.std()),
                "return_min": float(r.min()), "return_max": float(r.max()),
                "length_mean": float(np.mean(self.lengths)), "episodes": len(r)}


def evaluate_policy(agent: Agent, env_id: str, episodes: int, seed: int,
                    record: bool = False, batch: int = 16) -> EvalResult:
    """Run the deterministic policy for some episodes, `batch` envs in lockstep.

    Episode i resets with seed + i, so results do not depend on the batch size. With record,
    the rgb_array frames of episode 0 are kept.
    """
    result = EvalResult([0.0] * episodes, [0] * episodes)
    for first in range(0, episodes, batch):
        ids = list(range(first, min(first + batch, episodes)))
        envs = [make_env(env_id, render_mode="rgb_array" if record and i == 0 else None) for i in ids]
        try:
            obs = [env.reset(seed=seed + i)[0] for env, i in zip(envs, ids, strict=True)]
            if record and first == 0:
                result.frames.append(envs[0].render())
            live = list(range(len(ids)))
            while live:
                actions = agent.act_batch(np.stack([obs[j] for j in live]), deterministic=True)
                still = []
                for j, action in zip(live, actions, strict=True):
                    obs[j], reward, terminated, truncated, _ = envs[j].step(to_env_action(agent.spec, action))
                    result.returns[ids[j]] += float(reward)
                    result.lengths[ids[j]] += 1
                    if record and ids[j] == 0:
                        result.frames.append(envs[j].render())
                    if not (terminated or truncated):
                        still.append(j)
                live = still
        finally:
            for env in envs:
                env.close()
    return result


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def train(config: Config, run_dir: Path | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> tuple[Agent, dict[str, Any]]:
    """Train an agent as config says; write the run folder if run_dir is given; return the summary."""
    tr = config.train
    torch.set_num_threads(tr.threads)
    torch.manual_seed(tr.seed)
    rng = np.random.default_rng(tr.seed)
    device = resolve_device(tr.device)
    env = make_env(config.env, seed=tr.seed)
    spec = spec_of(env)
    threshold = threshold_of(config.env, tr.threshold)
    agent = Agent(config, spec, device)
    buffer = ReplayBuffer(min(tr.buffer_size, tr.steps), spec.obs_dim, spec.action_dim)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_config(run_dir, config, spec)

    rows: list[dict[str, Any]] = []
    pending: list[dict[str, float]] = []
    finished: list[float] = []
    start = time.perf_counter()
    costs = CostModel(tr.steps, tr.prefill, tr.pretrain, tr.train_ratio, tr.eval_every)
    logged_step, logged_time = 0, start  # the previous metrics row, for train/sps over the window
    owed, updates, episode, episode_return = 0.0, 0, 0, 0.0
    best, solved_at, last_eval = None, None, None
    obs, _ = env.reset(seed=tr.seed)

    def evaluate_now(step: int) -> None:
        nonlocal best, solved_at, last_eval
        began = time.perf_counter()
        stats = evaluate_policy(agent, config.env, tr.eval_episodes,
                                seed=tr.seed + EVAL_SEED_OFFSET).stats()
        if run_dir is not None:  # a checkpoint, so an interrupted run can still be used
            runs.save_weights(run_dir, agent.weights())
        # Evaluation and checkpoint time, so benchmarks can count training seconds alone.
        stats["seconds"] = time.perf_counter() - began
        costs.add("eval", stats["seconds"])
        last_eval = stats["return_mean"]
        best = last_eval if best is None else max(best, last_eval)
        if solved_at is None and threshold is not None and last_eval >= threshold:
            solved_at = step
        rows.append({"step": step, "time": time.perf_counter() - start,
                     **{f"eval/{k}": v for k, v in stats.items()}})

    def report(step: int, phase: str, pretrained: int, losses: dict[str, float] | None = None) -> None:
        if on_progress is None:
            return
        if losses is None:
            latest = next((r for r in reversed(rows) if "wm/loss" in r), {})
            losses = {k: latest[k] for k in ("wm/loss", "ac/actor_loss") if k in latest}
        on_progress(Progress(step, tr.steps, episode, last_eval, losses,
                             0.0 if phase == "pretrain" else costs.sps, phase, pretrained, tr.pretrain,
                             costs.seconds_left(step, pretrained)))

    for step in range(1, tr.steps + 1):
        began = time.perf_counter()
        if step <= tr.prefill:
            action = random_action(spec, rng)
        else:
            action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(to_env_action(spec, action))
        buffer.add(obs, encode_action(spec, action), float(reward), next_obs, terminated, episode)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            finished.append(episode_return)
            episode, episode_return = episode + 1, 0.0
            obs, _ = env.reset()
        costs.add("step", time.perf_counter() - began)

        if step == max(tr.prefill, 1):
            # Fit the model to the prefill data first: an actor trained in an untrained model
            # follows its artefacts, and Adam turns that steady pull into a collapsed policy.
            for i in range(tr.pretrain):
                began = time.perf_counter()
                metrics = agent.update(buffer.sample(tr.batch_size, config.world_model.seq_len, rng, device),
                                       behave=False)
                costs.add("pretrain", time.perf_counter() - began)
                report(step, "pretrain", i + 1, {"wm/loss": metrics["wm/loss"]})
            updates += tr.pretrain
        if step >= tr.prefill:
            owed += tr.train_ratio
            while owed >= 1.0:
                began = time.perf_counter()
                batch = buffer.sample(tr.batch_size, config.world_model.seq_len, rng, device)
                pending.append(agent.update(batch))
                costs.add("update", time.perf_counter() - began)
                owed -= 1.0
                updates += 1

        if step % tr.log_every == 0 or step == tr.steps:
            now = time.perf_counter()
            row: dict[str, Any] = {"step": step, "time": now - start, "train/episodes": episode,
                                   "train/sps": (step - logged_step) / (now - logged_time)}
            logged_step, logged_time = step, now
            if finished:
                row["train/episode_return"] = float(np.mean(finished))
                finished = []
            row.update(_mean_rows(pending))
            pending = []
            rows.append(row)
        if (tr.eval_every and step % tr.eval_every == 0) or step == tr.steps:
            evaluate_now(step)
        if run_dir is not None and (step % tr.log_every == 0 or step == tr.steps):
            runs.write_metrics(run_dir, rows)
        costs.end_step(step, time.perf_counter())
        report(step, "prefill" if step < tr.prefill else "train", tr.pretrain if step >= tr.prefill else 0)
    env.close()

    wall = time.perf_counter() - start
    summary = {"env": config.env, "algo": config.algo, "seed": tr.seed, "env_steps": tr.steps,
               "episodes": episode, "wall_seconds": wall, "final_eval": last_eval,
               "best_eval": best, "threshold": threshold, "steps_to_threshold": solved_at,
               "updates": updates}
    if run_dir is not None:
        runs.write_json(run_dir / runs.SUMMARY_FILE, summary)
        from .plotting import plot_run

        plot_run(run_dir)
    return agent, summary
