"""``mdpo hydro ...``: SDDP training, policy simulation, the perfect-foresight bound, plots.

Every command judges its policy on the same evaluation scenarios (``--scenarios`` paths from
``--scenario-seed``, by default 100 from seed 2024) and writes, into its ``--out`` folder,
``costs.csv`` (cost per scenario), ``stages.csv`` (per-stage means: cost, total and per-reservoir
volume, thermal and hydro generation, deficit), ``stages.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import time

import numpy as np

import mdpo
from mdpo import TSDDR
from mdpo.cli.run_folder import RunFolder, write_json_atomic
from mdpo.cli.threads import add_threads_option
from mdpo.core.limits import (
    MAX_CUTS,
    BadFileError,
    field_float,
    field_int,
    json_object,
    load_json_file,
)
from mdpo.envs.hydro import load_case
from mdpo.envs.hydro.env import HydroDispatchEnv
from mdpo.envs.hydro.model import FORMULATIONS, build_deterministic_equivalent
from mdpo.envs.hydro.problem import HydroProblem
from mdpo.envs.hydro.sddp import SDDP, is_cuts_file
from mdpo.envs.hydro.simulate import (
    StageRecords,
    plot_stages,
    read_stage_means,
    simulate_env_policy,
    stage_record,
    write_summary,
)
from mdpo.rl.callbacks import BaseCallback
from mdpo.rules.backend import BoundUpdate, solve_batch

EVALUATION_SEED = 2024  # the fixed out-of-sample scenarios every method is judged on


def evaluation_paths(case, n: int, horizon: int, seed: int = EVALUATION_SEED) -> np.ndarray:
    """``[n, horizon]`` inflow column indices, stage-wise independent, from a fixed seed.
    Path ``i`` comes from ``(seed, i)`` alone, drawn stage by stage: fewer scenarios are the
    first of the same paths, and a shorter horizon their first stages."""
    return np.stack(
        [case.sample_paths(1, horizon, np.random.default_rng([seed, i]))[0] for i in range(n)]
    )


def command_line(args: argparse.Namespace) -> str:
    """The command that produced a result, as typed (``mdpo ...``)."""

    return "mdpo " + shlex.join(getattr(args, "argv", None) or [])


def _finish(args, case, records, label: str, extra: dict) -> dict:
    """Write a policy's records and summary into ``args.out`` and print one line."""

    summary = {
        "label": label,
        "command": command_line(args),
        "case": case.name,
        "load_scale": args.load_scale,
        "scenario_seed": args.scenario_seed,
        "formulation": args.formulation,
        **extra,
        **records.write(args.out, case, label),
    }
    write_summary(os.path.join(args.out, "summary.json"), summary)
    low, high = summary["ci95"]
    print(
        f"{label} on {case.name}: mean cost over {summary['stages']} stages and "
        f"{summary['scenarios']} scenarios {summary['mean_cost']:.6g} "
        f"[{low:.6g}, {high:.6g}] (95% CI); files in {args.out}"
    )
    return summary


def read_json_file(path: str) -> dict:
    """A JSON object written by these commands (``summary.json``, ``train_state.json``,
    ``best_model.zip.json``), within :mod:`mdpo.core.limits`' bounds.

    Raises:
        BadFileError: naming the file (and the field).
    """
    return json_object(load_json_file(path), path)


def read_training_log(path: str) -> list[tuple[float, float, float]]:
    """``(lower bound, forward cost, seconds)`` per iteration of SDDP's ``training.csv``.

    Raises:
        BadFileError: a missing column or a value that is not a finite number.
    """
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                if i >= MAX_CUTS:  # one row per iteration, each adding cuts: bounded by them
                    raise BadFileError(f"{path}: more than {MAX_CUTS} rows")
                values = []
                for key in ("lower_bound", "forward_cost", "seconds"):
                    text = row.get(key)
                    try:
                        value = float(text) if isinstance(text, str) and len(text) <= 64 else None
                    except ValueError:
                        value = None
                    values.append(field_float(value, f"{path} row {i + 1}: {key}"))
                rows.append(tuple(values))
    except (csv.Error, UnicodeDecodeError) as err:
        raise BadFileError(f"{path}: not a training log ({str(err)[:120]})") from None
    return rows


