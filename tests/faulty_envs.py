"""Envs that misbehave on purpose, for the NaN guards and the error paths of training."""

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class CountingCartPole(CartPoleEnv):
    """CartPole that counts its steps over its whole life (resets do not restart the count)."""

    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return super().step(action)


class NanReward(CountingCartPole):
    """CartPole whose 150th step pays a NaN reward."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, float("nan") if self.steps == 150 else reward, terminated, truncated, info


class NanObsAfter(CountingCartPole):
    """CartPole whose sensors fail for good after 120 steps: every observation is NaN."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return (np.full_like(obs, np.nan) if self.steps > 120 else obs), reward, terminated, truncated, info


class NanSoon(CountingCartPole):
    """CartPole whose 3rd step pays a NaN reward and whose 5th on sees NaN: short enough for any policy."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return (np.full_like(obs, np.nan) if self.steps >= 5 else obs), float("nan") if self.steps == 3 else reward, \
            terminated, truncated, info


class RaisesOnStep(CountingCartPole):
    """CartPole whose simulator crashes at its 50th step."""

    def step(self, action):
        if self.steps + 1 == 50:
            raise RuntimeError("simulator crashed")
        return super().step(action)


class RandomObs(gym.Env):
    """A world no model can predict: every observation is fresh noise, and the reward depends
    only on the action taken (action 1 pays 1, action 0 pays 0). 50-step episodes."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        return self.np_random.uniform(-1.0, 1.0, 4).astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action == 1), False, self.t >= 50, {}
