"""Small offline datasets of Pendulum-v1 that mix good and bad behaviour, made in seconds
(the OPPO tests and ``benchmarks/oppo_pendulum.py``).

``start="top"``: episodes start near the top (``reset`` options ``START``: angle and speed
uniform in [-1, 1]). Good ones come from a hand-written controller (a linear stabilizer near the
top, energy pumping elsewhere), bad ones from a controller that pushes the pendulum down; both
with Gaussian action noise. Behaviour cloning on the mixture averages opposite torques and
drops the pendulum; a preference-guided policy can tell the two behaviours apart.

``start="bottom"``: Pendulum's own start (anywhere); bad episodes brake the pendulum where it
hangs. There the segments of highest return are those that already balance at the top with
almost no torque, and a context that asks for them does not say how to swing up.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mdpo.offline.dataset import Episode, OfflineDataset

START = {"x_init": 1.0, "y_init": 1.0}
# reference returns of the normalized score: a uniform random policy's and the good controller's
# mean over 100 episodes (reset seeds 5000..5099), from START and from Pendulum's own start
REFERENCES = {"top": (-952.3, -72.3), "bottom": (-1237.4, -154.5)}


def swing_up(obs: np.ndarray) -> np.ndarray:
    """Stabilize near the top, pump energy elsewhere (th'' = 15 sin th + 3 u on Pendulum)."""
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
    """Full torque against the motion: keeps a hanging pendulum hanging."""
    return np.array([-2.0 * np.sign(obs[2])], np.float32)


def push_down(obs: np.ndarray) -> np.ndarray:
    """Full torque away from the top."""
    cos, sin, _ = obs
    return np.array([2.0 * np.sign(np.arctan2(sin, cos))], np.float32)


def rollout(
    env: gym.Env,
    controller,
    seed: int,
    noise: float,
    rng: np.random.Generator,
    options: dict | None = None,
):
    """One episode of ``controller`` with Gaussian action noise (``reset`` ``options``)."""
    obs, _ = env.reset(seed=seed, options=options)
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
    return Episode(
        np.array(observations),
        np.array(actions),
        np.array(rewards),
        np.array(terms),
        np.array(truncs),
    )


def mixture_dataset(
    good: int = 20, bad: int = 20, seed: int = 0, start: str = "top"
) -> OfflineDataset:
    """``good`` controller and ``bad`` episodes, interleaved (even indices good while both
    last), from ``start`` ``"top"`` (bad: push down) or ``"bottom"`` (bad: brake)."""
    if start not in REFERENCES:
        raise ValueError(f"start must be 'top' or 'bottom', got {start!r}")
    options, bad_controller = (START, push_down) if start == "top" else (None, brake)
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(max(good, bad)):
        if i < good:
            episodes.append(rollout(env, swing_up, 1000 * seed + 2 * i, 0.2, rng, options))
        if i < bad:
            episodes.append(
                rollout(env, bad_controller, 1000 * seed + 2 * i + 1, 0.5, rng, options)
            )
    env.close()
    ref_min, ref_max = REFERENCES[start]
    info = {"kind": f"pendulum-mixture-{start}", "seed": seed}
    return OfflineDataset(
        episodes, "Pendulum-v1", env.observation_space, env.action_space, ref_min, ref_max, info
    )
