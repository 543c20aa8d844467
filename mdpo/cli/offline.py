"""``mdpo data ...`` (offline datasets, preference labels) and ``mdpo oppo ...`` (training and
evaluating OPPO and its behaviour-cloning baselines on them)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import sys
import time

import numpy as np
import torch

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0, the suite's own env
from mdpo.cli.datasets import KINDS, Teacher, make_dataset
from mdpo.cli.overrides import parse_overrides
from mdpo.cli.run_folder import (
    RunFolder,
    write_json_atomic,
)
from mdpo.cli.threads import add_threads_option
from mdpo.core.limits import BadFileError, field_int
from mdpo.core.registry import ALGORITHMS
from mdpo.core.utils import code_version
from mdpo.offline.dataset import OfflineDataset, dataset_path, minari_root
from mdpo.offline.learner import OfflineAgent
from mdpo.offline.preferences import SegmentSampler, parse_labels, scripted_pairs, write_labels
from mdpo.rl.base import Agent
from mdpo.rl.callbacks import BaseCallback, IterationCheckpointCallback, latest_checkpoint
from mdpo.rl.runners import check_env_id

# ``mdpo oppo train --algo``: the agent and the hyperparameters that make it
OFFLINE_ALGOS = {
    "OPPO": ("OPPO", {}),
    "BC": ("BC", {}),
    "FilteredBC": ("BC", {"filter_fraction": 0.1}),
}


def command_line(args: argparse.Namespace) -> str:
    """The command as typed."""
    return "mdpo " + shlex.join(getattr(args, "argv", None) or [])


def default_dataset_id(env_id: str, kind: str) -> str:
    """``mdpo/<env name>/<kind>-v0`` (e.g. ``mdpo/hopper/medium-replay-v0`` for Hopper-v5)."""
    name = env_id.split("/")[-1].split("-v")[0].lower()
    return f"mdpo/{name}/{kind}-v0"


ROOT_HELP = "Minari datasets folder (default $MINARI_DATASETS_PATH or ~/.minari/datasets)"


# ----------------------------------------------------------------------------------- data
def command_data_make(args: argparse.Namespace) -> int:
    """``mdpo data make``: train (or reuse) the teacher and write one dataset."""

    check_env_id(args.env)
    sized = args.episodes is not None or args.steps is not None
    if args.kind == "medium-replay" and sized:
        raise ValueError(
            "medium-replay is the teacher's rollouts up to its medium snapshot: "
            "drop --episodes / --steps"
        )
    if args.kind != "medium-replay" and not sized:
        raise ValueError(
            f"{args.kind}: give exactly one of episodes and steps (--episodes N or --steps N)"
        )
    dataset_id = args.id or default_dataset_id(args.env, args.kind)

    with minari_root(args.root):
        target = dataset_path(dataset_id)
    if os.path.exists(target) and not args.force:
        raise ValueError(f"dataset {dataset_id!r} exists ({target}); pass --force to replace it")
    env_name = args.env.replace("/", "_")
    run_name = f"{env_name}-{args.teacher_algo}-s{args.teacher_seed}-{args.teacher_steps}"
    teacher_dir = args.teacher_dir or os.path.join("runs", "teachers", run_name)
    teacher = Teacher(
        teacher_dir,
        args.env,
        args.teacher_algo,
        args.teacher_steps,
        args.teacher_seed,
        args.teacher_eval_every,
        reference_episodes=args.reference_episodes,
    )
    dataset = make_dataset(
        args.env,
        args.kind,
        args.seed,
        args.episodes,
        args.steps,
        teacher,
        progress=not args.no_progress,
        command=command_line(args),
    )
    path = dataset.save(dataset_id, args.root, overwrite=args.force)
    print(f"{dataset_id}: {dataset.summary()}")
    warn_scale(dataset)
    print(
        f"  references: random {dataset.ref_min_score:.1f}, expert {dataset.ref_max_score:.1f}"
        f" (teacher {teacher_dir}); written to {path}"
    )
    return 0


def command_data_info(args: argparse.Namespace) -> int:
    """``mdpo data info``: what a dataset holds."""

    dataset = OfflineDataset.load(args.dataset, args.root)
    print(f"{dataset.dataset_id} ({dataset.env_id}): {dataset.summary()}")
    print(f"  references: random {dataset.ref_min_score}, expert {dataset.ref_max_score}")
    for key in ("kind", "seed", "algorithm", "reference_episodes", "command", "build_seconds"):
        if key in dataset.info:
            print(f"  {key}: {dataset.info[key]}")
    warn_scale(dataset)
    return 0


def warn_scale(dataset: OfflineDataset) -> None:
    """Print the dataset's scale warning, if it has one (see ``scale_warning``)."""
    warning = dataset.scale_warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def command_data_labels(args: argparse.Namespace) -> int:
    """``mdpo data labels``: write scripted labels to a CSV (to inspect, edit or replace)."""

    spec = parse_labels(args.labels)
    if spec["source"] != "scripted" or spec["queries"] is None:
        raise ValueError(
            "--labels must be scripted with a number of queries, e.g. scripted:K=20,queries=1000"
        )
    dataset = OfflineDataset.load(args.dataset, args.root)
    sampler = SegmentSampler(dataset, spec["K"])
    generator = torch.Generator().manual_seed(spec["seed"])
    pairs = scripted_pairs(sampler, spec["queries"], generator, spec["ties"], spec["foresee"])
    write_labels(args.out, pairs)
    print(f"{len(pairs)} labelled pairs of {spec['K']}-step segments written to {args.out}")
    return 0