def command_sddp(args: argparse.Namespace) -> int:
    """Train SDDP, save its cuts, simulate it on the fixed evaluation scenarios (holding the
    run folder's lock while it writes there)."""

    if args.report > args.horizon:
        raise ValueError(f"--report {args.report} exceeds --horizon {args.horizon}")
    folder = RunFolder(args.out, "mdpo hydro sddp")
    with folder.writing(resume=not args.restart):
        return run_in_folder(folder, args, _sddp_in_folder)


def run_in_folder(folder: RunFolder, args: argparse.Namespace, body) -> int:
    """Run ``body(args)`` in ``folder``: the command and its arguments in ``config.json``, the
    status in ``status.json`` (running, failed with the error, completed)."""
    plain = (str, int, float, bool, type(None))
    config = {
        key: value if isinstance(value, plain) else str(value)
        for key, value in vars(args).items()
        if key not in ("func", "argv")
    }
    folder.write_config({"command": command_line(args), "arguments": config})
    folder.write_status("running")
    with folder.failure_recorded():
        code = body(args)
    folder.write_status("completed")
    return code


def train_formulation(args: argparse.Namespace) -> str:
    """The stage problems SDDP builds its cuts on: ``--train-formulation``, else the evaluated
    formulation where it is convex (dc, soc) and its relaxation (soc) for ac."""
    chosen = args.train_formulation or ("soc" if args.formulation == "ac" else args.formulation)
    if chosen == "ac":
        raise ValueError(
            "--train-formulation ac: SDDP's cuts need convex stage problems (dc, or soc, the "
            "relaxation of ac); simulate on ac with --formulation ac"
        )
    return chosen


def sddp_label(trained_on: str, evaluated_on: str) -> str:
    """``SDDP``, or ``SDDP (SOC cuts)`` when simulated on another formulation than its cuts'."""
    return "SDDP" if trained_on == evaluated_on else f"SDDP ({trained_on.upper()} cuts)"


def _sddp_in_folder(args: argparse.Namespace) -> int:

    case = load_case(args.case)
    trained_on = train_formulation(args)
    sddp = SDDP(
        case, args.horizon, load_scale=args.load_scale, seed=args.seed, formulation=trained_on
    )
    cuts_path = os.path.join(args.out, "cuts.json.gz")
    log_path = os.path.join(args.out, "training.csv")
    if os.path.exists(cuts_path) and os.path.exists(log_path) and not args.restart:
        sddp.load_cuts(cuts_path)
        for lower, forward, seconds in read_training_log(log_path):
            sddp.log.lower_bounds.append(lower)
            sddp.log.forward_costs.append(forward)
            sddp.log.seconds.append(seconds)
        print(f"resuming SDDP from {cuts_path} after {len(sddp.log.lower_bounds)} iterations")
    resumed_at = len(sddp.log.lower_bounds)

    def save(trained: SDDP) -> None:
        log = trained.log
        trained.save_cuts(cuts_path)
        with open(log_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["iteration", "lower_bound", "forward_cost", "seconds"])
            writer.writerows(
                [i + 1, lb, fc, s]
                for i, (lb, fc, s) in enumerate(
                    zip(log.lower_bounds, log.forward_costs, log.seconds)
                )
            )

    def checkpoint(trained: SDDP) -> None:
        if len(trained.log.lower_bounds) % args.save_every == 0:
            save(trained)

    start = time.perf_counter()
    log = sddp.train(
        args.iterations,
        time_limit=args.time_limit,
        stall_iterations=args.stall_iterations,
        stall_tolerance=args.stall_tolerance,
        progress=not args.no_progress,
        callback=checkpoint,
    )
    train_seconds = log.seconds[-1]
    save(sddp)
    paths = evaluation_paths(case, args.scenarios, args.report, args.scenario_seed)
    # simulated by fresh models holding the saved cuts: where a stage problem has several
    # optimal solutions, the one returned depends on the solver's previous bases, so this is
    # what `mdpo hydro simulate cuts.json.gz` reproduces exactly
    policy = SDDP(case, args.horizon, load_scale=args.load_scale, formulation=trained_on)
    policy.load_cuts(cuts_path)
    records = policy.simulate(
        paths, stages=args.report, progress=not args.no_progress, formulation=args.formulation
    )
    if resumed_at >= args.iterations:
        stopped = f"no training (resumed after {resumed_at} iterations, see training.csv)"
    elif len(log.lower_bounds) >= args.iterations:
        stopped = "iterations"
    elif args.time_limit and time.perf_counter() - start > args.time_limit:
        stopped = "time limit"
    else:
        stopped = "stall rule"

    _finish(
        args,
        case,
        records,
        sddp_label(trained_on, args.formulation),
        {
            "train_formulation": trained_on,
            "horizon": args.horizon,
            "iterations": len(log.lower_bounds),
            "stopped_by": stopped,
            "stall_iterations": args.stall_iterations,
            "stall_tolerance": args.stall_tolerance,
            "train_seconds": train_seconds,
            "lower_bound": log.lower_bounds[-1],
        },
    )
    print(
        f"SDDP trained {len(log.lower_bounds)} iterations in {train_seconds:.0f} s (stopped "
        f"by: {stopped}), lower bound {log.lower_bounds[-1]:.6g} over {args.horizon} "
        "stages"
    )
    return 0


