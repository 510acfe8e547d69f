"""A task of the suite's own, used as `suite_envs:BeaconReach` (the module:Class path of `--env`).

No registered Gymnasium task has this mix, so the suite builds it: a point mass with inertia in
a walled square, seen only through 20 numbers (position, velocity and its distances to 16
beacons on a grid, a redundant and correlated view of a 4-number state, as sensors give), and a
sparse reward: 1 for each step within REACH of a fixed goal, 0 elsewhere. Random actions
stumble onto the goal now and then (the start is random over the square), so exploration
finds it; holding it takes control of the momentum. Episodes last HORIZON steps.

Threshold 120: a proportional-derivative controller on the observed position and velocity
(`expert_action`) scores 178-200, mean 186 over 50 starts, and 120 means arriving within about
80 steps on average and staying; uniformly random actions score 2.9 on average (0-22).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

HORIZON = 200  # steps per episode
REACH = 0.15  # distance to the goal that earns reward
GOAL = np.array([0.6, -0.5], dtype=np.float64)
BEACONS = np.stack(np.meshgrid(np.linspace(-0.9, 0.9, 4), np.linspace(-0.9, 0.9, 4)), -1).reshape(-1, 2)
FORCE, DRAG = 0.02, 0.85  # velocity gain per unit action, and velocity kept per step


class BeaconReach(gym.Env):
    """Point mass to a goal, 20-dimensional beacon observations, sparse reward, 2-D force action."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4 + len(BEACONS),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode
        self.pos = np.zeros(2)
        self.vel = np.zeros(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        distances = np.linalg.norm(BEACONS - self.pos, axis=1)
        return np.concatenate([self.pos, self.vel * 10.0, distances]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A random start anywhere in the square, at rest."""
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.9, 0.9, size=2)
        self.vel = np.zeros(2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        """Push, move, stop at the walls; reward 1 within REACH of the goal."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.vel = DRAG * self.vel + FORCE * a
        self.pos = self.pos + self.vel
        hit = np.abs(self.pos) > 1.0
        self.pos = np.clip(self.pos, -1.0, 1.0)
        self.vel[hit] = 0.0
        self.t += 1
        reward = float(np.linalg.norm(self.pos - GOAL) < REACH)
        return self._obs(), reward, False, self.t >= HORIZON, {}

    def render(self) -> np.ndarray | None:
        """A 64 x 64 picture: goal in green, the mass in white."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((64, 64, 3), dtype=np.uint8)

        def pixel(p: np.ndarray) -> tuple[int, int]:
            col, row = ((p + 1.0) / 2.0 * 63).round().astype(int)
            return 63 - row, col

        r, c = pixel(GOAL)
        frame[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4] = (40, 160, 40)
        r, c = pixel(self.pos)
        frame[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = 255
        return frame


def expert_action(obs: np.ndarray) -> np.ndarray:
    """A proportional-derivative push toward the goal: the reference for the threshold."""
    pos, vel = obs[:2].astype(np.float64), obs[2:4].astype(np.float64) / 10.0
    return np.clip(4.0 * (GOAL - pos) - 25.0 * vel, -1.0, 1.0).astype(np.float32)
