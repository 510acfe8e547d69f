"""Milliseconds of one agent update and of one action, and how far an update is from its compute floor.

    python benchmarks/update_speed.py                 # default preset, 1 and 2 threads
    python benchmarks/update_speed.py --threads 1 --set hidden_dim=64
    python benchmarks/update_speed.py --threads 1 --algo model-free   # one SAC update instead

Fills a replay buffer with random-action transitions of the real env, then times env steps of
learning as the trainer runs them (`Agent.learn`: the composition's world-model updates, imagination
and SAC updates, the actor in `sac_actor_share` of them), and a row gives the mean per update.
The floor: the matrix-product FLOPs of one update (torch.profiler's counts of aten::mm, addmm,
bmm and matmul over a few profiled updates, forward and backward) divided by the measured rate
of one matrix product of the shape that carries most of those FLOPs, at the same thread count.
"update / floor" is how many times slower the update runs than that: the rest is small
products, elementwise ops, optimiser steps and Python. Results print as a table and go to
benchmarks/results/update_speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from dreamercli.agent import Agent
from dreamercli.buffer import random_replay
from dreamercli.config import ALGOS, from_preset, with_overrides

RESULTS = Path(__file__).resolve().parent / "results"
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")


def operand_shapes(name: str, input_shapes: list) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The two multiplied operands' shapes of a matmul event (addmm's first input is the bias)."""
    shapes = [tuple(s) for s in input_shapes if s]
    if name == "aten::addmm":
        shapes = shapes[1:]
    if len(shapes) < 2 or len(shapes[0]) not in (2, 3) or len(shapes[0]) != len(shapes[1]):
        return None
    return shapes[0], shapes[1]


