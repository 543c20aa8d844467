"""Policy evaluation on separate environments."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mdpo.rl.runners import EnvSpec, make_vec_env

if TYPE_CHECKING:
    from mdpo.rl.base import Agent


def evaluate_policy(
    model: Agent,
    env: EnvSpec,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    render: bool = False,
    callback: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    reward_threshold: float | None = None,
    return_episode_rewards: bool = False,
    warn: bool = True,
    seed: int | None = None,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """Run ``n_eval_episodes`` episodes and report their undiscounted returns.

    Same signature and semantics as Stable-Baselines3's ``evaluate_policy``: episodes are
    spread evenly over the envs of a vector env so that short episodes do not bias the mean.
    Rewards are the environment's own (no normalization); the agent normalizes observations
    itself in :meth:`~mdpo.rl.base.Agent.predict`.

    Args:
        model: the agent (anything with ``predict``).
        env: an env id, a ``gymnasium.Env``, a factory, or a ``SAME_STEP`` vector env.
        n_eval_episodes: number of episodes.
        deterministic: act with the mean / argmax action.
        render: call ``env.render()`` after each step.
        callback: called as ``callback(locals(), globals())`` after each step.
        reward_threshold: raise ``AssertionError`` when the mean return is below it.
        return_episode_rewards: return the per-episode returns and lengths instead.
        warn: unused; kept for SB3 signature compatibility.
        seed: seed of the first reset (env ``i`` gets ``seed + i``).

    Returns:
        ``(mean_return, std_return)``, or ``(returns, lengths)`` per episode.
    """
    if (
        isinstance(n_eval_episodes, bool)
        or not isinstance(n_eval_episodes, int)
        or n_eval_episodes < 1
    ):
        raise ValueError(f"n_eval_episodes must be a positive integer, got {n_eval_episodes!r}")
    venv = make_vec_env(env)
    n_envs = venv.num_envs
    targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, int)
    current_returns = np.zeros(n_envs)
    current_lengths = np.zeros(n_envs, int)
    episode_returns: list[float] = []
    episode_lengths: list[int] = []
    observations, _ = venv.reset(seed=seed)
    states = None
    episode_starts = np.ones(n_envs, bool)
    while (counts < targets).any():
        actions, states = model.predict(
            observations, state=states, episode_start=episode_starts, deterministic=deterministic
        )
        observations, rewards, terminated, truncated, infos = venv.step(actions)
        current_returns += rewards
        current_lengths += 1
        dones = terminated | truncated
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                episode_returns.append(float(current_returns[i]))
                episode_lengths.append(int(current_lengths[i]))
                counts[i] += 1
        current_returns[dones] = 0.0
        current_lengths[dones] = 0
        episode_starts = dones
        if callback is not None:
            callback(locals(), globals())
        if render:
            venv.render()
    if isinstance(env, str):  # we made it; envs the caller gave stay theirs
        venv.close()
    mean_return, std_return = float(np.mean(episode_returns)), float(np.std(episode_returns))
    if reward_threshold is not None:
        assert mean_return > reward_threshold, (
            f"mean return {mean_return:.2f} is below the threshold {reward_threshold:.2f}"
        )
    if return_episode_rewards:
        return episode_returns, episode_lengths
    return mean_return, std_return
