"""Watching agents: ``mdpo enjoy RUN|MODEL`` renders episodes to a window; ``mdpo record
RUN|MODEL --episodes N --out DIR`` writes them as MP4 videos (gymnasium's ``RecordVideo``;
``pip install -e ".[video]"`` brings moviepy and the classic-control renderer); ``mdpo train
--capture-video`` records an episode of the final model into the run folder."""

from __future__ import annotations

import argparse
import glob
import os
from typing import Any

import gymnasium as gym

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0, the suite's own env
from mdpo.cli.run_folder import resolve_model
from mdpo.core.learner import Learner
from mdpo.rl.runners import TORCH_PREFIX, check_env_id


def rendered_env(env_id: str, env_kwargs: dict[str, Any] | None, render_mode: str) -> gym.Env:
    """``env_id`` (a torch-native id renders as its gymnasium twin) with ``render_mode``."""
    env_id = env_id.removeprefix(TORCH_PREFIX)
    check_env_id(env_id)
    if render_mode == "rgb_array":
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # frames only: no window system
    try:
        return gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    except gym.error.Error as err:  # e.g. no renderer installed
        raise ValueError(f"{env_id} cannot render ({render_mode}): {err}") from None


def play(agent: Learner, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Run ``episodes`` deterministic episodes; returns their returns."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action, _ = agent.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def record_videos(
    agent: Learner,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    folder: str,
    episodes: int = 1,
    seed: int = 0,
    prefix: str = "video",
) -> tuple[list[str], list[float]]:
    """Record ``episodes`` episodes of ``agent`` as MP4 files in ``folder``."""
    try:
        import moviepy  # noqa: F401 - the video extra: RecordVideo writes with it
    except ImportError:
        raise ValueError('recording videos needs moviepy: pip install -e ".[video]"') from None
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        rendered_env(env_id, env_kwargs, "rgb_array"),
        video_folder=folder,
        episode_trigger=lambda _: True,
        name_prefix=prefix,
        disable_logger=True,
    )
    try:
        returns = play(agent, env, episodes, seed)
    finally:
        env.close()
    return sorted(glob.glob(os.path.join(folder, f"{prefix}-episode-*.mp4"))), returns


def _model_and_env(args: argparse.Namespace) -> tuple[Learner, str, dict[str, Any] | None]:
    path, env_id, env_kwargs = resolve_model(args.model)
    if args.env is not None:
        env_id, env_kwargs = args.env, None
    if env_id is None:
        raise ValueError(f"{args.model!r} is a model file: name its env with --env ENV")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    return Learner.load(path, device="cpu"), env_id, env_kwargs


def command_record(args: argparse.Namespace) -> int:
    """``mdpo record``: episodes as MP4 videos."""
    agent, env_id, env_kwargs = _model_and_env(args)
    paths, returns = record_videos(agent, env_id, env_kwargs, args.out, args.episodes, args.seed)
    for path, value in zip(paths, returns):
        print(f"{path}: return {value:.2f}")
    return 0


def command_enjoy(args: argparse.Namespace) -> int:
    """``mdpo enjoy``: episodes rendered to a window."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display to show a window on: record videos with mdpo record instead")
    agent, env_id, env_kwargs = _model_and_env(args)
    env = rendered_env(env_id, env_kwargs, "human")
    try:
        for i, value in enumerate(play(agent, env, args.episodes, args.seed)):
            print(f"episode {i}: return {value:.2f}")
    finally:
        env.close()
    return 0


def add_parsers(sub) -> None:
    """Mount ``mdpo enjoy`` and ``mdpo record``."""
    for name, func in (("enjoy", command_enjoy), ("record", command_record)):
        parser = sub.add_parser(name)
        parser.add_argument("model", help="run folder of mdpo train, or a model file")
        parser.add_argument("--env", help="env id (default: the run's)")
        parser.add_argument("--episodes", type=int, default=1, help="episodes to play")
        parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
        if name == "record":
            parser.add_argument("--out", default="videos", help="folder of the videos")
        parser.set_defaults(func=func)
