"""dreamer tune: the score, the search space, a study in two workers, pruning, resume, Ctrl-C, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from dreamercli import cli, runs, tune
from dreamercli.cli import app
from dreamercli.config import ConfigError, flatten, from_preset, with_overrides

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# Trials of a few tenths of a second: 100 env steps, an evaluation of one episode every 25.
TINY = ["--env", "CartPole-v1", "--preset", "tiny", "--steps", "100", "--prefill", "50", "--eval-every", "25",
        "--eval-episodes", "1"]
# Two searched fields; the rest of model-free's default space dropped (prefill is fixed by its flag).
SMALL = {"sac_lr": {"low": 3e-4, "high": 3e-3, "log": True}, "sac_ratio": {"choices": [1, 2]},
         "sac_hidden": None, "sac_batch": None, "sac_actor_share": None, "noise_exponent": None}


def write_space(tmp_path: Path, space) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return path


def tune_cli(tmp_path: Path, *extra: str, space=SMALL):
    return runner.invoke(app, ["tune", *TINY, "--runs-dir", str(tmp_path / "runs"),
                               "--space", str(write_space(tmp_path, space)), *extra])


def trials_of(study_dir: Path) -> list:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / tune.JOURNAL_FILE)))
    return optuna.load_study(study_name=study_dir.name, storage=storage).get_trials()


def eval_rows(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["eval/return_mean"]) for r in runs.read_metrics(run_dir) if "eval/return_mean" in r]


def test_score_rewards_learning_fast():
    # Random play 0, target 100: evaluations 0, 50, 100, 150 count 0, 0.5, 1 and 1 (capped).
    assert tune.score([0, 50, 100, 150], None, 1000, 0.0, 100.0, False) == pytest.approx(0.625)
    assert tune.score([50, 100, 100], None, 1000, 0.0, 100.0, False) > \
        tune.score([0, 50, 100], None, 1000, 0.0, 100.0, False)  # the same end, reached sooner
    assert tune.score([10, 30], None, 1000, 5.0, None, False) == pytest.approx(15.0)  # no target: above random
    # With a threshold: minus the steps to reach it; never reached ranks below, by how near it came.
    assert tune.score([0, 100], 400, 1000, 0.0, 100.0, True) == -400
    assert tune.score([0, 50], None, 1000, 0.0, 100.0, True) == pytest.approx(-1000 * (2 - 0.25))
    assert tune.score([0, 90], None, 1000, 0.0, 100.0, True) > tune.score([0, 50], None, 1000, 0.0, 100.0, True)


def test_space_follows_the_algo_the_file_and_the_flags(tmp_path):
    base = from_preset("default")
    model_free = tune.space_for(with_overrides(base, {"algo": "model-free"}), set(), None)
    assert {"sac_lr", "sac_ratio", "prefill"} <= set(model_free) and not {"wm_lr", "horizon"} & set(model_free)
    dreamer = tune.space_for(with_overrides(base, {"algo": "dreamer"}), set(), None)
    assert {"wm_lr", "horizon", "train_ratio", "prefill"} <= set(dreamer) and "sac_lr" not in dreamer
    assert "sac_lr" not in tune.space_for(base, {"sac_lr"}, None)  # a flag fixes it
    file = write_space(tmp_path, {"sac_lr": {"low": 1e-4, "high": 1e-3, "log": True}, "prefill": None,
                                  "sac_tau": {"low": 0.001, "high": 0.05}})
    narrowed = tune.space_for(base, set(), file)
    assert narrowed["sac_lr"]["high"] == 1e-3 and "sac_tau" in narrowed and "prefill" not in narrowed
    assert "prefill" not in tune.space_for(with_overrides(base, {"steps": 150}), set(), None)  # no room to learn


@pytest.mark.parametrize("space, message", [
    ({"sac_lrr": {"low": 1, "high": 2}}, "unknown config field 'sac_lrr'"),
    ({"steps": {"low": 1, "high": 2}}, "steps cannot be searched"),
    ({"sac_lr": [1e-4, 1e-3]}, 'entry "sac_lr"'),
    ({"sac_lr": {"low": 1e-4}}, 'entry "sac_lr"'),
    ({"sac_lr": {"low": 1e-4, "high": 1e-3, "step": 2}}, 'entry "sac_lr"'),
    ({"sac_lr": {"choices": []}}, 'entry "sac_lr"'),
    ({"sac_lr": {"low": 1e-3, "high": 1e-4}}, "low must be below high"),
    ({"sac_lr": {"low": 0, "high": 1e-3, "log": True}}, "above 0 (log)"),
    ({"sac_batch": {"low": 16.5, "high": 64}}, "takes integers"),
    ({"sac_actor_share": {"low": 0, "high": 0.5}}, "sac_actor_share must be in (0, 1]"),
    ({"imag_noise": {"low": 0, "high": 1}}, 'entry "imag_noise"'),
    ([1, 2], "must hold a JSON object"),
])
def test_malformed_search_spaces_are_refused(tmp_path, space, message):
    with pytest.raises(ConfigError, match=None) as error:
        tune.space_for(from_preset("default"), set(), write_space(tmp_path, space))
    assert message in str(error.value)


@pytest.mark.bench  # a study of several trials: CI's second step
def test_two_workers_share_one_journal_and_the_best_config_trains_alike(tmp_path):
    result = tune_cli(tmp_path, "--study", "s", "--trials", "3", "--workers", "2")
    assert result.exit_code == 0, result.output
    study = tmp_path / "runs" / "s"
    assert [p.name for p in study.glob("*.journal")] == [tune.JOURNAL_FILE]
    trials = trials_of(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # a run folder of its own, trained with the trial's settings, its curves drawn
        config = json.loads((study / f"trial-{t.number}" / runs.CONFIG_FILE).read_text())
        assert {k: flatten(config)[k] for k in t.params} == t.params
        assert (study / f"trial-{t.number}" / runs.CURVES_FILE).is_file()
    assert len({t.params["sac_lr"] for t in trials}) == 3
    assert (study / tune.HISTORY_PLOT).is_file()
    best = max(trials, key=lambda t: t.value)
    assert json.loads((study / tune.BEST_FILE).read_text()) == \
        json.loads((study / f"trial-{best.number}" / runs.CONFIG_FILE).read_text())
    again = runner.invoke(app, ["train", "--config", str(study / tune.BEST_FILE), "--runs-dir", str(tmp_path),
                                "--name", "best"])
    assert again.exit_code == 0, again.output
    assert eval_rows(tmp_path / "best") == eval_rows(study / f"trial-{best.number}")


def test_a_trial_below_the_prune_floor_stops_at_its_first_evaluation_after_the_warmup(tmp_path):
    # Scores are capped at 1, so a floor of 2 prunes every trial once the warm-up (50 env steps) is over.
    result = tune_cli(tmp_path, "--study", "p", "--trials", "1", "--prune-below", "2", "--prune-warmup", "50")
    assert result.exit_code == 0, result.output
    [trial] = trials_of(tmp_path / "runs" / "p")
    assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [25, 50]
    run = tmp_path / "runs" / "p" / "trial-0"
    assert max(r["step"] for r in runs.read_metrics(run)) == 50  # of 100
    assert not (run / runs.SUMMARY_FILE).exists() and (run / runs.CHECKPOINT_FILE).is_file()
    assert "pruned" in result.output and not (tmp_path / "runs" / "p" / tune.BEST_FILE).exists()


@pytest.mark.bench  # a study of several trials: CI's second step
def test_a_study_resumes_to_its_total_with_the_same_settings_only(tmp_path):
    assert tune_cli(tmp_path, "--study", "r", "--trials", "2").exit_code == 0
    study = tmp_path / "runs" / "r"
    first = (study / "trial-0" / runs.METRICS_FILE).read_bytes()
    result = tune_cli(tmp_path, "--study", "r", "--trials", "3")
    assert result.exit_code == 0, result.output
    assert [t.state.name for t in trials_of(study)] == ["COMPLETE"] * 3
    assert (study / "trial-0" / runs.METRICS_FILE).read_bytes() == first
    result = tune_cli(tmp_path, "--study", "r", "--trials", "3")
    assert result.exit_code == 0 and "3 trials already" in result.output and len(trials_of(study)) == 3
    other = tune_cli(tmp_path, "--study", "r", "--trials", "4", "--sac-tau", "0.01")
    assert other.exit_code == 2 and "other fixed settings" in other.output


@pytest.mark.bench  # a study of several trials: CI's second step
def test_ctrl_c_abandons_the_running_trial_and_the_same_command_runs_it_again(tmp_path):
    # A longer trial (600 env steps) to be interrupted in; one searched field.
    args = ["tune", *TINY, "--steps", "600", "--eval-every", "300", "--sac-ratio", "1", "--study", "c",
            "--trials", "1", "--runs-dir", str(tmp_path / "runs"),
            "--space", str(write_space(tmp_path, {**SMALL, "sac_ratio": None}))]
    proc = subprocess.Popen([sys.executable, "-m", "dreamercli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / "c" / "trial-0"
    end = time.monotonic() + 120
    while not (run / runs.METRICS_FILE).is_file() or not runs.read_json(run / runs.CONFIG_FILE) \
            or not (run / runs.METRICS_FILE).read_bytes():  # training has logged its first row
        assert proc.poll() is None and time.monotonic() < end, proc.stderr and proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    assert json.loads((run / runs.SUMMARY_FILE).read_text())["interrupted"] == "SIGINT"
    [abandoned, queued] = trials_of(tmp_path / "runs" / "c")
    assert abandoned.state.name == "FAIL" and "error" not in abandoned.user_attrs and queued.state.name == "WAITING"
    result = runner.invoke(app, args)  # the same command: runs the abandoned settings again, as trial 1
    assert result.exit_code == 0, result.output
    trials = trials_of(tmp_path / "runs" / "c")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params and trials[1].user_attrs["retry_of"] == 0


@pytest.mark.parametrize("extra, space, message", [
    (["--trials", "0"], SMALL, "--trials must be >= 1, got 0"),
    ([], {"sac_lrr": {"low": 1e-4, "high": 1e-3}}, "unknown config field 'sac_lrr' in the search space file"),
    ([], {"sac_lr": {"low": 1e-4}}, 'search space entry "sac_lr"'),
    (["--storage", "nosuchdb://nowhere"], SMALL, "--storage nosuchdb://nowhere: cannot open it"),
    (["--workers", "2", "--ray"], SMALL, "either --workers or --ray"),
    (["--sac-lr", "0.001"], SMALL, "--sac-lr fixes sac_lr, which"),
])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, monkeypatch, capsys, extra, space, message):
    monkeypatch.setattr(sys, "argv", ["dreamer", "tune", *TINY, "--runs-dir", str(tmp_path / "runs"),
                                      "--space", str(write_space(tmp_path, space)), *extra])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.startswith("dreamer: error: ") and err.count("\n") == 1, err
    assert message in err and not out
    assert not (tmp_path / "runs").exists()


@pytest.mark.bench
def test_ray_tasks_run_trials_whose_folders_come_back(tmp_path):
    pytest.importorskip("ray")
    result = tune_cli(tmp_path, "--study", "ray", "--trials", "2", "--ray", "local")
    assert result.exit_code == 0, result.output
    study = tmp_path / "runs" / "ray"
    assert [t.state.name for t in trials_of(study)] == ["COMPLETE"] * 2
    assert all((study / f"trial-{n}" / runs.CURVES_FILE).is_file() for n in (0, 1))
