"""The model-free side of the race: stable-baselines3 with rl-baselines3-zoo's tuned settings.

Hyperparameter values are transcribed from DLR-RM/rl-baselines3-zoo at commit
22e3ff2450fd92033f7f032915e1f64894a09584 (the four files below were last changed in
eec15dc22e1ec7167064aae0c1218eefccaf0ff4; the values are the same at both):

    ppo  CartPole-v1   hyperparams/ppo.yml
    dqn  CartPole-v1   hyperparams/dqn.yml
    sac  Pendulum-v1   hyperparams/sac.yml
    td3  Pendulum-v1   hyperparams/td3.yml

and, for the suite (benchmarks/suite.py), at the same commit 22e3ff24:

    dqn  Acrobot-v1                hyperparams/dqn.yml
    dqn  MountainCar-v0            hyperparams/dqn.yml
    sac  MountainCarContinuous-v0  hyperparams/sac.yml

and sb3-contrib's RecurrentPPO, for the suite's partially observed tasks, at the same commit 22e3ff24
(hyperparams/ppo_lstm.yml was last changed in eec15dc2; its task ids are the zoo's, ours are
suite_envs:CartPoleNoVel and so on):

    ppo_lstm  CartPoleNoVel-v1               hyperparams/ppo_lstm.yml
    ppo_lstm  PendulumNoVel-v1               hyperparams/ppo_lstm.yml
    ppo_lstm  MountainCarContinuousNoVel-v0  hyperparams/ppo_lstm.yml

The zoo has no tuned entry for the suite's other tasks (NOT_IN_ZOO says which and what is used):
a memoryless learner on a partially observed or reward-scaled task gets the zoo's settings for
the base task.

The zoo turns "lin_X" into a schedule X * progress_remaining (X down to 0 over
n_timesteps), writes policy_kwargs as a "dict(...)" string (activations as nn.ReLU), builds
NormalActionNoise from noise_type/noise_std and gives VecNormalize the algorithm's gamma;
`build` does the same with code of its own. Only the worker process imports this module (it
needs torch and SB3, and sb3-contrib for ppo_lstm; the race's parent process does not).
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

ZOO_COMMIT = "22e3ff2450fd92033f7f032915e1f64894a09584"
HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole-v1"): {
        "n_envs": 8, "n_timesteps": 100_000, "policy": "MlpPolicy", "n_steps": 32, "batch_size": 256,
        "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0,
        "learning_rate": "lin_0.001", "clip_range": "lin_0.2",
    },
    ("dqn", "CartPole-v1"): {
        "n_timesteps": 50_000, "policy": "MlpPolicy", "learning_rate": 2.3e-3, "batch_size": 64,
        "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10,
        "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04, "policy_kwargs": "dict(net_arch=[256, 256])",
    },
    ("sac", "Pendulum-v1"): {"n_timesteps": 20_000, "policy": "MlpPolicy", "learning_rate": 1e-3},
    ("td3", "Pendulum-v1"): {
        "n_timesteps": 20_000, "policy": "MlpPolicy", "gamma": 0.98, "buffer_size": 200_000,
        "learning_starts": 10_000, "noise_type": "normal", "noise_std": 0.1, "gradient_steps": 1,
        "train_freq": 1, "learning_rate": 1e-3, "policy_kwargs": "dict(net_arch=[400, 300])",
    },
    ("dqn", "Acrobot-v1"): {
        "n_timesteps": 100_000, "policy": "MlpPolicy", "learning_rate": 6.3e-4, "batch_size": 128,
        "buffer_size": 50_000, "learning_starts": 0, "gamma": 0.99, "target_update_interval": 250,
        "train_freq": 4, "gradient_steps": -1, "exploration_fraction": 0.12, "exploration_final_eps": 0.1,
        "policy_kwargs": "dict(net_arch=[256, 256])",
    },
    ("dqn", "MountainCar-v0"): {
        "n_timesteps": 120_000, "policy": "MlpPolicy", "learning_rate": 4e-3, "batch_size": 128,
        "buffer_size": 10_000, "learning_starts": 1000, "gamma": 0.98, "target_update_interval": 600,
        "train_freq": 16, "gradient_steps": 8, "exploration_fraction": 0.2, "exploration_final_eps": 0.07,
        "policy_kwargs": "dict(net_arch=[256, 256])",
    },
    ("sac", "MountainCarContinuous-v0"): {
        "n_timesteps": 50_000, "policy": "MlpPolicy", "learning_rate": 3e-4, "buffer_size": 50_000,
        "batch_size": 512, "ent_coef": 0.1, "train_freq": 32, "gradient_steps": 32, "gamma": 0.9999,
        "tau": 0.01, "learning_starts": 0, "use_sde": True,
        "policy_kwargs": "dict(log_std_init=-3.67, net_arch=[64, 64])",
    },
    # Not in the zoo (NOT_IN_ZOO): stable-baselines3's SAC defaults.
    ("sac", "InvertedPendulum-v5"): {"n_timesteps": 20_000, "policy": "MlpPolicy"},
    ("sac", "InvertedDoublePendulum-v5"): {"n_timesteps": 50_000, "policy": "MlpPolicy"},
    ("sac", "suite_envs:BeaconReach"): {"n_timesteps": 20_000, "policy": "MlpPolicy"},
    # sb3-contrib's RecurrentPPO (MlpLstmPolicy), from hyperparams/ppo_lstm.yml.
    ("ppo_lstm", "suite_envs:CartPoleNoVel"): {
        "normalize": True, "n_envs": 8, "n_timesteps": 100_000, "policy": "MlpLstmPolicy", "n_steps": 32,
        "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0,
        "learning_rate": "lin_0.001", "clip_range": "lin_0.2",
        "policy_kwargs": "dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, "
                         "enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]))",
    },
    ("ppo_lstm", "suite_envs:PendulumNoVel"): {
        "normalize": True, "n_envs": 4, "n_timesteps": 100_000, "policy": "MlpLstmPolicy", "n_steps": 1024,
        "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 1e-3,
        "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4,
        "policy_kwargs": "dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, "
                         "enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]))",
    },
    ("ppo_lstm", "suite_envs:MountainCarContinuousNoVel"): {
        "normalize": True, "n_envs": 8, "n_timesteps": 300_000, "policy": "MlpLstmPolicy", "batch_size": 256,
        "n_steps": 1024, "gamma": 0.9999, "learning_rate": 7.77e-5, "ent_coef": 0.00429, "clip_range": 0.1,
        "n_epochs": 10, "gae_lambda": 0.9, "max_grad_norm": 5, "vf_coef": 0.19, "use_sde": True,
        "sde_sample_freq": 8,
        "policy_kwargs": "dict(log_std_init=0.0, ortho_init=False, lstm_hidden_size=32, enable_critic_lstm=True, "
                         "net_arch=dict(pi=[64], vf=[64]))",
    },
}
# Not in the zoo: the base task's settings (the same dict) on a task derived from it.
SAME_AS = {
    ("dqn", "suite_envs:CartPoleNoVel"): ("dqn", "CartPole-v1"),
    ("sac", "suite_envs:PendulumNoVel"): ("sac", "Pendulum-v1"),
    ("sac", "suite_envs:MountainCarContinuousNoVel"): ("sac", "MountainCarContinuous-v0"),
    ("ppo", "suite_envs:CueRecall"): ("ppo", "CartPole-v1"),
    ("ppo_lstm", "suite_envs:CueRecall"): ("ppo_lstm", "suite_envs:CartPoleNoVel"),
    ("sac", "suite_envs:PendulumX100"): ("sac", "Pendulum-v1"),
    ("dqn", "suite_envs:CartPoleX001"): ("dqn", "CartPole-v1"),
}
HYPERPARAMS.update({key: HYPERPARAMS[source] for key, source in SAME_AS.items()})
NOT_IN_ZOO = {
    ("sac", "InvertedPendulum-v5"): "the zoo tunes only the PyBullet version; SB3's SAC defaults",
    ("sac", "InvertedDoublePendulum-v5"): "the zoo tunes only the PyBullet version; SB3's SAC defaults",
    ("sac", "suite_envs:BeaconReach"): "our own task; SB3's SAC defaults",
    **{(method, env): f"memoryless; the zoo's {method} settings for {source[1]}"
       for (method, env), source in SAME_AS.items() if "NoVel" in env},
    ("ppo", "suite_envs:CueRecall"): "our own task; memoryless, the zoo's ppo settings for CartPole-v1",
    ("ppo_lstm", "suite_envs:CueRecall"): "our own task; the zoo's ppo_lstm settings for CartPoleNoVel-v1 "
                                          "(the same as its ppo ones for CartPole-v1, with an LSTM)",
    ("sac", "suite_envs:PendulumX100"): "the zoo's sac settings for Pendulum-v1, rewards unscaled",
    ("dqn", "suite_envs:CartPoleX001"): "the zoo's dqn settings for CartPole-v1, rewards unscaled",
}
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")
OFF_POLICY = ("dqn", "sac", "td3")
SMOKE_LEARNING_STARTS = 100  # so a smoke run of a few hundred steps trains at all


def make(env_id: str) -> gym.Env:
    """The env as dreamer builds it: a registered id through gym.make, or a module:Class."""
    from dreamercli.envs import make_env

    return make_env(env_id)


def linear(initial: float) -> Callable[[float], float]:
    """SB3 schedule falling linearly from initial (progress_remaining 1) to 0 (progress_remaining 0)."""
    return lambda progress_remaining: progress_remaining * initial


def parse_kwargs(text: str) -> dict[str, Any]:
    """Turn the zoo's "dict(a=..., b=...)" string into a dict: values are literals, dict(...) again,
    or a torch.nn module class such as nn.ReLU."""
    node = ast.parse(text.strip(), mode="eval").body
    if not _is_dict_call(node):
        raise ValueError(f"expected dict(key=value, ...), got {text!r}")
    return _value(node)


def _is_dict_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args and all(k.arg for k in node.keywords))


def _value(node: ast.AST) -> Any:
    """One value of a dict(...) string; literal_eval, not eval: a hyperparameter file should not run code."""
    if _is_dict_call(node):
        return {k.arg: _value(k.value) for k in node.keywords}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
        from torch import nn

        module = getattr(nn, node.attr, None)
        if not (isinstance(module, type) and issubclass(module, nn.Module)):
            raise ValueError(f"nn.{node.attr} is not a torch.nn module")
        return module
    return ast.literal_eval(node)


def prepare(method: str, env_id: str, smoke: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(setup, kwargs): run settings (n_envs, n_timesteps, normalize, noise) and the algorithm's kwargs."""
    hp = dict(HYPERPARAMS[(method, env_id)])
    setup = {"n_envs": hp.pop("n_envs", 1), "n_timesteps": int(hp.pop("n_timesteps")),
             "normalize": hp.pop("normalize", False), "noise_type": hp.pop("noise_type", None),
             "noise_std": hp.pop("noise_std", None)}
    for key in SCHEDULED:
        if isinstance(hp.get(key), str):
            kind, value = hp[key].split("_")
            if kind != "lin":
                raise ValueError(f"unknown schedule {hp[key]!r} for {key}")
            hp[key] = linear(float(value))
    if isinstance(hp.get("policy_kwargs"), str):
        hp["policy_kwargs"] = parse_kwargs(hp["policy_kwargs"])
    if smoke and method in OFF_POLICY:
        hp["learning_starts"] = min(hp.get("learning_starts", SMOKE_LEARNING_STARTS), SMOKE_LEARNING_STARTS)
    return setup, hp


