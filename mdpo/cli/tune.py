"""``mdpo tune ALGO ENV``: hyperparameter search with Optuna (TPE sampler, median pruner on the
intermediate evaluations), resumable from its storage.

Each trial trains ``ALGO`` on ``ENV`` for ``--steps`` env steps with sampled hyperparameters
(RL Baselines3 Zoo's search spaces, trimmed), evaluating the deterministic policy every
``--eval-every`` steps; the pruner stops trials whose evaluations trail the median of the
earlier ones at the same step. The study lives in ``--storage`` (default
``sqlite:///OUT/study.db``): the same command again continues it, and several processes (or
machines sharing an RDB storage) given the same study run trials side by side. The best
trial's hyperparameters are written to ``OUT/best.yaml`` (``--set`` values for ``mdpo train``).
"""

from __future__ import annotations

import argparse
import fcntl
import os
from typing import Any

import yaml

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0, the suite's own env
from mdpo.cli.overrides import parse_overrides
from mdpo.cli.threads import add_threads_option
from mdpo.core.registry import RL_ALGORITHMS
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import check_env_id

#: per algorithm: name → ("log", low, high) | ("float", low, high) | ("choice", [values])
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "PPO": {
        "learning_rate": ("log", 1e-5, 1e-2),
        "n_steps": ("choice", [64, 128, 256, 512, 1024, 2048]),
        "batch_size": ("choice", [32, 64, 128, 256]),
        "n_epochs": ("choice", [1, 5, 10, 20]),
        "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": ("choice", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99]),
        "clip_range": ("choice", [0.1, 0.2, 0.3]),
        "ent_coef": ("log", 1e-8, 1e-1),
    },
    "TRPO": {
        "learning_rate": ("log", 1e-5, 1e-2),
        "n_steps": ("choice", [256, 512, 1024, 2048]),
        "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": ("choice", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99]),
        "target_kl": ("choice", [0.005, 0.01, 0.03, 0.05]),
    },
    "MDPO": {
        "learning_rate": ("log", 1e-5, 1e-2),
        "n_steps": ("choice", [256, 512, 1024, 2048]),
        "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": ("choice", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99]),
    },
    "SAC": {
        "learning_rate": ("log", 1e-5, 1e-2),
        "batch_size": ("choice", [64, 128, 256, 512]),
        "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "tau": ("choice", [0.001, 0.005, 0.01, 0.02, 0.05]),
        "learning_starts": ("choice", [100, 1000, 10000]),
        "train_freq": ("choice", [1, 4, 8, 16]),
    },
    "OffPolicyMDPO": {
        "learning_rate": ("log", 1e-5, 1e-2),
        "batch_size": ("choice", [64, 128, 256, 512]),
        "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "learning_starts": ("choice", [100, 1000, 10000]),
    },
}


def sample(trial: Any, algo: str, n_envs: int) -> dict[str, Any]:
    """Hyperparameters of ``algo`` for ``trial`` (a minibatch never exceeds the rollout)."""
    params: dict[str, Any] = {}
    for name, (kind, *bounds) in SEARCH_SPACES[algo].items():
        if kind == "log":
            params[name] = trial.suggest_float(name, bounds[0], bounds[1], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, bounds[0], bounds[1])
        else:
            params[name] = trial.suggest_categorical(name, bounds[0])
    return params


def fit_minibatch(params: dict[str, Any], n_envs: int) -> dict[str, Any]:
    """``params`` with the minibatch no larger than the rollout (``n_steps × n_envs``)."""
    if "n_steps" in params and "batch_size" in params:
        params["batch_size"] = min(params["batch_size"], params["n_steps"] * n_envs)
    return params