def command_bound(args: argparse.Namespace) -> int:
    """Perfect-foresight cost of each evaluation scenario (the wait-and-see lower bound)."""

    if args.extra_stages < 0:
        raise ValueError(f"--extra-stages must be >= 0, got {args.extra_stages}")
    case = load_case(args.case)
    stages = args.horizon + args.extra_stages
    paths = evaluation_paths(case, args.scenarios, stages, args.scenario_seed)
    scenarios = [case.path_inflows(path) for path in paths]
    problem = build_deterministic_equivalent(
        case, scenarios[0], load_scale=args.load_scale, formulation=args.formulation
    )
    cols = problem.inflow.ravel()
    updates = [BoundUpdate(cols, s.ravel(), s.ravel()) for s in scenarios]
    start = time.perf_counter()
    solutions = solve_batch(
        problem.program, updates, workers=args.workers, progress=not args.no_progress
    )
    seconds = time.perf_counter() - start
    records = StageRecords.empty(len(paths), args.horizon, len(case.plants))
    for i, solution in enumerate(solutions):
        for t in range(args.horizon):
            records.store(
                i,
                t,
                stage_record(
                    case,
                    problem.program,
                    solution.primal,
                    problem.generation[t],
                    problem.deficit[t],
                    problem.volume_out[t],
                ),
            )
    label = "perfect foresight" + (f" (+{args.extra_stages} stages)" if args.extra_stages else "")
    _finish(
        args,
        case,
        records,
        label,
        {
            "horizon": args.horizon,
            "extra_stages": args.extra_stages,
            "solve_seconds": seconds,
            "workers": args.workers,
        },
    )
    return 0


def load_policy(
    spec: str,
    case,
    stages: int,
    load_scale: float,
    slack_penalty=None,
    formulation: str = "dc",
):
    """``(label, simulate(paths, progress) -> StageRecords)`` for a policy named on the
    command line: ``myopic`` (no value on stored water but a tie-break that keeps it, see
    ``SDDP.myopic``), an SDDP cut file (``cuts.json.gz``), or a model file of an mdpo agent
    trained on ``HydroDispatch-v0``; each stage problem of the simulation has the power flow
    ``formulation``."""

    if spec == "myopic":
        sddp = SDDP.myopic(case, stages, load_scale=load_scale)

        def myopic(paths, progress):
            return sddp.simulate(paths, progress=progress, formulation=formulation)

        return "myopic", myopic
    if not os.path.isfile(spec):
        raise FileNotFoundError(
            f"policy {spec!r}: no such file (give 'myopic', an SDDP "
            "cuts.json.gz, or an mdpo model file)"
        )
    if is_cuts_file(spec):
        # the models of the stages simulated only, with their cuts: the file's horizon sizes
        # nothing (the cuts of later stages never act on the first ones)
        sddp = SDDP.from_cuts_file(spec, case, stages, load_scale=load_scale)

        def with_cuts(paths, progress):
            return sddp.simulate(paths, stages, progress=progress, formulation=formulation)

        return sddp_label(sddp.formulation, formulation), with_cuts

    agent = mdpo.load(spec, device="cpu")
    if isinstance(agent, mdpo.TSDDR) and agent.n_stages != stages:
        raise ValueError(f"{spec}: a rule for {agent.n_stages} stages cannot drive {stages}")
    env = HydroDispatchEnv(
        case,
        horizon=stages,
        load_scale=load_scale,
        slack_penalty=slack_penalty,
        formulation=formulation,
    )
    if agent.observation_space != env.observation_space or agent.action_space != env.action_space:
        raise ValueError(
            f"{spec}: the agent's spaces ({agent.observation_space}, "
            f"{agent.action_space}) are not HydroDispatch's on {case.name} "
            f"({env.observation_space}, {env.action_space})"
        )

    def act(obs):
        return agent.predict(obs, deterministic=True)[0]

    if isinstance(agent, mdpo.TSDDR):
        act = agent.actor()
    label = type(agent).__name__
    return label, lambda paths, progress: simulate_env_policy(env, act, paths, progress, label)


