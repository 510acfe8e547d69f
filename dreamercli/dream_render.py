"""Pictures of dream versus reality (imagine.png, dream.gif, the classic-control state renderers),
and `run_imagine`, which writes them with imagine.json into a run's imagine/ folder.

Supported state renderers (keyed by env class, so subclasses and any registered id of these
classes work): CartPoleEnv, PendulumEnv, MountainCarEnv, Continuous_MountainCarEnv and
AcrobotEnv. Their observation is (or determines) the internal state, so a decoded
observation can be written into `env.unwrapped.state` and rendered. Other envs get animated
line plots instead. Importing this module loads no torch; run_imagine does, to load the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from gymnasium.envs.classic_control import (
    AcrobotEnv,
    CartPoleEnv,
    Continuous_MountainCarEnv,
    MountainCarEnv,
    PendulumEnv,
)
from PIL import Image, ImageDraw, ImageFont

from . import runs
from .envs import make_env, render_failure

if TYPE_CHECKING:
    from .imagine import Rollouts

PANEL_HEIGHT = 240  # pixels of each side of the GIF
DRAWN = 3  # rollouts drawn as lines in imagine.png; the rest form a band


def _pendulum(env, obs: np.ndarray, action) -> None:
    env.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
    # The real frame draws the last torque as an arrow; draw the same one in the dream.
    env.last_u = None if action is None else float(np.ravel(action)[0])


def _acrobot(env, obs: np.ndarray, action) -> None:
    env.state = np.array([np.arctan2(obs[1], obs[0]), np.arctan2(obs[3], obs[2]), obs[4], obs[5]])


def _identity(env, obs: np.ndarray, action) -> None:
    env.state = np.asarray(obs, dtype=np.float64)


# env class -> (set the internal state from an observation, observation labels with units)
STATE_RENDERERS: dict[type, tuple[Callable, tuple[str, ...]]] = {
    CartPoleEnv: (_identity, ("cart position (m)", "cart velocity (m/s)", "pole angle (rad)",
                              "pole angular velocity (rad/s)")),
    PendulumEnv: (_pendulum, ("cos θ", "sin θ", "angular velocity (rad/s)")),
    MountainCarEnv: (_identity, ("car position", "car velocity")),
    Continuous_MountainCarEnv: (_identity, ("car position", "car velocity")),
    AcrobotEnv: (_acrobot, ("cos θ1", "sin θ1", "cos θ2", "sin θ2", "θ1 velocity (rad/s)",
                            "θ2 velocity (rad/s)")),
}


def _renderer_of(env) -> tuple[Callable, tuple[str, ...]] | None:
    """The registry entry of the env's class or of its nearest registered base class."""
    for cls in type(env.unwrapped).__mro__:
        if cls in STATE_RENDERERS:
            return STATE_RENDERERS[cls]
    return None


def has_state_renderer(env_id: str) -> bool:
    """Whether imagined observations of this env can be drawn as env frames."""
    env = make_env(env_id)
    try:
        return _renderer_of(env) is not None
    finally:
        env.close()


def obs_labels(env_id: str, obs_dim: int) -> list[str]:
    """Names of the observation dimensions: known ones for classic control, else obs[i]."""
    env = make_env(env_id)
    try:
        entry = _renderer_of(env)
    finally:
        env.close()
    if entry is not None and len(entry[1]) == obs_dim:
        return list(entry[1])
    return [f"obs[{i}]" for i in range(obs_dim)]


def _save(fig, out: Path) -> Path:
    """Save a figure atomically (the run folder's one writer)."""
    return runs.write_figure(fig, out)


