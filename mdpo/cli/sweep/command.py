"""``mdpo sweep run`` and ``mdpo sweep report``: benchmark sweeps from a YAML spec."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from mdpo.cli.sweep.executors import (
    prepare,
    run_batched,
    run_local,
    run_ray,
    run_status,
    sigterm_as_interrupt,
    sweep_lock,
)
from mdpo.cli.sweep.report import write_report
from mdpo.cli.sweep.spec import BACKENDS, load_spec, safe_name


def command_sweep_run(args: argparse.Namespace) -> int:
    """``mdpo sweep run``: run (or finish) every run of a spec."""

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    spec = load_spec(args.spec)
    backend = args.backend or spec.backend or "local"
    out = args.out or os.path.join("sweeps", safe_name(spec.name))
    with sweep_lock(out), sigterm_as_interrupt():
        plan = prepare(spec, out, "mdpo " + shlex.join(args.argv))
        total = len(plan.done) + len(plan.todo)
        print(
            f"sweep {spec.name!r}: {total} runs, {len(plan.done)} already completed, "
            f"{len(plan.todo)} to run ({backend}, {args.workers} workers); folder {out}"
        )
        if backend == "ray":
            failed = run_ray(plan, args.workers, args.address)
        elif backend == "batched":
            failed = run_batched(plan, args.workers)
        else:
            failed = run_local(plan, args.workers)
    for run in failed:
        error = run_status(plan.run_dir(run)).get("error", "unknown error").splitlines()[0]
        print(f"failed: {run.run_id}: {error}", file=sys.stderr)
    print(f"{total - len(failed)}/{total} runs completed; report: mdpo sweep report {out}")
    return 1 if failed else 0


def command_sweep_report(args: argparse.Namespace) -> int:
    """``mdpo sweep report``: tables, CIs and plots of a sweep folder."""

    if not os.path.isdir(args.dir):
        raise ValueError(f"{args.dir!r} is not a sweep folder")
    out = args.out or os.path.join(args.dir, "report")
    path = write_report(args.dir, out, "mdpo " + shlex.join(args.argv))
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """Mount ``sweep`` (``run``, ``report``) on the ``mdpo`` parser."""
    sweep = sub.add_parser("sweep")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    sweep_run = sweep_sub.add_parser(
        "run",
        help="run every run of a YAML spec (completed runs are skipped)",
        description="Run a sweep spec. Each run gets a folder under OUT/runs; rerunning the "
        "same command skips completed runs and reruns failed or interrupted ones.",
    )
    sweep_run.add_argument("spec", help="YAML sweep spec")
    sweep_run.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="where the runs execute: local processes (default), a Ray cluster, or batched "
        "(local processes, each training the PPO runs on a torch-native env that differ only "
        "by seed as one batched computation; other runs run on their own); overrides the "
        "spec's 'backend'",
    )
    sweep_run.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="parallel runs (default: half the cores)",
    )
    sweep_run.add_argument("--out", help="sweep folder (default sweeps/NAME)")
    sweep_run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    sweep_run.set_defaults(func=command_sweep_run)
    sweep_report = sweep_sub.add_parser(
        "report", help="tables with CIs and learning curves of a sweep folder"
    )
    sweep_report.add_argument("dir", help="sweep folder")
    sweep_report.add_argument("--out", help="report folder (default DIR/report)")
    sweep_report.set_defaults(func=command_sweep_report)
