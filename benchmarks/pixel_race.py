"""The pixel race: dreamer from pixels, dreamer from vectors and PPO with a CNN on stacked frames.

    python benchmarks/pixel_race.py                                   # CartPole-v1 and Pendulum-v1, seed 0, 2 jobs
    python benchmarks/pixel_race.py --envs CartPole-v1 --seeds 0 1 --frame-size 32
    python benchmarks/pixel_race.py --budget Pendulum-v1=10000 --methods dreamer-pixels ppo-cnn
    python benchmarks/pixel_race.py --smoke --out /tmp/pixel_race     # the whole pipeline in seconds

Per env and seed, three runs (issue 31, acceptance 2):
  dreamer-pixels   `dreamer train --env ENV --pixels --seed S --steps BUDGET --eval-every E --eval-episodes N
                   --stop-at-return THRESHOLD`, default settings otherwise (--frame-size only when given
                   here; --smoke adds --preset tiny and frames of 16);
  dreamer-vectors  the same command without --pixels;
  ppo-cnn          SB3 PPO "CnnPolicy" on the env's rgb_array frames, grayscale, resized to 84x84 (dreamer's
                   resize_frame: PIL bilinear with antialiasing, where the zoo's WarpFrame uses cv2 INTER_AREA),
                   4 stacked with VecFrameStack (channel last) then VecTransposeImage.
PPO's settings are rl-baselines3-zoo's `atari` entry, DLR-RM/rl-baselines3-zoo at commit
22e3ff2450fd92033f7f032915e1f64894a09584, hyperparams/ppo.yml (last changed in
eec15dc22e1ec7167064aae0c1218eefccaf0ff4): n_envs 8, n_steps 128, n_epochs 4, batch_size 256,
learning_rate lin_2.5e-4, clip_range lin_0.1, vf_coef 0.5, ent_coef 0.01, frame_stack 4, n_timesteps 1e7.
Schedules decay over that n_timesteps, as benchmarks/baselines.py does, so within the budget they stay near
their start, as in the zoo's Atari runs. Of the AtariWrapper only the frame processing is kept: no no-op
resets, frame skip, life loss or reward clipping (clipping would flatten Pendulum's graded reward).

Every run is evaluated alike: every E env steps and when it ends, N deterministic episodes on separate envs,
episode i reset with seed + 10_000 + i; it stops at its first eval at or above the threshold, else at its budget.
`seconds` is the run's own clock after building its model, evaluations included (dreamer: summary.json's
wall_seconds); `train_seconds` leaves evaluations out. Peak RSS is the child's ru_maxrss from wait4.
Each run is its own process with one torch thread, at most --jobs at once, started in the order seed, env,
method. Writes pixel_race.json (records and machine metadata), pixel_race.md (also printed) and
pixel_race.png to --out. Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the race's helpers, beside this file
from baselines import ZOO_COMMIT, linear, make_callback  # noqa: E402
from sample_efficiency import dreamer_curve, provenance, status  # noqa: E402
from seed_stats import reach  # noqa: E402

METHODS = ("dreamer-pixels", "dreamer-vectors", "ppo-cnn")
THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -300.0}
BUDGETS = {"CartPole-v1": 30_000, "Pendulum-v1": 20_000}
EVAL_EVERY = {"CartPole-v1": 2_500, "Pendulum-v1": 2_000}
EVAL_EPISODES = 10
# --smoke: the pipeline end to end in seconds; nothing learns at these sizes.
SMOKE_BUDGETS = {"dreamer-pixels": 300, "dreamer-vectors": 300, "ppo-cnn": 512}
SMOKE_EVAL_EVERY, SMOKE_EVAL_EPISODES = 256, 2
SMOKE_FRAME_SIZE = 16  # dreamer-pixels under --smoke without --frame-size: 64x64 frames take a minute there
ATARI_PPO = {"n_envs": 8, "n_steps": 128, "n_epochs": 4, "batch_size": 256, "n_timesteps": 10_000_000,
             "learning_rate": "lin_2.5e-4", "clip_range": "lin_0.1", "vf_coef": 0.5, "ent_coef": 0.01}
SMOKE_PPO = {"n_steps": 32, "batch_size": 64, "n_epochs": 1}  # one small update within the smoke budget
FRAME_STACK, SCREEN = 4, 84


class GrayFrames(gym.ObservationWrapper):
    """The env's rendered frame after each reset and step as (84, 84, 1) uint8 grayscale, like WarpFrame's."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (SCREEN, SCREEN, 1), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        """The frame rendered now, grayscale (ITU-R 601 luma, as cv2's RGB2GRAY) and resized."""
        from PIL import Image

        from dreamercli.envs import resize_frame

        gray = np.asarray(Image.fromarray(np.ascontiguousarray(self.env.render()[..., :3])).convert("L"))
        return resize_frame(gray[..., None], SCREEN)


class StackedFrames(gym.Wrapper):
    """VecFrameStack's channel-last stack for one env (zeros before the first frame), for evaluation."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (height, width, channels * FRAME_STACK), np.uint8)
        self.stack = np.zeros(self.observation_space.shape, np.uint8)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Drop the oldest frame, append this one; a new array, so callers may keep the last."""
        self.stack = np.concatenate([self.stack[..., frame.shape[-1]:], frame], axis=-1)
        return self.stack

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """Reset the env and the stack."""
        frame, info = self.env.reset(**kwargs)
        self.stack = np.zeros_like(self.stack)
        return self.push(frame), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step the env and push its frame."""
        frame, reward, terminated, truncated, info = self.env.step(action)
        return self.push(frame), reward, terminated, truncated, info


def gray_env(env_id: str) -> gym.Env:
    """The env as dreamer makes it, rendering rgb_array, observed as grayscale 84x84 frames."""
    from dreamercli.envs import make_env

    return GrayFrames(make_env(env_id, render_mode="rgb_array"))


def run_ppo(task: dict[str, Any]) -> dict[str, Any]:
    """Train PPO CnnPolicy on stacked frames to the threshold or the budget; its curve and seconds."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    from dreamercli.evaluation import EVAL_SEED_OFFSET

    torch.set_num_threads(1)
    setup = {**ATARI_PPO, **(SMOKE_PPO if task["smoke"] else {})}
    kwargs = {key: linear(float(value.removeprefix("lin_"))) if isinstance(value, str) else value
              for key, value in setup.items() if key not in ("n_envs", "n_timesteps")}
    env_id, seed = task["env"], task["seed"]
    venv = make_vec_env(gray_env, n_envs=setup["n_envs"], seed=seed, env_kwargs={"env_id": env_id})
    venv = VecTransposeImage(VecFrameStack(venv, FRAME_STACK, channels_order="last"))
    model = PPO("CnnPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)
    callback = make_callback(env_id, task["budget"], task["every"], task["episodes"], seed + EVAL_SEED_OFFSET,
                             task["threshold"], make_eval_env=lambda e: StackedFrames(gray_env(e)))
    began = time.perf_counter()
    callback.begin()
    model.learn(total_timesteps=max(setup["n_timesteps"], task["budget"]), callback=callback)
    if not callback.curve or callback.curve[-1]["step"] != model.num_timesteps:
        callback.num_timesteps = model.num_timesteps  # learn ended without a final callback step
        callback.evaluate_now()
    seconds = time.perf_counter() - began
    for env in callback.envs:
        env.close()
    venv.close()
    return {"curve": callback.curve, "seconds": seconds,
            "settings": {**setup, "policy": "CnnPolicy", "frame_stack": FRAME_STACK, "screen": SCREEN,
                         "zoo_commit": ZOO_COMMIT}}


def worker(task_json: str) -> None:
    """Child process of ppo-cnn: run it and write its result JSON, an error included."""
    task = json.loads(task_json)
    try:
        result = run_ppo(task)
    except Exception as err:  # a failed run is recorded, not fatal
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    Path(task["result"]).write_text(json.dumps(result))


def command(task: dict[str, Any]) -> list[str]:
    """The child's command line: the dreamer CLI for dreamer's runs, this script's worker for PPO."""
    if task["method"] == "ppo-cnn":
        return [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    argv = [sys.executable, "-m", "dreamercli", "train", "--env", task["env"], "--seed", str(task["seed"]),
            "--steps", str(task["budget"]), "--eval-every", str(task["every"]),
            "--eval-episodes", str(task["episodes"]), "--stop-at-return", str(task["threshold"]),
            "--runs-dir", str(Path(task["run_dir"]).parent), "--name", Path(task["run_dir"]).name]
    if task["method"] == "dreamer-pixels":
        argv.append("--pixels")
        if task["frame_size"] is not None:
            argv += ["--frame-size", str(task["frame_size"])]
    return argv + (["--preset", "tiny"] if task["smoke"] else [])


def read_dreamer(task: dict[str, Any]) -> dict[str, Any]:
    """A dreamer run's curve (metrics.jsonl eval rows) and seconds (summary.json) from its run folder."""
    from dreamercli.runs import read_json, read_metrics

    run_dir = Path(task["run_dir"])
    summary = read_json(run_dir / "summary.json") or {}
    result = {"curve": dreamer_curve(list(read_metrics(run_dir))), "seconds": summary.get("wall_seconds")}
    if not summary:
        result["error"] = "no summary.json"
    return result


def launch(task: dict[str, Any]) -> dict[str, Any]:
    """Run a task in a fresh process with one thread; its record, with the child's peak resident memory."""
    result_path, log_path = Path(task["result"]), Path(task["result"]).with_suffix(".log")
    result_path.unlink(missing_ok=True)
    shutil.rmtree(task["run_dir"], ignore_errors=True)  # a stale metrics.jsonl must not leak in
    argv = command(task)
    # Set before the child imports torch: thread pools are sized when torch loads.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    began = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4, not getrusage(RUSAGE_CHILDREN): the peak of this child alone, not of every child so far.
        _, wait_status, usage = os.wait4(child.pid, 0)
    child.returncode = code = os.waitstatus_to_exitcode(wait_status)
    if task["method"] == "ppo-cnn":
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    else:
        result = read_dreamer(task)
    curve = result.get("curve") or []
    if code != 0 or not curve:
        result["error"] = result.get("error") or f"exit status {code}, {len(curve)} evals; see {log_path}"
    steps, seconds_to = reach(curve, task["threshold"])
    return {key: task[key] for key in ("env", "method", "seed", "threshold", "budget")} | {
        "steps_to_threshold": steps, "seconds_to_threshold": seconds_to, "seconds": result.get("seconds"),
        "train_seconds": curve[-1]["train_seconds"] if curve else None,
        "process_seconds": time.perf_counter() - began, "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "final_eval": curve[-1]["return_mean"] if curve else None,
        "curve": [[p["step"], p["return_mean"]] for p in curve], "error": result.get("error"),
        "command": shlex.join(argv), "run_dir": None if task["method"] == "ppo-cnn" else task["run_dir"],
        "settings": result.get("settings"), "log": str(log_path)}


def number(value: float | None, spec: str) -> str:
    """A table cell: the value formatted, or '-' when missing."""
    return "-" if value is None else format(value, spec)


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The race's table as markdown."""
    lines = ["# Pixel race: dreamer from pixels and from vectors vs PPO CnnPolicy on stacked frames", "",
             f"{meta['date']}, commit {meta['git']['commit'][:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
             f"{meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, {meta['jobs']} jobs at once, "
             f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end.",
             f"Evaluation every {', '.join(f'{e} {n}' for e, n in meta['eval_every'].items())} env steps, "
             f"{meta['eval_episodes']} deterministic episodes; "
             "runs stop at the threshold. seconds: the run's clock, evaluations included; training s: without "
             "them. Peak RSS: the whole process.", "",
             "| env | method | seed | budget | steps to threshold | final eval | seconds | training s "
             "| peak RSS MB | error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        steps = "n.r." if r["steps_to_threshold"] is None else str(r["steps_to_threshold"])
        lines.append(f"| {r['env']} ({r['threshold']:g}) | {r['method']} | {r['seed']} | {r['budget']} | {steps} "
                     f"| {number(r['final_eval'], '.1f')} | {number(r['seconds'], '.1f')} "
                     f"| {number(r['train_seconds'], '.1f')} | {r['peak_rss_mb']:.0f} | {r['error'] or ''} |")
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """One panel per env: eval return against env steps, a line per method and seed, the threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in records))
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for r in (r for r in records if r["env"] == env and r["curve"]):
            steps, returns = zip(*r["curve"], strict=True)
            ax.plot(steps, returns, color=f"C{METHODS.index(r['method'])}", marker=".",
                    linestyle=("-", "--", ":", "-.")[r["seed"] % 4], label=f"{r['method']} s{r['seed']}")
        ax.axhline(THRESHOLDS[env], color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set(title=env, xlabel="env steps", ylabel="eval return (mean)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_env(items: list[str], defaults: dict[str, float], name: str) -> dict[str, float]:
    """Per-env values from VALUE (every env) or ENV=VALUE items over the defaults."""
    values = dict(defaults)
    for item in items:
        env, _, value = item.rpartition("=")
        if env and env not in values:
            raise SystemExit(f"--{name} {item!r}: {env} is not one of {', '.join(values)}")
        try:
            values.update({e: float(value) for e in (values if not env else [env])})
        except ValueError:
            raise SystemExit(f"--{name} {item!r}: expected VALUE or ENV=VALUE") from None
    return values


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the race, write JSON, markdown and PNG; print the markdown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budget", nargs="+", default=[], metavar="[ENV=]STEPS", help=f"default {BUDGETS}")
    parser.add_argument("--thresholds", nargs="+", default=[], metavar="[ENV=]RETURN", help=f"default {THRESHOLDS}")
    parser.add_argument("--eval-every", nargs="+", default=[], metavar="[ENV=]STEPS", help=f"default {EVAL_EVERY}")
    parser.add_argument("--eval-episodes", type=int, default=None, help=f"default {EVAL_EPISODES}")
    parser.add_argument("--frame-size", type=int, default=None, help="dreamer-pixels' --frame-size (default: its own)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one core each)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pixel_race")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny budgets, dreamer's tiny preset, frames of {SMOKE_FRAME_SIZE} unless --frame-size")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0

    thresholds = per_env(args.thresholds, THRESHOLDS, "thresholds")
    budgets = {e: {m: SMOKE_BUDGETS[m] if args.smoke else int(b) for m in args.methods}
               for e, b in per_env(args.budget, BUDGETS, "budget").items()}
    every = {e: int(n) for e, n in per_env(args.eval_every, EVAL_EVERY, "eval-every").items()}
    episodes = args.eval_episodes or EVAL_EPISODES
    frame_size = args.frame_size
    if args.smoke:
        every, episodes = dict.fromkeys(every, SMOKE_EVAL_EVERY), args.eval_episodes or SMOKE_EVAL_EPISODES
        frame_size = frame_size or SMOKE_FRAME_SIZE
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    tasks = []
    for seed in args.seeds:  # interleaved, so a noisy minute falls on every method alike
        for env in args.envs:
            for method in (m for m in METHODS if m in args.methods):
                name = f"{env}-{method}-s{seed}"
                tasks.append({"env": env, "method": method, "seed": seed, "threshold": thresholds[env],
                              "budget": budgets[env][method],
                              "every": every[env], "episodes": episodes, "frame_size": frame_size,
                              "smoke": args.smoke, "run_dir": str(out / "runs" / name),
                              "result": str(out / "logs" / f"{name}.json")})
    meta = {**provenance("pixel_race.py", argv, args.jobs), "seeds": args.seeds, "envs": args.envs,
            "budgets": budgets, "thresholds": thresholds, "eval_every": every, "eval_episodes": episodes,
            "frame_size": frame_size, "smoke": args.smoke}
    print(f"{len(tasks)} runs, {args.jobs} at once -> {out}", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(launch, task) for task in tasks]
        for done, future in enumerate(as_completed(futures), 1):
            r = future.result()
            print(f"[{done}/{len(tasks)}] {status(r)}, peak {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
    records = [f.result() for f in futures]
    meta["load_end"] = list(os.getloadavg())
    (out / "pixel_race.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    text = markdown(records, meta)
    (out / "pixel_race.md").write_text(text + "\n")
    plot(records, out / "pixel_race.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