def command_tune(args: argparse.Namespace) -> int:
    """Run (or continue) the study; print and write the best trial."""
    import optuna  # optional dependency (the tune extra): only for tuning

    algo = next((a for a in RL_ALGORITHMS if a.lower() == args.algo.lower()), None)
    if algo is None or algo not in SEARCH_SPACES:
        raise ValueError(f"mdpo tune takes one of {', '.join(SEARCH_SPACES)}, not {args.algo!r}")
    check_env_id(args.env)
    for name in ("trials", "steps", "eval_every", "eval_episodes", "n_envs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    fixed = parse_overrides(algo, args.set or [])
    os.makedirs(args.out, exist_ok=True)
    storage = args.storage or f"sqlite:///{os.path.abspath(os.path.join(args.out, 'study.db'))}"
    study_name = args.study_name or f"{algo}-{args.env}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # workers started together would each create the storage's tables (SQLite then fails
    # with "table studies already exists"): one creates them at a time
    with open(os.path.join(args.out, ".create.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=args.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            load_if_exists=True,
        )
    cls = RL_ALGORITHMS[algo]

    def objective(trial: Any) -> float:
        params = fit_minibatch({**sample(trial, algo, args.n_envs), **fixed}, args.n_envs)
        trial.set_user_attr("hyperparameters", params)  # what the trial trained with
        agent = cls(
            "MlpPolicy",
            args.env,
            n_envs=args.n_envs,
            seed=args.seed + trial.number,
            device="cpu",
            **params,
        )
        mean = float("-inf")
        evaluations = 0
        while agent.num_timesteps < args.steps:
            chunk = min(args.eval_every, args.steps - agent.num_timesteps)
            agent.learn(chunk, reset_num_timesteps=agent.num_timesteps == 0)
            mean, _ = evaluate_policy(
                agent, args.env, n_eval_episodes=args.eval_episodes, seed=10_000 + trial.number
            )
            trial.report(mean, evaluations)
            evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned()
        return mean

    done = len([t for t in study.trials if t.state.is_finished()])
    todo = max(0, args.trials - done)
    print(f"study {study_name!r} in {storage}: {done} trials done, {todo} to run")
    if todo:
        # other processes may share the study: stop when it holds --trials in all (each
        # process checks after its trial, so workers can overshoot by at most one each)
        enough = optuna.study.MaxTrialsCallback(args.trials, states=None)
        study.optimize(
            objective, n_trials=todo, callbacks=[enough], show_progress_bar=not args.no_progress
        )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise ValueError("no trial completed (all pruned or failed): give more --steps")
    best = study.best_trial
    best_params = best.user_attrs.get("hyperparameters", {**best.params, **fixed})
    path = os.path.join(args.out, "best.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(
            {
                "algo": algo,
                "env": args.env,
                "value": best.value,
                "trial": best.number,
                "hyperparameters": best_params,
            },
            handle,
            sort_keys=False,
        )
    sets = " ".join(f"--set {k}={v}" for k, v in best_params.items())
    pruned = len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED])
    print(
        f"best: trial {best.number}, mean evaluation return {best.value:.2f} "
        f"({len(finished)} completed, {pruned} pruned); written to {path}\n"
        f"train it: mdpo train {algo} {args.env} {sets}"
    )
    return 0


def command_tune_report(args: argparse.Namespace) -> int:
    """``mdpo tune-report``: the study's optimization history and parameter importances."""
    import warnings

    import matplotlib  # matplotlib is slow to import: only when plotting
    import optuna  # optional dependency (the tune extra): only for tuning

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    database = os.path.join(args.out, "study.db")
    if args.storage is None and not os.path.exists(database):
        raise ValueError(f"no study in {args.out!r} (no study.db): run mdpo tune there first")
    storage = args.storage or f"sqlite:///{os.path.abspath(database)}"
    names = optuna.get_all_study_names(storage)
    if not names:
        raise ValueError(f"no study in {storage}")
    name = args.study_name or names[0]
    if name not in names:
        raise ValueError(f"no study {name!r} in {storage}; it holds {', '.join(names)}")
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        raise ValueError(f"study {name!r} has {len(complete)} completed trials; plots need 2")
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for title, plot in (
            ("history", plots.plot_optimization_history),
            ("importances", plots.plot_param_importances),
        ):
            axis = plot(study)
            axis.set_title(f"{name}: {axis.get_title()}")
            path = os.path.join(args.out, f"{title}.png")
            axis.figure.tight_layout()
            axis.figure.savefig(path, dpi=110)
            written.append(path)
    print(
        f"{name}: {len(study.trials)} trials, best {study.best_value:.2f}; wrote "
        f"{', '.join(written)}"
    )
    return 0


def add_parser(sub) -> None:
    """Mount ``mdpo tune``."""
    tune = sub.add_parser(
        "tune",
        description=__doc__.split("\n\n")[0],
    )
    tune.add_argument("algo", help=f"algorithm: {', '.join(SEARCH_SPACES)}")
    tune.add_argument("env", help="gymnasium env id")
    tune.add_argument("--trials", type=int, default=20, help="trials of the study in all")
    tune.add_argument("--steps", type=int, default=50_000, help="env steps per trial")
    tune.add_argument("--eval-every", type=int, default=10_000, help="env steps between evals")
    tune.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    tune.add_argument("--n-envs", type=int, default=1, help="parallel envs per trial")
    tune.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sampler and the trials (give each parallel worker its own)",
    )
    tune.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a hyperparameter fixed for every trial, repeatable (default: none, every "
        "tuned one is sampled)",
    )
    tune.add_argument("--out", default="tune", help="folder of the study and best.yaml")
    tune.add_argument("--study-name", help="default ALGO-ENV")
    tune.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_option(tune)
    tune.set_defaults(func=command_tune)
    report = sub.add_parser("tune-report")
    report.add_argument("--out", default="tune", help="the study's folder (figures go there)")
    report.add_argument("--study-name", help="default: the storage's first study")
    report.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    report.set_defaults(func=command_tune_report)