def command_simulate(args: argparse.Namespace) -> int:
    """Simulate a policy on the evaluation scenarios."""

    case = load_case(args.case)
    label, simulate = load_policy(
        args.policy, case, args.stages, args.load_scale, args.slack_penalty, args.formulation
    )
    paths = evaluation_paths(case, args.scenarios, args.stages, args.scenario_seed)
    start = time.perf_counter()
    records = simulate(paths, not args.no_progress)
    _finish(
        args,
        case,
        records,
        args.label or label,
        {"policy": args.policy, "simulate_seconds": time.perf_counter() - start},
    )
    return 0


TSDDR_POLICIES = {
    "lstm": "LSTMPolicy",
    "state": "StatePolicy",
    "strict": "StatePolicy",
    "linear": "LinearPolicy",
}
STRICT_PENALTY = 1e6  # far above the value of water (~28 000 per hm³): targets are followed


def command_tsddr(args: argparse.Namespace) -> int:
    """Train TS-DDR / TS-LDR (resumable), then simulate its best model on the evaluation
    scenarios (holding the run folder's lock while it writes there)."""

    folder = RunFolder(args.out, "mdpo hydro tsddr")
    with folder.writing(resume=not args.restart):
        return run_in_folder(folder, args, _tsddr_in_folder)


def start_from(agent: TSDDR, path: str) -> None:
    """Start ``agent``'s training from the rule of a saved TS-DDR model (e.g. trained on the DC
    network, fine-tuned on AC): the same policy class and shapes, the weights only."""
    trained = mdpo.load(path, device="cpu")
    if not isinstance(trained, TSDDR) or type(trained.policy) is not type(agent.policy):
        raise ValueError(
            f"--init {path}: not a {type(agent.policy).__name__} TS-DDR model (it holds a "
            f"{type(getattr(trained, 'policy', trained)).__name__})"
        )
    try:
        agent.policy.load_state_dict(trained.policy.state_dict())
    except RuntimeError:  # shapes of another case or horizon
        raise ValueError(f"--init {path}: its rule has other shapes (another case?)") from None


