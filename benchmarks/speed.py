"""Training speed: an mdpo agent against its Stable-Baselines3 anchor, in one run.

Pairs (the anchor gets the same hyperparameters):

- PPO  against SB3's PPO (SB3's defaults for both);
- TRPO against sb3-contrib's TRPO (sb3-contrib's defaults for both);
- MDPO against SB3's PPO with the same rollout, network, learning rate and VecNormalize's
  observation and reward normalization (MDPO normalizes by default).

Each measurement runs in its own process with one torch thread and one env; the three kinds
(raw env stepping with random actions, the anchor, ours) are interleaved in every repeat so
that machine noise hits them alike. Reported: env-steps/s of each, the per-repeat ratio
ours / anchor and its median.

    python benchmarks/speed.py --algo PPO --env Hopper-v5 --steps 16384 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import run_metadata, write_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


PAIRING = {
    "PPO": "Both with SB3's PPO defaults (n_steps 2048, batch 64, 10 epochs, [64, 64] tanh);",
    "TRPO": "Both with sb3-contrib's TRPO defaults (n_steps 2048, critic batch 128, 10 critic "
    "epochs, CG 15 steps, [64, 64] tanh);",
    "MDPO": "MDPO with its defaults (n_steps 2048, 10 full-batch policy steps, 5 value epochs, "
    "observation and reward normalization) against SB3's PPO with the same n_steps, "
    "network and learning rate and VecNormalize;",
}
ANCHORS = {"PPO": "SB3 PPO", "TRPO": "sb3-contrib TRPO", "MDPO": "SB3 PPO + VecNormalize"}


def make_anchor(algo: str, env_id: str, seed: int):
    """The Stable-Baselines3 / sb3-contrib agent that ``algo`` is measured against."""
    if algo == "TRPO":
        from sb3_contrib import TRPO

        return TRPO("MlpPolicy", env_id, seed=seed, device="cpu")
    from stable_baselines3 import PPO

    if algo == "PPO":
        return PPO("MlpPolicy", env_id, seed=seed, device="cpu")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=0.99)
    return PPO("MlpPolicy", env, seed=seed, device="cpu")


def worker(kind: str, algo: str, env_id: str, steps: int, seed: int) -> dict:
    """One measurement in this process; returns steps/s and details."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if kind == "raw":
        import gymnasium as gym

        env = gym.make(env_id)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        actions = [env.action_space.sample() for _ in range(steps)]
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return {"steps_per_s": steps / (time.perf_counter() - start)}
    if kind == "sb3":
        agent = make_anchor(algo, env_id, seed)
        start = time.perf_counter()
        agent.learn(steps)
        elapsed = time.perf_counter() - start
        return {"steps_per_s": agent.num_timesteps / elapsed, "updates": agent._n_updates}
    import mdpo

    compiled = kind == "compiled"
    options = {"compile_update": True} if compiled else {}
    agent = getattr(mdpo, algo)("MlpPolicy", env_id, seed=seed, device="cpu", **options)
    compile_seconds = 0.0
    if compiled:  # the first rollout and update (compilation) are timed apart
        start = time.perf_counter()
        agent.learn(agent.n_steps)
        compile_seconds = time.perf_counter() - start
        agent.runner.env_time = 0.0
    start = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=not compiled)
    elapsed = time.perf_counter() - start
    if compiled:
        steps = agent.num_timesteps - agent.n_steps
    env_s = agent.runner.env_time
    return {
        "steps_per_s": (steps if compiled else agent.num_timesteps) / elapsed,
        "updates": agent._n_updates,
        "env_share": env_s / elapsed,
        "first_iteration_s": compile_seconds,
        "final_log_std": float(np.mean(agent.policy.log_std.detach().numpy())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--algo", choices=sorted(ANCHORS), default="PPO")
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=16384, help="env steps per training run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="default results/speed/ALGO")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also ours with compile_update=True (its first iteration, with the compilation, "
        "timed apart)",
    )
    parser.add_argument(
        "--worker", choices=["raw", "sb3", "ours", "compiled"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.algo, args.env, args.steps, args.seed)))
        return
    args.out = args.out or os.path.join(ROOT, "results", "speed", args.algo)
    anchor = ANCHORS[args.algo]
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    rows = []
    for repeat in range(args.repeats):
        row = {"repeat": repeat}
        for kind in ("raw", "sb3", "ours", *(["compiled"] if args.compiled else [])):
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    "--env",
                    args.env,
                    "--steps",
                    str(args.steps),
                    "--seed",
                    str(args.seed + repeat),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if result.returncode != 0:
                sys.exit(f"{kind} run failed:\n{result.stderr}")
            data = json.loads(result.stdout.strip().splitlines()[-1])
            row[f"{kind}_steps_per_s"] = data["steps_per_s"]
            if kind == "ours":
                row["ours_env_share"] = data["env_share"]
            if kind == "compiled":
                row["compiled_first_iteration_s"] = data["first_iteration_s"]
        row["ratio"] = row["ours_steps_per_s"] / row["sb3_steps_per_s"]
        if args.compiled:
            row["compiled_ratio"] = row["compiled_steps_per_s"] / row["sb3_steps_per_s"]
        rows.append(row)
        print(
            f"repeat {repeat}: raw {row['raw_steps_per_s']:.0f}/s  "
            f"{anchor} {row['sb3_steps_per_s']:.0f}/s  mdpo {row['ours_steps_per_s']:.0f}/s  "
            f"ratio {row['ratio']:.2f}x"
            + (
                f"  compiled {row['compiled_steps_per_s']:.0f}/s ({row['compiled_ratio']:.2f}x)"
                if args.compiled
                else ""
            ),
            flush=True,
        )

    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "repeat"}
    ratios = [r["ratio"] for r in rows]
    print(
        f"median: raw {median['raw_steps_per_s']:.0f}/s, {anchor} "
        f"{median['sb3_steps_per_s']:.0f}/s, mdpo {median['ours_steps_per_s']:.0f}/s, "
        f"ratio mdpo/anchor {median['ratio']:.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )

    os.makedirs(args.out, exist_ok=True)
    write_rows(os.path.join(args.out, "runs.csv"), rows)
    meta = {
        **run_metadata(command),
        "algo": args.algo,
        "anchor": anchor,
        "env": args.env,
        "steps": args.steps,
        "repeats": args.repeats,
        "median": median,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(meta, handle, indent=1)
    lines = [
        f"# {args.algo} training speed on {args.env}: mdpo vs {anchor}",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{meta['commit']}`, {meta['date']}  ",
        f"Machine: {meta['machine']}; Python {meta['python']}, torch {meta['torch']}, "
        f"gymnasium {meta['gymnasium']}, stable-baselines3 {meta['stable_baselines3']}",
        "",
        f"{PAIRING[args.algo]} 1 env, 1 torch thread, CPU, {args.steps} env steps per run; each "
        "run in its own process, the three kinds interleaved per repeat. Raw = `env.step` with "
        "random actions, no agent (the ceiling).",
        "",
        f"| repeat | raw env steps/s | {anchor} steps/s | mdpo {args.algo} steps/s | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['repeat']} | {r['raw_steps_per_s']:.0f} | {r['sb3_steps_per_s']:.0f} | "
            f"{r['ours_steps_per_s']:.0f} | {r['ratio']:.2f}x |"
        )
    lines.append(
        f"| **median** | {median['raw_steps_per_s']:.0f} | {median['sb3_steps_per_s']:.0f} | "
        f"{median['ours_steps_per_s']:.0f} | **{median['ratio']:.2f}x** |"
    )
    lines += [
        "",
        f"Share of mdpo's wall time inside `env.step`: {median['ours_env_share']:.0%} (median).",
        "",
    ]
    if args.compiled:
        lines += [
            f"With `compile_update=True` (after a first iteration of "
            f"{median['compiled_first_iteration_s']:.1f} s, compilation included, timed apart): "
            f"{median['compiled_steps_per_s']:.0f} steps/s, "
            f"**{median['compiled_ratio']:.2f}x** the anchor (medians).",
            "",
        ]
    with open(os.path.join(args.out, "README.md"), "w") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out}/README.md, runs.csv, summary.json")


if __name__ == "__main__":
    main()