def describe(method: str, env_id: str, smoke: bool) -> dict[str, Any]:
    """The settings as JSON-able values, for the race's record."""
    setup, hp = prepare(method, env_id, smoke)
    raw = HYPERPARAMS[(method, env_id)]
    # A schedule or a dict(...) string as the zoo writes it; JSON cannot hold what it was parsed into.
    return {**setup, **{k: raw[k] if isinstance(raw.get(k), str) else v for k, v in hp.items()},
            "zoo_commit": ZOO_COMMIT}


def build(method: str, env_id: str, seed: int, smoke: bool = False):
    """The SB3 model on its (vectorised, maybe normalised) training envs, and n_timesteps."""
    from stable_baselines3 import DQN, PPO, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import VecNormalize

    setup, hp = prepare(method, env_id, smoke)
    # DummyVecEnv of Monitor-wrapped envs, made as dreamer makes them (so module:Class works too).
    venv = make_vec_env(lambda: make(env_id), n_envs=setup["n_envs"], seed=seed)
    if setup["normalize"]:
        norm = setup["normalize"]
        kwargs = parse_kwargs(norm) if isinstance(norm, str) else {}
        venv = VecNormalize(venv, **kwargs, **({"gamma": hp["gamma"]} if "gamma" in hp else {}))
    if setup["noise_type"] is not None:
        if setup["noise_type"].strip() != "normal":
            raise ValueError(f"noise type {setup['noise_type']!r} is not supported here")
        n = venv.action_space.shape[0]
        hp["action_noise"] = NormalActionNoise(np.zeros(n), setup["noise_std"] * np.ones(n))
    if method == "ppo_lstm":
        from sb3_contrib import RecurrentPPO  # the bench extra's sb3-contrib

        algo = RecurrentPPO
    else:
        algo = {"ppo": PPO, "dqn": DQN, "sac": SAC, "td3": TD3}[method]
    policy = hp.pop("policy")
    return algo(policy, venv, seed=seed, device="cpu", verbose=0, **hp), setup["n_timesteps"]


