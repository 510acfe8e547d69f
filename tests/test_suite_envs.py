"""benchmarks/suite_envs.py: the partially observed, memory and reward-scaled tasks against their base tasks."""

import importlib.util
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # suite_envs as the module of module:Class, as the suite runs it
import suite_envs  # noqa: E402

from dreamercli import runs  # noqa: E402
from dreamercli.config import Config  # noqa: E402
from dreamercli.envs import make_env, step_limit  # noqa: E402
from dreamercli.evaluation import EVAL_SEED_OFFSET  # noqa: E402
from dreamercli.training import train  # noqa: E402

NOVEL = {"CartPoleNoVel": ("CartPole-v1", (1, 3)), "PendulumNoVel": ("Pendulum-v1", (2,)),
         "MountainCarContinuousNoVel": ("MountainCarContinuous-v0", (1,))}
SCALED = {"PendulumX100": ("Pendulum-v1", 100.0), "CartPoleX001": ("CartPole-v1", 0.01)}


def load_suite():
    """benchmarks/suite.py as a module (benchmarks is not a package)."""
    spec = importlib.util.spec_from_file_location("suite", BENCHMARKS / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def side_by_side(name: str, base_id: str, seed: int = 3, steps: int = 1500):
    """Step suite_envs:name and base_id with the same seed and actions, over episode ends too;
    yield (ours, base, (obs, reward, terminated, truncated) of each) after the reset and each step."""
    ours, base = make_env(f"suite_envs:{name}"), gym.make(base_id)
    actions = gym.make(base_id).action_space
    actions.seed(seed)
    episode = 0
    a, b = ours.reset(seed=seed)[0], base.reset(seed=seed)[0]
    yield ours, base, (a, 0.0, False, False), (b, 0.0, False, False)
    for _ in range(steps):
        action = actions.sample()
        a_step, b_step = ours.step(action), base.step(action)
        yield ours, base, a_step[:4], b_step[:4]
        if b_step[2] or b_step[3]:
            episode += 1
            a, b = ours.reset(seed=seed + episode)[0], base.reset(seed=seed + episode)[0]
            yield ours, base, (a, 0.0, False, False), (b, 0.0, False, False)


@pytest.mark.parametrize("name", list(NOVEL))
def test_novel_hides_exactly_the_named_indices_and_true_state_gives_them_back(name):
    base_id, hidden = NOVEL[name]
    cls = getattr(suite_envs, name)
    assert cls.hidden == hidden and len(cls.hidden_names) == len(hidden)
    env = make_env(f"suite_envs:{name}")
    assert step_limit(env) == gym.spec(base_id).max_episode_steps  # the base task's, not make_env's default
    assert env.spec.reward_threshold == gym.spec(base_id).reward_threshold
    full = gym.make(base_id).observation_space
    assert env.observation_space.shape == (full.shape[0] - len(hidden),)
    ends = 0
    for ours, _base, (obs, reward, term, trunc), (b_obs, b_reward, b_term, b_trunc) in side_by_side(name, base_id):
        np.testing.assert_array_equal(obs, np.delete(b_obs, hidden))
        np.testing.assert_array_equal(ours.get_wrapper_attr("true_state")(), b_obs)
        assert (reward, term, trunc) == (b_reward, b_term, b_trunc)
        assert ours.observation_space.contains(obs)
        ends += term or trunc
    assert ends >= 1  # across an episode's end and the next reset


@pytest.mark.parametrize("name", list(NOVEL))
def test_novel_renders_as_its_base_task(name):
    base_id, _ = NOVEL[name]
    ours = make_env(f"suite_envs:{name}", render_mode="rgb_array")
    base = gym.make(base_id, render_mode="rgb_array")
    ours.reset(seed=5)
    base.reset(seed=5)
    np.testing.assert_array_equal(ours.render(), base.render())


@pytest.mark.parametrize("name", list(SCALED))
def test_scaled_rewards_are_exactly_the_base_tasks_times_the_scale(name):
    base_id, scale = SCALED[name]
    env = make_env(f"suite_envs:{name}")
    assert step_limit(env) == gym.spec(base_id).max_episode_steps
    registered = gym.spec(base_id).reward_threshold
    assert env.spec.reward_threshold == (None if registered is None else registered * scale)
    ends = 0
    for _ours, _base, (obs, reward, term, trunc), (b_obs, b_reward, b_term, b_trunc) in side_by_side(name, base_id):
        np.testing.assert_array_equal(obs, b_obs)
        assert reward == scale * b_reward and (term, trunc) == (b_term, b_trunc)
        ends += term or trunc
    assert ends >= 1


def play(env: gym.Env, seed: int, policy) -> tuple[float, list[np.ndarray], list[float]]:
    """One episode: return, observations and rewards; policy(t, obs) gives the action."""
    obs, _ = env.reset(seed=seed)
    seen, rewards, done, t = [obs], [], False, 0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(t, obs))
        seen.append(obs)
        rewards.append(reward)
        done, t = terminated or truncated, t + 1
    return sum(rewards), seen, rewards


