"""OPPO vs behaviour cloning vs filtered BC on offline datasets, several seeds (not a test).

Every run is ``mdpo oppo train`` into ``OUT/runs/<algo>__<dataset>__s<seed>``; a finished run
(with ``summary.json``) is skipped and an interrupted one resumes from its checkpoint, so the
benchmark spans sessions. ``--report`` writes ``OUT/table.md`` (final normalized score, mean
and 95% bootstrap CI over seeds; the mean of the last 20% of evaluations) and
``OUT/curves.png``.

The datasets are made first with ``mdpo data make`` (see the README); e.g.::

    python benchmarks/offline_benchmark.py --root runs/datasets \\
        --datasets mdpo/hopper/medium-replay-v0 mdpo/hopper/medium-expert-v0 --seeds 0 1 2 \\
        --steps 10000 --eval-every 1000 --set learning_rate=0.001 \\
        --oppo-set learning_rate=0.0001 --oppo-set encoder_learning_rate=0.0001 \\
        --oppo-set warmup_steps=1000 \\
        --oppo-set 'encoder_kwargs={"hidden": 64, "n_layers": 2, "ff": 256, "dropout": 0.0}' \\
        --out results/oppo
    python benchmarks/offline_benchmark.py --report --out results/oppo
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys

import numpy as np

from mdpo.cli.sweep.report import legend_below
from mdpo.core.utils import code_version

ALGOS = ("OPPO", "BC", "FilteredBC")


def run_dir(out: str, algo: str, dataset: str, seed: int) -> str:
    """The folder of one run."""
    return os.path.join(out, "runs", f"{algo}__{dataset.replace('/', '_')}__s{seed}")


def run_all(args: argparse.Namespace) -> None:
    """Train every missing run (resuming interrupted ones), one after the other: seed by seed,
    so that a partial benchmark has every algorithm on every dataset for its first seeds."""
    for seed in args.seeds:
        for dataset in args.datasets:
            for algo in args.algos:
                folder = run_dir(args.out, algo, dataset, seed)
                if os.path.exists(os.path.join(folder, "summary.json")):
                    print(f"{folder}: done")
                    continue
                if os.path.exists(os.path.join(folder, "config.json")):
                    command = ["oppo", "train", "--resume", folder, "--no-progress"]
                else:
                    command = [
                        "oppo",
                        "train",
                        "--dataset",
                        dataset,
                        "--algo",
                        algo,
                        "--seed",
                        str(seed),
                        "--steps",
                        str(args.steps),
                        "--eval-every",
                        str(args.eval_every),
                        "--eval-episodes",
                        str(args.eval_episodes),
                        "--checkpoint-every",
                        str(args.eval_every),
                        "--out",
                        folder,
                        "--no-progress",
                    ]
                    for pair in args.set or []:
                        command += ["--set", pair]
                    if algo == "OPPO":
                        command += ["--labels", args.labels, "--policy", args.policy]
                        for pair in args.oppo_set or []:
                            command += ["--set", pair]
                    if args.root:
                        command += ["--root", args.root]
                print("mdpo " + shlex.join(command), flush=True)
                subprocess.run([sys.executable, "-m", "mdpo.cli.main", *command], check=True)


def bootstrap_ci(values: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean."""
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(args: argparse.Namespace) -> None:
    """Write the table and the curves of every finished run under ``OUT/runs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    root = os.path.join(args.out, "runs")
    for name in sorted(os.listdir(root)):
        summary_path = os.path.join(root, name, "summary.json")
        if not os.path.exists(summary_path):
            continue
        with open(summary_path) as handle:
            summary = json.load(handle)
        with open(os.path.join(root, name, "evaluations.csv")) as handle:
            rows = list(csv.DictReader(handle))
        curve = [(int(r["step"]), float(r["mean_normalized"])) for r in rows]
        runs.append({**summary, "curve": curve})
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["algo"]), []).append(run)
    lines = [
        "| dataset | algorithm | seeds | final normalized score, mean [95% CI] | "
        "last 20% of evaluations | per seed |",
        "|---|---|---:|---:|---:|---|",
    ]
    for (dataset, algo), members in sorted(groups.items()):
        finals = np.array([m["final_normalized"] for m in members])
        lasts = []
        for m in members:
            scores = [s for _, s in m["curve"]]
            lasts.append(np.mean(scores[-max(1, len(scores) // 5) :]))
        low, high = bootstrap_ci(finals)
        per_seed = ", ".join(f"{m['final_normalized']:.1f}" for m in members)
        lines.append(
            f"| {dataset} | {algo} | {len(members)} | {finals.mean():.1f} "
            f"[{low:.1f}, {high:.1f}] | {np.mean(lasts):.1f} | {per_seed} |"
        )
    datasets = sorted({d for d, _ in groups})
    fig, axes = plt.subplots(
        1, max(1, len(datasets)), figsize=(5 * max(1, len(datasets)), 4.8), squeeze=False
    )
    algos = sorted({algo for _, algo in groups})
    colors = {algo: f"C{i % 10}" for i, algo in enumerate(algos)}  # one color a method
    legend = {}
    for ax, dataset in zip(axes[0], datasets, strict=False):
        for (d, algo), members in sorted(groups.items()):
            if d != dataset:
                continue
            steps = [s for s, _ in members[0]["curve"]]
            scores = np.array([[v for _, v in m["curve"]][: len(steps)] for m in members])
            label = f"{algo} (mean of {len(members)} seeds)"
            (line,) = ax.plot(steps, scores.mean(axis=0), color=colors[algo], label=label)
            legend.setdefault(label, line)
            if len(members) > 1:
                ax.fill_between(
                    steps, scores.min(axis=0), scores.max(axis=0), alpha=0.2, color=colors[algo]
                )
        ax.set_title(dataset)
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("normalized score (0 random, 100 expert)")
        ax.grid(alpha=0.3)
    legend_below(fig, legend, "band: the seeds' range (min to max)", ncol=4, room=0.12)
    fig.savefig(os.path.join(args.out, "curves.png"), dpi=100)
    # the code a run started and finished on (a resumed run may span commits)
    versions = sorted(
        {run.get(key) or "not recorded" for run in runs for key in ("started_on", "code_version")}
    )
    if any(len(members) < 5 for members in groups.values()):
        lines.append(
            "\nWith fewer than 5 seeds the percentile bootstrap interval is (nearly) "
            "the seeds' range: read it as a range, not a 95% interval."
        )
    table = "\n".join(lines)
    with open(os.path.join(args.out, "table.md"), "w") as handle:
        handle.write(
            f"Command: `python {shlex.join(sys.argv)}` ({code_version()}); the runs' "
            f"code: {', '.join(versions)}\n\n{table}\n"
        )
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=[])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--labels", default="scripted:K=20")
    parser.add_argument("--policy", default="mlp", choices=("mlp", "transformer"))
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a hyperparameter of every algorithm (repeatable)",
    )
    parser.add_argument(
        "--oppo-set",
        action="append",
        metavar="KEY=VALUE",
        help="an OPPO hyperparameter (repeatable)",
    )
    parser.add_argument("--root", help="Minari datasets folder")
    parser.add_argument("--out", default="results/oppo")
    parser.add_argument("--report", action="store_true", help="only write the report")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    if not args.report:
        run_all(args)
    report(args)


if __name__ == "__main__":
    main()
