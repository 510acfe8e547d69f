"""Screen SAC settings on real env data alone: env steps to the threshold, seconds, ms per update.

    nice python benchmarks/sac_screen.py --env Pendulum-v1 --candidate b --seeds 0 1 2
    nice python benchmarks/sac_screen.py --env CartPole-v1 --candidate b --set sac_ratio=5

Random actions for the first 500 env steps (the prefill), then `sac_ratio` updates per env
step on batches from a plain numpy ring buffer; every 500 env steps, 10 deterministic
episodes (env seeds 10000 + i). A run stops at the threshold (CartPole-v1: 475, Pendulum-v1:
-200) or at its budget (10,000 and 5,000 env steps). "train s" is wall-clock seconds without
the evaluations; "ms/update" is CPU time of the updates alone (time.process_time), which a
second process on the same cores disturbs less than wall-clock time. Each run appends one
JSON line to benchmarks/results/sac_screen.jsonl; --table prints the table of that file.

Results of 2026-11-26 on the 2-core AMD EPYC dev machine, shared with other jobs (load 2-6,
so seconds are inflated and noisy; ms/update is CPU time), CartPole-v1 with a target entropy
of 0.5 * log(2):

    env          candidate         steps to threshold (seeds 0/1/2)  median  ms/update
    Pendulum-v1  a (256, 256, x1)  5000 / 4500 / -                   4750    29
    Pendulum-v1  b (DroQ, x10)     1500 / 1000 / 2000                1500    10
    Pendulum-v1  c (DroQ, x5)      1500 / 3500 / 1500                1500    10
    CartPole-v1  a (256, 256, x1)  6000 / -   / -                    6000    26
    CartPole-v1  b (DroQ, x10)     1500 / 3500 / 1000                1500     8
    CartPole-v1  c (DroQ, x5)      2000 / 7000 / 5500                5500     9

(a)'s missing seeds were cut by the time box. b became SACSettings' defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dreamercli.envs import encode_action, make_env, random_action, spec_of, threshold_of, to_env_action
from dreamercli.learners.policy import Actor
from dreamercli.learners.sac import GRAD_CLIP, SAC, SACSettings, TransitionBatch
from dreamercli.optim import FlatAdam

RESULTS = Path(__file__).resolve().parent / "results" / "sac_screen.jsonl"
PREFILL, EVAL_EVERY, EVAL_EPISODES, EVAL_SEED = 500, 500, 10, 10_000
BUDGET = {"CartPole-v1": 10_000, "Pendulum-v1": 5_000}
CANDIDATES = {
    "a": dict(sac_hidden=256, sac_batch=256, sac_ratio=1.0, sac_dropout=0.0),  # the plain SAC recipe
    "b": dict(sac_hidden=128, sac_batch=128, sac_ratio=10.0, sac_dropout=0.01),  # DroQ
    "c": dict(sac_hidden=128, sac_batch=128, sac_ratio=5.0, sac_dropout=0.01),  # between the two
}


class Replay:
    """A numpy ring buffer of one-step transitions."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.next = capacity, 0, 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.next
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.next, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> TransitionBatch:
        """A uniform batch of stored transitions as tensors."""
        idx = rng.integers(0, self.size, batch)
        return TransitionBatch(*(torch.from_numpy(a[idx]) for a in
                                 (self.obs, self.actions, self.rewards, self.next_obs, self.terminated,
                                  np.ones(self.capacity, np.float32))))


