"""``mdpo hydro ...``: SDDP training and simulation, and the perfect-foresight bound."""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import numpy as np

EVALUATION_SEED = 2024  # the fixed out-of-sample scenarios every method is judged on


def evaluation_paths(sddp_or_case, n: int, horizon: int, seed: int = EVALUATION_SEED):
    """``[n, horizon]`` scenario indices, stage-wise independent, from a fixed seed."""
    from envs.hydro.sddp import SDDP

    sddp = sddp_or_case if isinstance(sddp_or_case, SDDP) else SDDP(sddp_or_case, horizon)
    return sddp.sample_paths(n, np.random.default_rng(seed))[:, :horizon]


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def command_sddp(args: argparse.Namespace) -> int:
    """Train SDDP, save its cuts, simulate it on the fixed evaluation scenarios."""
    from envs.hydro import load_case
    from envs.hydro.sddp import SDDP

    if args.report > args.horizon:
        raise ValueError(f"--report {args.report} exceeds --horizon {args.horizon}")
    case = load_case(args.case)
    os.makedirs(args.out, exist_ok=True)
    sddp = SDDP(case, args.horizon, load_scale=args.load_scale, seed=args.seed)
    start = time.perf_counter()
    log = sddp.train(args.iterations, time_limit=args.time_limit, progress=not args.no_progress)
    train_seconds = time.perf_counter() - start
    sddp.save_cuts(os.path.join(args.out, "cuts.json"))
    _write_csv(os.path.join(args.out, "training.csv"),
               ["iteration", "lower_bound", "forward_cost", "seconds"],
               [[i + 1, lb, fc, s] for i, (lb, fc, s) in enumerate(
                   zip(log.lower_bounds, log.forward_costs, log.seconds))])  # fmt: skip
    paths = evaluation_paths(sddp, args.scenarios, args.horizon, args.scenario_seed)
    costs = sddp.simulate(paths, stages=args.report)
    _write_csv(os.path.join(args.out, "simulation.csv"), ["scenario", "cost"],
               [[i, c] for i, c in enumerate(costs)])  # fmt: skip
    half = 1.96 * costs.std(ddof=1) / np.sqrt(len(costs)) if len(costs) > 1 else float("nan")
    summary = {
        "case": case.name, "horizon": args.horizon, "reported_stages": args.report,
        "load_scale": args.load_scale, "iterations": len(log.lower_bounds),
        "train_seconds": train_seconds, "lower_bound": log.lower_bounds[-1],
        "simulated_scenarios": len(costs), "scenario_seed": args.scenario_seed,
        "mean_cost": float(costs.mean()), "ci95": [float(costs.mean() - half),
                                                   float(costs.mean() + half)],
    }  # fmt: skip
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    print(f"SDDP {case.name}: {summary['iterations']} iterations in {train_seconds:.0f} s, "
          f"lower bound {summary['lower_bound']:.6g} ({args.horizon} stages); policy cost "
          f"over {args.report} stages on {len(costs)} scenarios {costs.mean():.6g} "
          f"± {half:.3g}")  # fmt: skip
    return 0


def command_bound(args: argparse.Namespace) -> int:
    """Perfect-foresight cost of each evaluation scenario (the wait-and-see lower bound)."""
    from envs.hydro import load_case
    from envs.hydro.model import build_deterministic_equivalent
    from mdpo.optim.highs import BoundUpdate, solve_batch

    case = load_case(args.case)
    paths = evaluation_paths(case, args.scenarios, args.horizon, args.scenario_seed)
    rows = case.inflows.shape[0]
    scenarios = [np.stack([case.inflows[t % rows, :, j] for t, j in enumerate(path)])
                 for path in paths]  # fmt: skip
    problem = build_deterministic_equivalent(case, scenarios[0], load_scale=args.load_scale)
    cols = problem.inflow.ravel()
    updates = [BoundUpdate(cols, s.ravel(), s.ravel()) for s in scenarios]
    start = time.perf_counter()
    solutions = solve_batch(problem.lp, updates, workers=args.workers)
    seconds = time.perf_counter() - start
    costs = np.array([s.objective for s in solutions])
    os.makedirs(args.out, exist_ok=True)
    _write_csv(os.path.join(args.out, "bound.csv"), ["scenario", "cost"],
               [[i, c] for i, c in enumerate(costs)])  # fmt: skip
    summary = {"case": case.name, "stages": args.horizon, "scenarios": len(costs),
               "scenario_seed": args.scenario_seed, "load_scale": args.load_scale,
               "mean_cost": float(costs.mean()), "solve_seconds": seconds,
               "workers": args.workers}  # fmt: skip
    with open(os.path.join(args.out, "bound_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    print(f"perfect foresight {case.name}, {args.horizon} stages, {len(costs)} scenarios: mean "
          f"cost {costs.mean():.6g} ({seconds:.1f} s, {args.workers} workers)")  # fmt: skip
    return 0


def add_parser(sub) -> None:
    """The ``hydro`` command group of ``mdpo``."""
    hydro = sub.add_parser("hydro", help="the hydrothermal dispatch case study (SDDP, bound)")
    group = hydro.add_subparsers(dest="hydro_command", required=True)

    def common(parser):
        parser.add_argument("--case", default="bolivia", help="bolivia, case3 or a folder")
        parser.add_argument("--load-scale", type=float, default=0.6)
        parser.add_argument("--scenarios", type=int, default=100, help="evaluation scenarios")
        parser.add_argument("--scenario-seed", type=int, default=EVALUATION_SEED)
        parser.add_argument("--out", required=True, help="output folder")

    sddp = group.add_parser("sddp", help="train SDDP and simulate it on the evaluation scenarios")
    common(sddp)
    sddp.add_argument("--horizon", type=int, default=126, help="stages trained on")
    sddp.add_argument("--report", type=int, default=96, help="stages simulated and reported")
    sddp.add_argument("--iterations", type=int, default=200)
    sddp.add_argument("--time-limit", type=float, default=None, help="seconds")
    sddp.add_argument("--seed", type=int, default=0)
    sddp.add_argument("--no-progress", action="store_true")
    sddp.set_defaults(func=command_sddp)
    bound = group.add_parser("bound", help="perfect-foresight cost of the evaluation scenarios")
    common(bound)
    bound.add_argument("--horizon", type=int, default=96)
    bound.add_argument("--workers", type=int, default=1)
    bound.set_defaults(func=command_bound)
