"""The training loop in small named steps (collect, learn, log, evaluate, checkpoint), and resume."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, runs
from .agent import COMPOSITIONS, Agent, check_composition, resolve_device
from .buffer import ReplayBuffer
from .checkpoint import Diverged
from .config import REGISTERED, TENSORBOARD_INSTALL, Config, ConfigError, to_dict, validate, with_overrides
from .envs import (
    EnvError,
    check_observation,
    checked_reward,
    encode_action,
    make_run_env,
    spec_of,
    step_limit,
    threshold_of,
    to_env_action,
)
from .evaluation import EVAL_SEED_OFFSET, evaluate_policy
from .exploration import EpisodeNoise, random_action_from
from .progress import CostModel, Progress
from .tensorboard_log import TensorBoardLog

MAX_SKIPS_IN_A_ROW = 50  # updates with NaN/inf in a row before a run is called diverged
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal number, as shells report them


def check_learns(config: Config) -> Config:
    """ConfigError in one line for a run that would train nothing or cannot start; the config otherwise.

    Kept apart from config.validate(), which also reads finished run folders: those must load whatever they
    were. The CLI calls it before it makes a run folder; the Trainer before it starts.
    """
    tr = config.train
    if tr.steps <= tr.prefill:
        raise ConfigError(f"steps {tr.steps} is not more than the prefill of {tr.prefill} random-action steps, so "
                          f"nothing would learn: give --steps above {tr.prefill} or a smaller --prefill")
    check_composition(config)
    if COMPOSITIONS[config.algo].off_policy and config.learner.sac_ratio == 0:
        raise ConfigError(f"sac_ratio 0 makes no update of {config.algo}'s off-policy learner, so its policy "
                          "would not learn: give --sac-ratio above 0")
    if tr.stop_at_return == REGISTERED and threshold_of(config.env) is None:
        raise ConfigError(f"stop_at_return '{REGISTERED}': the env '{config.env}' registers no reward_threshold; "
                          "give the return to stop at as a number")
    if tr.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(f"tensorboard is on, but the tensorboard package is not installed: {TENSORBOARD_INSTALL}")
    return config


@dataclass
class LoopState:
    """Every counter of the loop: with the networks, replay, RNGs and the learners' counters, all a resume needs."""

    step: int = 0
    updates: int = 0
    episode: int = 0
    episode_return: float = 0.0
    best: float | None = None
    solved_at: int | None = None
    last_eval: float | None = None
    finished: list[float] = field(default_factory=list)  # episode returns since the last log row
    pending: list[dict[str, float]] = field(default_factory=list)  # update metrics since then
    skipped_updates: int = 0
    skipped_in_a_row: int = 0
    elapsed: float = 0.0  # training seconds before the last checkpoint (earlier processes included)
    metrics_bytes: int = 0  # size of metrics.jsonl when the checkpoint was written
    # The env cannot be saved in general, so the current episode is replayed on resume: the
    # env's generator state before its reset (None: the seeded first reset) and the actions since.
    episode_reset: dict[str, Any] | None = None
    episode_actions: list[Any] = field(default_factory=list)
    noise_seed: int = 0  # seed of the current episode's exploration noise (exploration.EpisodeNoise)
    stopped: str | None = None  # why the run ended before its step total (stop_at_return reached)


