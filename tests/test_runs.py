import json

import numpy as np
import pytest
import torch
from conftest import tiny

from dreamercli import runs
from dreamercli.agent import Agent
from dreamercli.config import from_preset
from dreamercli.envs import make_env, spec_of


def test_run_folder_is_complete_and_loadable(cartpole_run):
    names = {p.name for p in cartpole_run.iterdir()}
    # curves.png is drawn by the CLI and the Python API (tests/test_cli.py, tests/test_api.py), not the loop.
    assert {"config.json", "run.json", "weights.safetensors", "checkpoint.safetensors", "metrics.jsonl",
            "summary.json"} <= names
    assert not [n for n in names if ".tmp" in n]
    config, spec = runs.load_config(cartpole_run)
    assert config.env == "CartPole-v1" and spec.discrete and spec.obs_dim == 4
    meta = json.loads((cartpole_run / "run.json").read_text())
    assert meta["schema_version"] == 2 and "dreamer_version" in meta and meta["env_spec"]["obs_dim"] == 4
    # config.json holds the config alone, so it can be passed back as --config
    assert set(json.loads((cartpole_run / "config.json").read_text())) == {
        "env", "algo", "preset", "world_model", "actor_critic", "train", "learner", "observation"}
    summary = json.loads((cartpole_run / "summary.json").read_text())
    for key in ("final_eval", "env_steps", "wall_seconds", "best_eval", "steps_to_threshold", "threshold"):
        assert key in summary
    assert summary["env_steps"] == config.train.steps and summary["threshold"] == 475.0


def test_metrics_rows_have_steps_and_area_keys(cartpole_run):
    rows = list(runs.read_metrics(cartpole_run))
    assert rows and all("step" in r for r in rows)
    keys = set().union(*rows)
    assert {"eval/return_mean", "eval/return_std", "wm/loss", "wm/open_loop_obs_err",
            "ac/actor_loss", "ac/critic_loss", "train/episode_return"} <= keys
    assert all(k in ("step", "time") or "/" in k for k in keys)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert evals[-1]["step"] == from_preset("tiny").train.steps


def test_save_load_gives_the_same_actions(pendulum_run, tmp_path):
    config, spec = runs.load_config(pendulum_run)
    first = Agent(config, spec)
    first.load_weights(runs.load_weights(pendulum_run))
    runs.save_weights(tmp_path, first.weights())
    second = Agent(config, spec)
    second.load_weights(runs.load_weights(tmp_path))
    obs = np.random.default_rng(0).normal(size=(32, spec.obs_dim)).astype(np.float32)
    assert np.array_equal(first.act_batch(obs, True), second.act_batch(obs, True))
    fresh = Agent(config, spec)  # untrained weights act differently
    assert not np.array_equal(first.act_batch(obs, True), fresh.act_batch(obs, True))


def test_weights_file_has_stable_names(cartpole_run):
    names = set(runs.load_weights(cartpole_run))
    for prefix in ("world_model.encoder.", "world_model.dynamics.", "world_model.reward_head.",
                   "world_model.cont_head.", "world_model.decoder.", "actor_critic.actor.",
                   "actor_critic.critic.", "actor_critic.slow_critic."):
        assert any(n.startswith(prefix) for n in names), prefix
    assert "actor_critic.return_range" in names


