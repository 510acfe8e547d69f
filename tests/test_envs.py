import numpy as np
import pytest

from dreamercli.envs import (
    EnvError,
    encode_action,
    make_env,
    random_action,
    spec_of,
    threshold_of,
    to_env_action,
)


def test_discrete_and_box_specs():
    cart = spec_of(make_env("CartPole-v1"))
    assert (cart.obs_dim, cart.action_dim, cart.discrete) == (4, 2, True)
    pend = spec_of(make_env("Pendulum-v1"))
    assert (pend.obs_dim, pend.action_dim, pend.discrete) == (3, 1, False)
    assert pend.action_low == (-2.0,) and pend.action_high == (2.0,)


def test_box_actions_are_scaled_from_unit_range():
    spec = spec_of(make_env("Pendulum-v1"))
    assert to_env_action(spec, np.array([-1.0]))[0] == pytest.approx(-2.0)
    assert to_env_action(spec, np.array([0.0]))[0] == pytest.approx(0.0)
    assert to_env_action(spec, np.array([0.5]))[0] == pytest.approx(1.0)
    assert to_env_action(spec, np.array([3.0]))[0] == pytest.approx(2.0)  # clipped


def test_discrete_actions_are_one_hot_for_the_model():
    spec = spec_of(make_env("CartPole-v1"))
    assert encode_action(spec, np.asarray(1)).tolist() == [0.0, 1.0]
    assert to_env_action(spec, np.asarray(1)) == 1
    draws = {int(random_action(spec, np.random.default_rng(s))) for s in range(20)}
    assert draws == {0, 1}


def test_module_class_env():
    env = make_env("custom_env:Reach", seed=0)
    spec = spec_of(env)
    assert (spec.obs_dim, spec.action_dim, spec.discrete) == (1, 1, False)
    assert spec.action_high == (2.0,)


@pytest.mark.parametrize("env_id,match", [
    ("NoSuchEnv-v0", "unknown environment"),
    ("no_such_module_xyz:Env", "cannot import"),
    ("custom_env:Missing", "no class"),
    ("custom_env:ImageObs", "flat Box observations"),
    ("Blackjack-v1", "observation space"),
])
def test_unsupported_envs_get_clear_errors(env_id, match):
    with pytest.raises(EnvError, match=match):
        make_env(env_id)


def test_thresholds():
    assert threshold_of("CartPole-v1") == 475.0
    assert threshold_of("Pendulum-v1") == -200.0
    assert threshold_of("CartPole-v1", 100) == 100.0
    assert threshold_of("custom_env:Reach") is None
