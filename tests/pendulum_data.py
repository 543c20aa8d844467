"""A small offline dataset of Pendulum-v1 that mixes good and bad behaviour, made in seconds.

Good episodes come from a hand-written swing-up controller (energy pumping, then a linear
stabilizer near the top; about -140 mean return), bad ones from a controller that brakes the
pendulum at the bottom (about -1800); both with Gaussian action noise. Behaviour cloning on the
mixture averages opposite torques; a preference-guided policy can tell the two apart.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mdpo.data.dataset import Episode, OfflineDataset

# reference returns of the normalized score (the swing-up controller's mean and the random
# policy's mean return on Pendulum-v1, measured over 100 episodes)
REF_MIN, REF_MAX = -1200.0, -140.0


def swing_up(obs: np.ndarray) -> np.ndarray:
    """Pump energy until near the top, then stabilize (th'' = 15 sin th + 3 u on Pendulum)."""
    cos, sin, speed = obs
    angle = np.arctan2(sin, cos)
    energy = 0.5 * speed**2 + 15.0 * (cos - 1.0)  # 0 upright at rest
    if cos > 0.85:
        torque = -(10.0 * angle + 2.0 * speed)
    elif energy < 0:
        torque = 2.0 if speed >= 0 else -2.0
    else:
        torque = -0.5 * np.sign(speed)
    return np.clip(np.array([torque], np.float32), -2.0, 2.0)


def brake(obs: np.ndarray) -> np.ndarray:
    """Full torque against the motion: keeps the pendulum hanging."""
    return np.array([-2.0 * np.sign(obs[2])], np.float32)


def rollout(env: gym.Env, controller, seed: int, noise: float, rng: np.random.Generator):
    """One episode of ``controller`` with Gaussian action noise."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    done = False
    while not done:
        action = np.clip(controller(obs) + noise * rng.standard_normal(1), -2.0, 2.0)
        obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        observations.append(obs)
        actions.append(action.astype(np.float32))
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        done = terminated or truncated
    return Episode(np.array(observations), np.array(actions), np.array(rewards),
                   np.array(terms), np.array(truncs))  # fmt: skip


def mixture_dataset(good: int = 30, bad: int = 30, seed: int = 0) -> OfflineDataset:
    """``good`` swing-up and ``bad`` braking episodes, interleaved."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(max(good, bad)):
        if i < good:
            episodes.append(rollout(env, swing_up, 1000 * seed + 2 * i, 0.2, rng))
        if i < bad:
            episodes.append(rollout(env, brake, 1000 * seed + 2 * i + 1, 0.5, rng))
    env.close()
    return OfflineDataset(episodes, "Pendulum-v1", env.observation_space, env.action_space,
                          REF_MIN, REF_MAX, {"kind": "pendulum-mixture", "seed": seed})  # fmt: skip
