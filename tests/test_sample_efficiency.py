"""benchmarks/sample_efficiency.py: a smoke race end to end (`-m bench`), and its arithmetic on hand-made records."""

import json
from itertools import pairwise

import pytest
from conftest import load_benchmark

pytest.importorskip("stable_baselines3")  # the bench extra; the rest of the suite runs without it

race = load_benchmark("sample_efficiency")


@pytest.mark.bench
def test_smoke_race_writes_every_run_curve_table_and_figure(tmp_path):
    assert race.main(["--smoke", "--jobs", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "sample_efficiency.json").read_text())
    records = data["records"]
    expected = {(env, m, 0) for env, methods in race.METHODS.items() for m in methods}
    keys = [(r["env"], r["method"], r["seed"]) for r in records]
    assert sorted(keys) == sorted(expected)  # one record each, none twice
    every = race.SMOKE_EVAL_EVERY
    for r in records:
        assert r["error"] is None, (r["env"], r["method"], r["error"])
        steps = [p["step"] for p in r["curve"]]
        seconds = [p["train_seconds"] for p in r["curve"]]
        assert steps and all(a < b for a, b in pairwise(steps)), steps
        assert seconds[0] >= 0 and all(a < b for a, b in pairwise(seconds)), seconds
        # Evaluations at the first crossing of each multiple (PPO's 8 envs step 8 at a time), then the end.
        n_envs = 8 if r["method"] == "ppo" else 1
        for k, step in enumerate(steps[:-1], 1):
            assert k * every <= step < k * every + n_envs, (r["method"], steps)
        assert r["budget"] <= steps[-1] < r["budget"] + n_envs, (r["method"], steps)
        assert all(p["eval_seconds"] > 0 for p in r["curve"])
    assert data["meta"]["eval_episodes"] == race.SMOKE_EVAL_EPISODES
    assert data["meta"]["git"]["commit"] and data["meta"]["machine"]["cores"]
    text = (tmp_path / "sample_efficiency.md").read_text()
    for method in (*race.OURS, "ppo", "dqn", "sac", "td3"):
        assert f"| {method} |" in text
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 10_000


def test_dreamer_training_seconds_leave_out_every_evaluation_so_far():
    rows = [{"step": 250, "time": 1.0, "wm/loss": 0.3},
            {"step": 500, "time": 3.0, "eval/return_mean": 100.0, "eval/return_std": 5.0, "eval/seconds": 0.5},
            {"step": 750, "time": 5.0, "wm/loss": 0.2},
            {"step": 1000, "time": 6.0, "eval/return_mean": 480.0, "eval/return_std": 0.0, "eval/seconds": 1.0}]
    curve = race.dreamer_curve(rows)
    assert [p["step"] for p in curve] == [500, 1000]
    assert [p["train_seconds"] for p in curve] == [2.5, 4.5]  # 3 - 0.5; 6 - (0.5 + 1)
    assert race.reach(curve, 475.0) == (1000, 4.5)
    assert race.reach(curve, 500.0) == (None, None)


def record(method: str, seed: int, steps: int | None, seconds: float | None) -> dict:
    """A hand-made race record of CartPole-v1."""
    return {"env": "CartPole-v1", "method": method, "seed": seed, "threshold": 475.0, "budget": 50_000,
            "steps_to_threshold": steps, "seconds_to_threshold": seconds, "final_eval": 500.0,
            "train_seconds": 100.0, "error": None, "curve": []}