def test_not_a_run_folder(tmp_path):
    with pytest.raises(runs.RunError, match="not found"):
        runs.load_config(tmp_path / "nope")
    with pytest.raises(runs.RunError, match="not a dreamer run folder"):
        runs.load_config(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(runs.RunError, match=r"config\.json is not valid JSON"):
        runs.load_config(tmp_path)


def test_broken_metrics_lines_are_skipped_with_a_warning(tmp_path):
    runs.write_metrics(tmp_path, [{"step": 1, "a/b": 1.0}, {"step": 2, "a/b": 2.0}])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write("{truncated\n[1]\n")
    warnings = []
    rows = list(runs.read_metrics(tmp_path, warn=warnings.append))
    assert [r["step"] for r in rows] == [1, 2]
    assert len(warnings) == 2 and "metrics.jsonl:3" in warnings[0]


def test_atomic_json_leaves_no_temp_files_and_writes_null_for_nan(tmp_path):
    runs.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_existing_folder_needs_force(tmp_path):
    config = from_preset("tiny")
    (tmp_path / "taken").mkdir()
    with pytest.raises(runs.RunError, match="--force"):
        runs.prepare_run_dir(tmp_path, "taken", config, force=False)
    assert runs.prepare_run_dir(tmp_path, "taken", config, force=True) == tmp_path / "taken"
    name = runs.prepare_run_dir(tmp_path, None, config, force=False).name
    assert name.startswith("CartPole-v1-belief-s0-")  # the default algo


def test_spec_survives_the_round_trip(pendulum_run):
    _, spec = runs.load_config(pendulum_run)
    assert spec == spec_of(make_env("Pendulum-v1"))


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_a_safetensors_header_length_that_starts_like_a_pickle_still_loads(tmp_path, first_bytes):
    from safetensors.torch import save

    # Pad the metadata until the header's length, little-endian, begins with these bytes.
    for pad in range(70_000):
        data = save({"w": torch.zeros(2)}, metadata={"pad": "x" * pad})
        if data.startswith(first_bytes):
            break
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    tensors, meta = runs.load_tensors(path)
    assert torch.equal(tensors["w"], torch.zeros(2)) and meta["pad"] == "x" * pad


def test_a_config_without_algo_is_a_dreamer_run_whatever_the_default(cartpole_run, tmp_path):
    # Run folders from before --algo existed name none; their weights are dreamer's.
    old = tmp_path / "old"
    old.mkdir()
    for name in ("run.json", "weights.safetensors"):
        (old / name).write_bytes((cartpole_run / name).read_bytes())
    data = json.loads((cartpole_run / "config.json").read_text())
    del data["algo"]
    runs.write_json(old / "config.json", data)
    config, spec = runs.load_config(old)
    assert config.algo == "dreamer" and from_preset("default").algo == "belief"
    agent = Agent(config, spec)
    agent.load_weights(runs.load_weights(old))  # the names fit: no error


def write_untrained(run_dir, config):
    """A run folder of config.json, run.json and untrained weights: what loading needs, without training."""
    spec = spec_of(make_env(config.env))
    runs.write_config(run_dir, config, spec)
    runs.save_weights(run_dir, Agent(config, spec).weights())


def test_a_config_without_sac_novelty_paid_no_bonus_whatever_the_default(tmp_path):
    # Run folders from before sac_novelty existed name none; their weights hold no RND networks.
    small = {"algo": "model-free", "sac_batch": 16, "sac_hidden": 16}
    write_untrained(tmp_path / "old", tiny("Pendulum-v1", sac_novelty=0.0, **small))
    write_untrained(tmp_path / "new", tiny("Pendulum-v1", sac_novelty=1.0, **small))
    data = json.loads((tmp_path / "old" / "config.json").read_text())
    del data["learner"]["sac_novelty"]
    runs.write_json(tmp_path / "old" / "config.json", data)
    old, spec = runs.load_config(tmp_path / "old")
    assert old.learner.sac_novelty == 0.0 and from_preset("default").learner.sac_novelty > 0
    Agent(old, spec).load_weights(runs.load_weights(tmp_path / "old"))  # the names fit: no error
    assert runs.load_config(tmp_path / "new")[0].learner.sac_novelty == 1.0  # a saved value wins


def test_a_config_without_sac_actor_share_trained_the_actor_in_every_update_whatever_the_default(tmp_path):
    # Run folders from before sac_actor_share existed name none; a resumed one must train as it did.
    write_untrained(tmp_path / "old", tiny("Pendulum-v1", algo="model-free", sac_hidden=16))
    data = json.loads((tmp_path / "old" / "config.json").read_text())
    assert data["learner"]["sac_actor_share"] == from_preset("default").learner.sac_actor_share < 1.0
    del data["learner"]["sac_actor_share"]
    runs.write_json(tmp_path / "old" / "config.json", data)
    assert runs.load_config(tmp_path / "old")[0].learner.sac_actor_share == 1.0


def test_a_new_run_folder_replaces_an_old_one_as_a_whole(tmp_path):
    old = tmp_path / "run"
    (old / "videos").mkdir(parents=True)
    runs.write_json(old / "config.json", {"old": True})
    runs.write_json(old / "eval.json", {})
    runs.create_run_dir(old, lambda folder: runs.write_json(folder / "config.json", {"new": True}))
    assert sorted(p.name for p in old.iterdir()) == ["config.json"]
    assert runs.read_json(old / "config.json") == {"new": True}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp folder left beside it


def test_check_writable(tmp_path):
    runs.check_writable(tmp_path)
    with pytest.raises(runs.RunError, match="cannot write in"):
        runs.check_writable(tmp_path / "missing")
