"""Offline datasets made from the suite's own agents (no dataset can be downloaded here).

The kinds follow D4RL's recipe, with a *teacher*: one training run of an RL agent of the suite
(PPO by default) on the env, saved every ``eval_every`` steps with the mean return of that
snapshot's stochastic policy, and every transition it collected recorded:

* ``random``: uniform random actions;
* ``expert``: the snapshot of highest return;
* ``medium``: the snapshot whose return is closest to a third of the expert's (before it);
* ``medium-replay``: the teacher's own training rollouts up to the medium snapshot;
* ``medium-expert``: half medium, half expert episodes.

Data are collected with the snapshot's stochastic policy. The references of the normalized
score are measured here: the random policy's and the expert snapshot's mean return over
``reference_episodes`` episodes (stored with the teacher, so every kind of one env shares them).
Everything is drawn from the seeds given: the same command makes the same dataset on the same
machine and libraries (a teacher run interrupted and resumed continues from its last snapshot
and may differ from an uninterrupted one).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from mdpo.core.registry import RL_ALGORITHMS
from mdpo.offline.dataset import Episode, OfflineDataset
from mdpo.rl.evaluation import evaluate_policy

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
TEACHER_FILE = "teacher.json"


class TransitionRecorder(gym.Wrapper):
    """Records every transition the wrapped env makes (the action as the env received it)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._obs = None
        self._first = True
        self.clear()

    def clear(self) -> None:
        """Forget the recorded transitions."""
        self.records: dict[str, list] = {
            k: []
            for k in (
                "obs",
                "next_obs",
                "actions",
                "rewards",
                "terminations",
                "truncations",
                "first",
            )
        }

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._first = obs, True
        return obs, info

    def step(self, action):
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        rec = self.records
        rec["obs"].append(np.asarray(self._obs, np.float32))
        rec["next_obs"].append(np.asarray(next_obs, np.float32))
        rec["actions"].append(np.asarray(action, np.float32))
        rec["rewards"].append(float(reward))
        rec["terminations"].append(bool(terminated))
        rec["truncations"].append(bool(truncated))
        rec["first"].append(self._first)
        self._obs, self._first = next_obs, False
        return next_obs, reward, terminated, truncated, info

    def take(self) -> dict[str, np.ndarray]:
        """The recorded transitions as arrays (and clear them)."""
        arrays = {k: np.asarray(v) for k, v in self.records.items()}
        self.clear()
        return arrays


def episodes_from_transitions(arrays: dict[str, np.ndarray]) -> list[Episode]:
    """Split a stream of transitions into episodes at ``first`` flags; an episode cut off by
    the end of the stream (or a restart) is marked truncated at its last step."""
    starts = np.flatnonzero(arrays["first"])
    if len(starts) == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    bounds = list(starts) + [len(arrays["rewards"])]
    episodes = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b <= a:
            continue
        term = arrays["terminations"][a:b].copy()
        trunc = arrays["truncations"][a:b].copy()
        if not (term[-1] or trunc[-1]):
            trunc[-1] = True
        obs = np.concatenate([arrays["obs"][a:b], arrays["next_obs"][b - 1 : b]])
        episodes.append(Episode(obs, arrays["actions"][a:b], arrays["rewards"][a:b], term, trunc))
    return episodes


def collect(
    env_id: str,
    act: Callable[[np.ndarray], np.ndarray],
    seed: int,
    episodes: int | None = None,
    steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: str | None = None,
    first_index: int = 0,
) -> list[Episode]:
    """Roll out ``act`` for ``episodes`` whole episodes or ``steps`` transitions (the last
    episode then cut and marked truncated). Episode ``i`` resets with seed ``seed·10⁶ + i``.

    Args:
        env_id: gymnasium id.
        act: observation → action.
        seed: the seed of the resets (and of the caller's action noise).
        episodes, steps: exactly one of them.
        env_kwargs: for ``gymnasium.make``.
        progress: a label to show a progress bar with, or ``None``.
        first_index: the index of the first episode (to draw another set from the same seed).
    """
    if (episodes is None) == (steps is None):
        raise ValueError("give exactly one of episodes and steps")
    total = episodes if episodes is not None else steps
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"episodes / steps must be a positive integer, got {total!r}")
    env = TransitionRecorder(gym.make(env_id, **(env_kwargs or {})))
    bar = _progress(total, progress)
    out: list[Episode] = []
    n_steps, index = 0, first_index
    try:
        while (episodes is not None and len(out) < episodes) or (
            steps is not None and n_steps < steps
        ):
            obs, _ = env.reset(seed=seed * 1_000_000 + index)
            index += 1
            done = False
            while not done and (steps is None or n_steps < steps):
                obs, _, terminated, truncated, _ = env.step(act(obs))
                done = terminated or truncated
                n_steps += 1
                if bar is not None and steps is not None:
                    bar.update(1)
            out.extend(episodes_from_transitions(env.take()))
            if bar is not None and episodes is not None:
                bar.update(1)
    finally:
        env.close()
        if bar is not None:
            bar.close()
    return out