def test_medians_count_unreached_seeds_as_slowest_and_ratios_use_the_best_majority_baseline():
    records = [record("dreamer", 0, 1000, 50.0), record("dreamer", 1, 2000, 60.0), record("dreamer", 2, None, None),
               record("ppo", 0, 10_000, 10.0), record("ppo", 1, 20_000, 20.0), record("ppo", 2, 30_000, 30.0),
               # Fastest where it reaches, but only on 1 of 3 seeds: not a candidate for "best".
               record("dqn", 0, 500, 1.0), record("dqn", 1, None, None), record("dqn", 2, None, None)]
    summary = race.summarize(records)["CartPole-v1"]
    assert summary["dreamer"]["steps"] == {"median": 2000, "min": 1000, "max": None, "reached": 2, "n": 3}
    assert summary["dqn"]["steps"]["median"] is None and summary["dqn"]["steps"]["reached"] == 1
    assert summary["ppo"]["seconds"]["median"] == 20.0
    ratios = race.ratios(summary)
    assert ratios["steps"]["baseline"] == "ppo" and ratios["steps"]["ratio"] == pytest.approx(0.1)
    assert ratios["seconds"]["baseline"] == "ppo" and ratios["seconds"]["ratio"] == pytest.approx(3.0)
    meta = {"date": "d", "git": {"commit": "abc", "dirty": False}, "machine": {"cpu_model": "cpu", "cores": 2},
            "jobs": 2, "load_start": [0.0], "load_end": [0.0], "eval_every": 500, "eval_episodes": 10}
    text = race.markdown(records, meta)
    assert "**0.10**" in text and "**3.00**" in text and "2000 [1000, n.r.]" in text


def test_zoo_schedules_and_policy_kwargs_become_sb3_values():
    baselines = load_benchmark("baselines")
    schedule = baselines.linear(1e-3)
    assert schedule(1.0) == pytest.approx(1e-3) and schedule(0.5) == pytest.approx(5e-4) and schedule(0.0) == 0.0
    assert baselines.parse_kwargs("dict(net_arch=[400, 300])") == {"net_arch": [400, 300]}
    with pytest.raises(ValueError):
        baselines.parse_kwargs("dict(net_arch=__import__('os').getcwd())")
    setup, kwargs = baselines.prepare("ppo", "CartPole-v1")
    assert setup["n_envs"] == 8 and setup["n_timesteps"] == 100_000
    assert kwargs["clip_range"](0.25) == pytest.approx(0.05) and "learning_starts" not in kwargs
    _, td3 = baselines.prepare("td3", "Pendulum-v1", smoke=True)
    assert td3["learning_starts"] == baselines.SMOKE_LEARNING_STARTS


@pytest.mark.bench
def test_screening_settings_reach_dreamers_runs_and_are_named_in_the_table(tmp_path):
    argv = ["--smoke", "--methods", "dreamer", "--envs", "CartPole-v1", "--out", str(tmp_path),
            "--set", "hidden_dim=12", "imag_noise=sample"]
    assert race.main(argv) == 0
    run = tmp_path / "runs" / "CartPole-v1-dreamer-s0"
    config = json.loads((run / "config.json").read_text())
    assert config["world_model"]["hidden_dim"] == 12 and config["actor_critic"]["imag_noise"] == "sample"
    data = json.loads((tmp_path / "sample_efficiency.json").read_text())
    assert data["meta"]["set"] == {"hidden_dim": 12, "imag_noise": "sample"}
    assert "`hidden_dim=12`" in (tmp_path / "sample_efficiency.md").read_text()
    with pytest.raises(SystemExit, match="unknown config field"):
        race.main([*argv[:-2], "nope=1"])


@pytest.mark.bench
def test_a_baseline_stops_at_its_first_eval_at_the_threshold_only_when_asked():
    baselines = load_benchmark("baselines")
    # DQN's smoke settings on CartPole; every return is >= 0, so a threshold of 0 is met at once.
    full = baselines.run_sb3("dqn", "CartPole-v1", 0, budget=300, every=100, episodes=1, smoke=True)
    stopped = baselines.run_sb3("dqn", "CartPole-v1", 0, budget=300, every=100, episodes=1, smoke=True, stop_at=0.0)
    assert [p["step"] for p in full["curve"]] == [100, 200, 300]
    assert [p["step"] for p in stopped["curve"]] == [100]
    assert stopped["curve"][0]["return_mean"] == full["curve"][0]["return_mean"]  # the same run up to there
