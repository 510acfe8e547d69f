"""Seconds of one pixel world-model (RSSM) update, its compute floor, and the bytes of a pixel replay.

    python benchmarks/pixel_update.py                      # frames of 64, 32 and 16, one thread
    python benchmarks/pixel_update.py --sizes 64 --threads 2

For each frame size: one world-model update as ModelLearner.fit makes it (the RSSM's sequence loss on
batch_size x seq_len replayed uint8 frames, backward, FlatAdam step; default preset sizes, batch 16 x
seq 16), timed after warm-up; its FLOPs counted by torch's FlopCounterMode (convolutions, transposed
ones and matrix products of the forward pass, times 3 for forward and backward) and divided by the
rate of one 512x512 matrix product at the same thread count, the floor; the seconds of encoding a
frame without gradients (what refreshing the replayed beliefs costs a frame); and the bytes a
100,000-transition replay of such frames holds (obs and next_obs, uint8).
Results print as a table and go to benchmarks/results/pixel_update.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dreamercli.buffer import ReplayBuffer
from dreamercli.config import from_preset
from dreamercli.models.rssm import RSSM
from dreamercli.optim import FlatAdam

RESULTS = Path(__file__).resolve().parent / "results"
REPLAY = 100_000


def matmul_rate(repeats: int = 50) -> float:
    """FLOPs per second of a 512x512 by 512x512 product, the best of a few timings."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - began) / repeats)
    return 2 * 512**3 / best


def measure(size: int, batch: int, seq: int, repeats: int, rate: float) -> dict:
    """One frame size's update seconds, floor, encoding seconds per frame and replay bytes."""
    torch.manual_seed(0)
    wm = from_preset("default").world_model
    model = RSSM(wm, size * size * 3, 2, (size, size, 3))
    opt = FlatAdam(model, wm.wm_lr, 100.0)
    frames = torch.randint(0, 256, (batch, seq, size, size, 3), dtype=torch.uint8)
    actions = torch.nn.functional.one_hot(torch.randint(0, 2, (batch, seq)), 2).float()
    args = (frames, actions, torch.zeros(batch, seq), frames, torch.zeros(batch, seq),
            torch.ones(batch, seq, dtype=torch.bool))

    def update() -> None:
        losses = model.loss(*args)[0]
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    for _ in range(3):
        update()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        update()
        times.append(time.perf_counter() - began)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # the counter's backward hooks trip on in-place ops: count the forward
        model.loss(*args)
    flops = 3 * counter.get_total_flops()  # a backward pass costs about twice the forward's products
    with torch.no_grad():
        block = frames.reshape(-1, size, size, 3)[:256]
        model.encode_obs(block)
        began = time.perf_counter()
        model.encode_obs(block)
        encode = (time.perf_counter() - began) / len(block)
    replay = ReplayBuffer(REPLAY, size * size * 3, 2, (size, size, 3))  # calloc'd: never touched, never resident
    return {"frame_size": size, "batch": batch, "seq_len": seq, "update_s": statistics.median(times),
            "update_s_min": min(times), "gflops": flops / 1e9, "floor_s": flops / rate,
            "update_over_floor": statistics.median(times) / (flops / rate), "encode_s_per_frame": encode,
            "replay_obs_bytes": replay.obs.nbytes,
            "replay_obs_and_next_bytes": replay.obs.nbytes + replay.next_obs.nbytes,
            "weights": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "pixel_update.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rate = matmul_rate()
    rows = [measure(size, args.batch, args.seq, args.repeats, rate) for size in args.sizes]
    print(f"{args.threads} thread(s), 512x512 matmul {rate / 1e9:.1f} GFLOP/s")
    print("size  update s  floor s  x floor  GFLOP  encode ms/frame  replay GB (obs / obs+next)")
    for r in rows:
        print(f"{r['frame_size']:>4}  {r['update_s']:8.3f}  {r['floor_s']:7.3f}  {r['update_over_floor']:7.1f}  "
              f"{r['gflops']:5.2f}  {1e3 * r['encode_s_per_frame']:15.3f}  "
              f"{r['replay_obs_bytes'] / 1e9:.3f} / {r['replay_obs_and_next_bytes'] / 1e9:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "matmul_gflops": rate / 1e9,
                                    "torch": torch.__version__, "numpy": np.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