@torch.no_grad()
def evaluate(env, spec, sac: SAC, actor: Actor) -> float:
    """Mean return of deterministic episodes on fixed env seeds."""
    returns = []
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        total, done = 0.0, False
        while not done:
            action = actor.mode(sac.features(torch.as_tensor(obs, dtype=torch.float32)[None]))[0].numpy()
            obs, reward, terminated, truncated, _ = env.step(to_env_action(spec, action.argmax() if spec.discrete
                                                                          else action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run(env_id: str, settings: SACSettings, seed: int, budget: int) -> dict:
    """Train one seed to the threshold or the budget; the curve, steps to threshold and timings."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env, eval_env = make_env(env_id, seed=seed), make_env(env_id)
    spec = spec_of(env)
    threshold = threshold_of(env_id)
    actor = Actor(spec.obs_dim, settings.sac_hidden, spec.action_dim, spec.discrete, settings.sac_layers)
    sac = SAC(settings, spec.obs_dim, spec.action_dim, spec.discrete, actor,
              FlatAdam(actor, settings.sac_lr, GRAD_CLIP))
    replay = Replay(budget, spec.obs_dim, spec.action_dim)
    obs, _ = env.reset(seed=seed)
    curve, solved_at, owed, updates, skipped = [], None, 0.0, 0, 0
    train_s = update_cpu_s = 0.0
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    for step in range(1, budget + 1):
        if step <= PREFILL:
            action = random_action(spec, rng)
        else:
            with torch.no_grad():
                f = sac.features(torch.as_tensor(obs, dtype=torch.float32)[None])
                sampled = actor.rollout_action(f, actor.noise((1,), f.device))[0][0].numpy()
            action = sampled.argmax() if spec.discrete else sampled
        next_obs, reward, terminated, truncated, _ = env.step(to_env_action(spec, action))
        replay.add(obs, encode_action(spec, action), float(reward), next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        if step >= PREFILL:
            owed += settings.sac_ratio
            cpu = time.process_time()
            while owed >= 1:
                owed -= 1
                out = sac.update(replay.sample(settings.sac_batch, rng))
                updates += 1
                if out is None:
                    skipped += 1
                else:
                    metrics = out
            update_cpu_s += time.process_time() - cpu
        if step % EVAL_EVERY == 0:
            train_s += time.perf_counter() - start
            score = evaluate(eval_env, spec, sac, actor)
            curve.append((step, round(score, 1)))
            print(f"  {env_id} seed {seed} step {step}: {score:.1f}  "
                  + " ".join(f"{k.split('/')[1]}={v:.3g}" for k, v in metrics.items()), flush=True)
            if threshold is not None and score >= threshold:
                solved_at = step
                break
            start = time.perf_counter()
    return {"env": env_id, "seed": seed, "steps_to_threshold": solved_at, "curve": curve,
            "train_s": round(train_s, 1), "updates": updates, "skipped": skipped,
            "ms_per_update": round(1000 * update_cpu_s / max(updates, 1), 2)}


def speed(settings: SACSettings, repeats: int = 5, updates: int = 100) -> dict[str, float]:
    """CPU ms of one update on CartPole and Pendulum sizes: the best of a few repeats, on a random batch."""
    out = {}
    for env_id, (obs_dim, action_dim, discrete) in {"CartPole-v1": (4, 2, True), "Pendulum-v1": (3, 1, False)}.items():
        actor = Actor(obs_dim, settings.sac_hidden, action_dim, discrete, settings.sac_layers)
        sac = SAC(settings, obs_dim, action_dim, discrete, actor, FlatAdam(actor, settings.sac_lr, GRAD_CLIP))
        B = settings.sac_batch
        actions = (torch.eye(action_dim)[torch.randint(action_dim, (B,))] if discrete
                   else torch.rand(B, action_dim) * 2 - 1)
        batch = TransitionBatch(torch.randn(B, obs_dim), actions, torch.randn(B), torch.randn(B, obs_dim),
                                torch.zeros(B), torch.ones(B))
        for _ in range(20):
            sac.update(batch)
        best = float("inf")
        for _ in range(repeats):
            cpu = time.process_time()
            for _ in range(updates):
                sac.update(batch)
            best = min(best, (time.process_time() - cpu) / updates)
        out[env_id] = round(1000 * best, 2)
    return out


def table(path: Path = RESULTS) -> None:
    """Per env and candidate: steps to threshold per seed, their median, seconds, ms per update."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        rows.setdefault((record["env"], record["label"]), []).append(record)
    print(f"{'env':12} {'candidate':44} {'steps to threshold (seeds)':28} {'median':>7} {'train s':>8} {'ms/upd':>7}")
    for (env_id, label), records in rows.items():
        records.sort(key=lambda r: r["seed"])
        # An unsolved run counts as one evaluation past its budget for the median.
        steps = [r["steps_to_threshold"] or BUDGET[env_id] + EVAL_EVERY for r in records]
        shown = " / ".join(str(r["steps_to_threshold"] or f">{BUDGET[env_id]}") for r in records)
        median = statistics.median(steps)
        median_text = f">{BUDGET[env_id]}" if median > BUDGET[env_id] else f"{median:.0f}"
        print(f"{env_id:12} {label:44} {shown:28} {median_text:>7} "
              f"{statistics.median(r['train_s'] for r in records):8.0f} "
              f"{statistics.median(r['ms_per_update'] for r in records):7.2f}")


def main() -> None:
    """Parse the flags, run the seeds one after another, append each result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--candidate", choices=sorted(CANDIDATES), default="b")
    parser.add_argument("--set", nargs="*", default=[], help="SACSettings overrides, e.g. sac_ratio=5")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--entropy-share", type=float, default=None,
                        help="discrete target entropy as a share of log(actions)")
    parser.add_argument("--table", action="store_true", help="print the table of past results and stop")
    parser.add_argument("--speed", action="store_true", help="only time updates (CPU ms, best of 5) and stop")
    args = parser.parse_args()
    if args.table:
        table()
        return
    torch.set_num_threads(1)
    overrides = dict(CANDIDATES[args.candidate])
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = type(getattr(SACSettings(), key))(value)
    settings = dataclasses.replace(SACSettings(), **overrides)
    label = args.candidate + "".join(f" {k}={v}" for k, v in overrides.items() if k not in CANDIDATES[args.candidate]
                                     or CANDIDATES[args.candidate][k] != v)
    if args.entropy_share is not None:
        import dreamercli.learners.sac as sac_module

        sac_module.DISCRETE_ENTROPY_SHARE = args.entropy_share
        label += f" H*={args.entropy_share}"
    if args.speed:
        print(label, speed(settings))
        return
    RESULTS.parent.mkdir(exist_ok=True)
    for seed in args.seeds:
        result = run(args.env, settings, seed, BUDGET.get(args.env, 10_000))
        result.update(label=label, settings=dataclasses.asdict(settings))
        print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "settings")}), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
