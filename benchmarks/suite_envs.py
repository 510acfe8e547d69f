"""The suite's tasks of its own, each used through the module:Class path of `--env` (suite_envs:Name).

BeaconReach: a point mass with inertia in a walled square, seen only through 20 numbers (position,
velocity and its distances to 16 beacons on a grid, a redundant and correlated view of a 4-number
state, as sensors give), and a sparse reward: 1 for each step within REACH of a fixed goal, 0
elsewhere. Random actions stumble onto the goal now and then (the start is random over the square),
so exploration finds it; holding it takes control of the momentum. Episodes last HORIZON steps.
Threshold 120: a proportional-derivative controller on the observed position and velocity
(`expert_action`) scores 178-200, mean 186 over 50 starts, and 120 means arriving within about
80 steps on average and staying; uniformly random actions score 2.9 on average (0-22).

Partially observed tasks: CartPoleNoVel, PendulumNoVel and MountainCarContinuousNoVel are
CartPole-v1, Pendulum-v1 and MountainCarContinuous-v0 with their velocities removed from the
observation (rl-baselines3-zoo's CartPoleNoVel-v1, PendulumNoVel-v1, MountainCarContinuousNoVel-v0
hide the same indices; the zoo sets them to 0, here they are left out). Step limit, reward,
termination, reward_threshold and rendering are the base task's. CueRecall (below) needs memory.

Their convention, for a tool that compares what a model believes with what the observation hid:
  hidden        class attribute, the indices of the full state the observation leaves out
  hidden_names  class attribute, a name for each, in the same order ("cart velocity", ...)
  true_state()  the full state now, hidden indices included: the observation is
                np.delete(true_state(), hidden)
Read them with env.get_wrapper_attr("true_state")() and so on, whatever wrappers make_env adds.

Reward-scaled tasks: PendulumX100 (Pendulum-v1's rewards times 100) and CartPoleX001 (CartPole-v1's
times 0.01); everything else, the reward_threshold included (scaled alike), is the base task's.
"""

from __future__ import annotations

import dataclasses

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


def _spec(env: gym.Env, base_id: str, scale: float = 1.0) -> gym.envs.registration.EnvSpec:
    """The base task's spec under this class's module:Class name, its reward_threshold times scale."""
    base = gym.spec(base_id)
    name = f"{__name__}:{type(env).__name__}"
    threshold = None if base.reward_threshold is None else base.reward_threshold * scale
    return dataclasses.replace(base, id=name, entry_point=name, reward_threshold=threshold, kwargs={})


class NoVel(gym.ObservationWrapper):
    """A registered task whose observation leaves out the indices in `hidden` (set by each subclass)."""

    base_id: str
    hidden: tuple[int, ...]
    hidden_names: tuple[str, ...]

    def __init__(self, render_mode: str | None = None):
        # gym.make: the base task's TimeLimit, order checks and renderer, inside this wrapper.
        super().__init__(gym.make(self.base_id, render_mode=render_mode))
        full = self.env.observation_space
        self.keep = np.array([i for i in range(full.shape[0]) if i not in self.hidden])
        self.observation_space = gym.spaces.Box(full.low[self.keep], full.high[self.keep], dtype=full.dtype)
        self._cached_spec = _spec(self, self.base_id)
        self._full: np.ndarray | None = None

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The base observation without the hidden indices (the full one kept for true_state)."""
        self._full = np.array(observation, copy=True)
        return observation[self.keep]

    def true_state(self) -> np.ndarray:
        """The base env's full observation now, the hidden indices included."""
        if self._full is None:
            raise RuntimeError(f"{type(self).__name__}.true_state() before the first reset")
        return self._full.copy()


class CartPoleNoVel(NoVel):
    """CartPole-v1 seeing cart position and pole angle only: 500 steps, threshold 475."""

    base_id, hidden, hidden_names = "CartPole-v1", (1, 3), ("cart velocity", "pole angular velocity")