def _tsddr_in_folder(args: argparse.Namespace) -> int:

    case = load_case(args.case)
    penalty = args.slack_penalty
    if penalty is None and args.policy == "strict":
        penalty = STRICT_PENALTY
    problem = HydroProblem(
        case,
        args.stages,
        load_scale=args.load_scale,
        slack_penalty=penalty,
        formulation=args.formulation,
    )
    state_path = os.path.join(args.out, "train_state.json")
    best_path = os.path.join(args.out, "best_model.zip")
    folder = RunFolder(args.out, "mdpo hydro tsddr")
    checkpoints = folder.checkpoints("checkpoint_*.zip")  # zero-padded steps: step order
    previous_seconds = 0.0
    started_from = None  # --init's model, for a new run (a resumed one started before)
    if checkpoints and not args.restart:
        # the checkpoint's best model path is relative to this folder (TSDDR.load refuses
        # one that leads out of it): a copied run folder writes into the copy
        agent = TSDDR.load(
            checkpoints[-1],
            env=problem,
            workers=args.workers,
            solver_backend=args.backend,
            ray_address=args.address,
        )
        previous_seconds = field_float(
            read_json_file(state_path).get("train_seconds"), f"{state_path}: train_seconds"
        )
        if previous_seconds < 0:
            raise BadFileError(f"{state_path}: train_seconds is negative")
        started_from = read_json_file(state_path).get("init")  # recorded, never opened
        if started_from is not None and not isinstance(started_from, str):
            raise BadFileError(f"{state_path}: init must be a path or null")
        if os.path.exists(f"{best_path}.json"):
            agent.best_eval_cost = field_float(
                read_json_file(f"{best_path}.json").get("eval_mean_cost"),
                f"{best_path}.json: eval_mean_cost",
            )
        print(f"resuming from {checkpoints[-1]} at step {agent.num_timesteps}")
    else:
        policy_kwargs = (
            {"reachable_gain": problem.reachable_gain} if args.policy == "strict" else None
        )
        agent = TSDDR(
            TSDDR_POLICIES[args.policy],
            problem,
            learning_rate=args.learning_rate,
            policy_kwargs=policy_kwargs,
            batch_size=args.batch,
            workers=args.workers,
            solver_backend=args.backend,
            ray_address=args.address,
            eval_freq=args.eval_freq,
            eval_scenarios=args.eval_scenarios,
            best_model_path=best_path,
            tensorboard_log=os.path.join(args.out, "tb"),
            seed=args.seed,
        )
        if args.init:
            start_from(agent, args.init)
            started_from = args.init
    start = time.perf_counter()

    class Checkpoint(BaseCallback):
        """Save the agent and the training time every ``--checkpoint-freq`` steps."""

        def _on_step(self) -> bool:
            if self.model.num_timesteps % args.checkpoint_freq == 0:
                name = f"checkpoint_{self.model.num_timesteps:07d}"
                self.model.save(folder.file(name))
                seconds = previous_seconds + time.perf_counter() - start
                write_json_atomic(
                    state_path,
                    {
                        "steps": self.model.num_timesteps,
                        "train_seconds": seconds,
                        "init": started_from,
                    },
                )
                folder.keep_last("checkpoint_*.zip", 1)
            return True

    remaining = args.steps - agent.num_timesteps
    if remaining > 0:
        agent.learn(
            remaining,
            callback=Checkpoint(),
            reset_num_timesteps=False,
            progress_bar=not args.no_progress,
        )
    train_seconds = previous_seconds + time.perf_counter() - start
    agent.save(os.path.join(args.out, "model.zip"))
    trained_steps, best = agent.num_timesteps, {}
    if os.path.exists(best_path):  # the best on the validation scenarios (not the reported ones)
        agent = TSDDR.load(best_path, env=problem)
        best = read_json_file(f"{best_path}.json")
        field_float(best.get("eval_mean_cost"), f"{best_path}.json: eval_mean_cost")
    paths = evaluation_paths(case, args.scenarios, args.stages, args.scenario_seed)

    env = HydroDispatchEnv(
        case,
        horizon=args.stages,
        load_scale=args.load_scale,
        slack_penalty=problem.slack_penalty,
        formulation=args.formulation,
    )
    records = simulate_env_policy(env, agent.actor(), paths, not args.no_progress, "TS-DDR")
    label = {
        "lstm": "TS-DDR (LSTM)",
        "state": "TS-DDR (state)",
        "strict": "TS-DDR (strict)",
        "linear": "TS-LDR",
    }[args.policy]
    _finish(
        args,
        case,
        records,
        label,
        {
            "policy": args.policy,
            "steps": trained_steps,
            "batch": agent.batch_size,
            "learning_rate": agent.learning_rate,
            "workers": args.workers,
            "train_seconds": train_seconds,
            "model_step": agent.num_timesteps,
            "validation_cost": best.get("eval_mean_cost"),
            "slack_penalty": problem.slack_penalty,
            "init": started_from,
        },
    )
    return 0


