"""Torch threads for small networks on CPU: one thread against torch's default, idle and with
the other cores busy, for PPO, SAC, OPPO and TS-DDR (the reason `mdpo` commands use one thread
on the CPU unless --threads says otherwise).

Each measurement is a short training run in its own process (the thread count is set before
torch does any work); "busy" runs a pure-Python spinning process per other core meanwhile, as
a second job on the machine would. Reported: timesteps (gradient steps for OPPO and TS-DDR)
per second, medians over the repeats, and the ratio one thread / default.

    python benchmarks/threads.py --repeats 3 --out results/threads
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from common import run_metadata, write_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOADS = ("PPO", "SAC", "OPPO", "TSDDR")


def worker(algo: str, threads: int) -> float:
    """Train ``algo`` briefly with ``threads`` torch threads; returns timesteps per second."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    from mdpo import OPPO, PPO, SAC, TSDDR

    if algo == "PPO":
        agent, steps = PPO("MlpPolicy", "CartPole-v1", n_steps=512, seed=0, device="cpu"), 4096
        agent.learn(512)  # warm-up
    elif algo == "SAC":
        agent = SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cpu")
        agent.learn(150)
        steps = 300
    elif algo == "OPPO":
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from pendulum_mixture import mixture_dataset

        data = mixture_dataset(good=10, bad=10)
        agent = OPPO("MlpPolicy", data, batch_size=64, seed=0, device="cpu")
        agent.learn(5)
        steps = 20
    else:
        from mdpo.envs.hydro.problem import HydroProblem

        problem = HydroProblem("case3", 12, load_scale=1.0)
        agent = TSDDR("LSTMPolicy", problem, batch_size=4, eval_freq=0, seed=0, device="cpu")
        agent.learn(2)
        steps = 20
    tic = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - tic)


def spin() -> None:
    """Keep one core busy (pure Python)."""
    while True:
        pass


def measure(algo: str, threads: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", algo, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MUJOCO_GL": "disable"},
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--algos", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "threads"))
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker, args.threads))
        return
    cores = os.cpu_count() or 2
    rows = []
    for load in ("idle", "busy"):
        spinners = []
        if load == "busy":
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(cores - 1)]
            for process in spinners:
                process.start()
        try:
            for algo in args.algos:
                rates: dict[int, list[float]] = {1: [], 0: []}
                for _ in range(args.repeats):
                    for threads in (1, 0):  # interleaved: noise hits both alike
                        rates[threads].append(measure(algo, threads))
                one, default = statistics.median(rates[1]), statistics.median(rates[0])
                row = {
                    "load": load,
                    "algo": algo,
                    "one_thread": round(one, 2),
                    "default_threads": round(default, 2),
                    "ratio": round(one / default, 2),
                }
                print(
                    f"{load:4s} {algo:5s}: 1 thread {one:9.1f}/s, default {default:9.1f}/s, "
                    f"ratio {one / default:.2f}x"
                )
                rows.append(row)
        finally:
            for process in spinners:
                process.kill()
    meta = run_metadata(" ".join(["python", "benchmarks/threads.py", *sys.argv[1:]]))
    meta["default_threads"] = __import__("torch").get_num_threads()
    os.makedirs(args.out, exist_ok=True)
    write_rows(os.path.join(args.out, "runs.csv"), rows)
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump({**meta, "rows": rows}, handle, indent=1)
    lines = [
        "# Torch threads for small networks on CPU",
        "",
        f"Command: `{meta['command']}` (commit {meta['commit']}, {meta['date']}; "
        f"{cores} cores, torch's default {meta['default_threads']} threads).",
        "",
        "| load | workload | 1 thread (/s) | default threads (/s) | ratio |",
        "|---|---|---:|---:|---:|",
        *[
            f"| {r['load']} | {r['algo']} | {r['one_thread']} | {r['default_threads']} | "
            f"{r['ratio']}x |"
            for r in rows
        ],
        "",
        "Timesteps per second (gradient steps for OPPO and TS-DDR), medians of "
        f"{args.repeats} repeats; busy = one spinning process per other core.",
    ]
    with open(os.path.join(args.out, "README.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/README.md, runs.csv, summary.json")


if __name__ == "__main__":
    main()
