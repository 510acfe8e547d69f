"""Environments: make one from an id or module:Class, read its spaces, encode actions."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

from .config import DEFAULT_MAX_EPISODE_STEPS, Config, ObservationConfig

MIN_FRAME = 16  # the smallest image the convolutional encoder reads (two stride-2 layers down to 4x4)

# Pendulum-v1 registers no reward_threshold; -200 is near what good control reaches.
FALLBACK_THRESHOLDS = {"Pendulum-v1": -200.0}


class EnvError(ValueError):
    """An environment that cannot be made or is not supported; the message is for the user."""


@dataclass(frozen=True)
class EnvSpec:
    """What the agent needs to know about an environment's spaces."""

    obs_dim: int
    action_dim: int  # number of actions (discrete) or action vector size (continuous)
    discrete: bool
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    obs_shape: tuple[int, ...] = ()  # (H, W, C) of an image observation (obs_dim = H * W * C); () for vectors

    @property
    def image(self) -> bool:
        """Whether observations are uint8 images (read by the convolutional encoder)."""
        return bool(self.obs_shape)

    @property
    def obs_dims(self) -> tuple[int, ...]:
        """The shape of one observation: (H, W, C) or (obs_dim,)."""
        return self.obs_shape or (self.obs_dim,)


def _resolve(env_id: str):
    """Return what gym.make accepts: a registered id, or an env class from module:Class."""
    if ":" in env_id and env_id.split(":", 1)[0] and env_id not in gym.registry:
        module_name, _, class_name = env_id.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # not only ImportError: the module's own code may fail on import
            raise EnvError(f"cannot import module '{module_name}' for env '{env_id}': "
                           f"{type(err).__name__}: {err}") from None
        cls = getattr(module, class_name, None)
        if cls is None:
            raise EnvError(f"module '{module_name}' has no class '{class_name}'")
        return cls
    if env_id not in gym.registry:
        raise EnvError(
            f"unknown environment '{env_id}': use a registered Gymnasium id "
            "(e.g. CartPole-v1, Pendulum-v1) or module:Class"
        )
    return env_id


def step_limit(env: gym.Env) -> int | None:
    """The step limit of the first TimeLimit wrapper in env's chain of wrappers, or None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, TimeLimit):
            return env._max_episode_steps
        env = env.env
    return None


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None,
             max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
             observation: ObservationConfig | None = None) -> gym.Env:
    """Build the environment, check its spaces are supported, and seed its action space.

    An env without a step limit of its own (a module:Class env, or an id registered without
    max_episode_steps) is cut off after max_episode_steps, so that no episode runs forever.
    Image observations (the env's own, or its rgb_array frames with observation.pixels) are
    resized to observation.frame_size; pixels renders rgb_array whatever render_mode asks.
    """
    observation = observation or ObservationConfig()
    if observation.pixels:
        render_mode = "rgb_array"
    target = _resolve(env_id)
    kwargs = {"render_mode": render_mode} if render_mode else {}
    if render_mode == "rgb_array" and not os.environ.get("DISPLAY"):
        # pygame-based renderers need no window for rgb_array; headless SDL stays quiet.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        if isinstance(target, str):
            env = gym.make(target, **kwargs)
        else:
            env = target(**kwargs)
    except Exception as err:  # the env's own constructor: any failure is the env's, not ours
        raise EnvError(f"cannot make environment '{env_id}': {type(err).__name__}: {err}") from None
    if not isinstance(env, gym.Env):
        raise EnvError(f"'{env_id}' made a {type(env).__name__}, not a gymnasium.Env")
    if step_limit(env) is None:
        env = TimeLimit(env, max_episode_steps)
    if observation.pixels:
        env = Frames(env, observation.frame_size, env_id, from_render=True)
    elif _image_space(getattr(env, "observation_space", None)):
        env = Frames(env, observation.frame_size, env_id, from_render=False)
    spec_of(env)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_run_env(config: Config, seed: int | None = None) -> gym.Env:
    """make_env for a run's config: its env id, step limit and observation (vectors or frames)."""
    return make_env(config.env, seed=seed, max_episode_steps=config.train.max_episode_steps,
                    observation=config.observation)


def _image_space(space) -> bool:
    """Whether an observation space is a uint8 image: a Box of shape (H, W, 1 or 3)."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8 \
        and space.shape[-1] in (1, 3)


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, C) uint8 image as (size, size, C) uint8: bilinear with antialiasing (PIL), squashed to a square."""
    from PIL import Image

    frame = np.asarray(frame)
    if frame.shape[:2] == (size, size):
        return np.ascontiguousarray(frame, dtype=np.uint8)
    channels = frame.shape[-1]
    image = Image.fromarray(np.ascontiguousarray(frame[..., 0] if channels == 1 else frame, dtype=np.uint8))
    return np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8).reshape(size, size, channels)


