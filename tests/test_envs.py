import gymnasium as gym
import numpy as np
import pytest

from dreamercli.envs import (
    EnvError,
    check_observation,
    checked_reward,
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
    ("custom_env:ImageObs", "smaller than the 16x16"),
    ("Blackjack-v1", "observation space"),
])
def test_unsupported_envs_get_clear_errors(env_id, match):
    with pytest.raises(EnvError, match=match):
        make_env(env_id)


def test_constructor_and_import_failures_are_env_errors(tmp_path, monkeypatch):
    with pytest.raises(EnvError, match=r"^cannot make environment 'custom_env:BrokenInit': "
                                       r"RuntimeError: simulator licence not found$"):
        make_env("custom_env:BrokenInit")
    (tmp_path / "env_that_fails_on_import.py").write_text('raise RuntimeError("no simulator here")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EnvError, match=r"cannot import module 'env_that_fails_on_import'.*"
                                       r"RuntimeError: no simulator here"):
        make_env("env_that_fails_on_import:Env")
    with pytest.raises(EnvError, match=r"made a dict, not a gymnasium\.Env"):
        make_env("builtins:dict")


def episode_length(env: gym.Env, limit: int) -> int:
    """Steps until the episode ends, or limit + 1 if it has not ended by then."""
    env.reset(seed=0)
    for t in range(1, limit + 1):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            return t
    return limit + 1


def test_an_env_without_a_step_limit_gets_one():
    assert episode_length(make_env("custom_env:NeverEnds", seed=0, max_episode_steps=5), 50) == 5
    assert episode_length(make_env("custom_env:NeverEnds", seed=0), 2000) == 1000  # the default
    assert episode_length(make_env("custom_env:Reach", seed=0, max_episode_steps=50), 100) == 20  # its own
    # A registered id keeps its registered limit; one registered without a limit gets ours.
    assert make_env("CartPole-v1", max_episode_steps=5).spec.max_episode_steps == 500
    gym.register("dreamer-test/NeverEnds-v0", entry_point="custom_env:NeverEnds")
    try:
        assert gym.spec("dreamer-test/NeverEnds-v0").max_episode_steps is None
        env = make_env("dreamer-test/NeverEnds-v0", seed=0, max_episode_steps=7)
        assert episode_length(env, 50) == 7
    finally:
        del gym.registry["dreamer-test/NeverEnds-v0"]


def test_thresholds():
    assert threshold_of("CartPole-v1") == 475.0
    assert threshold_of("Pendulum-v1") == -200.0
    assert threshold_of("CartPole-v1", 100) == 100.0
    assert threshold_of("custom_env:Reach") is None


def test_observations_and_rewards_that_cannot_be_learned_from_are_named():
    spec = spec_of(make_env("CartPole-v1"))
    check_observation("E", np.zeros(4, np.float64), spec, "at env step 3")  # any float dtype of the right shape
    assert checked_reward("E", np.float32(1.5), "at env step 3") == 1.5
    cases = [
        (lambda: check_observation("E", np.array([0, np.nan, 0, 0]), spec, "at env step 3"),
         "environment 'E' returned a non-finite observation at env step 3: [ 0. nan 0. 0.]"),
        (lambda: check_observation("E", np.zeros((2, 2)), spec, "at env step 3"),
         "environment 'E' returned an observation of shape (2, 2) at env step 3; its observation space says (4,)"),
        (lambda: check_observation("E", {"x": 1}, spec, "at the first reset"),
         "environment 'E' returned an observation that is not numbers at the first reset: {'x': 1}"),
        (lambda: check_observation("E", np.full(4000, np.inf)[:4], spec, "at env step 9"),
         "environment 'E' returned a non-finite observation at env step 9: [inf inf inf inf]"),
        (lambda: checked_reward("E", float("-inf"), "at env step 3"),
         "environment 'E' returned a non-finite reward at env step 3: -inf"),
        (lambda: checked_reward("E", None, "at env step 3"),
         "environment 'E' returned a reward that is not a number at env step 3: None"),
    ]
    for call, message in cases:
        with pytest.raises(EnvError) as err:
            call()
        assert str(err.value) == message
    with pytest.raises(EnvError) as err:  # a long value is cut, on one line
        check_observation("E", np.full(400, np.nan), spec, "at env step 1")
    assert "\n" not in str(err.value) and len(str(err.value)) < 200