def read_summary(path: str) -> dict:
    """A ``summary.json`` of these commands, with the fields :func:`command_compare` uses
    checked (label, case, scenarios, stages, scenario seed, mean cost, its interval).

    Raises:
        BadFileError: naming the file and the field.
    """
    summary = read_json_file(path)
    for key in ("label", "case"):
        if not isinstance(summary.get(key), str) or len(summary[key]) > 200:
            raise BadFileError(f"{path}: {key} must be a string of at most 200 characters")
    for key in ("scenarios", "stages", "scenario_seed"):
        field_int(summary.get(key), f"{path}: {key}", 0)
    field_float(summary.get("mean_cost"), f"{path}: mean_cost")
    interval = summary.get("ci95")
    if not isinstance(interval, list) or len(interval) != 2:
        raise BadFileError(f"{path}: ci95 must be a list [low, high]")
    for value in interval:
        field_float(value, f"{path}: ci95", allow_none=True)
    if summary.get("train_seconds") is not None:
        field_float(summary["train_seconds"], f"{path}: train_seconds")
    if summary.get("formulation", "dc") not in FORMULATIONS:
        raise BadFileError(f"{path}: formulation must be one of {', '.join(FORMULATIONS)}")
    for key in ("shed_mwh", "no_shedding_share"):
        if summary.get(key) is not None:
            field_float(summary[key], f"{path}: {key}")
    return summary