class Trainer:
    """One run: the env, agent, replay, generators and LoopState, stepped by run()."""

    def __init__(self, config: Config, run_dir: Path | None = None,
                 on_progress: Callable[[Progress], None] | None = None):
        tr = config.train
        check_learns(config)
        self.config, self.tr, self.on_progress = config, tr, on_progress
        self.run_dir = None if run_dir is None else Path(run_dir)
        torch.set_num_threads(tr.threads)
        torch.manual_seed(tr.seed)
        self.rng = np.random.default_rng(tr.seed)
        self.env = make_run_env(config, seed=tr.seed)
        self.spec = spec_of(self.env)
        self.noise = EpisodeNoise(self.spec.action_dim, tr.noise_exponent, step_limit(self.env) or tr.max_episode_steps)
        self.threshold = threshold_of(config.env, tr.threshold)
        # 'registered' is resolved here, once; summary.json records the number.
        stop_at = threshold_of(config.env) if tr.stop_at_return == REGISTERED else tr.stop_at_return
        self.stop_at = None if stop_at is None else float(stop_at)
        self.agent = Agent(config, self.spec, resolve_device(tr.device))
        self.memory = self.agent.memory()  # the recurrent model's belief of the open episode (else None)
        self.buffer = ReplayBuffer(min(tr.buffer_size, tr.steps), self.spec.obs_dim, self.spec.action_dim,
                                   self.spec.obs_shape)
        self.state = LoopState()
        self.costs = CostModel(tr.steps, tr.prefill, self.agent.pretrain_updates(), tr.eval_every, tr.checkpoint_every,
                               step_limit(self.env) or tr.max_episode_steps)
        self.obs: np.ndarray | None = None
        self.signal: str | None = None
        self.abandoned = False  # a signal stopped the pretraining: this step is not checkpointed
        self.saved_step = 0  # the env step of the run folder's checkpoint
        self.tensorboard: TensorBoardLog | None = None
        self.began = time.perf_counter()
        self.logged = (0, self.began)  # (step, clock) of the previous log row, for train/sps
        self.latest_losses: dict[str, float] = {}

    # -- starting ------------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh run: reset the env, and create the run folder with a step-0 checkpoint."""
        self.obs = self._reset()
        if self.run_dir is not None:
            def fill(folder: Path) -> None:
                runs.write_config(folder, self.config, self.spec)
                runs.atomic_write(folder / runs.METRICS_FILE, b"")
                self._write_checkpoint(folder)

            runs.create_run_dir(self.run_dir, fill)
            if self.tr.tensorboard:
                self.tensorboard = TensorBoardLog(self.run_dir, self.config, self.seconds())

    def resume(self) -> None:
        """Restore the last checkpoint of run_dir, cut metrics back to it, replay the open episode."""
        assert self.run_dir is not None
        runs.remove_temp_files(self.run_dir)
        if (self.run_dir / runs.WEIGHTS_FILE).exists():
            runs.check_safetensors(self.run_dir / runs.WEIGHTS_FILE)  # never pick up a planted pickle
        ckpt = checkpoint.read(self.run_dir)
        path = self.run_dir / runs.CHECKPOINT_FILE
        checkpoint.restore(ckpt, self.agent, self.buffers(), self.rng, path)
        self.agent.load_state_tensors({name: ckpt.part(name) for name in ("guard", "stream", "belief")})
        self.agent.load_counters(ckpt.state)
        names = {f.name for f in dataclasses.fields(LoopState)}
        try:
            self.state = LoopState(**{k: v for k, v in ckpt.state.items() if k in names})
        except TypeError as err:
            raise checkpoint.CheckpointError(f"{path} has a damaged state: {err}") from None
        runs.truncate_metrics(self.run_dir, self.state.metrics_bytes)
        (self.run_dir / runs.SUMMARY_FILE).unlink(missing_ok=True)  # the run is open again
        self.state.stopped = None  # resumed past a stop: on to the new total (the stop rule still holds)
        self.obs = self._replay_episode()
        if self.memory is not None:  # what the open episode has shown the model, as it was
            self.memory.load_state_tensors(ckpt.part("memory"))
        self.logged = (self.state.step, self.began)
        self.saved_step = self.state.step
        if self.tr.tensorboard:
            self.tensorboard = TensorBoardLog.rebuilt(self.run_dir, self.config, self.seconds())

    def buffers(self) -> dict[str, ReplayBuffer]:
        """The replay buffers by checkpoint name: the real one and the learners' own."""
        return {"replay": self.buffer, **self.agent.buffers()}

    def _reset(self) -> np.ndarray:
        """Start an episode, remembering how, so that resume can start it the same way."""
        st = self.state
        st.episode_actions = []
        if self.memory is not None:
            self.memory.reset()
        st.noise_seed = int(self.rng.integers(2**62))
        self.noise.restart(st.noise_seed)
        if st.step == 0 and st.episode == 0:
            st.episode_reset = None
            return self._env_reset(seed=self.tr.seed)
        st.episode_reset = dict(self.env.unwrapped.np_random.bit_generator.state)
        return self._env_reset()

    def _env_reset(self, seed: int | None = None) -> np.ndarray:
        """env.reset; an observation that cannot be learned from becomes one EnvError line."""
        obs = self.env.reset(seed=seed)[0]
        st = self.state
        where = "at the first reset" if st.step == 0 and st.episode == 0 else f"at the reset after env step {st.step}"
        check_observation(self.config.env, obs, self.spec, where)
        return obs

    def _replay_episode(self) -> np.ndarray:
        """Bring a fresh env to where the checkpointed one was: same reset, same actions."""
        st = self.state
        obs = self._env_reset(seed=self.tr.seed)
        if st.episode_reset is not None:
            self.env.unwrapped.np_random.bit_generator.state = st.episode_reset
            obs = self._env_reset()
        self.noise.restart(st.noise_seed, consumed=len(st.episode_actions))
        for action in st.episode_actions:
            obs = self._env_step(np.asarray(action, dtype=np.float32 if not self.spec.discrete else np.int64))[0]
        return obs

    # -- one env step ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Step until the configured total, the return to stop at, or a signal; return the summary."""
        tr, st = self.tr, self.state
        self.costs.restart_clock(time.perf_counter())
        try:
            with _signals_to(self):
                while st.step < tr.steps and self.signal is None and st.stopped is None:
                    st.step += 1
                    self.collect()
                    self.learn()
                    if self.abandoned:
                        break
                    self.log_and_evaluate()
                    self.costs.end_step(st.step, time.perf_counter())
                    self.report("prefill" if st.step < tr.prefill else "train")
            if self.signal is not None and not self.abandoned and not self._checkpoint_due(st.step):
                self.checkpoint()
            return self.finish()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def collect(self) -> None:
        """One env step with a random (prefill) or policy action, stored in replay."""
        st, began = self.state, time.perf_counter()
        noise = self.noise.next()
        prefill = st.step <= self.tr.prefill
        action = random_action_from(self.spec, noise) if prefill \
            else self.agent.act(self.obs, noise=noise, memory=self.memory)
        encoded = encode_action(self.spec, action)
        if prefill:  # the belief follows random actions too
            self.agent.track(self.obs, encoded, self.memory)
        next_obs, reward, terminated, truncated = self._env_step(action)
        st.episode_actions.append(action.tolist())
        if st.step > self.tr.prefill:  # a fresh transition: not trained on yet
            self.agent.observe(self.obs, encoded, next_obs, terminated, truncated)
        self.buffer.add(self.obs, encoded, reward, next_obs, terminated, st.episode)
        st.episode_return += reward
        self.obs = next_obs
        if terminated or truncated:
            st.finished.append(st.episode_return)
            st.episode, st.episode_return = st.episode + 1, 0.0
            self.obs = self._reset()
        self.costs.add("collect", time.perf_counter() - began)

    def _env_step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """env.step with the agent's action; an env that raises, or returns what cannot be learned from (NaN,
        inf, a wrong shape), becomes one EnvError line."""
        try:
            obs, reward, terminated, truncated, _ = self.env.step(to_env_action(self.spec, action))
        except Exception as err:
            raise EnvError(f"environment '{self.config.env}' raised at env step {self.state.step}: "
                           f"{type(err).__name__}: {err}") from None
        where = f"at env step {self.state.step}"
        check_observation(self.config.env, obs, self.spec, where)
        return obs, checked_reward(self.config.env, reward, where), bool(terminated), bool(truncated)

    def learn(self) -> None:
        """The agent's updates for this env step, each counted (NaN or inf ones survived); pretraining timed.

        A signal stops the pretraining between two updates: the step is abandoned, and the run
        folder keeps its last checkpoint, from which a resume redoes the prefill's end.
        """
        st, began = self.state, time.perf_counter()
        pretrained = 0
        for kind, metrics in self.agent.learn(self.buffer, st.step, self.rng):
            metrics = self._counted(metrics)
            if kind == "pretrain":
                self.costs.add("pretrain", time.perf_counter() - began)
                pretrained += 1
                self.report("pretrain", pretrained, {"wm/loss": metrics["wm/loss"]} if metrics else {})
                if self.signal is not None:
                    self.abandoned = True
                    return
            elif metrics is not None:
                st.pending.append(metrics)
            began = time.perf_counter()

    def _counted(self, metrics: dict[str, float] | None) -> dict[str, float] | None:
        """Count an update, and count (and survive) a skipped one: NaN or inf in a loss or gradient."""
        st = self.state
        st.updates += 1
        if metrics is not None:
            st.skipped_in_a_row = 0
            return metrics
        st.skipped_updates += 1
        st.skipped_in_a_row += 1
        if st.skipped_updates == 1:
            warnings.warn(f"step {st.step}: an update had NaN or inf in a loss or gradient and was skipped "
                          "(counted as train/skipped_updates)", RuntimeWarning, stacklevel=2)
        if st.skipped_in_a_row >= MAX_SKIPS_IN_A_ROW:
            where = f"; the last good checkpoint is in {self.run_dir}" if self.run_dir else ""
            raise Diverged(f"training diverged at env step {st.step}: {st.skipped_in_a_row} updates in a row "
                           f"had NaN or inf in a loss or gradient{where}")
        return None

    # -- logging, evaluation, checkpoints --------------------------------------------------------

    def log_and_evaluate(self) -> None:
        """A metrics row every log_every steps, an evaluation every eval_every, then a checkpoint."""
        tr, st = self.tr, self.state
        rows = []
        if st.step % tr.log_every == 0 or st.step == tr.steps:
            rows.append(self.log_row())
        evaluate = (tr.eval_every and st.step % tr.eval_every == 0) or st.step == tr.steps
        if evaluate:
            rows.append(self.evaluate())
        if self.run_dir is not None and rows:
            st.metrics_bytes = runs.append_metrics(self.run_dir, rows)
            if self.tensorboard is not None:
                self.tensorboard.write(rows)
        if self._checkpoint_due(st.step) or st.stopped is not None:
            self.checkpoint()

    def _checkpoint_due(self, step: int) -> bool:
        every = self.tr.checkpoint_every or self.tr.eval_every
        return step == self.tr.steps or (bool(every) and step % every == 0)

    def log_row(self) -> dict[str, Any]:
        """Training metrics averaged since the previous row."""
        st, now = self.state, time.perf_counter()
        row: dict[str, Any] = {"step": st.step, "time": self.seconds(now), "train/episodes": st.episode,
                               "train/sps": (st.step - self.logged[0]) / max(now - self.logged[1], 1e-9),
                               "train/skipped_updates": st.skipped_updates}
        self.logged = (st.step, now)
        if st.finished:
            row["train/episode_return"] = float(np.mean(st.finished))
        row.update(self.agent.learner_metrics())
        keys = sorted({k for m in st.pending for k in m})  # world-model and SAC updates log different keys
        row.update({k: float(np.mean([m[k] for m in st.pending if k in m])) for k in keys})
        if keys:
            self.latest_losses = {k: row[k] for k in ("wm/loss", "ac/actor_loss", "sac/q_loss") if k in row}
        st.finished, st.pending = [], []
        return row

    def evaluate(self) -> dict[str, Any]:
        """Deterministic episodes on separate envs; the row also says how long they took."""
        self.report("eval")
        st, began = self.state, time.perf_counter()
        stats = evaluate_policy(self.agent, self.config.env, self.tr.eval_episodes,
                                seed=self.tr.seed + EVAL_SEED_OFFSET, max_episode_steps=self.tr.max_episode_steps
                                ).stats()
        # Evaluation time, so benchmarks can count training seconds alone.
        stats["seconds"] = time.perf_counter() - began
        self.costs.add("eval", stats["seconds"])
        st.last_eval = stats["return_mean"]
        st.best = st.last_eval if st.best is None else max(st.best, st.last_eval)
        if st.solved_at is None and self.threshold is not None and st.last_eval >= self.threshold:
            st.solved_at = st.step
        if self.stop_at is not None and st.last_eval >= self.stop_at and st.step < self.tr.steps:
            st.stopped = f"eval/return_mean {st.last_eval:.1f} >= {self.stop_at} at env step {st.step}"
        return {"step": st.step, "time": self.seconds(), **{f"eval/{k}": v for k, v in stats.items()}}

    def checkpoint(self) -> None:
        """weights.safetensors (for evaluate) and checkpoint.safetensors (for resume), atomically."""
        if self.run_dir is not None:
            self.report("checkpoint")
            began = time.perf_counter()
            self._write_checkpoint(self.run_dir)
            self.costs.add("checkpoint", time.perf_counter() - began)

    def _write_checkpoint(self, folder: Path) -> None:
        state = {**dataclasses.asdict(dataclasses.replace(self.state, elapsed=self.seconds())),
                 **self.agent.counters()}
        tensors = self.agent.state_tensors()
        if self.memory is not None:
            tensors.update({f"memory/{k}": v for k, v in self.memory.state_tensors().items()})
        checkpoint.write(folder, self.agent, self.buffers(), self.rng, state, tensors)
        runs.save_weights(folder, self.agent.weights())
        self.saved_step = self.state.step

    def seconds(self, now: float | None = None) -> float:
        """Training seconds so far (at clock reading `now`), those of earlier (resumed) processes included."""
        return self.state.elapsed + (time.perf_counter() if now is None else now) - self.began

    def report(self, phase: str, pretrained: int | None = None, losses: dict[str, float] | None = None) -> None:
        """Tell on_progress where the loop is (pretrained: the pretraining updates done, when under way)."""
        if self.on_progress is None:
            return
        st = self.state
        if pretrained is None:  # the pretraining, if any, is done once the prefill's last step is
            pretrained = self.tr.pretrain if st.step >= self.tr.prefill else 0
        self.on_progress(Progress(st.step, self.tr.steps, st.episode, st.last_eval,
                                  self.latest_losses if losses is None else losses,
                                  0.0 if phase == "pretrain" else self.costs.sps, phase, pretrained,
                                  self.tr.pretrain, self.costs.seconds_left(st.step, pretrained, phase),
                                  self.signal))

    def finish(self) -> dict[str, Any]:
        """Close the env; write summary.json; return the summary (curves.png is the caller's to draw)."""
        self.env.close()
        st = self.state
        # A run whose pretraining a signal stopped goes on, when resumed, from its last checkpoint.
        summary = {"env": self.config.env, "algo": self.config.algo, "seed": self.tr.seed,
                   "env_steps": self.saved_step if self.abandoned else st.step, "episodes": st.episode,
                   "wall_seconds": self.seconds(),
                   "final_eval": st.last_eval, "best_eval": st.best, "threshold": self.threshold,
                   "steps_to_threshold": st.solved_at, "updates": st.updates,
                   "skipped_updates": st.skipped_updates}
        if self.stop_at is not None:
            summary["stop_at_return"] = self.stop_at
        if st.stopped is not None:
            summary["stopped"] = st.stopped
        if self.signal is not None:
            summary["interrupted"] = self.signal
        if self.run_dir is not None:
            runs.write_json(self.run_dir / runs.SUMMARY_FILE, summary)
        return summary


