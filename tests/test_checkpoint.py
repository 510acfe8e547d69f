"""Checkpoints and resume: an interrupted run, resumed, is the uninterrupted one; NaN guards."""

import json
import shutil
import signal
import threading

import numpy as np
import pytest
import torch
from conftest import Crash, crash_at, rows_without_timings, tiny

from dreamercli import checkpoint, runs
from dreamercli.buffer import ReplayBuffer
from dreamercli.optim import FlatAdam
from dreamercli.training import LoopState, Trainer, resume, train

# hybrid with a lenient guard, so that branched rollouts, the model buffer, SAC and the guard's
# window are all part of what a checkpoint must bring back.
HYBRID = {"algo": "hybrid", "trust_threshold": 1.0, "trust_window": 20, "sac_batch": 32, "sac_hidden": 32}


# belief: the RSSM's replayed beliefs and the open episode's belief must come back too (Pendulum: mid-episode).
BELIEF = {"algo": "belief", "sac_batch": 32, "sac_hidden": 32}


@pytest.mark.parametrize("env, overrides", [("CartPole-v1", {}), ("Pendulum-v1", {}), ("CartPole-v1", HYBRID),
                                            ("Pendulum-v1", {"novelty": 0.3}), ("Pendulum-v1", BELIEF)])
def test_interrupted_and_resumed_equals_uninterrupted(env, overrides, tmp_path, request):
    # tiny: checkpoints at steps 150 and 300; the crash at 230 loses steps 151-230, which the
    # resume redoes from the checkpoint (Pendulum: mid-episode, so the env is replayed).
    config = tiny(env, **overrides)
    if overrides:
        whole = tmp_path / "whole"
        train(config, whole)
    else:  # the session's run of this very config (conftest), uninterrupted
        whole = request.getfixturevalue("cartpole_run" if env == "CartPole-v1" else "pendulum_run")
    with pytest.raises(Crash):
        train(config, tmp_path / "cut", on_progress=crash_at(230))
    cut = tmp_path / "cut"
    assert max(r["step"] for r in runs.read_metrics(cut)) == 150 + 50  # a log row past the checkpoint
    trainer = resume(cut)
    assert (trainer.state.step, len(trainer.buffer)) == (150, 150)
    trainer.run()
    assert rows_without_timings(cut) == rows_without_timings(whole)
    weights, resumed = runs.load_weights(whole), runs.load_weights(cut)
    assert set(weights) == set(resumed) and all(torch.equal(weights[k], resumed[k]) for k in weights)
    assert json.loads((cut / "summary.json").read_text())["env_steps"] == config.train.steps
    if config.algo == "belief":  # the beliefs and the open episode's memory were saved, not recomputed
        saved = checkpoint.read(cut)
        assert saved.part("belief")["state"].abs().sum() > 0 and saved.part("memory")["h"].abs().sum() > 0
    if config.algo == "hybrid":  # the guard opened, and the model buffer came back with the rest
        assert any(r.get("hybrid/branch_length", 0) > 0 for r in runs.read_metrics(cut))
        assert len(checkpoint.read(cut).part("model_replay")["rewards"]) > 0


def test_resume_to_a_new_total_appends_rows_once(cartpole_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)  # a finished tiny run (300 env steps)
    before = list(runs.read_metrics(run))
    trainer = resume(run, steps=450)
    assert trainer.state.step == 300
    summary = trainer.run()
    rows = list(runs.read_metrics(run))
    assert rows[:len(before)] == before
    steps = [(r["step"], "eval/return_mean" in r) for r in rows]
    assert len(steps) == len(set(steps)), "a row was written twice"
    assert rows[-1]["step"] == 450 and summary["env_steps"] == 450
    assert runs.load_config(run)[0].train.steps == 450  # a second resume aims for the same total


def test_a_checkpoint_holds_optimisers_replay_and_rngs(cartpole_run):
    ckpt = checkpoint.read(cartpole_run)
    assert ckpt.part("opt/world_model")["exp_avg"].shape == ckpt.part("opt/world_model")["exp_avg_sq"].shape
    assert {"actor", "critic"} <= {k.split("/")[1] for k in ckpt.tensors if k.startswith("opt/")}
    assert len(ckpt.part("replay")["rewards"]) == ckpt.state["step"] == tiny("CartPole-v1").train.steps
    assert ckpt.tensors["rng/torch"].dtype == torch.uint8 and "state" in ckpt.numpy_rng
    assert set(LoopState.__dataclass_fields__) <= set(ckpt.state)


def test_a_damaged_checkpoint_is_refused_in_one_line(cartpole_run, tmp_path):
    path = tmp_path / runs.CHECKPOINT_FILE
    path.write_bytes((cartpole_run / runs.CHECKPOINT_FILE).read_bytes()[:5000])
    with pytest.raises(runs.RunError) as err:
        checkpoint.read(tmp_path)
    assert "checkpoint.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_replay_into_a_larger_buffer_keeps_time_order():
    small = ReplayBuffer(4, 1, 1)
    for t in range(6):  # wraps: slots hold steps 4, 5, 2, 3
        small.add(np.array([t]), np.zeros(1), float(t), np.array([t]), False, 0)
    big = ReplayBuffer(10, 1, 1)
    big.load_arrays(small.arrays(), small.cursor, small.capacity)
    assert big.rewards[:4].tolist() == [2, 3, 4, 5] and (big.size, big.cursor) == (4, 4)
    same = ReplayBuffer(4, 1, 1)
    same.load_arrays(small.arrays(), small.cursor, small.capacity)
    assert same.rewards.tolist() == small.rewards.tolist() and same.cursor == small.cursor