def _band(ax, x, values: np.ndarray, color: str, label: str) -> None:
    """Shade the 10-90 percentile range over rollouts (values: (T, N), NaN where gone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps after every episode ended
        lo, hi = np.nanpercentile(values, 10, axis=1), np.nanpercentile(values, 90, axis=1)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, label=label)


def _trajectories(ax, x, real: np.ndarray, imagined: np.ndarray, ylabel: str) -> None:
    """Real (solid) and imagined (dashed) lines of the first rollouts over bands of all."""
    _band(ax, x, real, "black", "real, 10-90% of rollouts")
    _band(ax, x, imagined, "tab:orange", "imagined, 10-90% of rollouts")
    for i in range(min(DRAWN, real.shape[1])):
        color = f"C{i}"
        ax.plot(x, real[:, i], color=color, lw=1.6, label=f"rollout {i} real")
        ax.plot(x, imagined[:, i], color=color, lw=1.6, ls="--", label=f"rollout {i} imagined")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel("step from the start state")
    ax.grid(alpha=0.3)


def plot_imagination(r: Rollouts, metrics: dict[str, Any], dims: Sequence[str], out: Path,
                     title: str = "") -> Path:
    """imagine.png: each observation dim and the reward, real vs imagined, and error vs horizon."""
    H = r.horizon
    n_panels = len(dims) + 2
    ncols = min(3, n_panels)  # an image run has no per-dimension panels: two
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.3 * nrows), squeeze=False)
    axes = axes.ravel()
    steps = np.arange(H + 1)
    for d, name in enumerate(dims):
        _trajectories(axes[d], steps, r.real_obs[:, :, d], r.imagined_obs[:, :, d], name)
        axes[d].set_title(f"observation: {name}", fontsize=9)
    ax = axes[len(dims)]
    _trajectories(ax, steps[1:], r.real_reward, r.imagined_reward, "reward r_t (env units)")
    ax.set_title("reward of step t (taken at t-1)", fontsize=9)
    ax = axes[len(dims) + 1]
    k = np.asarray(metrics["step"])
    mean, std = np.asarray(metrics["obs_err_mean"], float), np.asarray(metrics["obs_err_std"], float)
    ax.plot(k, mean, color="black", marker="o", ms=3,
            label="|obs error|, mean of dims" if dims else "|pixel error|, mean of pixels (0-255)")
    ax.fill_between(k, mean - std, mean + std, color="black", alpha=0.15, lw=0, label="± 1 std over rollouts")
    dim_mean = np.asarray(metrics["obs_err_dim_mean"], float)  # (H, obs)
    for d, name in enumerate(dims):
        ax.plot(k, dim_mean[:, d], lw=1, alpha=0.8, label=f"|{name}| error")
    ax.plot(k, np.asarray(metrics["reward_err_mean"], float), color="tab:red", ls=":", lw=1.5,
            label="|reward error|")
    ax.set_xlabel("imagined steps (horizon)")
    ax.set_ylabel("mean absolute error (env units)", fontsize=8)
    ax.set_title("error growing with horizon", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    for extra in axes[n_panels:]:
        extra.axis("off")
    # One legend below the grid for the trajectory panels: they all share the same entries.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=4)
    fig.suptitle(title or "dream vs reality", fontsize=11)
    fig.tight_layout(rect=(0, 0.1 / nrows, 1, 0.96))
    return _save(fig, out)


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def _panel(frame: np.ndarray, caption: str, dim: bool = False) -> Image.Image:
    """A frame scaled to PANEL_HEIGHT with a caption strip above it."""
    img = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    size = (max(1, round(img.width * PANEL_HEIGHT / img.height)), PANEL_HEIGHT)
    # A small observation frame is enlarged in blocks, so its pixels show as the model sees them.
    img = img.resize(size, Image.NEAREST) if 2 * img.height <= PANEL_HEIGHT else img.resize(size)
    if dim:  # the real episode is over: grey out its last frame
        img = Image.blend(img, Image.new("RGB", img.size, (128, 128, 128)), 0.6)
    panel = Image.new("RGB", (img.width, PANEL_HEIGHT + 24), (255, 255, 255))
    panel.paste(img, (0, 24))
    ImageDraw.Draw(panel).text((6, 4), caption, fill=(0, 0, 0), font=_font())
    return panel


def _side_by_side(panels: list[Image.Image], footer: str) -> np.ndarray:
    width = sum(p.width for p in panels) + 6 * (len(panels) - 1)
    out = Image.new("RGB", (width, panels[0].height + 22), (230, 230, 230))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + 6
    ImageDraw.Draw(out).text((6, panels[0].height + 3), footer, fill=(0, 0, 0), font=_font(13))
    return np.asarray(out)


def _state_frames(env_id: str, seed: int, obs: np.ndarray, actions: list) -> list[np.ndarray]:
    """Frames of imagined observations (T, obs) drawn by writing them into the env's state."""
    env = make_env(env_id, render_mode="rgb_array")
    try:
        env.reset(seed=seed)
        set_state, _ = _renderer_of(env)
        frames = []
        for t, o in enumerate(obs):
            set_state(env.unwrapped, o, actions[t - 1] if t > 0 else None)
            frames.append(env.render())
        return frames
    finally:
        env.close()


