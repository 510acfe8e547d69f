import json

import pytest

from dreamercli.config import (
    Config,
    ConfigError,
    field_names,
    from_dict,
    from_preset,
    load_json,
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


def test_field_names_are_unique_across_sections():
    names = field_names()
    assert names["latent_dim"] == "world_model"
    assert names["horizon"] == "actor_critic"
    assert names["steps"] == "train"
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