class Frames(gym.ObservationWrapper):
    """Image observations resized to (size, size, C) uint8: the env's own image, or (from_render) its rgb_array
    frame after each reset and step."""

    def __init__(self, env: gym.Env, size: int, env_id: str, from_render: bool):
        super().__init__(env)
        self.size, self.env_id, self.from_render = size, env_id, from_render
        if from_render:
            modes = env.metadata.get("render_modes", [])
            if "rgb_array" not in modes or env.render_mode != "rgb_array":
                raise EnvError(f"--pixels needs frames, but environment '{env_id}' cannot render rgb_array "
                               f"(its render modes: {', '.join(modes) or 'none'})")
            channels = 3
        else:
            height, width, channels = env.observation_space.shape
            if min(height, width) < MIN_FRAME:
                raise EnvError(f"environment '{env_id}' observes {height}x{width} images, smaller than the "
                               f"{MIN_FRAME}x{MIN_FRAME} the convolutional encoder needs")
        self.observation_space = gym.spaces.Box(0, 255, (size, size, channels), np.uint8)

    def observation(self, observation) -> np.ndarray:
        """The resized image: of the observation, or of the frame rendered now."""
        if not self.from_render:
            return resize_frame(observation, self.size)
        try:
            frame = self.env.render()
        except Exception as err:
            raise EnvError(f"environment '{self.env_id}' could not render a frame: {render_failure(err)}") from None
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] in (3, 4)
                and min(frame.shape[:2]) >= MIN_FRAME):
            raise EnvError(f"environment '{self.env_id}' rendered {_short(frame)}, not an RGB frame of at least "
                           f"{MIN_FRAME}x{MIN_FRAME}")
        return resize_frame(frame[..., :3], self.size)


def render_failure(err: Exception) -> str:
    """One line saying why an env could not render (e.g. its render dependency is not installed)."""
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def spec_of(env: gym.Env) -> EnvSpec:
    """Read the dimensions; raise EnvError for anything but flat Box or uint8 image obs and Discrete/Box actions."""
    # getattr: an env class that never set its spaces gets the same message as a wrong space.
    obs, act = getattr(env, "observation_space", None), getattr(env, "action_space", None)
    image = _image_space(obs)
    if not (isinstance(obs, gym.spaces.Box) and (len(obs.shape) == 1 or image)):
        raise EnvError(
            f"unsupported observation space {obs}: dreamer supports flat Box observations (shape (n,)) and "
            "uint8 images (shape (H, W, 1 or 3))"
        )
    dims = {"obs_dim": int(np.prod(obs.shape)), "obs_shape": tuple(int(n) for n in obs.shape) if image else ()}
    if isinstance(act, gym.spaces.Discrete):
        return EnvSpec(**dims, action_dim=int(act.n), discrete=True)
    if isinstance(act, gym.spaces.Box) and len(act.shape) == 1:
        if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
            raise EnvError(f"unsupported action space {act}: Box actions need finite bounds")
        return EnvSpec(
            **dims,
            action_dim=int(act.shape[0]),
            discrete=False,
            action_low=tuple(float(x) for x in act.low),
            action_high=tuple(float(x) for x in act.high),
        )
    raise EnvError(
        f"unsupported action space {act}: dreamer supports Discrete or flat Box actions"
    )


def check_observation(env_id: str, obs, spec: EnvSpec, where: str) -> None:
    """EnvError naming the env, `where` and the value unless the observation is obs_dim finite numbers
    (the networks would turn a NaN into a diverged run far from its cause)."""
    try:
        array = np.asarray(obs, dtype=np.float32)
    except (TypeError, ValueError):
        raise EnvError(f"environment '{env_id}' returned an observation that is not numbers {where}: "
                       f"{_short(obs)}") from None
    if array.shape != spec.obs_dims:
        raise EnvError(f"environment '{env_id}' returned an observation of shape {array.shape} {where}; its "
                       f"observation space says {spec.obs_dims}")
    if not np.all(np.isfinite(array)):
        raise EnvError(f"environment '{env_id}' returned a non-finite observation {where}: {_short(obs)}")


def checked_reward(env_id: str, reward, where: str) -> float:
    """The env's reward as a float; EnvError naming the env, `where` and the value unless it is a finite number."""
    try:
        value = float(reward)
    except (TypeError, ValueError):
        raise EnvError(f"environment '{env_id}' returned a reward that is not a number {where}: "
                       f"{_short(reward)}") from None
    if not np.isfinite(value):
        raise EnvError(f"environment '{env_id}' returned a non-finite reward {where}: {value}")
    return value


def _short(value) -> str:
    """A value on one line, cut to 80 characters."""
    text = " ".join(np.array2string(value, threshold=8).split()) if isinstance(value, np.ndarray) \
        else " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def threshold_of(env_id: str, override: float | None = None) -> float | None:
    """The return that counts as solved: the override, the registered one, or a known fallback."""
    if override is not None:
        return float(override)
    if env_id in gym.registry:
        registered = gym.spec(env_id).reward_threshold
        if registered is not None:
            return float(registered)
    return FALLBACK_THRESHOLDS.get(env_id)


def to_env_action(spec: EnvSpec, action: np.ndarray):
    """Map the agent's action (an index, or a vector in [-1, 1]) to the env's action space."""
    if spec.discrete:
        return int(action)
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    clipped = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return (low + (clipped + 1.0) * 0.5 * (high - low)).astype(np.float32)


def random_action(spec: EnvSpec, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random agent-side action, drawn from our own seeded generator."""
    if spec.discrete:
        return np.asarray(rng.integers(spec.action_dim))
    return rng.uniform(-1.0, 1.0, size=spec.action_dim).astype(np.float32)


def encode_action(spec: EnvSpec, action: np.ndarray) -> np.ndarray:
    """The action as the model sees it: one-hot for discrete, the [-1, 1] vector otherwise."""
    if spec.discrete:
        onehot = np.zeros(spec.action_dim, dtype=np.float32)
        onehot[int(action)] = 1.0
        return onehot
    return np.asarray(action, dtype=np.float32)