# ----------------------------------------------------------------------------------- oppo
class OfflineEvalCallback(BaseCallback):
    """Evaluate an offline agent in its env every ``eval_freq`` gradient steps; append
    ``step, mean_return, mean_normalized`` rows to ``evaluations.csv`` and log them.

    Args:
        path: the CSV file.
        eval_freq: gradient steps between evaluations.
        n_episodes: episodes per evaluation.
        seed: seed of the first evaluation episode.
    """

    def __init__(self, path: str, eval_freq: int, n_episodes: int, seed: int = 100_000):
        super().__init__()
        self.path, self.eval_freq, self.n_episodes, self.seed = path, eval_freq, n_episodes, seed
        self.last: dict | None = None

    def _on_step(self) -> bool:
        if self.model.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True

    def evaluate(self) -> dict:
        """Evaluate now and record the row."""
        result = self.model.evaluate(self.n_episodes, self.seed)
        step = self.model.num_timesteps
        normalized = result.get("mean_normalized", float("nan"))
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "mean_return", "std_return", "mean_normalized"])
            writer.writerow(
                [step, result["mean_return"], float(np.std(result["returns"])), normalized]
            )
        self.logger.record("eval/mean_reward", result["mean_return"])
        self.logger.record("eval/normalized_score", normalized)
        self.last = {"step": step, **result}
        return self.last