def update_flops(update, profiled: int = 3) -> tuple[float, tuple]:
    """Matrix-product FLOPs per update, and the operand shapes that carry most of them."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        for _ in range(profiled):
            update()
    total, by_shape = 0.0, Counter()
    for event in prof.events():
        if event.name not in MATMULS or not event.flops:
            continue
        parent = event.cpu_parent  # a matmul that counts its own FLOPs must not count its mm's again
        while parent is not None and not (parent.name in MATMULS and parent.flops):
            parent = parent.cpu_parent
        if parent is not None:
            continue
        total += event.flops
        shapes = operand_shapes(event.name, event.input_shapes)
        if shapes is not None:
            by_shape[shapes] += event.flops
    return total / profiled, by_shape.most_common(1)[0][0]


# Where an update's time goes: aten ops grouped by kind (self CPU time under the profiler,
# which inflates small ops; read the shares, not the absolute milliseconds).
KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "optimiser": ("aten::_fused_adam_", "aten::_foreach_norm", "aten::linalg_vector_norm", "aten::_foreach_mul_",
                  "aten::_foreach_lerp_"),
    "memory and views": ("aten::empty", "aten::empty_strided", "aten::copy_", "aten::as_strided", "aten::view",
                         "aten::t", "aten::transpose", "aten::slice", "aten::select", "aten::expand",
                         "aten::_to_copy", "aten::to", "aten::cat", "aten::stack", "aten::resolve_conj",
                         "aten::zeros_like", "aten::fill_", "aten::zero_", "aten::unsqueeze", "aten::squeeze",
                         "aten::reshape", "aten::narrow", "aten::detach", "aten::resize_", "aten::clone",
                         "aten::contiguous", "aten::empty_like", "aten::split", "aten::chunk", "aten::unbind"),
}


def time_by_kind(update, profiled: int = 5) -> dict[str, float]:
    """Profiled self-CPU milliseconds per update by kind of op, and the count of aten ops."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profiled):
            update()
    kind_of = {name: kind for kind, names in KINDS.items() for name in names}
    split = dict.fromkeys([*KINDS, "other aten ops (elementwise, reductions)", "autograd engine and Python"], 0.0)
    ops = 0
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000 / profiled
        if event.key.startswith("aten::"):
            ops += event.count
            split[kind_of.get(event.key, "other aten ops (elementwise, reductions)")] += ms
        else:
            split["autograd engine and Python"] += ms
    return {**{k: round(v, 2) for k, v in split.items()}, "aten ops": ops // profiled}


def matmul_gflops(a_shape: tuple, b_shape: tuple, repeats: int = 5, seconds: float = 0.1) -> float:
    """GFLOP/s of torch.mm (or bmm) at the current thread count: warm-up, then the median of
    `repeats` timings of enough products to last about `seconds` each."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(a_shape, generator=gen), torch.randn(b_shape, generator=gen)
    op = torch.mm if len(a_shape) == 2 else torch.bmm
    flops = 2 * math.prod(a_shape) * b_shape[-1]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:  # warm-up, and how many products fill `seconds`
        op(a, b)
        n += 1
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            op(a, b)
        timings.append(time.perf_counter() - start)
    return flops * n / statistics.median(timings) / 1e9


def measure(env_id: str, threads: int, overrides: dict, updates: int = 20, algo: str = "dreamer") -> dict:
    """Time updates and single-observation actions for one env and thread count; the floor."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = with_overrides(from_preset("default"), {"env": env_id, "algo": algo, **overrides})
    buffer, spec = random_replay(env_id, 2_000)
    rng = np.random.default_rng(0)
    agent = Agent(config, spec)
    obs = np.zeros(spec.obs_dim, np.float32)
    # The unit is an env step's learning, as the trainer runs it (Agent.learn on the replay, past the
    # prefill): a world-model update per 1 / train_ratio env steps, sac_ratio SAC updates per env step;
    # ms per update is the time over the updates it made.
    step = config.train.prefill + 1
    made = [0]

    def update() -> None:
        for _ in agent.learn(buffer, step, rng):
            made[0] += 1

    for _ in range(10):  # warm-up: the allocator and caches settle over the first calls
        update()
    blocks = []
    for _ in range(5):  # the median of five blocks: a noisy neighbour shifts one, not the figure
        made[0] = 0
        start = time.perf_counter()
        while made[0] < updates:
            update()
        blocks.append((time.perf_counter() - start) / made[0])
    update_ms = statistics.median(blocks) * 1000
    start = time.perf_counter()
    memory = agent.memory()  # a recurrent model's belief moves on with each action, as in an episode
    for _ in range(500):
        agent.act(obs, memory=memory)
    act_ms = (time.perf_counter() - start) / 500 * 1000
    # The profilers give figures per call (env step); an env step made made / calls updates.
    made[0] = 0
    flops, (a_shape, b_shape) = update_flops(update, profiled=3)
    flops *= 3 / made[0]
    gflops = matmul_gflops(a_shape, b_shape)
    floor_ms = flops / (gflops * 1e9) * 1000
    made[0] = 0
    kinds = time_by_kind(update, profiled=5)
    breakdown = {k: round(v * 5 / made[0], 2) for k, v in kinds.items()}
    return {"breakdown_ms": breakdown, "env": env_id, "algo": algo, "threads": threads,
            "update_ms": round(update_ms, 2), "act_ms": round(act_ms, 3), "update_mflop": round(flops / 1e6, 1),
            "matmul_shape": f"{'x'.join(map(str, a_shape))} @ {'x'.join(map(str, b_shape))}",
            "matmul_gflops": round(gflops, 1), "floor_ms": round(floor_ms, 2),
            "update_over_floor": round(update_ms / floor_ms, 1), "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides as field=value")
    parser.add_argument("--algo", default="dreamer", choices=ALGOS,
                        help="the composition whose env step of learning (Agent.learn) is timed")
    parser.add_argument("--out", type=Path, default=RESULTS / "update_speed.json", help="JSON file to write")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = [measure(env, t, overrides, algo=args.algo) for env in args.envs for t in args.threads]
    print("| env | algo | threads | ms per update | ms per action | MFLOP per update (matmul) | typical matmul "
          "| its GFLOP/s | floor ms | update / floor |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['env']} | {r['algo']} | {r['threads']} | {r['update_ms']} | {r['act_ms']} | {r['update_mflop']} "
              f"| {r['matmul_shape']} | {r['matmul_gflops']} | {r['floor_ms']} | {r['update_over_floor']} |")
    print("\nwhere the time goes (profiled self-CPU ms per update; the profiler inflates small ops)")
    for r in rows:
        parts = ", ".join(f"{k} {v}" for k, v in r["breakdown_ms"].items())
        print(f"- {r['env']}, {r['threads']} thread(s): {parts}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