def evaluate(model, envs: list[gym.Env], seed: int) -> tuple[float, float]:
    """Mean and std of deterministic returns, one episode per env; env i resets with seed + i, as dreamer's do."""
    returns = episode_returns(model, envs, seed)
    return float(np.mean(returns)), float(np.std(returns))


def episode_returns(model, envs: list[gym.Env], seed: int) -> list[float]:
    """One deterministic episode per env, in lockstep; a recurrent policy's state (RecurrentPPO's LSTM)
    starts at zero in each episode and carries from step to step within it."""
    norm = model.get_vec_normalize_env()
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns = [0.0] * len(envs)
    live = list(range(len(envs)))
    shape = getattr(model.policy, "lstm_hidden_state_shape", None)  # (layers, 1, size) where recurrent
    if shape is not None:  # hidden and cell state, one column per episode
        memory = tuple(np.zeros((shape[0], len(envs), shape[2]), dtype=np.float32) for _ in range(2))
        starts = np.ones(len(envs), dtype=bool)
    while live:
        # The episodes in lockstep, one predict for all (as dreamer's evaluation batches them):
        # a single-observation predict costs about as much as a batch, and results are the same.
        batch = np.stack([obs[i] for i in live])
        # normalize_obs reads the running stats without updating them: frozen for evaluation.
        batch = norm.normalize_obs(batch) if norm else batch
        if shape is None:
            actions, _ = model.predict(batch, deterministic=True)
        else:
            state = tuple(m[:, live] for m in memory)
            actions, state = model.predict(batch, state=state, episode_start=starts[live], deterministic=True)
            for m, s in zip(memory, state, strict=True):
                m[:, live] = s
            starts[live] = False
        still = []
        for i, action in zip(live, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += float(reward)
            if not (terminated or truncated):
                still.append(i)
        live = still
    return returns


def make_callback(env_id: str, budget: int, every: int, episodes: int, eval_seed: int,
                  stop_at: float | None = None, make_eval_env: Callable[[str], gym.Env] = make):
    """A BaseCallback that evaluates at each multiple of `every` and at `budget`, then stops learn
    (or at the first eval at or above stop_at, when one is given); make_eval_env builds its envs."""
    from stable_baselines3.common.callbacks import BaseCallback

    class RaceCallback(BaseCallback):
        """Evaluate on separate envs, keep evaluation time out of training seconds, stop at budget."""

        def __init__(self) -> None:
            super().__init__()
            self.envs = [make_eval_env(env_id) for _ in range(episodes)]  # separate from the training envs
            self.curve: list[dict[str, float]] = []
            self.next_eval, self.eval_total, self.start = every, 0.0, time.perf_counter()

        def begin(self) -> None:
            """Start the training clock (called right before learn)."""
            self.start, self.eval_total = time.perf_counter(), 0.0

        def evaluate_now(self) -> None:
            """Append one curve point at the current step."""
            train_seconds = time.perf_counter() - self.start - self.eval_total
            began = time.perf_counter()
            mean, std = evaluate(self.model, self.envs, eval_seed)
            seconds = time.perf_counter() - began
            self.eval_total += seconds
            self.curve.append({"step": int(self.num_timesteps), "train_seconds": train_seconds,
                               "return_mean": mean, "return_std": std, "eval_seconds": seconds})

        def _on_step(self) -> bool:
            # With n_envs > 1 the counter jumps by n_envs: evaluate at the first crossing.
            if self.num_timesteps >= self.next_eval or self.num_timesteps >= budget:
                self.evaluate_now()
                self.next_eval = (self.num_timesteps // every + 1) * every
                if stop_at is not None and self.curve[-1]["return_mean"] >= stop_at:
                    return False
            return self.num_timesteps < budget

    return RaceCallback()


def run_sb3(method: str, env_id: str, seed: int, budget: int, every: int, episodes: int,
            smoke: bool = False, stop_at: float | None = None) -> dict[str, Any]:
    """Train one SB3 baseline to the budget (or its first eval at stop_at); return its curve and seconds."""
    import torch

    from dreamercli.evaluation import EVAL_SEED_OFFSET

    torch.set_num_threads(1)
    began = time.perf_counter()
    model, n_timesteps = build(method, env_id, seed, smoke)
    callback = make_callback(env_id, budget, every, episodes, seed + EVAL_SEED_OFFSET, stop_at)
    # The zoo's n_timesteps, so schedules decay as tuned; the callback stops at the budget.
    # A budget beyond n_timesteps stretches the schedules rather than stopping short of it.
    total = max(n_timesteps, budget)
    callback.begin()
    model.learn(total_timesteps=total, callback=callback)
    if not callback.curve or callback.curve[-1]["step"] != model.num_timesteps:
        callback.num_timesteps = model.num_timesteps  # learn ended without a final callback step
        callback.evaluate_now()
    for env in callback.envs:
        env.close()
    model.get_env().close()
    return {"curve": callback.curve, "wall_seconds": time.perf_counter() - began,
            "hyperparams": {**describe(method, env_id, smoke), "total_timesteps": total}}
