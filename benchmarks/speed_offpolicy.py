"""Off-policy training speed: SAC and off-policy MDPO against Stable-Baselines3's SAC.

Measured in separate processes with one torch thread, float32, on CPU, interleaved per
repeat so that machine noise hits every kind alike:

- ``updates/s``: gradient steps per second of ``train()`` on a replay buffer filled by
  ``--fill`` steps of uniform random actions (batch 256, SB3's SAC defaults for all);
- ``env-steps/s``: training throughput after warm-up (``learn`` with one gradient step per
  env step, SB3's default schedule), measured over ``--steps`` env steps;
- the ceiling: the update's floating-point operations (matrix products; counted from the
  network sizes) divided by this machine's measured float32 matmul rate on 256×256 products,
  and each implementation's fraction of it.

    python benchmarks/speed_offpolicy.py --env Hopper-v5 --repeats 5
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
#: what is measured: SB3's SAC, then ours, each as ``Algo[+bf16][+compile]`` (the update's
#: networks in bfloat16 under autocast; the update's losses compiled with torch.compile)
KINDS = (
    "sb3",
    "SAC",
    "SAC+compile",
    "SAC+bf16",
    "SAC+bf16+compile",
    "OffPolicyMDPO",
    "OffPolicyMDPO+compile",
    "OffPolicyMDPO+bf16",
    "OffPolicyMDPO+bf16+compile",
)
NAMES = {"sb3": "SB3 SAC", "SAC": "mdpo SAC", "OffPolicyMDPO": "mdpo MDPO-KL (off-policy)"}


def label(kind: str) -> str:
    """``SAC+bf16+compile`` → ``mdpo SAC, bf16, compiled``."""
    algo, *flags = kind.split("+")
    words = {"bf16": "bf16", "compile": "compiled"}
    return ", ".join([NAMES[algo], *(words[f] for f in flags)])


def options(kind: str) -> dict:
    """The constructor options of a kind."""
    flags = kind.split("+")[1:]
    unknown = set(flags) - {"bf16", "compile"}
    if unknown or kind.split("+")[0] not in NAMES:
        raise SystemExit(f"unknown kind {kind!r}: Algo[+bf16][+compile], Algo in {list(NAMES)}")
    out: dict = {}
    if "bf16" in flags:
        out["precision"] = "bfloat16"
    if "compile" in flags:
        out["compile_update"] = True
    return out


def matmul_gflops(size: int = 256, seconds: float = 1.0, dtype: str = "float32") -> float:
    """Measured GFLOP/s of ``[size, size] @ [size, size]`` on one thread."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    for _ in range(20):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            a @ b
        count += 50
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def update_flops(obs_dim: int, action_dim: int, batch: int, hidden: int = 256) -> dict:
    """Matrix-product FLOPs of one gradient step (2·m·n·k per product, two hidden layers).

    ``sac_sb3``: SB3's SAC as written (the actor's backward also computes the critics'
    weight gradients, which are thrown away). ``sac_needed``: what SAC needs (the actor's
    backward goes through the critics to the action only). ``mdpo``: off-policy MDPO with
    the original's twin Q + V + target V and the frozen π_k.
    """

    def mlp(inputs: int, outputs: int) -> int:  # forward FLOPs per sample
        return 2 * (inputs * hidden + hidden * hidden + hidden * outputs)

    actor, q, v = mlp(obs_dim, 2 * action_dim), mlp(obs_dim + action_dim, 1), mlp(obs_dim, 1)
    # forward F; backward with weight and input gradients 2F; input gradients only F
    sac_needed = (
        3 * actor  # actor on s: forward + backward
        + actor  # actor on s' (no grad)
        + 2 * q  # twin target Q on (s', a')
        + 3 * 2 * q  # twin Q on (s, a): forward + backward
        + 2 * 2 * q  # twin Q on (s, ã): forward + input gradient
    )
    sac_sb3 = sac_needed + 2 * q  # plus the critics' weight gradients in the actor's backward
    mdpo = (
        3 * actor  # actor on s
        + actor  # π_k on s
        + 2 * q  # Q1 on (s, ã): forward + input gradient (the actor's path)
        + q  # Q2 on (s, ã), no grad (V's target)
        + 3 * 2 * q  # twin Q on (s, a)
        + 3 * v  # V on s
        + v  # target V on s'
    )
    return {
        k: n * batch for k, n in (("sac_sb3", sac_sb3), ("sac_needed", sac_needed), ("mdpo", mdpo))
    }


