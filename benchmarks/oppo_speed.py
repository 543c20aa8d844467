"""OPPO's training step at the paper's sizes: gradient steps per second of the code at a given
commit ("before") and of this tree ("after"), in one run, interleaved.

The paper's sizes: encoder 128 wide, 3 layers, 2 heads, feed-forward 512, dropout 0.1; z of 16;
segments of K = 20 steps; 64 labelled pairs a step (scripted labels, fresh pairs every step);
the MLP and the transformer policy (128 / 3 / 1 head / 512 / 0.1). The data are synthetic
episodes of Hopper's shapes (11 observations, 3 actions, 100 episodes of 200-1000 steps): the
speed of a step does not depend on the numbers. Each measurement runs in its own process with
the given torch threads; the variants take turns in every repeat so that machine noise hits
them alike. Reported: steps/s of each variant (median of the repeats) and its ratio to the
"before" variant of the same policy.

    python benchmarks/oppo_speed.py --before 76eccf7 --repeats 3 --steps 10 \\
        --out results/oppo_speed
    python benchmarks/oppo_speed.py --device cuda ...   # the same on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from common import run_metadata, write_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MEASURE = r"""
import json, sys, time
import numpy as np, torch, gymnasium as gym
policy, precision, steps, threads, device = sys.argv[1:6]
torch.set_num_threads(int(threads))
from mdpo.offline.dataset import Episode, OfflineDataset
from mdpo import OPPO
rng = np.random.default_rng(0)
episodes = []
for _ in range(100):
    n = int(rng.integers(200, 1000))
    done = np.zeros(n, bool)
    done[-1] = True
    episodes.append(Episode(
        rng.normal(size=(n + 1, 11)).astype(np.float32),
        rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rng.normal(size=n), np.zeros(n, bool), done))
box = gym.spaces.Box
data = OfflineDataset(episodes, "Hopper-v5", box(-np.inf, np.inf, (11,), np.float32),
                      box(-1.0, 1.0, (3,), np.float32), ref_min_score=0.0, ref_max_score=1.0)
kwargs = dict(labels="scripted", z_dim=16, batch_size=64, segment_length=20, seed=0,
              device=device, encoder_kwargs=dict(hidden=128, n_layers=3, n_heads=2, ff=512,
                                                 dropout=0.1))
if precision != "fp32":
    kwargs["precision"] = precision
agent = OPPO(policy, data, **kwargs)
agent.learn(3)
if device.startswith("cuda"):
    torch.cuda.synchronize()
start = time.perf_counter()
agent.learn(int(steps), reset_num_timesteps=False)
if device.startswith("cuda"):
    torch.cuda.synchronize()
print(json.dumps({"steps_per_s": int(steps) / (time.perf_counter() - start)}))
"""


def measure(tree: str, policy: str, precision: str, args: argparse.Namespace) -> float:
    """Steps per second of one variant, in a fresh process importing mdpo from ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, policy, precision, str(args.steps), str(args.threads),
         args.device],
        capture_output=True, text=True, env=env, cwd=tree, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{tree} {policy} {precision}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="commit of the code to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every variant")
    parser.add_argument("--steps", type=int, default=10, help="timed steps a measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads a measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--policies", nargs="+", default=["MlpPolicy", "TransformerPolicy"])
    parser.add_argument("--out", default=None, help="results folder (default: print only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        before = os.path.join(scratch, "before")
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "add", "--detach", "-q", before, args.before],
            check=True,
        )
        try:
            variants = [
                (policy, tree, precision)
                for policy in args.policies
                for tree, precision in ((before, "fp32"), (ROOT, "fp32"), (ROOT, "bf16"))
            ]
            speeds: dict[tuple[str, str, str], list[float]] = {v: [] for v in variants}
            for repeat in range(args.repeats):
                for variant in variants:
                    speeds[variant].append(measure(variant[1], variant[0], variant[2], args))
                    print(f"repeat {repeat}: {variant[0]} {variant[2]} "
                          f"{'before' if variant[1] == before else 'after'}: "
                          f"{speeds[variant][-1]:.2f} steps/s", flush=True)  # fmt: skip
        finally:
            subprocess.run(
                ["git", "-C", ROOT, "worktree", "remove", "--force", before], check=False
            )
    rows = []
    for policy, tree, precision in variants:
        median = statistics.median(speeds[policy, tree, precision])
        anchor = statistics.median(speeds[policy, before, "fp32"])
        rows.append(
            {
                "policy": policy,
                "code": f"before ({args.before})" if tree == before else "after",
                "precision": precision,
                "steps_per_s": round(median, 3),
                "ms_per_step": round(1000 / median, 1),
                "ratio": f"{median / anchor:.2f}x",
            }
        )
    for row in rows:
        print(row)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        meta = run_metadata(" ".join(["python", *sys.argv]))
        meta["setting"] = (
            f"{args.threads} torch thread(s), device {args.device}, {args.steps} timed steps "
            f"after 3 of warm-up, median of {args.repeats} repeats; 1-minute load average "
            f"at the end: {os.getloadavg()[0]:.2f}"
        )
        meta["speeds"] = {" ".join(k[0::2]) + (" before" if k[1] == before else ""): v
                          for k, v in speeds.items()}  # fmt: skip
        write_rows(os.path.join(args.out, "runs.csv"), rows)
        with open(os.path.join(args.out, "summary.json"), "w") as handle:
            json.dump(meta, handle, indent=1)
        print(f"wrote {args.out}/runs.csv and summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