def _progress(total: int, label: str | None):
    if label is None:
        return None

    return tqdm(total=total, desc=label, unit="", dynamic_ncols=True)


def random_actor(action_space: gym.spaces.Box, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions from a space seeded with ``seed``."""
    space = gym.spaces.Box(
        action_space.low, action_space.high, action_space.shape, action_space.dtype, seed=seed
    )
    return lambda obs: space.sample()


def agent_actor(agent) -> Callable[[np.ndarray], np.ndarray]:
    """The agent's stochastic policy (the global torch generator: seed it before)."""
    return lambda obs: agent.predict(obs, deterministic=False)[0]


def mean_return(episodes: list[Episode]) -> float:
    """Mean undiscounted return."""
    return float(np.mean([e.total_return for e in episodes]))


class Teacher:
    """A teacher run: snapshots with their returns, recorded rollouts, reference returns.

    Args:
        folder: where the run lives (``teacher.json``, ``snapshots/``, ``rollouts/``).
        env_id: gymnasium id.
        algo: an RL algorithm of the suite (``"PPO"``).
        total_steps: training budget in env steps.
        seed: the training seed.
        eval_every: env steps between snapshots.
        eval_episodes: episodes of each snapshot's evaluation (stochastic policy).
        hyperparameters: for the algorithm.
        reference_episodes: episodes of the random and expert references.
    """

    def __init__(
        self,
        folder: str,
        env_id: str,
        algo: str = "PPO",
        total_steps: int = 1_000_000,
        seed: int = 0,
        eval_every: int = 50_000,
        eval_episodes: int = 10,
        hyperparameters: dict[str, Any] | None = None,
        reference_episodes: int = 100,
    ):
        if algo not in RL_ALGORITHMS:
            raise ValueError(
                f"unknown teacher algorithm {algo!r}; choose one of {sorted(RL_ALGORITHMS)}"
            )
        for name, value in (
            ("total_steps", total_steps),
            ("eval_every", eval_every),
            ("eval_episodes", eval_episodes),
            ("reference_episodes", reference_episodes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.folder = folder
        self.config = {
            "env_id": env_id,
            "algo": algo,
            "total_steps": total_steps,
            "seed": seed,
            "eval_every": eval_every,
            "eval_episodes": eval_episodes,
            "hyperparameters": dict(hyperparameters or {}),
            "reference_episodes": reference_episodes,
        }
        self.state: dict[str, Any] = {"snapshots": [], "complete": False}
        path = os.path.join(folder, TEACHER_FILE)
        if os.path.exists(path):
            with open(path) as handle:
                saved = json.load(handle)
            if saved.get("config") != self.config:
                raise ValueError(
                    f"teacher folder {folder!r} holds a run with another configuration "
                    f"({saved.get('config')}); use another --teacher-dir"
                )
            self.state = saved["state"]

    @property
    def snapshots(self) -> list[dict[str, Any]]:
        """``[{step, path, mean_return}]`` in training order."""
        return self.state["snapshots"]

    def _save(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, TEACHER_FILE + ".tmp")
        with open(tmp, "w") as handle:
            json.dump({"config": self.config, "state": self.state}, handle, indent=1)
        os.replace(tmp, os.path.join(self.folder, TEACHER_FILE))

    def train(self, progress: bool = True) -> Teacher:
        """Train (or finish training) the teacher; every ``eval_every`` steps a snapshot."""
        if self.state["complete"]:
            return self
        cfg = self.config
        cls = RL_ALGORITHMS[cfg["algo"]]
        recorder: list[TransitionRecorder] = []

        def make_env() -> gym.Env:
            recorder.append(TransitionRecorder(gym.make(cfg["env_id"])))
            return recorder[-1]

        hyper = dict(cfg["hyperparameters"])
        if hyper.pop("n_envs", 1) != 1:
            raise ValueError("the teacher records one env: n_envs must be 1")
        if self.snapshots:
            last = os.path.join(self.folder, self.snapshots[-1]["path"])
            agent = cls.load(last, env=make_env)
            buffer = last.replace(".zip", "_buffer.pt")
            if hasattr(agent, "load_replay_buffer") and os.path.exists(buffer):
                agent.load_replay_buffer(buffer)
        else:
            agent = cls("MlpPolicy", make_env, seed=cfg["seed"], **hyper)
        os.makedirs(os.path.join(self.folder, "snapshots"), exist_ok=True)
        os.makedirs(os.path.join(self.folder, "rollouts"), exist_ok=True)
        bar = _progress(
            cfg["total_steps"], f"teacher {cfg['algo']} {cfg['env_id']}" if progress else None
        )
        if bar is not None:
            bar.update(agent.num_timesteps)
        first = not self.snapshots
        while agent.num_timesteps < cfg["total_steps"]:
            tic = time.time()
            before = agent.num_timesteps
            chunk = min(cfg["eval_every"], cfg["total_steps"] - before)
            agent.learn(chunk, reset_num_timesteps=first)
            first = False
            step = agent.num_timesteps
            rollouts = recorder[0].take()
            rollouts_name = os.path.join("rollouts", f"step_{step:09d}.npz")
            np.savez_compressed(os.path.join(self.folder, rollouts_name), **rollouts)
            name = os.path.join("snapshots", f"step_{step:09d}.zip")
            path = agent.save(os.path.join(self.folder, name))
            if hasattr(agent, "save_replay_buffer"):
                agent.save_replay_buffer(path.replace(".zip", "_buffer.pt"))
            torch.manual_seed(cfg["seed"])
            returns, _ = evaluate_policy(
                agent,
                cfg["env_id"],
                cfg["eval_episodes"],
                deterministic=False,
                return_episode_rewards=True,
                seed=10_000 + step,
            )
            # paths relative to the folder: the teacher can be moved
            self.snapshots.append(
                {
                    "step": step,
                    "path": name,
                    "rollouts": rollouts_name,
                    "mean_return": float(np.mean(returns)),
                }
            )
            # wall time of training and snapshots, summed over resumed runs
            self.state["train_seconds"] = self.state.get("train_seconds", 0.0) + time.time() - tic
            self._save()
            if bar is not None:
                bar.update(step - before)
                bar.set_postfix(ret=f"{np.mean(returns):.0f}")
        if bar is not None:
            bar.close()
        self.state["complete"] = True
        self._save()
        return self

    def expert(self) -> dict[str, Any]:
        """The snapshot of highest mean return."""
        self._require_trained()
        return max(self.snapshots, key=lambda s: s["mean_return"])

    def medium(self) -> dict[str, Any]:
        """The snapshot before the expert's whose return is closest to a third of the way from
        the random policy's to the expert's (a normalized score of 33; with a random return
        near 0, as on Hopper, a third of the expert's return)."""
        expert = self.expert()
        random_return, _ = self.references(progress=False)
        target = random_return + (expert["mean_return"] - random_return) / 3.0
        before = [s for s in self.snapshots if s["step"] < expert["step"]] or [expert]
        return min(before, key=lambda s: abs(s["mean_return"] - target))

    def _require_trained(self) -> None:
        if not self.state["complete"] or not self.snapshots:
            raise ValueError(f"the teacher in {self.folder!r} is not trained: call train()")

    def load_agent(self, snapshot: dict[str, Any]):
        """The agent of a snapshot."""
        return RL_ALGORITHMS[self.config["algo"]].load(os.path.join(self.folder, snapshot["path"]))

    def replay(self, until_step: int) -> list[Episode]:
        """The teacher's training episodes up to env step ``until_step``."""
        parts = [
            np.load(os.path.join(self.folder, s["rollouts"]))
            for s in self.snapshots
            if s["step"] <= until_step
        ]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
        return episodes_from_transitions(arrays)

    def references(self, progress: bool = True) -> tuple[float, float]:
        """``(random, expert)`` mean returns over ``reference_episodes`` episodes (cached)."""
        if "references" not in self.state:
            cfg = self.config
            env = gym.make(cfg["env_id"])
            n = cfg["reference_episodes"]
            label = (lambda what: f"reference {what}") if progress else (lambda what: None)
            rand = collect(
                cfg["env_id"],
                random_actor(env.action_space, 7),
                7,
                episodes=n,
                progress=label("random"),
            )
            agent = self.load_agent(self.expert())
            torch.manual_seed(8)
            expert = collect(
                cfg["env_id"], agent_actor(agent), 8, episodes=n, progress=label("expert")
            )
            self.state["references"] = {
                "random": mean_return(rand),
                "expert": mean_return(expert),
                "episodes": n,
            }
            self._save()
        ref = self.state["references"]
        return ref["random"], ref["expert"]


def make_dataset(
    env_id: str,
    kind: str,
    seed: int = 0,
    episodes: int | None = None,
    steps: int | None = None,
    teacher: Teacher | None = None,
    progress: bool = True,
    command: str | None = None,
) -> OfflineDataset:
    """Build a dataset of ``kind`` (see the module docstring).

    Args:
        env_id: gymnasium id (Box spaces).
        kind: one of :data:`KINDS`.
        seed: seed of the rollouts (``medium-replay`` takes the teacher's, not new ones).
        episodes, steps: the size (exactly one; ``medium-replay`` takes neither: its size is
            the teacher's rollouts up to the medium snapshot).
        teacher: a trained :class:`Teacher` (needed by every kind: the references come from it).
        progress: show progress bars.
        command: the command line, stored in the dataset's metadata.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {KINDS}")
    if teacher is None:
        raise ValueError(
            "a teacher is needed (for the data of the policy kinds and for the "
            "expert reference of every kind)"
        )
    if kind == "medium-replay":
        if episodes is not None or steps is not None:
            raise ValueError(
                "medium-replay is the teacher's rollouts up to its medium snapshot: "
                "drop --episodes / --steps"
            )
    elif (episodes is None) == (steps is None):
        raise ValueError(f"{kind}: give exactly one of episodes and steps")
    tic = time.time()
    teacher.train(progress)
    ref_min, ref_max = teacher.references(progress)
    env = gym.make(env_id)
    label = (lambda what: f"{kind} {what}") if progress else (lambda what: None)
    info: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "env_id": env_id,
        "teacher": {**teacher.config, "folder": teacher.folder},
    }
    if kind == "random":
        data = collect(
            env_id,
            random_actor(env.action_space, seed),
            seed,
            episodes,
            steps,
            progress=label("random"),
        )
        info["algorithm"] = "random"
    elif kind == "medium-replay":
        medium = teacher.medium()
        data = teacher.replay(medium["step"])
        info["algorithm"] = f"{teacher.config['algo']} training rollouts"
        info["medium_snapshot"] = medium
    else:
        parts = ["medium", "expert"] if kind == "medium-expert" else [kind]
        data = []
        for i, part in enumerate(parts):
            snapshot = teacher.medium() if part == "medium" else teacher.expert()
            agent = teacher.load_agent(snapshot)
            torch.manual_seed(seed * 1_000 + i)
            size = {"episodes": episodes, "steps": steps}
            if len(parts) == 2:  # half from each
                size = {
                    k: (v // 2 if i == 0 else v - v // 2) if v is not None else None
                    for k, v in size.items()
                }
            data += collect(
                env_id,
                agent_actor(agent),
                seed,
                **size,
                progress=label(part),
                first_index=i * 1_000_000 // 2,
            )
            info[f"{part}_snapshot"] = snapshot
        info["algorithm"] = teacher.config["algo"]
    info["reference_episodes"] = int(teacher.state["references"]["episodes"])
    info["build_seconds"] = round(time.time() - tic, 1)
    if command:
        info["command"] = command
    info["description"] = (
        f"{kind} data of {env_id}, made by mdpo from its own {teacher.config['algo']} teacher"
    )
    return OfflineDataset(
        data, env_id, env.observation_space, env.action_space, ref_min, ref_max, info
    )