def command_compare(args: argparse.Namespace) -> int:
    """A table (mean cost, 95% CI, gaps to the bound and to SDDP, training time) and the
    per-stage figure of several result folders."""

    rows, runs = [], {}
    folders = [f for f in args.folders if os.path.isdir(f)]  # a shell glob also lists files
    for folder in folders:
        if not os.path.exists(os.path.join(folder, "summary.json")):
            raise ValueError(f"{folder}: no summary.json (not a result folder of mdpo hydro)")
        summary = read_summary(os.path.join(folder, "summary.json"))
        summary["folder"] = folder
        if any(r["label"] == summary["label"] for r in rows):  # two runs of one method
            summary["label"] += f" [{os.path.basename(os.path.normpath(folder))}]"
        rows.append(summary)
        runs[summary["label"]] = read_stage_means(os.path.join(folder, "stages.csv"))
    keys = {(r["scenarios"], r["stages"], r["scenario_seed"]) for r in rows}
    if len(keys) > 1:
        raise ValueError(f"the folders were evaluated on different scenarios: {sorted(keys)}")
    formulations = {r.get("formulation", "dc") for r in rows}
    if args.formulation is not None:
        formulations.add(args.formulation)
    if len(formulations) > 1:
        raise ValueError(
            f"the folders were evaluated on different power flows: {sorted(formulations)} "
            "(compare one formulation at a time)"
        )
    formulation = formulations.pop()
    costs = {
        r["label"]: np.loadtxt(
            os.path.join(r["folder"], "costs.csv"), delimiter=",", skiprows=1, ndmin=2
        )[:, 1]
        for r in rows
    }
    bound = next((r["mean_cost"] for r in rows if r["label"] == "perfect foresight"), None)
    reference = args.reference or next(
        (name for name in ("SDDP", "SDDP (SOC cuts)") if name in costs),
        next((name for name in costs if name.startswith("SDDP")), None),
    )
    if reference is not None and reference not in costs:
        raise ValueError(f"--reference {reference!r}: no folder has that label")
    sddp = costs.get(reference) if reference else None

    def paired(label: str) -> str:
        """Mean difference to the reference (SDDP) on the same scenarios, with its 95% CI."""
        if sddp is None or label == reference:
            return ""
        diff = costs[label] - sddp
        half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
        return f"{100 * diff.mean() / sddp.mean():+.2f}% ± {100 * half / sddp.mean():.2f}"

    lines = [
        f"| method | mean cost | 95% CI | vs perfect foresight | vs {reference or 'SDDP'} "
        "(paired, 95% CI) | stages without shedding | shed energy | training |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: r["mean_cost"]):
        mean, (low, high) = r["mean_cost"], [np.nan if v is None else v for v in r["ci95"]]
        gap = f"{100 * (mean / bound - 1):+.2f}%" if bound else ""
        seconds = r.get("train_seconds")
        train = f"{seconds:.0f} s" if seconds is not None else ""
        shed = r.get("shed_mwh")
        no_shed = r.get("no_shedding_share")
        lines.append(
            f"| {r['label']} | {mean:,.0f} | [{low:,.0f}, {high:,.0f}] | {gap} | "
            f"{paired(r['label'])} | "
            f"{'' if no_shed is None else f'{100 * no_shed:.1f}%'} | "
            f"{'' if shed is None else f'{shed:,.1f} MWh'} | {train} |"
        )
    os.makedirs(args.out, exist_ok=True)
    table = "\n".join(lines)
    scenarios, stages, seed = keys.pop()
    with open(os.path.join(args.out, "comparison.md"), "w") as handle:
        handle.write(
            f"Command: `{command_line(args)}`\n\n{stages} stages, {scenarios} "
            f"evaluation scenarios (seed {seed}), every stage problem with the "
            f"{formulation.upper()} power flow; costs without target-slack penalties; "
            "stages without shedding: the share of (scenario, stage) pairs whose stage "
            "problem met the load without deficit; shed energy: the mean per scenario."
            f"\n\n{table}\n"
        )
    plot_stages(os.path.join(args.out, "stages.png"), load_case(rows[0]["case"]), runs)
    print(table)
    print(f"wrote {args.out}/comparison.md and stages.png")
    return 0


def command_plot(args: argparse.Namespace) -> int:
    """Per-stage means of several result folders in one figure."""

    runs = {}
    for folder in args.folders:
        label = os.path.basename(os.path.normpath(folder))
        summary_path = os.path.join(folder, "summary.json")
        if os.path.exists(summary_path):
            label = read_summary(summary_path)["label"]
        runs[label] = read_stage_means(os.path.join(folder, "stages.csv"))
    plot_stages(args.out, load_case(args.case), runs)
    print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    """The ``hydro`` command group of ``mdpo``."""
    hydro = sub.add_parser("hydro")
    group = hydro.add_subparsers(dest="hydro_command", required=True)

    def common(parser):
        parser.add_argument("--case", default="bolivia", help="bolivia, case3 or a folder")
        parser.add_argument(
            "--load-scale", type=float, default=0.6, help="factor on every load (demand)"
        )
        parser.add_argument("--scenarios", type=int, default=100, help="evaluation scenarios")
        parser.add_argument(
            "--scenario-seed",
            type=int,
            default=EVALUATION_SEED,
            help="seed of the evaluation scenarios",
        )
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.add_argument(
            "--formulation",
            choices=FORMULATIONS,
            default="dc",
            help="power flow of every stage problem the policy is judged on: dc (linear), "
            "soc (its convex relaxation) or ac (polar, non-convex; Ipopt)",
        )

    sddp = group.add_parser("sddp", help="train SDDP and simulate it on the evaluation scenarios")
    common(sddp)
    sddp.add_argument("--horizon", type=int, default=126, help="stages trained on")
    sddp.add_argument("--report", type=int, default=96, help="stages simulated and reported")
    sddp.add_argument(
        "--iterations",
        type=int,
        default=200,
        help="SDDP iterations in all, a resumed run's included",
    )
    sddp.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds of SDDP training in this call (default: no limit)",
    )
    sddp.add_argument(
        "--stall-iterations",
        type=int,
        default=10,
        help="stop when the lower bound moved less than --stall-tolerance "
        "(relative) over this many iterations",
    )
    sddp.add_argument(
        "--stall-tolerance",
        type=float,
        default=1e-4,
        help="relative move of the lower bound below which training stops, see --stall-iterations",
    )
    sddp.add_argument("--seed", type=int, default=0, help="seed of the forward passes")
    sddp.add_argument(
        "--train-formulation",
        choices=("dc", "soc"),
        default=None,
        help="stage problems the cuts are built on (default: --formulation, soc for ac: "
        "the convex relaxation, as the TS-DDR study's baseline)",
    )
    sddp.add_argument(
        "--save-every",
        type=int,
        default=10,
        help="iterations between saves of the cuts (a rerun resumes from them)",
    )
    sddp.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of resuming from the folder's cuts",
    )
    sddp.set_defaults(func=command_sddp)
    bound = group.add_parser("bound", help="perfect-foresight cost of the evaluation scenarios")
    common(bound)
    bound.add_argument("--horizon", type=int, default=96, help="stages reported")
    bound.add_argument(
        "--extra-stages",
        type=int,
        default=0,
        help="stages solved after the reported ones (against end effects; "
        "their cost is not reported)",
    )
    bound.add_argument("--workers", type=int, default=1, help="solver processes")
    bound.set_defaults(func=command_bound)
    simulate = group.add_parser("simulate", help="simulate a policy on the evaluation scenarios")
    simulate.add_argument(
        "policy",
        help="'myopic', an SDDP cuts.json.gz, or an mdpo model file trained on HydroDispatch-v0",
    )
    common(simulate)
    simulate.add_argument("--stages", type=int, default=96, help="stages simulated and reported")
    simulate.add_argument(
        "--label",
        default=None,
        help="name in summaries and plots (default: myopic, SDDP or the agent's class)",
    )
    simulate.add_argument(
        "--slack-penalty",
        type=float,
        default=None,
        help="an agent's stage problems: cost per hm³ off its targets "
        "(default the largest cost coefficient; 1e6 for strict rules)",
    )
    simulate.set_defaults(func=command_simulate)
    tsddr = group.add_parser("tsddr", help="train TS-DDR / TS-LDR (resumable) and simulate it")
    add_threads_option(tsddr)
    common(tsddr)
    tsddr.add_argument(
        "--policy",
        choices=sorted(TSDDR_POLICIES),
        default="lstm",
        help="lstm: the paper's rule; state: state-conditioned; linear: TS-LDR",
    )
    tsddr.add_argument(
        "--stages", type=int, default=96, help="stages trained on, simulated and reported"
    )
    tsddr.add_argument("--steps", type=int, default=1000, help="gradient steps")
    tsddr.add_argument("--batch", type=int, default=4, help="scenarios per gradient step")
    tsddr.add_argument(
        "--workers",
        type=int,
        default=1,
        help="solvers of each batch's scenarios (processes here, or Ray actors)",
    )
    tsddr.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where the batch's deterministic problems are solved: local worker processes, "
        "or Ray actors (a Ray instance started here, or the cluster at --address)",
    )
    tsddr.add_argument(
        "--address",
        default=None,
        help="Ray cluster address for --backend ray (default: start a local Ray); its nodes "
        "need mdpo installed",
    )
    tsddr.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate")
    tsddr.add_argument(
        "--slack-penalty",
        type=float,
        default=None,
        help="cost per hm³ of target slack, in training and in the reported "
        "simulation (default the largest cost coefficient, the paper's; "
        "1e6 for --policy strict)",
    )
    tsddr.add_argument(
        "--eval-freq",
        type=int,
        default=100,
        help="steps between validations (the best model is kept)",
    )
    tsddr.add_argument(
        "--eval-scenarios",
        type=int,
        default=100,
        help="validation scenarios (seed 1, not the reported ones)",
    )
    tsddr.add_argument(
        "--checkpoint-freq",
        type=int,
        default=50,
        help="gradient steps between checkpoints, from which a rerun resumes",
    )
    tsddr.add_argument(
        "--seed", type=int, default=0, help="seed of the network and the training scenarios"
    )
    tsddr.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of resuming from the folder's checkpoint",
    )
    tsddr.add_argument(
        "--init",
        metavar="MODEL",
        default=None,
        help="start from the rule of a saved TS-DDR model of the same policy, e.g. one trained "
        "on dc to fine-tune on ac (default: a new rule)",
    )
    tsddr.set_defaults(func=command_tsddr)
    compare = group.add_parser("compare", help="table and figure of several result folders")
    compare.add_argument("folders", nargs="+", help="folders holding summary.json, stages.csv")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument(
        "--formulation",
        choices=FORMULATIONS,
        default=None,
        help="check that every folder was judged on this power flow (default: the one they "
        "share; mixed ones are refused)",
    )
    compare.add_argument(
        "--reference",
        default=None,
        help="label of the method the paired differences are taken to (default: SDDP, or "
        "SDDP (SOC cuts))",
    )
    compare.set_defaults(func=command_compare)
    plot = group.add_parser("plot", help="per-stage means of several result folders")
    plot.add_argument("folders", nargs="+", help="folders holding stages.csv")
    plot.add_argument(
        "--case", default="bolivia", help="the runs' case: bolivia, case3 or a folder"
    )
    plot.add_argument("--out", required=True, help="image file")
    plot.set_defaults(func=command_plot)
