import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from dreamercli import config as config_module
from dreamercli.config import (
    SETTINGS,
    Config,
    ConfigError,
    build,
    declarations,
    field_names,
    from_dict,
    from_preset,
    load_json,
    setting,
    settings_table,
    to_dict,
    validate,
    with_overrides,
)


def test_round_trip_through_json_is_exact():
    config = with_overrides(from_preset("tiny"), {"env": "Pendulum-v1", "horizon": 7, "wm_lr": 1e-3})
    again = from_dict(json.loads(json.dumps(to_dict(config))))
    assert again == config


def test_presets_are_overlays_of_the_default():
    default, tiny = from_preset("default"), from_preset("tiny")
    assert default == Config()
    assert tiny.world_model.hidden_dim < default.world_model.hidden_dim
    assert tiny.actor_critic.discount == default.actor_critic.discount  # untouched fields stay
    assert tiny.preset == "tiny"


def test_field_names_map_to_their_sections():
    names = field_names()
    assert names["latent_dim"] == "world_model"
    assert names["horizon"] == "actor_critic"
    assert names["steps"] == "train"
    assert names["sac_tau"] == "learner"
    assert names["env"] == ""


def test_overrides_reject_unknown_fields():
    with pytest.raises(ConfigError, match="bogus"):
        with_overrides(Config(), {"bogus": 1})


def test_integral_floats_from_json_become_ints():
    config = from_dict({"steps": 1000.0})
    assert config.train.steps == 1000 and isinstance(config.train.steps, int)
    with pytest.raises(ConfigError, match="steps"):
        from_dict({"steps": 10.5})


@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("steps", -5), ("horizon", 0), ("discount", 1.5), ("seq_len", 1),
    ("latent_dim", "big"), ("device", "tpu"), ("prefill", -1), ("imag_noise", "bogus"),
    ("consistency", -1.0),
])
def test_validation_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        validate(with_overrides(Config(), {field: value}))


@pytest.mark.parametrize("field,value", [
    ("wm_lr", float("nan")), ("actor_lr", float("inf")), ("train_ratio", float("nan")),
    ("threshold", float("nan")), ("threshold", float("-inf")), ("steps", float("inf")),
])
def test_numbers_must_be_finite(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be a finite number, got {value}$"):
        validate(with_overrides(Config(), {field: value}))


@pytest.mark.parametrize("data,message", [
    ({"steps": True}, "steps must be an integer, got true"),
    ({"wm_lr": False}, "wm_lr must be a number, got false"),
    ({"threshold": True}, "threshold must be a number, got true"),
    ({"threshold": "high"}, "threshold must be a number, got 'high'"),
    ({"env": 5}, "env must be a string, got 5"),
    ({"env": None}, "env must be a string, got null"),
    ({"algo": ["dreamer"]}, "algo must be a string, got ['dreamer']"),
    ({"algo": "ppo"}, "unknown algo 'ppo' (choose from dreamer, model-free, mbpo, hybrid, belief)"),
    ({"preset": 5}, "preset must be a string, got 5"),
    ({"preset": {}}, "preset must be a string, got {}"),
    ({"device": 1}, "device must be a string, got 1"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"max_episode_steps": 0}, "max_episode_steps must be > 0, got 0"),
])
def test_json_values_of_the_wrong_kind_are_refused(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(json.loads(json.dumps(data)))
    assert str(err.value) == message


def test_threshold_may_be_none_or_a_number_and_max_episode_steps_round_trips():
    assert from_dict({"threshold": None}).train.threshold is None
    assert from_dict({"threshold": 100}).train.threshold == 100
    config = from_dict({"max_episode_steps": 50.0})
    assert config.train.max_episode_steps == 50 and isinstance(config.train.max_episode_steps, int)
    assert from_dict(json.loads(json.dumps(to_dict(config)))) == config
    assert Config().train.max_episode_steps == 1000


def test_load_json_refuses_folders_and_unreadable_paths(tmp_path):
    with pytest.raises(ConfigError, match=f"^config file {re.escape(str(tmp_path))} is a folder, not a JSON file$"):
        load_json(tmp_path)
    (tmp_path / "file").write_text("{}")
    with pytest.raises(ConfigError, match=r"^cannot read config file .*/file/config\.json: Not a directory$"):
        load_json(tmp_path / "file" / "config.json")


def test_load_json_errors_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="object"):
        load_json(bad)