def test_flat_adam_skips_a_non_finite_gradient_and_restores_its_state():
    net = torch.nn.Linear(3, 2)
    opt = FlatAdam(net, lr=1e-2, clip=1.0)
    net(torch.ones(1, 3)).sum().backward()
    assert opt.step()
    before = opt.param.detach().clone()
    opt.zero_grad()
    (net(torch.ones(1, 3)).sum() * float("nan")).backward()
    assert not opt.step()
    assert torch.equal(opt.param, before) and not opt.param.grad.any()
    twin = FlatAdam(torch.nn.Linear(3, 2), lr=1e-2, clip=1.0)
    twin.load_state_tensors(opt.state_tensors())
    assert torch.equal(twin.state["exp_avg"], opt.state["exp_avg"]) and twin.state["step"] == 1


def nan_updates(trainer, steps):
    """Make the world model's loss NaN during the given env steps: each of those updates is skipped."""
    loss = trainer.agent.world_model.loss

    def poisoned(*batch):
        losses, metrics, post = loss(*batch)
        if trainer.state.step in steps:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses, metrics, post

    trainer.agent.world_model.loss = poisoned


def test_nan_updates_are_skipped_counted_and_warned_once(tmp_path):
    trainer = Trainer(tiny("CartPole-v1"), tmp_path / "run")
    nan_updates(trainer, range(150, 170))
    trainer.start()
    with pytest.warns(RuntimeWarning, match="skipped") as caught:
        summary = trainer.run()
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1
    assert summary["skipped_updates"] == 5 and trainer.agent.finite()  # train ratio 0.25: 5 in 20 steps
    rows = list(runs.read_metrics(tmp_path / "run"))
    assert rows[-2]["train/skipped_updates"] == summary["skipped_updates"]
    # no NaN (written as null) reached a loss: skipped updates leave no metrics
    assert all(v is not None for r in rows for k, v in r.items() if k.startswith(("wm/", "ac/")))


def test_repeated_nan_updates_stop_the_run_with_finite_weights_on_disk(tmp_path):
    trainer = Trainer(tiny("CartPole-v1", steps=1000, train_ratio=1.0), tmp_path / "run")
    nan_updates(trainer, range(120, 1001))
    trainer.start()
    with pytest.warns(RuntimeWarning), pytest.raises(checkpoint.Diverged, match="in a row"):
        trainer.run()
    weights = runs.load_weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert checkpoint.read(tmp_path / "run").state["step"] > 0


def test_a_signal_during_pretraining_stops_it_between_two_updates(cartpole_run, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny("CartPole-v1"), run)  # prefill 100, pretrain 20, the first checkpoint at 150
    seen = []

    def on_progress(p):
        seen.append((p.phase, p.pretrained, p.stopping))
        if p.phase == "pretrain" and p.pretrained == 5:
            trainer.signal = "SIGINT"  # what the handler does on the first Ctrl-C

    trainer.on_progress = on_progress
    trainer.start()
    summary = trainer.run()
    assert seen[-1] == ("pretrain", 5, None) and seen[-2] == ("pretrain", 4, None)  # no sixth update
    assert summary["interrupted"] == "SIGINT" and summary["env_steps"] == 0  # where a resume goes on from
    assert checkpoint.read(run).state["step"] == 0  # a half-pretrained model is never saved
    trainer = resume(run)
    trainer.run()
    assert rows_without_timings(run) == rows_without_timings(cartpole_run)


def test_a_pending_stop_is_reported_until_the_run_stops(tmp_path):
    seen = []
    trainer = Trainer(tiny("CartPole-v1"), tmp_path / "run")

    def on_progress(p):
        seen.append((p.step, p.phase, p.stopping))
        if p.step == 120:
            trainer.signal = "SIGTERM"

    trainer.on_progress = on_progress
    trainer.start()
    assert trainer.run()["interrupted"] == "SIGTERM"
    assert seen[-2:] == [(120, "train", None), (120, "checkpoint", "SIGTERM")]  # the checkpoint is reported too
    assert checkpoint.read(tmp_path / "run").state["step"] == 120


def handlers_run() -> None:
    """A Python-level call: on entering it the interpreter runs the signal handlers due."""


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers are set in the main thread only")
def test_a_second_signal_during_pretraining_stops_at_once(tmp_path):
    pretrained = []

    def on_progress(p):
        if p.phase == "pretrain":
            pretrained.append(p.pretrained)
            if p.pretrained == 3:
                # raise_signal: to this thread, so the signal arrives before the call returns (os.kill's may go
                # to another of torch's threads, later); a Python call between, where the interpreter runs the
                # first one's handler, so the second is not folded into it.
                signal.raise_signal(signal.SIGINT)
                handlers_run()
                signal.raise_signal(signal.SIGINT)

    # The second signal reaches the handler from before the run: a terminal's, which raises KeyboardInterrupt.
    # Set here, since a pytest-xdist worker's may be whatever an earlier test in that process left.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny("CartPole-v1", pretrain=200), tmp_path / "run", on_progress=on_progress)
    finally:
        signal.signal(signal.SIGINT, before)
    assert pretrained == [1, 2, 3]


def test_resuming_a_finished_run_changes_nothing(cartpole_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(runs.RunError, match=r"already finished at 300 of 300 env steps; give --steps M "
                                            r"\(more than 300\) to go on$"):
        resume(run)
    with pytest.raises(runs.RunError, match="already finished"):
        resume(run, steps=300)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
