"""benchmarks/pixel_race.py: PPO's frames as the zoo's Atari wrappers make them, and a smoke race (`-m bench`)."""

import json

import numpy as np
import pytest
from conftest import load_benchmark

pytest.importorskip("stable_baselines3")  # the bench extra; the rest of the suite runs without it

race = load_benchmark("pixel_race")


def test_ppo_sees_grayscale_84x84_frames_stacked_four_alike_in_training_and_evaluation():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    train = VecFrameStack(make_vec_env(race.gray_env, n_envs=1, seed=3, env_kwargs={"env_id": "CartPole-v1"}),
                          race.FRAME_STACK, channels_order="last")
    single = race.StackedFrames(race.gray_env("CartPole-v1"))
    stacked = train.reset()[0]
    alone = single.reset(seed=3)[0]
    assert stacked.shape == alone.shape == (84, 84, 4) and alone.dtype == np.uint8
    assert np.array_equal(stacked, alone)  # the same reset (seed 3) and the same stack
    assert not alone[..., :3].any() and alone[..., 3].any()  # zeros before the first frame, as VecFrameStack's
    for _ in range(5):
        stacked = train.step(np.array([1]))[0][0]
        alone = single.step(1)[0]
        assert np.array_equal(stacked, alone)
    assert not np.array_equal(alone[..., 0], alone[..., 3])  # the pole moved: the stack holds motion
    train.close()
    single.close()


@pytest.mark.bench
def test_smoke_pixel_race_writes_every_run_table_and_figure(tmp_path):
    assert race.main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "pixel_race.json").read_text())
    keys = sorted((r["env"], r["method"]) for r in data["records"])
    assert keys == sorted((env, m) for env in race.THRESHOLDS for m in race.METHODS)
    for r in data["records"]:
        assert r["error"] is None, (r["env"], r["method"], r["error"])
        assert r["curve"] and r["curve"][-1][0] >= r["budget"] and r["peak_rss_mb"] > 0
        assert ("--pixels" in r["command"]) == (r["method"] == "dreamer-pixels")
    text = (tmp_path / "pixel_race.md").read_text()
    assert all(f"| {m} |" in text for m in race.METHODS)
    assert (tmp_path / "pixel_race.png").stat().st_size > 10_000
