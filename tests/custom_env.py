"""A tiny custom environment for the module:Class path of make_env."""

import gymnasium as gym
import numpy as np


class Reach(gym.Env):
    """Move a point on a line toward zero; reward is minus the distance."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.x = 0.0
        self.t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-5, 5)), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.5 * float(action[0]), -10, 10))
        self.t += 1
        return np.array([self.x], np.float32), -abs(self.x), False, self.t >= 20, {}


class ImageObs(gym.Env):
    """An unsupported observation space (an image)."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)


class NeverEnds(gym.Env):
    """Episodes that never terminate nor truncate: only make_env's step limit ends them."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


class BrokenInit(gym.Env):
    """A constructor that fails the way third-party envs do (a missing licence, asset, server)."""

    def __init__(self, render_mode=None):
        raise RuntimeError("simulator licence not found")


class MovingDot(gym.Env):
    """An image observation (20x20 RGB uint8): a dot on a row that actions move left or right; reward near the
    middle."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(0, 255, (20, 20, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.x, self.t = 0, 0

    def _image(self):
        image = np.zeros((20, 20, 3), np.uint8)
        image[8:12, self.x:self.x + 3] = 255
        return image

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = int(self.np_random.integers(0, 18)), 0
        return self._image(), {}

    def step(self, action):
        self.x = int(np.clip(self.x + (1 if int(action) else -1), 0, 17))
        self.t += 1
        return self._image(), -abs(self.x - 8.5) / 8.5, False, self.t >= 30, {}
