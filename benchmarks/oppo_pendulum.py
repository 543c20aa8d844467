"""OPPO vs BC vs filtered BC on the Pendulum mixtures of ``tests/pendulum_mixture.py`` (not a
test): what preference guidance recovers from a dataset of good and bad behaviour.

Settings (each run 2000 gradient steps, a small encoder of width 32 and one layer, learning
rates 1e-3, z* 1e-2; 10 evaluation episodes from the dataset's start states):

* ``top``: episodes start near the top; good = stabilizer, bad = push down; scripted labels
  (true segment returns) on 20-step segments — the learning test's setting.
* ``bottom``: Pendulum's own start; good = swing-up controller, bad = brake; scripted labels.
* ``bottom-behaviour``: the same data with given labels that prefer any segment of the good
  controller over any of the bad one (2000 pairs; what a person judging behaviour would say).

Usage: ``python benchmarks/oppo_pendulum.py --seeds 0 1 2 --out results/oppo_pendulum``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import torch

from mdpo import BC, OPPO
from mdpo.offline.preferences import PreferencePairs, Preferences, SegmentSampler

# the Pendulum mixtures are made by a helper of the test suite
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
from pendulum_mixture import START, mixture_dataset  # noqa: E402

STEPS = 2000
OPPO_KWARGS = dict(
    learning_rate=1e-3,
    encoder_learning_rate=1e-3,
    z_learning_rate=1e-2,
    warmup_steps=200,
    encoder_kwargs=dict(hidden=32, n_layers=1, ff=64, dropout=0.0),
)


def behaviour_labels(dataset, segment_length: int, n: int = 2000, seed: int = 0) -> Preferences:
    """Pairs (good-controller segment, bad-controller segment) in random order, labelled for
    the good one (even episodes are the good controller's)."""
    sampler = SegmentSampler(dataset, segment_length)
    g = torch.Generator().manual_seed(seed)
    episodes = len(dataset)
    good = torch.arange(0, episodes, 2)
    bad = torch.arange(1, episodes, 2)
    ea = good[torch.randint(len(good), (n,), generator=g)]
    eb = bad[torch.randint(len(bad), (n,), generator=g)]
    starts = torch.as_tensor(sampler.n_starts)
    sa = (torch.rand(n, generator=g, dtype=torch.float64) * starts[ea]).long()
    sb = (torch.rand(n, generator=g, dtype=torch.float64) * starts[eb]).long()
    swap = torch.rand(n, generator=g) < 0.5
    pairs = PreferencePairs(
        torch.where(swap, eb, ea),
        torch.where(swap, sb, sa),
        torch.where(swap, ea, eb),
        torch.where(swap, sa, sb),
        (~swap).float(),
    )
    return Preferences(sampler, pairs, description="behaviour: good controller preferred")


def run(setting: str, algo: str, seed: int) -> float:
    """One run; returns the final normalized score."""
    start = "top" if setting == "top" else "bottom"
    dataset = mixture_dataset(good=20, bad=20, start=start)
    options = START if start == "top" else None
    if algo == "OPPO":
        labels = behaviour_labels(dataset, 20) if setting == "bottom-behaviour" else "scripted"
        agent = OPPO("MlpPolicy", dataset, labels=labels, seed=seed, **OPPO_KWARGS)
    else:
        fraction = 0.1 if algo == "FilteredBC" else 1.0
        agent = BC("MlpPolicy", dataset, seed=seed, learning_rate=1e-3, filter_fraction=fraction)
    agent.learn(STEPS)
    return agent.evaluate(10, seed=100, reset_options=options)["mean_normalized"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="results/oppo_pendulum")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = {}
    if os.path.exists(results_path):  # resumable: finished runs are kept
        with open(results_path) as handle:
            results = json.load(handle)
    plan = [("top", a) for a in ("OPPO", "BC", "FilteredBC")]
    plan += [("bottom", a) for a in ("OPPO", "BC", "FilteredBC")]
    plan += [("bottom-behaviour", "OPPO")]
    for setting, algo in plan:
        for seed in args.seeds:
            key = f"{setting}/{algo}/{seed}"
            if key in results:
                continue
            tic = time.time()
            results[key] = {"score": run(setting, algo, seed), "seconds": time.time() - tic}
            print(
                f"{key}: {results[key]['score']:.1f} ({results[key]['seconds']:.0f} s)", flush=True
            )
            with open(results_path, "w") as handle:
                json.dump(results, handle, indent=1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"Command: `python {shlex.join(sys.argv)}` (commit {commit}); see the script's "
        f"docstring for the settings.",
        "",
        "| setting | algorithm | normalized score, mean over seeds | per seed |",
        "|---|---|---:|---|",
    ]
    for setting, algo in plan:
        scores = [results[f"{setting}/{algo}/{s}"]["score"] for s in args.seeds]
        per_seed = ", ".join(f"{v:.1f}" for v in scores)
        lines.append(f"| {setting} | {algo} | {np.mean(scores):.1f} | {per_seed} |")
    with open(os.path.join(args.out, "README.md"), "w") as handle:
        handle.write("# OPPO on Pendulum mixtures\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
