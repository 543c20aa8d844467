"""PPO training speed: mdpo against Stable-Baselines3, same hyperparameters, in one run.

Each measurement runs in its own process with one torch thread and one env; the three kinds
(raw env stepping with random actions, SB3's PPO, ours) are interleaved in every repeat so
that machine noise hits them alike. Reported: env-steps/s of each, the per-repeat ratio
ours / SB3 and its median.

    python benchmarks/ppo_speed.py --env Hopper-v5 --steps 16384 --repeats 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from mdpo.utils import code_version

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def worker(kind: str, env_id: str, steps: int, seed: int) -> dict:
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
        from stable_baselines3 import PPO

        agent = PPO("MlpPolicy", env_id, seed=seed, device="cpu")
        start = time.perf_counter()
        agent.learn(steps)
        elapsed = time.perf_counter() - start
        return {"steps_per_s": agent.num_timesteps / elapsed, "updates": agent._n_updates}
    from mdpo import PPO

    agent = PPO("MlpPolicy", env_id, seed=seed, device="cpu")
    start = time.perf_counter()
    agent.learn(steps)
    elapsed = time.perf_counter() - start
    env_s = agent.runner.env_time
    return {
        "steps_per_s": agent.num_timesteps / elapsed,
        "updates": agent._n_updates,
        "env_share": env_s / elapsed,
        "final_log_std": float(np.mean(agent.policy.log_std.detach().numpy())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=16384, help="env steps per training run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "ppo_speed"))
    parser.add_argument("--worker", choices=["raw", "sb3", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.env, args.steps, args.seed)))
        return

    command = "python benchmarks/ppo_speed.py " + " ".join(sys.argv[1:])
    rows = []
    for repeat in range(args.repeats):
        row = {"repeat": repeat}
        for kind in ("raw", "sb3", "ours"):
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
        row["ratio"] = row["ours_steps_per_s"] / row["sb3_steps_per_s"]
        rows.append(row)
        print(
            f"repeat {repeat}: raw {row['raw_steps_per_s']:.0f}/s  "
            f"SB3 {row['sb3_steps_per_s']:.0f}/s  mdpo {row['ours_steps_per_s']:.0f}/s  "
            f"ratio {row['ratio']:.2f}x",
            flush=True,
        )

    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "repeat"}
    ratios = [r["ratio"] for r in rows]
    print(
        f"median: raw {median['raw_steps_per_s']:.0f}/s, SB3 {median['sb3_steps_per_s']:.0f}/s, "
        f"mdpo {median['ours_steps_per_s']:.0f}/s, ratio mdpo/SB3 {median['ratio']:.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )

    import gymnasium
    import stable_baselines3
    import torch

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "command": command,
        "commit": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "env": args.env,
        "steps": args.steps,
        "repeats": args.repeats,
        "median": median,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(meta, handle, indent=1)
    lines = [
        f"# PPO training speed on {args.env}: mdpo vs Stable-Baselines3",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{meta['commit']}`, {meta['date']}  ",
        f"Machine: {meta['machine']}; Python {meta['python']}, torch {meta['torch']}, "
        f"gymnasium {meta['gymnasium']}, stable-baselines3 {meta['stable_baselines3']}",
        "",
        f"Both with SB3's PPO defaults (n_steps 2048, batch 64, 10 epochs, [64, 64] tanh), 1 env, "
        f"1 torch thread, CPU, {args.steps} env steps per run; each run in its own process, the "
        "three kinds interleaved per repeat. Raw = `env.step` with random actions, no agent "
        "(the ceiling).",
        "",
        "| repeat | raw env steps/s | SB3 PPO steps/s | mdpo PPO steps/s | mdpo / SB3 |",
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
    with open(os.path.join(args.out, "README.md"), "w") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out}/README.md, runs.csv, summary.json")


if __name__ == "__main__":
    main()
