"""Milliseconds of one agent update (world model + imagination) and of one action.

    python benchmarks/update_speed.py                 # default preset, 1 and 2 threads
    python benchmarks/update_speed.py --threads 1 --set hidden_dim=64

Fills a replay buffer with random-action transitions of the real env, then times
`Agent.update` on sampled batches. Results print as a table and go to
benchmarks/results/update_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dreamercli.agent import Agent
from dreamercli.buffer import random_replay
from dreamercli.config import from_preset, with_overrides

RESULTS = Path(__file__).resolve().parent / "results"


def measure(env_id: str, threads: int, overrides: dict, updates: int = 30) -> dict:
    """Time updates and single-observation actions for one env and thread count."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = with_overrides(from_preset("default"), {"env": env_id, **overrides})
    buffer, spec = random_replay(env_id, 2_000)
    rng = np.random.default_rng(0)
    agent = Agent(config, spec)
    obs = np.zeros(spec.obs_dim, np.float32)
    device = torch.device("cpu")
    wm, tr = config.world_model, config.train
    for _ in range(3):  # warm-up
        agent.update(buffer.sample(tr.batch_size, wm.seq_len, rng, device))
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(buffer.sample(tr.batch_size, wm.seq_len, rng, device))
    update_ms = (time.perf_counter() - start) / updates * 1000
    start = time.perf_counter()
    for _ in range(500):
        agent.act(obs)
    act_ms = (time.perf_counter() - start) / 500 * 1000
    return {"env": env_id, "threads": threads, "update_ms": round(update_ms, 1),
            "act_ms": round(act_ms, 3), "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides as field=value")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = [measure(env, t, overrides) for env in args.envs for t in args.threads]
    print("| env | threads | ms per update | ms per action |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['env']} | {r['threads']} | {r['update_ms']} | {r['act_ms']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "update_speed.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
