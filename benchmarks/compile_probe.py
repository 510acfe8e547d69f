"""Would torch.compile pay for itself on SAC's critics-only update? Compile seconds against the
milliseconds it saves, cold and warm, on this machine.

    python benchmarks/compile_probe.py                       # CartPole-v1, one thread
    python benchmarks/compile_probe.py --env Pendulum-v1

The best case for the compiler: the critics-only update (the nine in ten updates of a default
model-free step) written as one pure function without a graph break: the target critics' pass
with dropout, the critics' taped pass, the squared TD error, the gradient by hand as
QEnsemble.backward takes it, clipping, Adam and the Polyak step, at the default sizes and the
env's dimensions, on random data. (The trainer's update also checks for NaN with `.item()`,
which would break a graph; this leaves that out.) Each measurement runs in a fresh process:
eager, then `torch.compile` with an empty Inductor cache (cold: what a first run pays), then
again with that cache (warm: what a later run of the same shapes pays). Reports the compile
seconds, the ms per update, and how many updates it takes to win the compile back, beside
the number a default run makes. Writes benchmarks/results/compile_probe.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def critics_step(weights: list, targets: list, exp_avg: list, exp_avg_sq: list, count: float, x, x_next,
                 select, probs, logp, rewards, keep, alpha: float, rate: float, lr: float, tau: float,
                 clip: float):
    """One critics-only SAC update as a pure function of tensors (in place on the weight lists)."""
    import torch

    members = weights[0].shape[0]

    def forward(params: list, inputs):
        h, tape = inputs.expand(members, *inputs.shape), []
        for i in range(0, len(params) - 2, 2):
            pre = torch.baddbmm(params[i + 1], h, params[i])
            drop = torch.randint(pre.numel(), (round(rate * pre.numel()),))
            pre = pre.reshape(-1).index_fill(0, drop, 0.0).view_as(pre)
            centred = pre - pre.mean(-1, keepdim=True)
            rstd = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5)
            normed = centred * rstd
            out = normed.relu()
            tape.append((h, drop, normed, rstd, out))
            h = out
        return torch.baddbmm(params[-1], h, params[-2]), tape, h

    with torch.no_grad():
        q_next = forward(targets, x_next)[0].min(0).values  # (B, O)
        target = rewards + keep * (probs * (q_next - alpha * logp)).sum(-1)
        q_all, tape, last = forward(weights, x)
        error = (q_all * select).sum(-1) - target  # (E, B)
        grad = (error * (2.0 / error.shape[1])).unsqueeze(-1) * select  # d loss / d q
        grads = [None] * len(weights)
        grads[-2], grads[-1] = torch.bmm(last.transpose(1, 2), grad), grad.sum(1, keepdim=True)
        grad = torch.bmm(grad, weights[-2].transpose(1, 2))
        for layer in reversed(range(len(tape))):
            h, drop, normed, rstd, out = tape[layer]
            grad = grad * (out > 0)
            grad = rstd * (grad - grad.mean(-1, keepdim=True) - normed * (grad * normed).mean(-1, keepdim=True))
            grad = grad.reshape(-1).index_fill(0, drop, 0.0).view_as(grad)
            grads[2 * layer], grads[2 * layer + 1] = torch.bmm(h.transpose(1, 2), grad), grad.sum(1, keepdim=True)
            if layer > 0:
                grad = torch.bmm(grad, weights[2 * layer].transpose(1, 2))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        scale = torch.clamp(clip / (norm + 1e-6), max=1.0)
        for w, g, m, v, t in zip(weights, grads, exp_avg, exp_avg_sq, targets, strict=True):
            g = g * scale
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            w.sub_(lr * (m / (1 - 0.9 ** count)) / ((v / (1 - 0.999 ** count)).sqrt() + 1e-6))
            t.lerp_(w, tau)
        return error.pow(2).mean(-1).sum()


def measure(env_id: str, mode: str, updates: int) -> dict:
    """In this process: build the update at the default sizes and time it eager or compiled."""
    import torch

    from dreamercli.config import from_preset, with_overrides
    from dreamercli.envs import make_env, spec_of
    from dreamercli.learners.sac import GRAD_CLIP

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ln = with_overrides(from_preset("default"), {"env": env_id, "algo": "model-free"}).learner
    spec = spec_of(make_env(env_id))
    in_dim, out_dim = (spec.obs_dim, spec.action_dim) if spec.discrete else (spec.obs_dim + spec.action_dim, 1)
    dims = [in_dim] + [ln.sac_hidden] * ln.sac_layers + [out_dim]
    weights = []
    for fan_in, fan_out in itertools.pairwise(dims):
        bound = fan_in ** -0.5
        weights += [torch.empty(ln.sac_critics, fan_in, fan_out).uniform_(-bound, bound),
                    torch.empty(ln.sac_critics, 1, fan_out).uniform_(-bound, bound)]
    targets = [w.clone() for w in weights]
    exp_avg, exp_avg_sq = [torch.zeros_like(w) for w in weights], [torch.zeros_like(w) for w in weights]
    batch = ln.sac_batch
    x, x_next = torch.randn(batch, in_dim), torch.randn(batch, in_dim)
    if spec.discrete:
        select = torch.nn.functional.one_hot(torch.randint(out_dim, (batch,)), out_dim).float()
        probs = torch.softmax(torch.randn(batch, out_dim), -1)
        logp = probs.log()
    else:
        select, probs, logp = torch.ones(batch, 1), torch.ones(batch, 1), torch.randn(batch, 1)
    rewards, keep = torch.randn(batch), torch.full((batch,), ln.sac_discount)
    step = critics_step
    began = time.perf_counter()
    if mode != "eager":
        step = torch.compile(critics_step, dynamic=False)
    args = (weights, targets, exp_avg, exp_avg_sq, 10.0, x, x_next, select, probs, logp, rewards, keep, 0.2,
            ln.sac_dropout, ln.sac_lr, ln.sac_tau, GRAD_CLIP)
    step(*args)  # the first call compiles
    first_s = time.perf_counter() - began
    for _ in range(50):
        step(*args)
    blocks = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(updates):
            step(*args)
        blocks.append(time.perf_counter() - began)
    return {"mode": mode, "first_call_s": round(first_s, 2),
            "update_ms": round(statistics.median(blocks) / updates * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--updates", type=int, default=200, help="updates per timed block (five blocks)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compile_probe.json")
    parser.add_argument("--child", choices=["eager", "cold", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement in a fresh process, as JSON on stdout
        print(json.dumps(measure(args.env, args.child, args.updates)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as cache:  # an empty Inductor cache, then the same one warm
        for mode in ("eager", "cold", "warm"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "--env", args.env, "--updates", str(args.updates),
                                  "--child", mode], env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    eager = rows[0]["update_ms"]
    for row in rows[1:]:
        saved_ms = eager - row["update_ms"]
        compile_s = row["first_call_s"] - rows[0]["first_call_s"]
        row["compile_s"] = round(compile_s, 2)
        row["break_even_updates"] = round(compile_s / (saved_ms / 1000)) if saved_ms > 0 else None
    result = {"env": args.env, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows,
              "command": "python benchmarks/compile_probe.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['mode']:>5}: {row['update_ms']} ms per update, first call {row['first_call_s']} s"
              + (f", compile {row['compile_s']} s, wins it back after {row['break_even_updates']} updates"
                 if "compile_s" in row else ""))


if __name__ == "__main__":
    main()