def make_agent(kind: str, env_id: str, seed: int, learning_starts: int, device: str = "cpu"):
    if kind == "sb3":
        from stable_baselines3 import SAC

        return SAC("MlpPolicy", env_id, seed=seed, device=device, learning_starts=learning_starts)
    import mdpo

    return getattr(mdpo, kind.split("+")[0])(
        "MlpPolicy", env_id, seed=seed, device=device, learning_starts=learning_starts,
        **options(kind),
    )  # fmt: skip


def worker(
    kind: str, env_id: str, fill: int, updates: int, steps: int, seed: int, device: str = "cpu"
) -> dict:
    """One measurement in this process."""
    import torch

    torch.set_num_threads(1)
    if kind == "flops":  # the CPU's rates (the ceiling is a CPU notion)
        return {"gflops": matmul_gflops(), "gflops_bf16": matmul_gflops(dtype="bfloat16")}
    agent = make_agent(kind, env_id, seed, learning_starts=fill, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    agent.learn(fill)  # warm-up only: uniform random actions fill the buffer, no update
    train = (lambda n: agent.train(n, 256)) if kind == "sb3" else agent.train
    start = time.perf_counter()
    train(10)  # first-call costs (compilation) out of the timing
    sync()
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    train(updates)
    sync()
    updates_per_s = updates / (time.perf_counter() - start)
    start = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=False)
    sync()
    steps_per_s = steps / (time.perf_counter() - start)
    return {
        "updates_per_s": updates_per_s,
        "steps_per_s": steps_per_s,
        "first_10_updates_s": first_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--fill", type=int, default=2000, help="warm-up steps filling the buffer")
    parser.add_argument("--updates", type=int, default=400, help="timed gradient steps")
    parser.add_argument("--steps", type=int, default=1000, help="timed env steps after warm-up")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "speed", "offpolicy"))
    parser.add_argument(
        "--kinds", nargs="+", default=list(KINDS), help="what to measure (sb3 always first)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every kind, SB3 too)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = ["sb3", *(k for k in args.kinds if k != "sb3")]
    for kind in kinds[1:]:
        options(kind)
    if args.worker:
        result = worker(
            args.worker, args.env, args.fill, args.updates, args.steps, args.seed, args.device
        )
        print(json.dumps(result))
        return

    import gymnasium as gym

    probe = gym.make(args.env)
    obs_dim = int(probe.observation_space.shape[0])
    action_dim = int(probe.action_space.shape[0])
    flops = update_flops(obs_dim, action_dim, 256)
    command = "python benchmarks/speed_offpolicy.py " + " ".join(sys.argv[1:])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(kind: str, seed: int) -> dict:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--env",
            args.env,
            "--fill",
            str(args.fill),
            "--updates",
            str(args.updates),
            "--steps",
            str(args.steps),
            "--seed",
            str(seed),
            "--device",
            args.device,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.exit(f"{kind} run failed:\n{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    rows = []
    for repeat in range(args.repeats):
        rates = run("flops", 0)
        row: dict = {
            "repeat": repeat,
            "gflops": rates["gflops"],
            "gflops_bf16": rates["gflops_bf16"],
        }
        for kind in kinds:
            data = run(kind, args.seed + repeat)
            row[f"{kind}_updates_per_s"] = data["updates_per_s"]
            row[f"{kind}_steps_per_s"] = data["steps_per_s"]
            row[f"{kind}_first_10_updates_s"] = data["first_10_updates_s"]
        for kind in kinds[1:]:
            row[f"{kind}_update_ratio"] = row[f"{kind}_updates_per_s"] / row["sb3_updates_per_s"]
            row[f"{kind}_step_ratio"] = row[f"{kind}_steps_per_s"] / row["sb3_steps_per_s"]
        rows.append(row)
        print(
            f"repeat {repeat}: matmul {row['gflops']:.0f} GFLOP/s | updates/s "
            + ", ".join(f"{label(k)} {row[f'{k}_updates_per_s']:.1f}" for k in kinds)
            + " | env-steps/s "
            + ", ".join(f"{label(k)} {row[f'{k}_steps_per_s']:.1f}" for k in kinds),
            flush=True,
        )

    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "repeat"}
    gflops, gflops_bf16 = median["gflops"], median["gflops_bf16"]

    def ceiling(kind: str) -> float:
        """Updates/s if every FLOP ran at the measured matmul rate of the kind's precision."""
        rate = gflops_bf16 if "+bf16" in kind else gflops
        needed = flops["mdpo"] if kind.startswith("OffPolicyMDPO") else flops["sac_needed"]
        return rate * 1e9 / needed

    ceilings = {kind: ceiling(kind) for kind in kinds}
    print(
        f"update FLOPs: SAC as SB3 computes it {flops['sac_sb3'] / 1e9:.3f} G, SAC needed "
        f"{flops['sac_needed'] / 1e9:.3f} G, MDPO {flops['mdpo'] / 1e9:.3f} G; matmul "
        f"{gflops:.0f} GFLOP/s float32, {gflops_bf16:.0f} bfloat16 (medians)"
    )
    for kind in kinds:
        fraction = median[f"{kind}_updates_per_s"] / ceilings[kind]
        line = (
            f"{label(kind)}: {median[f'{kind}_updates_per_s']:.1f} updates/s "
            f"(ceiling {ceilings[kind]:.0f}, {fraction:.0%} of it), "
            f"{median[f'{kind}_steps_per_s']:.1f} env-steps/s"
        )
        if kind != "sb3":
            line += (
                f"; ratio to SB3: updates {median[f'{kind}_update_ratio']:.2f}x, "
                f"env-steps {median[f'{kind}_step_ratio']:.2f}x"
            )
        print(line)

    os.makedirs(args.out, exist_ok=True)
    write_rows(os.path.join(args.out, "runs.csv"), rows)
    meta = {
        **run_metadata(command),
        "env": args.env,
        "flops": flops,
        "ceilings_updates_per_s": ceilings,
        "median": median,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(meta, handle, indent=1)
    lines = [
        f"# Off-policy training speed on {args.env}: mdpo SAC and MDPO vs SB3 SAC",
        "",
        "Kinds: `Algo[+bf16][+compile]`: the networks' matrix products in bfloat16 under "
        'autocast (`precision="bfloat16"`), the update\'s losses compiled with torch.compile '
        "(`compile_update=True`; the first 10 updates, compilation included, are timed apart).",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{meta['commit']}`, {meta['date']}  ",
        f"Machine: {meta['machine']}; Python {meta['python']}, torch {meta['torch']}, "
        f"gymnasium {meta['gymnasium']}, stable-baselines3 {meta['stable_baselines3']}",
        "",
        "All with SB3's SAC defaults ([256, 256] ReLU, batch 256, one gradient step per env "
        f"step), 1 torch thread, device {args.device}; MDPO with the original's critics "
        "(twin Q + V + target V). Each measurement in its own process, kinds interleaved "
        "per repeat.",
        "",
        f"Update FLOPs (matrix products, batch 256): SAC as SB3 computes it "
        f"{flops['sac_sb3'] / 1e9:.3f} GFLOP, SAC's necessary work "
        f"{flops['sac_needed'] / 1e9:.3f} GFLOP, off-policy MDPO {flops['mdpo'] / 1e9:.3f} "
        f"GFLOP. Measured matmul rate (256×256, 1 thread): {gflops:.0f} GFLOP/s float32, "
        f"{gflops_bf16:.0f} bfloat16 (medians). Ceiling = necessary FLOPs / the rate of the "
        "kind's precision.",
        "",
        "| | updates/s | ceiling | fraction | ratio to SB3 | env-steps/s after warm-up "
        "| ratio to SB3 | first 10 updates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        ratio_u = "1" if kind == "sb3" else f"**{median[f'{kind}_update_ratio']:.2f}x**"
        ratio_s = "1" if kind == "sb3" else f"{median[f'{kind}_step_ratio']:.2f}x"
        lines.append(
            f"| {label(kind)} | {median[f'{kind}_updates_per_s']:.1f} | "
            f"{ceilings[kind]:.0f} | {median[f'{kind}_updates_per_s'] / ceilings[kind]:.0%} | "
            f"{ratio_u} | {median[f'{kind}_steps_per_s']:.1f} | {ratio_s} | "
            f"{median[f'{kind}_first_10_updates_s']:.1f} s |"
        )
    lines += [
        "",
        "Per repeat: `runs.csv`. Medians over repeats; ratios are per-repeat medians.",
        "",
    ]
    with open(os.path.join(args.out, "README.md"), "w") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out}/README.md, runs.csv, summary.json")


if __name__ == "__main__":
    main()