class PendulumNoVel(NoVel):
    """Pendulum-v1 seeing cos and sin of the angle only: 200 steps."""

    base_id, hidden, hidden_names = "Pendulum-v1", (2,), ("angular velocity",)


class MountainCarContinuousNoVel(NoVel):
    """MountainCarContinuous-v0 seeing the position only: 999 steps, threshold 90."""

    base_id, hidden, hidden_names = "MountainCarContinuous-v0", (1,), ("velocity",)


DELAY, RESPOND = 10, 10  # CueRecall: steps before the answer counts, and steps that pay for it


class CueRecall(gym.Env):
    """A cue seen only at the start decides which action pays DELAY steps later; threshold 9.

    The observation is (cue, go, progress): cue is +1 or -1 (drawn per episode) at the reset and 0
    at every later step; go is 1 from step DELAY on, when the action counts; progress is
    t / (DELAY + RESPOND). Action 1 answers +1, action 0 answers -1. Each of the RESPOND steps from
    DELAY on pays 1 when the answer matches the cue and 0 when not; the episode ends (terminated)
    after DELAY + RESPOND steps. So a policy that remembers the cue scores RESPOND = 10 every
    episode; a memoryless policy's action cannot depend on the cue, so it matches with probability
    1/2 at each paying step: 5 expected, as uniformly random actions. Threshold 9 (90% answered
    right) holds for the suite's 10 evaluation episodes: the best memoryless policy answers their
    majority cue, and reaches a mean of 9 only where 9 or more of the 10 cues agree (2% of
    evaluation seeds; none of the suite's). With fewer episodes chance gets through (2 agree
    half the time).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    hidden, hidden_names = (0,), ("cue",)

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode
        self.cue = 1.0
        self.t = 0

    def true_state(self) -> np.ndarray:
        """The observation with the cue shown: (cue, go, progress)."""
        return np.array([self.cue, float(self.t >= DELAY), self.t / (DELAY + RESPOND)], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new cue, shown in this observation only."""
        super().reset(seed=seed)
        self.cue = float(self.np_random.choice([-1.0, 1.0]))
        self.t = 0
        return self.true_state(), {}

    def step(self, action):
        """Pay 1 for an answer that matches the cue at a step from DELAY on; hide the cue."""
        answer = 1.0 if int(np.asarray(action).reshape(())) == 1 else -1.0
        reward = float(self.t >= DELAY and answer == self.cue)
        self.t += 1
        obs = self.true_state()
        obs[0] = 0.0
        return obs, reward, self.t >= DELAY + RESPOND, False, {}

    def render(self) -> np.ndarray | None:
        """A 64 x 64 picture: the top half green (+1) or red (-1) while the cue shows, white while
        the answer counts; the bottom row fills with time."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((64, 64, 3), 30, dtype=np.uint8)
        if self.t == 0:
            frame[:32] = (40, 160, 40) if self.cue > 0 else (180, 40, 40)
        elif self.t >= DELAY:
            frame[:32] = 200
        frame[60:, : round(64 * self.t / (DELAY + RESPOND))] = 255
        return frame


class Scaled(gym.RewardWrapper):
    """A registered task whose rewards are `scale` times the base task's (set by each subclass)."""

    base_id: str
    scale: float

    def __init__(self, render_mode: str | None = None):
        super().__init__(gym.make(self.base_id, render_mode=render_mode))
        self._cached_spec = _spec(self, self.base_id, self.scale)

    def reward(self, reward: float) -> float:
        """The base reward times scale."""
        return float(self.scale * reward)


class PendulumX100(Scaled):
    """Pendulum-v1 with rewards 100 times larger: 200 steps, threshold -20000 in the suite."""

    base_id, scale = "Pendulum-v1", 100.0


class CartPoleX001(Scaled):
    """CartPole-v1 with rewards 100 times smaller: 500 steps, threshold 4.75."""

    base_id, scale = "CartPole-v1", 0.01
