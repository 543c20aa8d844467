"""Sweep reports: tables with confidence intervals, learning curves, per-run costs.

A sweep folder may come from anyone: its files (``sweep.json``, each run's ``result.json``
and ``status.json``) are read within the limits of :mod:`mdpo.core.limits` and checked field by
field before anything is computed from them; a malformed one is refused with a one-line
:class:`~mdpo.core.limits.BadFileError` naming the file and the field.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import statistics
import time
from collections import defaultdict
from typing import Any

import numpy as np
import yaml

from mdpo.cli.sweep.spec import SweepSpecError, parse_spec
from mdpo.cli.sweep.stats import bootstrap_ci, summarize
from mdpo.cli.sweep.worker import read_status
from mdpo.core.limits import field_float, field_int, json_object, load_json_file
from mdpo.core.utils import code_version


def read_sweep_json(sweep_dir: str) -> dict[str, Any] | None:
    """``sweep_dir/sweep.json``, checked: ``name`` a string, ``spec`` an object (checked as a
    spec when it is used), ``invocations`` a list of objects whose ``command``, ``time`` and
    ``code_version`` are strings.

    Returns:
        ``{"name", "spec", "invocations"}``, or ``None`` when there is no ``sweep.json``.

    Raises:
        BadFileError: a malformed ``sweep.json``, in one line naming it and the field.
    """
    path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.exists(path):
        return None
    data = json_object(load_json_file(path), path)
    name = data.get("name", os.path.basename(os.path.abspath(sweep_dir)))
    if not isinstance(name, str):
        raise SweepSpecError(f"{path}: name must be a string, not {_kind(name)}")
    spec = json_object(data.get("spec", {}), f"{path}: spec")
    invocations = data.get("invocations", [])
    if not isinstance(invocations, list):
        raise SweepSpecError(f"{path}: invocations must be a list, not {_kind(invocations)}")
    for i, inv in enumerate(invocations):
        json_object(inv, f"{path}: invocations[{i}]")
        for key in ("command", "time", "code_version"):
            if not isinstance(inv.get(key), str):
                raise SweepSpecError(
                    f"{path}: invocations[{i}].{key} must be a string, not {_kind(inv.get(key))}"
                )
    return {"name": name, "spec": spec, "invocations": invocations}


def spec_run_ids(sweep_dir: str) -> set[str] | None:
    """The run ids of the spec the sweep was last run with (``None`` if unknown).

    A spec that this installation cannot check (a baseline library or an env missing here) is
    unknown: every run folder then counts.

    Raises:
        BadFileError: a malformed ``sweep.json``.
    """
    sweep = read_sweep_json(sweep_dir)
    if sweep is None:
        return None
    try:
        spec = parse_spec(sweep["spec"], f"{os.path.join(sweep_dir, 'sweep.json')}: spec")
    except SweepSpecError:
        return None
    return {run.run_id for run in spec.runs()}


def check_result(data: Any, where: str) -> dict[str, Any]:
    """A run's ``result.json``, checked for every field a report reads.

    A return written as ``null`` (a non-finite return: the writer writes strict JSON) reads as
    ``nan``; every other number must be finite.

    Returns:
        A copy holding the checked fields only.

    Raises:
        BadFileError: a missing or malformed field, in one line naming ``where`` and it.
    """
    data = json_object(data, where)
    config = json_object(data.get("config"), f"{where}: config")
    checked_config: dict[str, Any] = {}
    for key in ("label", "variant", "env"):
        if not isinstance(config.get(key), str):
            raise SweepSpecError(
                f"{where}: config.{key} must be a string, not {_kind(config.get(key))}"
            )
        checked_config[key] = config[key]
    checked_config["seed"] = field_int(config.get("seed"), f"{where}: config.seed", 0)
    for key in ("budget", "eval_every", "eval_episodes"):
        checked_config[key] = field_int(config.get(key), f"{where}: config.{key}", 1)
    result: dict[str, Any] = {"config": checked_config}
    for key in ("run_id", "code_version"):
        if not isinstance(data.get(key), str):
            raise SweepSpecError(f"{where}: {key} must be a string, not {_kind(data.get(key))}")
        result[key] = data[key]
    result["final_return"] = _return(data.get("final_return"), f"{where}: final_return")
    result["num_timesteps"] = field_int(data.get("num_timesteps"), f"{where}: num_timesteps", 0)
    for key in ("wall_time_s", "train_time_s", "eval_time_s", "steps_per_s"):
        result[key] = field_float(data.get(key), f"{where}: {key}")
    curve = data.get("curve")
    if not isinstance(curve, list):
        raise SweepSpecError(f"{where}: curve must be a list, not {_kind(curve)}")
    result["curve"] = []
    for i, point in enumerate(curve):
        point = json_object(point, f"{where}: curve[{i}]")
        result["curve"].append(
            {
                "nominal_timesteps": field_int(
                    point.get("nominal_timesteps"), f"{where}: curve[{i}].nominal_timesteps", 0
                ),
                "mean_return": _return(
                    point.get("mean_return"), f"{where}: curve[{i}].mean_return"
                ),
            }
        )
    return result


def _return(value: Any, where: str) -> float:
    number = field_float(value, where, allow_none=True)
    return math.nan if number is None else number


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def load_results(sweep_dir: str) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Completed results (``result.json``) and the other runs by status.

    Only the runs of the sweep's current spec count: folders left by runs the spec no longer
    has are ignored.

    Raises:
        BadFileError: a malformed ``sweep.json``, ``result.json`` or ``status.json``.
    """
    results, others = [], defaultdict(list)
    wanted = spec_run_ids(sweep_dir)
    for run_dir in sorted(glob.glob(os.path.join(sweep_dir, "runs", "*"))):
        if not os.path.isdir(run_dir) or run_dir.endswith(".incoming"):
            continue
        if wanted is not None and os.path.basename(run_dir) not in wanted:
            continue
        path = os.path.join(run_dir, "result.json")
        if os.path.exists(path):
            results.append(check_result(load_json_file(path), path))
            continue
        status = read_status(run_dir)
        label = os.path.basename(run_dir)
        if status.get("error"):
            label += f": {status['error'].splitlines()[0][:200]}"
        others[status["status"]].append(label)
    return results, dict(others)


