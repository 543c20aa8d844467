"""``mdpo train`` and ``mdpo eval``: train, resume and evaluate agents in run folders."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import shlex
import time
from typing import Any

import numpy as np

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0, the suite's own env
from mdpo.cli.overrides import NOT_SETTABLE, parse_overrides
from mdpo.cli.presets import load_preset, preset_entry, resolve_schedules
from mdpo.cli.run_folder import (
    RunFolder,
    resolve_model,
)
from mdpo.cli.threads import add_threads_option
from mdpo.cli.watch import record_videos
from mdpo.core.limits import (
    MAX_VEC_ENVS,
    BadFileError,
    check_env_id_from_file,
    field_int,
    json_object,
)
from mdpo.core.registry import ALGORITHMS, RL_ALGORITHMS
from mdpo.core.version import __version__
from mdpo.rl.base import Agent
from mdpo.rl.callbacks import (
    BaseCallback,
    EvalCallback,
    IterationCheckpointCallback,
    latest_checkpoint,
    replay_buffer_path,
)
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import check_env_id, make_vec_env


def resolve_algo(name: str) -> str:
    """The registered algorithm name matching ``name`` (case-insensitive)."""
    for algo in RL_ALGORITHMS:
        if algo.lower() == name.lower():
            return algo
    hint = "; TS-DDR trains with `mdpo hydro tsddr`" if name.lower() == "tsddr" else ""
    raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(RL_ALGORITHMS)}{hint}")


class RunStatus(BaseCallback):
    """Keeps ``status.json`` of a run folder up to date (at most every few seconds)."""

    def __init__(self, folder: RunFolder, every_s: float = 2.0):
        super().__init__()
        self.folder = folder
        self.every_s = every_s
        self._last = 0.0

    def write(self, status: str, **extra: Any) -> None:
        # strict JSON: -inf (no evaluation yet) is written as null
        self.folder.write_status(status, num_timesteps=self.model.num_timesteps, **extra)

    def _on_rollout_start(self) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.write("running")


def unique_run_dir(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    candidate, k = base, 1
    while os.path.exists(candidate):
        k += 1
        candidate = f"{base}-{k}"
    return candidate


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


def check_train_config(config: dict[str, Any], path: str) -> dict[str, Any]:
    """Check a run's ``config.json`` (read back on ``--resume``) field by field.

    Raises:
        BadFileError: naming the file and the field.
    """
    if config.get("algo") not in RL_ALGORITHMS:
        raise BadFileError(f"{path}: algo must be one of {', '.join(RL_ALGORITHMS)}")
    check_env_id_from_file(config.get("env"), f"{path}: env")
    field_int(config.get("total_timesteps"), f"{path}: total_timesteps", 1, 2**62)
    field_int(config.get("seed"), f"{path}: seed", 0, 2**32 - 1)
    field_int(config.get("n_envs"), f"{path}: n_envs", 1, MAX_VEC_ENVS)
    field_int(config.get("n_eval_envs", 1), f"{path}: n_eval_envs", 1, MAX_VEC_ENVS)
    for key in ("checkpoint_freq", "eval_freq", "eval_episodes"):
        field_int(config.get(key), f"{path}: {key}", 1, 2**40)
    if not isinstance(config.get("device"), str) or not DEVICE.match(config["device"]):
        raise BadFileError(f"{path}: device must be auto, cpu, cuda or cuda:N")
    hyper = json_object(config.get("hyperparameters"), f"{path}: hyperparameters")
    if hyper.get("env_kwargs") is not None:
        json_object(hyper["env_kwargs"], f"{path}: hyperparameters.env_kwargs")
    allowed = set(inspect.signature(ALGORITHMS[config["algo"]].__init__).parameters)
    unknown = sorted(set(hyper) - (allowed - NOT_SETTABLE))
    if unknown:
        raise BadFileError(f"{path}: hyperparameters has unknown keys {unknown[:5]}")
    return config


def command_train(args: argparse.Namespace) -> int:
    """``mdpo train``: a new run, or the continuation of one with ``--resume``."""
    if args.resume:
        folder = RunFolder(args.resume, "mdpo train")
        if not folder.holds_run():
            raise ValueError(f"--resume {args.resume!r}: no config.json there (not a run folder)")
        if args.set or args.steps is not None:
            raise ValueError("--resume continues a run as configured: drop --set and --steps")
        with folder.writing(resume=True):
            config = check_train_config(folder.read_config(), folder.file("config.json"))
            for given, key in ((args.algo, "algo"), (args.env, "env")):
                if given is not None and given.lower() != str(config[key]).lower():
                    raise ValueError(f"--resume: the run was {key}={config[key]!r}, not {given!r}")
            if folder.is_completed():
                print(f"{folder.path}: already complete")
                return 0
            return train_in_folder(args, config, folder, resume=True)

    if args.algo is None or args.env is None:
        raise ValueError("mdpo train needs ALGO and ENV (or --resume RUN_DIR)")
    algo = resolve_algo(args.algo)
    check_env_id(args.env)
    preset: dict[str, Any] = {"hyperparameters": {}}
    if args.preset or args.preset_file:
        where = args.preset_file or f"the {args.preset} preset"
        preset = preset_entry(load_preset(args.preset, args.preset_file), algo, args.env, where)
        pairs = [f"{key}={json.dumps(value)}" for key, value in preset["hyperparameters"].items()]
        parse_overrides(algo, pairs)  # the preset's names and values, checked as --set ones
    args.steps = preset.get("steps", 100_000) if args.steps is None else args.steps
    args.n_envs = preset.get("n_envs", 1) if args.n_envs is None else args.n_envs
    for name in ("steps", "n_envs", "checkpoint_freq", "eval_freq", "eval_episodes", "n_eval_envs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    config = {
        "algo": algo,
        "env": args.env,
        "total_timesteps": args.steps,
        "seed": args.seed,
        "n_envs": args.n_envs,
        "device": args.device,
        "hyperparameters": {**preset["hyperparameters"], **parse_overrides(algo, args.set or [])},
        "checkpoint_freq": args.checkpoint_freq,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "n_eval_envs": args.n_eval_envs,
        "command": "mdpo " + shlex.join(args.argv),
        "mdpo_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    run_dir = args.out or unique_run_dir(
        os.path.join("runs", f"{algo}-{args.env.replace('/', '_').replace(':', '_')}-s{args.seed}")
    )
    folder = RunFolder(run_dir, "mdpo train")
    if folder.holds_run():
        raise ValueError(
            f"{run_dir!r} already holds a run; use --resume {run_dir} or another --out"
        )
    return train_in_folder(args, config, folder, resume=False)


def train_in_folder(
    args: argparse.Namespace, config: dict[str, Any], folder: RunFolder, resume: bool
) -> int:
    """Train (or continue) the run of ``config`` in ``folder``, holding the folder's lock."""
    run_dir = folder.path
    algo_cls = ALGORITHMS[config["algo"]]
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    final_path = os.path.join(run_dir, "final_model.zip")
    total = int(config["total_timesteps"])
    device = args.device if not resume or args.device != "auto" else config["device"]
    env_kwargs = config["hyperparameters"].get("env_kwargs")

    checkpoint = latest_checkpoint(ckpt_dir) if resume else None
    lock = contextlib.nullcontext() if resume else folder.writing()
    if checkpoint is not None:
        agent = algo_cls.load(
            checkpoint,
            env=config["env"],
            device=device,
            tensorboard_log=os.path.join(run_dir, "tb"),
            verbose=args.verbose,
            env_kwargs=env_kwargs,  # the run's env, as configured (the file does not carry it)
        )
        buffer_file = replay_buffer_path(checkpoint)
        if hasattr(agent, "load_replay_buffer") and os.path.exists(buffer_file):
            agent.load_replay_buffer(buffer_file)
        print(f"resuming {run_dir} from {checkpoint} at {agent.num_timesteps} steps")
    else:
        # the agent is built (and so the configuration checked) before the folder is made
        agent = algo_cls(
            "MlpPolicy",
            config["env"],
            seed=config["seed"],
            device=device,
            n_envs=config["n_envs"],
            tensorboard_log=os.path.join(run_dir, "tb"),
            verbose=args.verbose,
            **resolve_schedules(config["hyperparameters"]),
        )
    with lock:
        if not resume:
            if folder.holds_run():  # another run got there first
                raise ValueError(f"{run_dir!r} already holds a run; use --resume {run_dir}")
            folder.write_config(config)
        if agent.num_timesteps >= total:
            agent.save(final_path)
            print(f"{run_dir}: already at {agent.num_timesteps} >= {total} steps")
            return 0
        return _learn_in_folder(args, config, folder, agent, checkpoint, env_kwargs)


