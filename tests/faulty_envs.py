"""Envs that misbehave on purpose, for the NaN guards and the error paths of training."""

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class NanReward(CartPoleEnv):
    """CartPole whose 150th step (counted over the env's life) pays a NaN reward."""

    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        return obs, float("nan") if self.steps == 150 else reward, terminated, truncated, info


class NanObsAfter(CartPoleEnv):
    """CartPole whose sensors fail for good after 120 steps: every observation is NaN."""

    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        return (np.full_like(obs, np.nan) if self.steps > 120 else obs), reward, terminated, truncated, info


class RaisesOnStep(CartPoleEnv):
    """CartPole whose simulator crashes at its 50th step."""

    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == 50:
            raise RuntimeError("simulator crashed")
        return super().step(action)