def cue_of(env: gym.Env, seed: int) -> float:
    return float(env.reset(seed=seed)[0][0])


def test_cue_recall_shows_the_cue_only_at_the_start_and_pays_the_right_answer_only():
    env = make_env("suite_envs:CueRecall")
    delay, respond = suite_envs.DELAY, suite_envs.RESPOND
    cues = {cue_of(env, seed): seed for seed in range(20)}
    assert set(cues) == {-1.0, 1.0}
    for cue, seed in cues.items():
        right = int(cue > 0)
        _, seen, rewards = play(env, seed, lambda t, obs, right=right: right)
        assert seen[0][0] == cue and all(obs[0] == 0.0 for obs in seen[1:])
        assert env.get_wrapper_attr("true_state")()[0] == cue  # still known to the env
        assert len(rewards) == delay + respond
        assert rewards == [0.0] * delay + [1.0] * respond  # the answer pays from DELAY on, every step
        assert [obs[1] for obs in seen[:-1]] == [0.0] * delay + [1.0] * respond  # go says when
        assert play(env, seed, lambda t, obs, right=right: 1 - right)[0] == 0.0  # the wrong answer pays nothing


def test_a_memoryless_policy_scores_chance_on_cue_recall_below_the_threshold():
    env = make_env("suite_envs:CueRecall")
    threshold = load_suite().POMDP_TASKS["suite_envs:CueRecall"]["threshold"]
    cues = {cue_of(env, seed): seed for seed in range(20)}
    rng = np.random.default_rng(0)
    # After the reset the observations are the same for either cue, so a memoryless policy's
    # answers are one sequence for both: its expected return is the mean over the two cues.
    for answers in ([0] * 20, [1] * 20, [0, 1] * 10, list(rng.integers(0, 2, 20))):
        returns = [play(env, seed, lambda t, obs, answers=answers: answers[t])[0] for seed in cues.values()]
        assert np.mean(returns) == suite_envs.RESPOND / 2 < threshold
    # At the suite's evaluation seeds the best such policy (answer the majority cue) stays below it.
    suite = load_suite()
    for seed in suite.SEEDS:
        signs = [cue_of(env, seed + EVAL_SEED_OFFSET + i) for i in range(suite.EVAL_EPISODES)]
        assert max(signs.count(1.0), signs.count(-1.0)) / len(signs) * suite_envs.RESPOND < threshold


@pytest.mark.parametrize("algo", dict.fromkeys([Config().algo, "dreamer"]))  # the default, and a world model
@pytest.mark.parametrize("name", [*NOVEL, "CueRecall", *SCALED])
def test_each_new_task_trains_with_the_tiny_preset(name, algo, tmp_path):
    config = tiny(f"suite_envs:{name}", algo=algo, steps=60, prefill=20, pretrain=5, eval_every=60, eval_episodes=1)
    _agent, summary = train(config, tmp_path / name)
    assert summary["updates"] > 0 and np.isfinite(summary["final_eval"])
    assert runs.read_json(tmp_path / name / "config.json")["env"] == f"suite_envs:{name}"
    assert (tmp_path / name / "weights.safetensors").is_file()
