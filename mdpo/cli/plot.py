"""``mdpo plot RUN [RUN ...] --out FIG.png``: the evaluation curves of run folders (as RL
Baselines3 Zoo's ``plot_train``): mean deterministic evaluation return against training steps,
one line per run, its band the standard deviation over that evaluation's episodes."""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from mdpo.cli.run_folder import RunFolder
from mdpo.core.limits import BadFileError

#: where each kind of run keeps its evaluations, and the names of its columns
LOGS = (
    (os.path.join("eval", "evaluations.csv"), "timesteps", "mean_reward", "std_reward"),  # train
    ("evaluations.csv", "step", "mean_return", "std_return"),  # oppo train
)


def read_curve(run_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(steps, means, stds, x label)`` of a run folder's evaluations (rows torn by a crash
    are skipped)."""
    folder = RunFolder(run_dir, "mdpo plot")
    for name, step_key, mean_key, std_key in LOGS:
        path = folder.file(name)
        if not os.path.exists(path):
            continue
        steps, means, stds = [], [], []
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    steps.append(int(row[step_key]))
                    means.append(float(row[mean_key]))
                    stds.append(float(row[std_key]))
                except (KeyError, TypeError, ValueError):
                    continue  # a torn or foreign row
        if steps:
            x_label = "training steps (env steps)" if step_key == "timesteps" else "gradient steps"
            return np.array(steps), np.array(means), np.array(stds), x_label
    raise BadFileError(f"{run_dir!r} holds no evaluation yet (no evaluations.csv with rows)")


def command_plot(args: argparse.Namespace) -> int:
    """Plot the evaluation curves of the run folders ``args.runs`` into ``args.out``."""
    import matplotlib  # matplotlib is slow to import: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib is slow to import: only when plotting

    curves = {os.path.basename(os.path.normpath(run)): read_curve(run) for run in args.runs}
    fig, axis = plt.subplots(figsize=(8, 4.5))
    x_labels = set()
    for label, (steps, means, stds, x_label) in curves.items():
        (line,) = axis.plot(steps, means, marker="o", markersize=3, label=label)
        axis.fill_between(steps, means - stds, means + stds, alpha=0.2, color=line.get_color())
        x_labels.add(x_label)
    axis.set_xlabel(" / ".join(sorted(x_labels)))
    axis.set_ylabel("mean evaluation return (deterministic)")
    axis.set_title(args.title or "evaluation during training (band: ± std over the episodes)")
    axis.grid(alpha=0.3)
    # beside the axes, never over the data
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out} ({len(curves)} runs)")
    return 0


def add_parser(sub) -> None:
    """Mount ``mdpo plot``."""
    plot = sub.add_parser("plot")
    plot.add_argument("runs", nargs="+", help="run folders")
    plot.add_argument("--out", default="curves.png", help="the figure to write")
    plot.add_argument(
        "--title", help="the figure's title (default: evaluation during training, band: ± std)"
    )
    plot.set_defaults(func=command_plot)