def command_oppo_train(args: argparse.Namespace) -> int:
    """``mdpo oppo train``: a new offline run (OPPO, BC or FilteredBC), or ``--resume``."""

    if args.resume:
        folder = RunFolder(args.resume, "mdpo oppo train")
        if not folder.holds_run():
            raise ValueError(f"--resume {args.resume!r}: no config.json there (not a run folder)")
        with folder.writing(resume=True):
            config = check_offline_config(folder.read_config(), folder.file("config.json"))
            if os.path.exists(folder.file("summary.json")):  # written last: the run is done
                print(f"{folder.path}: already complete")
                return 0
            return train_offline_in_folder(args, config, folder, resume=True)
    else:
        if args.dataset is None:
            raise ValueError("mdpo oppo train needs --dataset (or --resume RUN_DIR)")
        if args.algo not in OFFLINE_ALGOS:
            raise ValueError(f"--algo must be one of {sorted(OFFLINE_ALGOS)}, got {args.algo!r}")
        for name in ("steps", "eval_every", "eval_episodes", "checkpoint_every"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        cls_name, hyper = OFFLINE_ALGOS[args.algo]
        hyper = {**hyper, **parse_overrides(cls_name, args.set or [])}
        if cls_name == "OPPO":
            labels = args.labels
            if labels.startswith("file:"):  # absolute, so that --resume works from anywhere
                path, _, rest = labels[len("file:") :].partition(",")
                labels = "file:" + os.path.abspath(path) + ("," + rest if rest else "")
            hyper.setdefault("labels", labels)
        elif args.labels != "scripted":
            raise ValueError(f"--labels applies to OPPO; {args.algo} uses no labels")
        policy = {"mlp": "MlpPolicy", "transformer": "TransformerPolicy"}[args.policy]
        if cls_name == "BC" and policy != "MlpPolicy":
            raise ValueError("BC has an MLP policy only (--policy mlp)")
        run_dir = args.out or os.path.join(
            "runs", "oppo", f"{args.algo}-{args.dataset.replace('/', '_')}-s{args.seed}"
        )
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise ValueError(f"{run_dir!r} already holds a run; use --resume {run_dir} or --out")
        config = {
            "algo": args.algo,
            "class": cls_name,
            "policy": policy,
            "dataset": args.dataset,
            "data_root": args.root,
            "seed": args.seed,
            "steps": args.steps,
            "hyperparameters": hyper,
            "eval_every": args.eval_every,
            "eval_episodes": args.eval_episodes,
            "checkpoint_every": args.checkpoint_every,
            "device": args.device,
            "command": command_line(args),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "code_version": code_version(),
        }
    return train_offline_in_folder(args, config, RunFolder(run_dir, "mdpo oppo train"), False)


def check_offline_config(config: dict, path: str) -> dict:
    """Check an offline run's ``config.json`` (read back on ``--resume``) field by field.

    Raises:
        BadFileError: naming the file and the field.
    """
    classes = {cls_name for cls_name, _ in OFFLINE_ALGOS.values()}
    if config.get("algo") not in OFFLINE_ALGOS or config.get("class") not in classes:
        raise BadFileError(f"{path}: algo and class must be one of {sorted(OFFLINE_ALGOS)}")
    if config.get("policy") not in ("MlpPolicy", "TransformerPolicy"):
        raise BadFileError(f"{path}: policy must be MlpPolicy or TransformerPolicy")
    for key in ("dataset", "device"):
        if not isinstance(config.get(key), str):
            raise BadFileError(f"{path}: {key} must be a string")
    if config.get("data_root") is not None and not isinstance(config["data_root"], str):
        raise BadFileError(f"{path}: data_root must be a folder or null")
    field_int(config.get("seed"), f"{path}: seed", 0, 2**32 - 1)
    for key in ("steps", "eval_every", "eval_episodes", "checkpoint_every"):
        field_int(config.get(key), f"{path}: {key}", 1, 2**40)
    if not isinstance(config.get("hyperparameters", {}), dict):
        raise BadFileError(f"{path}: hyperparameters must be a JSON object")
    return config


def train_offline_in_folder(
    args: argparse.Namespace, config: dict, folder: RunFolder, resume: bool
) -> int:
    """Train (or continue) the offline run of ``config`` in ``folder`` (locked)."""
    run_dir = folder.path
    cls = ALGORITHMS[config["class"]]
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    checkpoint = latest_checkpoint(ckpt_dir) if resume else None
    tb = os.path.join(run_dir, "tb")
    if checkpoint is not None:
        agent = cls.load(
            checkpoint,
            env=config["dataset"],
            device=config["device"],
            tensorboard_log=tb,
            data_root=config["data_root"],
        )
        print(f"resuming {run_dir} from {checkpoint} at {agent.num_timesteps} steps")
    else:
        agent = cls(
            config["policy"],
            config["dataset"],
            seed=config["seed"],
            device=config["device"],
            tensorboard_log=tb,
            data_root=config["data_root"],
            verbose=args.verbose,
            **config["hyperparameters"],
        )
    lock = contextlib.nullcontext() if resume else folder.writing()
    with lock:
        if not resume:
            if folder.holds_run():  # another run got there first
                raise ValueError(f"{run_dir!r} already holds a run; use --resume {run_dir}")
            folder.write_config(config)
            print(f"{config['algo']} on {config['dataset']}: {agent.data.summary()}")
        return _learn_offline(args, config, folder, agent, checkpoint)


def _learn_offline(
    args: argparse.Namespace,
    config: dict,
    folder: RunFolder,
    agent: object,
    checkpoint: str | None,
) -> int:
    run_dir = folder.path
    ckpt_dir = folder.file("checkpoints")
    eval_path = folder.file("evaluations.csv")
    # rows past the checkpoint (or torn by a crash) are dropped: they will be evaluated again
    folder.repair_log("evaluations.csv", "step", agent.num_timesteps if checkpoint else 0)
    evaluation = OfflineEvalCallback(eval_path, config["eval_every"], config["eval_episodes"])
    checkpoints = IterationCheckpointCallback(config["checkpoint_every"], ckpt_dir, keep_last=2)
    remaining = config["steps"] - agent.num_timesteps
    tic = time.time()
    folder.write_status("running", steps=agent.num_timesteps)
    with folder.failure_recorded(lambda: {"steps": agent.num_timesteps}):
        if remaining > 0:
            agent.learn(
                remaining,
                callback=[checkpoints, evaluation],
                reset_num_timesteps=checkpoint is None,
                tb_log_name=config["algo"],
                progress_bar=not args.no_progress,
                log_interval=args.log_interval,
            )
    final = agent.save(os.path.join(run_dir, "final_model.zip"))
    last = evaluation.last
    if last is None or last["step"] != agent.num_timesteps:
        last = evaluation.evaluate()
    summary = {
        "algo": config["algo"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "steps": agent.num_timesteps,
        "final_mean_return": last["mean_return"],
        "final_normalized": last.get("mean_normalized"),
        "final_returns": last["returns"],
        "train_seconds": round(time.time() - tic, 1),
        "command": config["command"],
        "started_on": config.get("code_version"),
        "code_version": code_version(),
    }
    write_json_atomic(folder.file("summary.json"), summary)
    folder.write_status("completed", steps=agent.num_timesteps)
    print(
        f"done: {agent.num_timesteps} steps; final return {last['mean_return']:.1f}, "
        f"normalized {last.get('mean_normalized', float('nan')):.1f}; model {final}"
    )
    return 0


def command_oppo_eval(args: argparse.Namespace) -> int:
    """``mdpo oppo eval``: evaluate a saved offline agent in its env."""

    agent = Agent.load(args.model, device=args.device)
    if not isinstance(agent, OfflineAgent):
        raise ValueError(
            f"{args.model!r} holds a {agent.algo_name} agent, not an offline one (use mdpo eval)"
        )
    if args.dataset:
        dataset = OfflineDataset.load(args.dataset, args.root)
        agent.ref_min_score, agent.ref_max_score = dataset.ref_min_score, dataset.ref_max_score
    result = agent.evaluate(args.episodes, args.seed)
    line = (
        f"{agent.algo_name} on {agent.env_id}: mean return {result['mean_return']:.1f} "
        f"± {np.std(result['returns']):.1f} over {args.episodes} episodes"
    )
    if "mean_normalized" in result:
        line += f", normalized score {result['mean_normalized']:.1f}"
    print(line)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(
                {**result, "model": args.model, "command": command_line(args)}, handle, indent=1
            )
    return 0


def add_parsers(sub) -> None:
    """The ``data`` and ``oppo`` command groups of ``mdpo``."""

    data = sub.add_parser("data")
    group = data.add_subparsers(dest="data_command", required=True)
    make = group.add_parser("make", help="make a dataset from the suite's own agents")
    add_threads_option(make)
    make.add_argument("env", help="gymnasium env id, e.g. Hopper-v5")
    make.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help="random actions, the teacher's medium or expert snapshot, half of each "
        "(medium-expert), or its training rollouts up to medium (medium-replay)",
    )
    size = make.add_mutually_exclusive_group()
    size.add_argument(
        "--episodes",
        type=int,
        help="whole episodes to collect (default: none; give it or --steps, "
        "neither for medium-replay)",
    )
    size.add_argument(
        "--steps",
        type=int,
        help="transitions to collect (default: none; give it or --episodes, "
        "neither for medium-replay)",
    )
    make.add_argument("--seed", type=int, default=0, help="seed of the rollouts")
    make.add_argument("--id", help="Minari dataset id (default mdpo/<env>/<kind>-v0)")
    make.add_argument("--root", help=ROOT_HELP)
    make.add_argument("--teacher-algo", default="PPO", help="RL agent trained as the teacher")
    make.add_argument(
        "--teacher-steps", type=int, default=1_000_000, help="env steps of the teacher's training"
    )
    make.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher's training")
    make.add_argument(
        "--teacher-eval-every", type=int, default=50_000, help="env steps between teacher snapshots"
    )
    make.add_argument(
        "--teacher-dir", help="teacher run folder (default runs/teachers/...; reused by every kind)"
    )
    make.add_argument(
        "--reference-episodes",
        type=int,
        default=100,
        help="episodes of the random and expert reference returns",
    )
    make.add_argument("--force", action="store_true", help="replace an existing dataset")
    make.add_argument("--no-progress", action="store_true", help="no progress bars")
    make.set_defaults(func=command_data_make)

    info = group.add_parser("info", help="what a dataset holds")
    info.add_argument("dataset", help="Minari id or dataset folder")
    info.add_argument("--root", help=ROOT_HELP)
    info.set_defaults(func=command_data_info)

    labels = group.add_parser("labels", help="write scripted preference labels to a CSV")
    labels.add_argument("dataset", help="Minari id or dataset folder")
    labels.add_argument(
        "--labels", required=True, help="scripted:K=20,queries=N[,ties=..,foresee=F]"
    )
    labels.add_argument("--out", required=True, help="CSV to write")
    labels.add_argument("--root", help=ROOT_HELP)
    labels.set_defaults(func=command_data_labels)

    oppo = sub.add_parser("oppo")
    ogroup = oppo.add_subparsers(dest="oppo_command", required=True)
    train = ogroup.add_parser("train", help="train OPPO (or BC / FilteredBC) on a dataset")
    add_threads_option(train)
    train.add_argument(
        "--dataset", help="Minari id or dataset folder (default: none; needed unless --resume)"
    )
    train.add_argument("--root", help=ROOT_HELP)
    train.add_argument("--algo", default="OPPO", help="OPPO, BC or FilteredBC")
    train.add_argument(
        "--labels",
        default="scripted",
        help="scripted[:K=20,queries=N,ties=drop|half,seed=S,foresee=F] or file:labels.csv[,K=20]",
    )
    train.add_argument(
        "--policy",
        default="mlp",
        choices=("mlp", "transformer"),
        help="policy network (transformer: OPPO only)",
    )
    train.add_argument("--steps", type=int, default=100_000, help="gradient steps")
    train.add_argument("--seed", type=int, default=0, help="random seed of the training")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a hyperparameter (repeatable), e.g. --set batch_size=32 (default: the "
        "algorithm's values)",
    )
    train.add_argument(
        "--eval-every",
        type=int,
        default=5_000,
        help="gradient steps between evaluations in the env",
    )
    train.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    train.add_argument(
        "--checkpoint-every", type=int, default=5_000, help="gradient steps between checkpoints"
    )
    train.add_argument(
        "--log-interval", type=int, default=1_000, help="gradient steps between training logs"
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--out", help="run folder (default runs/oppo/...)")
    train.add_argument(
        "--resume", help="continue the run in this folder (default: start a new run)"
    )
    train.add_argument("--verbose", type=int, default=0, help="0 quiet, 1 training tables")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=command_oppo_train)

    evaluate = ogroup.add_parser("eval", help="evaluate a saved OPPO / BC model in its env")
    evaluate.add_argument("model", help="model file (.zip) of mdpo oppo train")
    evaluate.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    evaluate.add_argument(
        "--seed",
        type=int,
        default=100_000,
        help="reset seed of the first episode, +1 for each next one",
    )
    evaluate.add_argument(
        "--dataset",
        help="take the normalization references from this one (default: those saved with "
        "the model)",
    )
    evaluate.add_argument("--root", help=ROOT_HELP)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    evaluate.add_argument("--out", help="JSON file of the returns (default: none, print only)")
    evaluate.set_defaults(func=command_oppo_eval)