def group_name(result: dict[str, Any]) -> str:
    config = result["config"]
    if config["variant"] == "default":
        return config["label"]
    return f"{config['label']} [{config['variant']}]"


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (algorithm, env): final-return statistics and run costs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        groups[(group_name(result), result["config"]["env"])].append(result)
    rows = []
    for (group, env), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        stats = summarize([r["final_return"] for r in runs])
        late = summarize([late_return(r) for r in runs])
        rows.append(
            {
                "algorithm": group,
                "env": env,
                **stats,
                "late_mean": late["mean"],
                "late_ci_low": late["mean_ci_low"],
                "late_ci_high": late["mean_ci_high"],
                "seeds": " ".join(str(r["config"]["seed"]) for r in runs),
                "median_wall_time_s": statistics.median(r["wall_time_s"] for r in runs),
                "median_steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
            }
        )
    return rows


LATE_FRACTION = 0.8


def late_return(result: dict[str, Any]) -> float:
    """Mean return of the evaluations in the last 20% of the budget (the final one included):
    less sensitive than the last evaluation alone to where a spiky curve happens to end."""
    budget = result["config"]["budget"]
    points = [
        p["mean_return"]
        for p in result["curve"]
        if p["nominal_timesteps"] >= LATE_FRACTION * budget
    ]
    return float(np.mean(points)) if points else float(result["final_return"])


def curves(results: list[dict[str, Any]]) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """Per env, per algorithm: steps, mean over seeds, CI low, CI high, number of seeds."""
    grouped: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        grouped[result["config"]["env"]][group_name(result)].append(
            {p["nominal_timesteps"]: p["mean_return"] for p in result["curve"]}
        )
    out: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
    for env, by_algo in grouped.items():
        out[env] = {}
        for algo, runs in by_algo.items():
            steps = sorted(set.intersection(*(set(r) for r in runs)))
            means, lows, highs = [], [], []
            for step in steps:
                values = [r[step] for r in runs]
                means.append(float(np.mean(values)))
                low, high = bootstrap_ci(values, np.mean, n_resamples=1000)
                lows.append(low)
                highs.append(high)
            arrays = tuple(np.array(a) for a in (steps, means, lows, highs))
            out[env][algo] = (*arrays, len(runs))
    return out


def legend_below(fig: Any, lines: dict[str, Any], band: str, ncol: int, room: float = 0.14):
    """One legend below the panels of ``fig``, off the data: ``lines`` (label → line), then a
    gray patch that says what the bands are."""
    from matplotlib.patches import Patch

    handles = [*lines.values(), Patch(color="0.6", alpha=0.3)]
    fig.legend(handles, [*lines, band], fontsize=8, loc="lower center", ncol=ncol, frameon=False)
    fig.tight_layout(rect=(0, room, 1, 1))