@contextlib.contextmanager
def _signals_to(trainer: Trainer) -> Iterator[None]:
    """SIGINT and SIGTERM ask the loop to stop after the current step; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (Ray task threads, notebooks)
        return
    previous = {s: signal.getsignal(s) for s in SIGNAL_NAMES}

    def handler(signum: int, frame: Any) -> None:
        trainer.signal = SIGNAL_NAMES[signal.Signals(signum)]
        signal.signal(signum, previous[signum])

    for s in SIGNAL_NAMES:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(config: Config, run_dir: Path | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> tuple[Agent, dict[str, Any]]:
    """Train an agent as config says; write the run folder if run_dir is given; return the summary."""
    trainer = Trainer(config, run_dir, on_progress)
    trainer.start()
    return trainer.agent, trainer.run()


def resume(run_dir: Path, steps: int | None = None,
           on_progress: Callable[[Progress], None] | None = None) -> Trainer:
    """A Trainer restored from run_dir's last checkpoint, to run on to its (or a new) step total."""
    run_dir = Path(run_dir)
    config, _ = runs.load_config(run_dir)
    if steps is not None and steps != config.train.steps:
        config = validate(with_overrides(config, {"steps": steps}))
    state = checkpoint.read(run_dir).state  # checked before anything is changed
    done = int(state.get("step", 0))
    if done > config.train.steps:
        raise runs.RunError(f"{run_dir} is already at env step {done}, past --steps {steps}")
    if done == config.train.steps or (state.get("stopped") and (steps is None or steps <= done)):
        how = f"({state['stopped']})" if state.get("stopped") else f"at {done} of {done} env steps"
        raise runs.RunError(f"{run_dir} already finished {how}; give --steps M (more than {done}) to go on")
    trainer = Trainer(config, run_dir, on_progress)
    trainer.resume()
    if steps is not None:  # so that a second resume aims for the same total
        runs.write_json(run_dir / runs.CONFIG_FILE, to_dict(config))
    return trainer
