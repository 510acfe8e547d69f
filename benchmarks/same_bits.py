"""Same seeds, same bits: a fingerprint of short runs of every algo, to compare two versions of the code.

For each algo on CartPole-v1 and Pendulum-v1 (and mbpo and hybrid once more with a guard that trusts
the model, so that branched rollouts and imagination run), train a short run with a fixed seed and
record its metrics rows (clock readings left out), its summary (wall seconds left out) and a SHA-256
of every tensor in weights.safetensors. A refactor that claims to change no maths writes the same
JSON before and after:

    python benchmarks/same_bits.py --out /tmp/before.json     # on the old commit
    python benchmarks/same_bits.py --out /tmp/after.json --against /tmp/before.json

Exit 1 (with the first difference named) when --against differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from dreamercli.config import ALGOS, from_preset, validate, with_overrides
from dreamercli.training import train

CLOCK_KEYS = {"time", "train/sps", "eval/seconds", "wall_seconds"}
ENVS = ("CartPole-v1", "Pendulum-v1")
# Short enough for a few minutes in all; long enough for every phase (prefill, pretrain, updates,
# two evaluations) and, with the trusting guard, for branched rollouts and imagination updates.
BASE = {"steps": 600, "prefill": 200, "pretrain": 20, "eval_every": 300, "eval_episodes": 2, "log_every": 100,
        "seed": 3}
CASES = [(algo, {}) for algo in ALGOS] + [(algo, {"trust_threshold": 1.0, "trust_window": 40})
                                           for algo in ("mbpo", "hybrid")]


def fingerprint(run_dir: Path) -> dict:
    """Metrics rows and summary without clock readings; a hash per weight tensor."""
    rows = [{k: v for k, v in json.loads(line).items() if k not in CLOCK_KEYS}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in CLOCK_KEYS}
    tensors = load_file(str(run_dir / "weights.safetensors"))
    weights = {k: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16] for k, t in sorted(tensors.items())}
    return {"metrics": rows, "summary": summary, "weights": weights}


def first_difference(a: object, b: object, where: str = "") -> str | None:
    """Path of the first place where two JSON values differ (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}/{k}: only in {'after' if k not in a else 'before'}"
            found = first_difference(a[k], b[k], f"{where}/{k}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} against {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} against {b!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--against", type=Path, help="a JSON written before, to compare with")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env in ENVS:
            for algo, extra in CASES:
                key = f"{env}/{algo}" + "".join(f"/{k}={v}" for k, v in extra.items())
                config = validate(with_overrides(from_preset("default"), {"env": env, "algo": algo, **BASE, **extra}))
                run_dir = Path(tmp) / key.replace("/", "_").replace("=", "-")
                train(config, run_dir)
                result[key] = fingerprint(run_dir)
                print(key, result[key]["summary"].get("final_eval"), flush=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.against is None:
        return 0
    found = first_difference(json.loads(args.against.read_text()), result)
    print("same bits" if found is None else f"differs at {found}")
    return 0 if found is None else 1


if __name__ == "__main__":
    sys.exit(main())