def plot_curves(data: dict[str, dict[str, tuple[Any, ...]]], path: str) -> None:
    """One panel per env; per algorithm the mean over seeds and its 95% CI band (the legend
    says how many seeds; it sits below the panels, off the data)."""
    import matplotlib  # matplotlib is slow to import: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib is slow to import: only when plotting

    envs = sorted(data)
    algos = sorted({algo for by_algo in data.values() for algo in by_algo})
    colors = {algo: f"C{i % 10}" for i, algo in enumerate(algos)}  # one color a method
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4.8), squeeze=False)
    legend: dict[str, Any] = {}
    for ax, env in zip(axes[0], envs):
        for algo in sorted(data[env]):
            steps, mean, low, high, n_seeds = data[env][algo]
            label = f"{algo} (mean of {n_seeds} seeds)"
            (line,) = ax.plot(steps, mean, color=colors[algo], label=label)
            ax.fill_between(steps, low, high, alpha=0.2, color=colors[algo])
            legend.setdefault(label, line)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return (deterministic)")
        ax.grid(alpha=0.3)
    legend_below(fig, legend, "band: 95% bootstrap CI of the mean over the seeds", ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def write_report(sweep_dir: str, out: str, command: str) -> str:
    """Write ``README.md``, ``summary.csv``, ``runs.csv`` and ``curves.png`` into ``out``.

    Returns:
        The path of the Markdown report.

    Raises:
        ValueError: no completed run in ``sweep_dir``.
        BadFileError: a malformed file in ``sweep_dir`` (one line naming it and the field).
    """
    results, others = load_results(sweep_dir)
    if not results:
        raise ValueError(f"{sweep_dir!r} has no completed runs (no runs/*/result.json)")
    os.makedirs(out, exist_ok=True)
    rows = summary_rows(results)
    with open(os.path.join(out, "summary.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run_fields = [
        "run_id",
        "algorithm",
        "env",
        "seed",
        "final_return",
        "num_timesteps",
        "wall_time_s",
        "train_time_s",
        "eval_time_s",
        "steps_per_s",
        "code_version",
    ]
    run_rows = [
        {
            "run_id": r["run_id"],
            "algorithm": group_name(r),
            "env": r["config"]["env"],
            "seed": r["config"]["seed"],
            "final_return": r["final_return"],
            "num_timesteps": r["num_timesteps"],
            "wall_time_s": round(r["wall_time_s"], 1),
            "train_time_s": round(r["train_time_s"], 1),
            "eval_time_s": round(r["eval_time_s"], 1),
            "steps_per_s": round(r["steps_per_s"], 1),
            "code_version": r["code_version"],
        }
        for r in results
    ]
    with open(os.path.join(out, "runs.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=run_fields)
        writer.writeheader()
        writer.writerows(run_rows)
    plot_curves(curves(results), os.path.join(out, "curves.png"))

    sweep: dict[str, Any] = read_sweep_json(sweep_dir) or {}

    config = results[0]["config"]
    missing = sum(len(names) for names in others.values())
    lines = [
        f"# Sweep report: {sweep.get('name', os.path.basename(sweep_dir))}",
        "",
    ]
    if missing:
        lines += [
            f"**Partial: {len(results)} of {len(results) + missing} runs have a result** "
            "(the others are listed at the end; rerun the sweep command to finish them).",
            "",
        ]
    lines += [
        f"Budget {config['budget']} env steps per run; deterministic evaluation every "
        f"{config['eval_every']} steps with {config['eval_episodes']} episodes on a separate "
        "env (same initial states at every evaluation). Final return = the last evaluation's "
        "mean return; 'last 20%' = each run's mean over its evaluations in the last 20% of the "
        "budget, less sensitive to where a spiky curve ends. Mean and IQM (interquartile "
        "mean, as rliable: floor(n/4) runs cut at "
        "each end, so with 3 seeds it equals the mean) over seeds, with 95% percentile-bootstrap "
        "confidence intervals over runs.",
        "",
        "| algorithm | env | runs | final return: mean [95% CI] | IQM [95% CI] | "
        "last 20% of evaluations: mean [95% CI] | median wall time | median train steps/s |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['algorithm']} | {row['env']} | {row['n']} | {_fmt(row['mean'])} "
            f"[{_fmt(row['mean_ci_low'])}, {_fmt(row['mean_ci_high'])}] | {_fmt(row['iqm'])} "
            f"[{_fmt(row['iqm_ci_low'])}, {_fmt(row['iqm_ci_high'])}] | "
            f"{_fmt(row['late_mean'])} [{_fmt(row['late_ci_low'])}, {_fmt(row['late_ci_high'])}] | "
            f"{row['median_wall_time_s']:.0f} s | {row['median_steps_per_s']:.0f} |"
        )
    lines += [
        "",
        "![learning curves](curves.png)",
        "",
        "## Runs",
        "",
        "| run | final return | steps | wall time | train steps/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in run_rows:
        lines.append(
            f"| {r['run_id']} | {r['final_return']:.1f} | {r['num_timesteps']} | "
            f"{r['wall_time_s']:.0f} s | {r['steps_per_s']:.0f} |"
        )
    if others:
        lines += ["", "## Runs without a result", ""]
        for status, names in sorted(others.items()):
            lines += [f"- {status}: {name}" for name in names]
    lines += ["", "## Provenance", "", "Commands:", ""]
    for inv in sweep.get("invocations", []):
        lines.append(f"- `{inv['command']}` ({inv['time']}, {inv['code_version']})")
    lines.append(f"- `{command}` ({time.strftime('%Y-%m-%dT%H:%M:%S')}, {code_version()})")
    versions = sorted({r["code_version"] for r in results})
    spec_yaml = yaml.safe_dump(sweep.get("spec", {}), sort_keys=False).rstrip()
    lines += [
        "",
        f"Code version of the runs: {', '.join(versions)}",
        "",
        "Spec:",
        "",
        "```yaml",
        spec_yaml,
        "```",
        "",
    ]
    path = os.path.join(out, "README.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path