def _plot_frames(r: Rollouts, i: int, dims: Sequence[str]) -> list[np.ndarray]:
    """Animated line plots of rollout i: real vs imagined observation dims up to each step."""
    n = min(len(dims), 6)
    fig, axes = plt.subplots(n, 1, figsize=(4.8, 1.2 + 1.1 * n), squeeze=False, sharex=True)
    steps = np.arange(r.horizon + 1)
    lines = []
    for d, ax in enumerate(axes[:, 0]):
        real, imag = r.real_obs[:, i, d], r.imagined_obs[:, i, d]
        both = np.concatenate([real[~np.isnan(real)], imag])
        pad = 0.1 * (np.ptp(both) or 1.0)
        ax.set(xlim=(0, r.horizon), ylim=(both.min() - pad, both.max() + pad))
        ax.set_ylabel(dims[d], fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        lines.append((ax.plot([], [], "k-", label="real")[0], ax.plot([], [], "C1--", label="imagined")[0], d))
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("step", fontsize=8)
    fig.tight_layout()
    frames = []
    for k in range(r.horizon + 1):
        for real_line, imag_line, d in lines:
            real_line.set_data(steps[: k + 1], r.real_obs[: k + 1, i, d])
            imag_line.set_data(steps[: k + 1], r.imagined_obs[: k + 1, i, d])
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return frames


def _image_frames(r: Rollouts, i: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rollout i's real frames (the observations; after the episode's end its last one) and decoded dream, RGB."""
    def rgb(frame: np.ndarray) -> np.ndarray:
        frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        return np.repeat(frame, 3, -1) if frame.shape[-1] == 1 else frame

    last = r.horizon if r.ended_at[i] is None else r.ended_at[i]
    real = [rgb(r.real_obs[min(k, last), i]) for k in range(r.horizon + 1)]
    return real, [rgb(r.imagined_obs[k, i]) for k in range(r.horizon + 1)]


def dream_gif(env_id: str, r: Rollouts, record: Sequence[int], dims: Sequence[str], out: Path,
              fps: int = 6) -> tuple[Path, str, str | None]:
    """dream.gif: real frames beside imagined ones; returns (path, kind, why the state renderer failed or None).

    kind "pixels": image observations, the real ones beside the decoded dream; "state": decoded states drawn
    by the env's renderer; "plot": line plots, also where that renderer fails (pygame not installed, say)."""
    image = r.real_obs.ndim > 3
    kind = "pixels" if image else "state" if has_state_renderer(env_id) else "plot"
    failure = None
    frames = []
    for i in record:
        start = r.starts[i]
        where = (f"fresh reset (seed {start.reset_seed})" if start.kind == "reset"
                 else f"step {start.step} of the episode from reset(seed {start.reset_seed})")
        dream, real = None, r.frames.get(i, [])
        if image:
            real, dream = _image_frames(r, i)
        if kind == "state":
            try:
                dream = _state_frames(env_id, start.reset_seed, r.imagined_obs[:, i], r.env_actions[i])
            except Exception as err:  # a missing render dependency must not lose the imagination's results
                kind, failure = "plot", render_failure(err)
        if dream is None:
            dream = _plot_frames(r, i, dims)
        ended = r.ended_at[i]
        for k in range(r.horizon + 1):
            panels = []
            if real:
                over = ended is not None and k > ended
                frame = next((f for f in reversed(real[: k + 1]) if f is not None), real[0])
                caption = f"real, step {k}" if not over else f"real: episode ended at step {ended}"
                panels.append(_panel(frame, caption, dim=over))
            label = {"pixels": "imagined (decoded)", "state": "imagined (decoded state)"}.get(
                kind, "real (solid) vs imagined (dashed)")
            panels.append(_panel(dream[k], f"{label}, step {k}"))
            frames.append(_side_by_side(panels, f"rollout {i}: from {where}, horizon {r.horizon}"))
    return runs.write_gif(frames, out, fps), kind, failure


def run_imagine(run_dir: Path, horizon: int = 15, rollouts: int = 16, seed: int | None = None,
                actions: str = "policy", device: str = "auto", note: Callable[[str], None] = print,
                threads: int | None = None, env: str | None = None, trust_env_code: bool = False) -> dict[str, Any]:
    """Load a run, compare dream and reality, write imagine/{imagine.json,imagine.png,dream.gif}."""
    from . import imagine
    from .checkpoint import load_agent

    if horizon <= 0:
        raise ValueError(f"--horizon must be > 0, got {horizon}")
    if rollouts <= 0:
        raise ValueError(f"--rollouts must be > 0, got {rollouts}")
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if actions not in imagine.ACTION_SOURCES:
        raise ValueError(f"--actions must be one of {', '.join(imagine.ACTION_SOURCES)}, got '{actions}'")
    run_dir = Path(run_dir)
    agent, config = load_agent(run_dir, device, threads, env, trust_env_code)
    if agent.world_model is None:
        from .agent import COMPOSITIONS

        *most, last = [a for a, parts in COMPOSITIONS.items() if parts.world_model]
        with_model = f"{', '.join(most)} or {last}"
        raise ValueError(f"{run_dir} is a {config.algo} run: it has no world model to imagine with. Train "
                         f"with --algo {with_model} to get a model to imagine with; "
                         f"`dreamer evaluate {run_dir}` shows this run's policy")
    seed = config.train.seed if seed is None else seed
    trained_h = config.actor_critic.horizon
    if horizon > trained_h:
        note(f"warning: --horizon {horizon} is beyond the training horizon {trained_h}: "
             "the model was never asked to imagine that far")
    limit = config.train.max_episode_steps
    starts = imagine.choose_starts(agent, config.env, rollouts, seed, horizon, limit)
    # Record frames of the first reset rollout and the first mid-episode one, for the GIF.
    record = sorted({0, (rollouts + 1) // 2} & set(range(rollouts)))
    result = imagine.rollout(agent, config.env, starts, horizon, actions, seed, record, limit)
    metrics = imagine.step_metrics(result)
    dims = [] if agent.spec.image else obs_labels(config.env, agent.spec.obs_dim)  # images: no per-pixel panels
    meta = {"run": str(run_dir), "env": config.env, "seed": seed, "actions": actions,
            "training_horizon": trained_h, "obs_labels": dims,
            "state_renderer": not agent.spec.image and has_state_renderer(config.env)}
    probe = imagine.belief_probe(agent, config.env, seed, limit)  # what the belief recovers of a hidden state
    if probe is not None:
        meta["belief_probe"] = probe
    out = run_dir / imagine.OUT_DIR
    runs.write_json(out / "imagine.json", imagine.to_json(result, metrics, meta))
    png = plot_imagination(result, metrics, dims, out / "imagine.png",
                           title=f"{config.env}: {run_dir.name} ({actions} actions, seed {seed})")
    gif, how, failure = dream_gif(config.env, result, record, dims, out / "dream.gif")
    if failure is not None:
        note(f"note: the env could not render ({failure}), so dream.gif shows animated line plots "
             "of real vs imagined observations instead")
    elif how == "plot":
        note(f"note: {config.env} has no state renderer, so dream.gif shows animated line plots "
             "of real vs imagined observations")
    return {**meta, "metrics": metrics, "dir": str(out), "json": str(out / "imagine.json"),
            "png": str(png), "gif": str(gif), "gif_kind": how,
            **({} if failure is None else {"gif_error": failure})}