def test_every_setting_is_declared_with_help_and_a_check_or_a_reason_for_none():
    unchecked = {name for name, s in SETTINGS.items() if not (s.check or s.choices)}
    # Any string names an env; a threshold may be any number or none; stop_at_return a number, its word or
    # none (its own check reads it); a bool is checked by its type alone.
    assert unchecked == {"env", "threshold", "stop_at_return", "tensorboard", "pixels"}
    for name, s in SETTINGS.items():
        assert s.help.endswith(".") and "[" not in s.help, name  # rich would read [...] as markup
    assert field_names() == {name: s.section for name, s in SETTINGS.items()}
    assert declarations(Config) == SETTINGS


def test_a_repeated_field_name_fails_at_import(tmp_path, monkeypatch):
    source = Path(config_module.__file__).read_text()
    anchor = "    latent_dim: int = setting("
    assert anchor in source
    path = tmp_path / "config_with_a_repeat.py"
    path.write_text(source.replace(anchor, '    horizon: int = setting(3, "A second horizon.", "> 0")\n' + anchor))
    spec = importlib.util.spec_from_file_location("config_with_a_repeat", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "config_with_a_repeat", module)
    with pytest.raises(ValueError, match="'horizon' of actor_critic repeats the one of world_model"):
        spec.loader.exec_module(module)


def test_a_check_that_does_not_parse_fails_at_declaration():
    with pytest.raises(ValueError, match="cannot read the check"):
        setting(1, "A count.", "between 0 and 2")


@pytest.mark.parametrize("field,value,message", [
    ("imag_noise", "loud", "unknown imag_noise 'loud' (choose from auto, mean, sample)"),
    ("device", "tpu", "unknown device 'tpu' (choose from auto, cpu, cuda)"),
    ("sac_dropout", 1.0, "sac_dropout must be in [0, 1), got 1.0"),
    ("noise_exponent", 2.5, "noise_exponent must be in [0, 2], got 2.5"),
    ("sac_critics", 1, "sac_critics must be >= 2, got 1"),
    ("sac_tau", 0.0, "sac_tau must be in (0, 1], got 0.0"),
])
def test_checks_come_from_the_declarations(field, value, message):
    with pytest.raises(ConfigError) as err:
        validate(with_overrides(Config(), {field: value}))
    assert str(err.value) == message


def test_build_layers_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "tiny", "horizon": 3, "discount": 0.9, "train": {"steps": 400},
                                "schema_version": 2, "label": "x"}))
    built = build({"discount": 0.95}, path)
    assert built.preset == "tiny" and built.world_model.latent_dim == 8  # the file's preset, under the file
    assert built.actor_critic.horizon == 3 and built.train.steps == 400  # the file over the preset
    assert built.actor_critic.discount == 0.95  # the flag over the file
    assert build({"preset": "default"}, path).world_model.latent_dim == 64  # a preset flag wins over the file's
    assert build({}) == Config()


def test_build_refuses_a_config_that_is_a_folder_or_mistyped(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a JSON file"):
        build({}, tmp_path)
    (tmp_path / "c.json").write_text('{"steps": true}')
    with pytest.raises(ConfigError, match=r"^steps must be an integer, got true$"):
        build({}, tmp_path / "c.json")


def test_settings_table_has_a_row_per_setting():
    lines = settings_table().splitlines()
    assert lines[0] == "| field | default | help | section |" and len(lines) == 2 + len(SETTINGS)
    assert "| `steps` | `10000; tiny: 300` | Env steps to train for. Must be > 0. | train |" in lines
    assert any(line.startswith("| `algo` | `belief` |") and "One of: dreamer, model-free, mbpo, hybrid, belief" in line
               for line in lines)


def test_the_readme_settings_table_is_the_declared_one():
    # The README's table is settings_table()'s output pasted between its markers: a setting added,
    # removed or reworded in config.py without the README following fails here.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert block == settings_table().rstrip("\n") + "\n"