def _learn_in_folder(
    args: argparse.Namespace,
    config: dict[str, Any],
    folder: RunFolder,
    agent: Agent,
    checkpoint: str | None,
    env_kwargs: dict[str, Any] | None,
) -> int:
    ckpt_dir = folder.file("checkpoints")
    eval_dir = folder.file("eval")
    final_path = folder.file("final_model.zip")
    total = int(config["total_timesteps"])
    n_envs = agent.n_envs
    status = RunStatus(folder)
    # the evaluation env is made as the training one (env_kwargs included)
    eval_env = make_vec_env(
        config["env"], n_envs=config.get("n_eval_envs", 1), env_kwargs=env_kwargs
    )
    evaluation = EvalCallback(
        eval_env,
        n_eval_episodes=config["eval_episodes"],
        eval_freq=max(1, config["eval_freq"] // n_envs),
        log_path=eval_dir,
        best_model_save_path=eval_dir,
        verbose=args.verbose,
    )
    # rows past the checkpoint (or torn by a crash) are dropped: they will be evaluated again
    done = agent.num_timesteps if checkpoint is not None else 0
    rows = folder.repair_log(os.path.join("eval", "evaluations.csv"), "timesteps", done)
    if rows:
        evaluation.best_mean_reward = max(float(row["mean_reward"]) for row in rows)
    evaluation.n_calls = done // n_envs  # the evaluation schedule goes on where it was
    callbacks = [
        status,
        IterationCheckpointCallback(config["checkpoint_freq"], ckpt_dir, keep_last=2),
        evaluation,
    ]
    status.model = agent
    size = agent.timesteps_per_iteration
    left = total - agent.num_timesteps
    if left % size:
        ends = agent.num_timesteps + -(-left // size) * size
        print(
            f"note: {config['algo']} trains in whole iterations of {size} steps "
            f"({iteration_words(agent)}): this run ends at {ends} steps, not {total}"
        )
    started, tic = agent.num_timesteps, time.perf_counter()
    with folder.failure_recorded(lambda: {"num_timesteps": agent.num_timesteps}):
        agent.learn(
            total - agent.num_timesteps,
            callback=callbacks,
            reset_num_timesteps=checkpoint is None,
            tb_log_name=config["algo"],
            progress_bar=not args.no_progress,
            log_interval=args.log_interval,
        )
        seconds = time.perf_counter() - tic
        agent.save(final_path)
        if evaluation.evaluations_timesteps[-1:] != [agent.num_timesteps]:
            evaluation.evaluate()  # every run ends with the score of its final model
    if args.capture_video:
        videos, _ = record_videos(
            agent,
            config["env"],
            env_kwargs,
            folder.file("videos"),
            prefix=f"step-{agent.num_timesteps}",
        )
        print(f"video of the final model: {videos[-1] if videos else 'none written'}")
    returns = evaluation.evaluations_results[-1]
    mean, std = float(np.mean(returns)), float(np.std(returns))
    status.write("completed", last_eval_mean_reward=mean, last_eval_std_reward=std)
    rate = (agent.num_timesteps - started) / max(seconds, 1e-9)
    print(
        f"done: {config['algo']} on {config['env']}, {agent.num_timesteps} steps "
        f"({rate:.0f} steps/s over {seconds:.1f} s); final evaluation {mean:.2f} +/- {std:.2f} "
        f"over {len(returns)} episodes; files in {folder.path} (final_model.zip, "
        "eval/evaluations.csv, tb/)"
    )
    return 0


def iteration_words(agent: Agent) -> str:
    """What one iteration of ``agent`` is, in its hyperparameters' names."""
    if hasattr(agent, "n_steps"):
        return f"n_steps × n_envs = {agent.n_steps} × {agent.n_envs}"
    return f"train_freq × n_envs = {agent.train_freq_steps} × {agent.n_envs}"


def command_eval(args: argparse.Namespace) -> int:
    """``mdpo eval``: mean and std of the return of a saved model, given as a model file or a
    run folder (its final model, else its latest checkpoint); the env is the run's unless
    ``--env`` names another."""

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    model_path, env_id, env_kwargs = resolve_model(args.model)
    if args.env is not None:
        env_id, env_kwargs = args.env, None
    if env_id is None:
        raise ValueError(f"{args.model!r} is a model file: name the env it acts in with --env ENV")
    check_env_id(env_id)
    args.env = env_id
    agent = Agent.load(model_path, device=args.device)
    env = make_vec_env(env_id, env_kwargs=env_kwargs)
    for name, mine, theirs in (
        ("observation", agent.observation_space, env.single_observation_space),
        ("action", agent.action_space, env.single_action_space),
    ):
        if getattr(mine, "shape", None) != getattr(theirs, "shape", None) or type(mine) is not type(
            theirs
        ):
            env.close()
            raise ValueError(
                f"the model acts in {name} space {mine}, but {env_id} has {theirs}: is "
                f"{env_id} the env it was trained on? (--env names another)"
            )
    returns, lengths = evaluate_policy(
        agent,
        env,
        n_eval_episodes=args.episodes,
        deterministic=not args.stochastic,
        return_episode_rewards=True,
        seed=args.seed,
    )

    result = {
        "model": model_path,
        "env": env_id,
        "episodes": args.episodes,
        "deterministic": not args.stochastic,
        "mean_reward": float(np.mean(returns)),
        "std_reward": float(np.std(returns)),
        "mean_ep_length": float(np.mean(lengths)),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.env}: mean return {result['mean_reward']:.2f} +/- {result['std_reward']:.2f} "
            f"over {args.episodes} episodes (mean length {result['mean_ep_length']:.1f})"
        )
    return 0


def add_parsers(sub) -> None:
    """Mount ``train`` and ``eval`` on the ``mdpo`` parser."""
    train = sub.add_parser(
        "train",
        description="Train ALGO on ENV. The run folder gets config.json, TensorBoard events "
        "(tb/), checkpoints/, eval/ (evaluations.csv, best_model.zip), final_model.zip and "
        "status.json.",
    )
    train.add_argument("algo", nargs="?", help=f"algorithm: {', '.join(RL_ALGORITHMS)}")
    train.add_argument("env", nargs="?", help="gymnasium env id, e.g. CartPole-v1")
    train.add_argument(
        "-n", "--steps", type=int, help="env steps (default 100000, or the preset's)"
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--n-envs", type=int, help="parallel envs (default 1, or the preset's)")
    train.add_argument(
        "--preset",
        help="tuned hyperparameters and budget per env: zoo (RL Baselines3 Zoo's: PPO, TRPO, SAC) "
        "or paper (MDPO's budgets); --set and --steps override them (default: none, the "
        "algorithm's own hyperparameters)",
    )
    train.add_argument(
        "--preset-file", help="a preset file of one's own, in the zoo's format (default: none)"
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="hyperparameter override, repeatable, values parsed as JSON, e.g. --set "
        "n_steps=512 (default: the preset's or the algorithm's values)",
    )
    train.add_argument("--out", help="run folder (default runs/ALGO-ENV-sSEED)")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its latest checkpoint (default: start a new run)",
    )
    train.add_argument(
        "--checkpoint-freq", type=int, default=10_000, help="env steps between checkpoints"
    )
    train.add_argument(
        "--eval-freq", type=int, default=10_000, help="env steps between evaluations"
    )
    train.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    train.add_argument(
        "--n-eval-envs", type=int, default=1, help="envs the evaluations run in parallel"
    )
    train.add_argument(
        "--log-interval", type=int, default=1, help="iterations between training logs"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--verbose", type=int, default=0, help="0 quiet, 1 training tables")
    train.add_argument(
        "--capture-video",
        action="store_true",
        help="record an episode of the final model into RUN/videos (the video extra)",
    )
    add_threads_option(train)
    train.set_defaults(func=command_train)

    evaluate = sub.add_parser("eval", description="Evaluate a saved model on ENV.")
    evaluate.add_argument("model", help="model file (.zip) or run folder of mdpo train")
    evaluate.add_argument(
        "--env", help="gymnasium env id (default: the run's env; needed for a bare model file)"
    )
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first reset")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=command_eval)
