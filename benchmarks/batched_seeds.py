"""K seeds of CartPole PPO as one batched run against K separate runs (not a test).

For each K of ``--ks`` (default 1, 8, 64, 512), :class:`mdpo.BatchedPPO` trains seeds
``0 .. K-1`` of PPO on ``torch:CartPole-v1`` as one computation, evaluating every member every
``--eval-every`` steps (10 deterministic episodes on its own eval env; evaluation time
excluded), until every seed has solved CartPole (mean return >= 475) or the budget is spent.
Reported: total training env steps per second (summed over the seeds) and the training time
until every seed had solved.

The anchor is separate runs: ``--separate`` separate ``PPO`` runs (seeds 0, 1, ...) with the
same hyperparameters, each stopped when it solves, are measured in the same invocation and
*extrapolated* to K seeds run one after another on one core: their env steps per second
(independent of K) and K times their mean time to solve. Each member of a batch is the
separate run of its seed (``tests/test_batched_seeds.py``), so both sides learn the same
thing; the batch cannot stop a member that solved early, the separate runs do.

PPO settings: RL Zoo's CartPole-v1 PPO (8 envs x 32 steps, minibatch 256, 20 epochs,
gamma 0.98, GAE lambda 0.8, no entropy bonus) with a constant learning rate of 1e-3 (Zoo's
decays it to 0 over its budget, which would tie the learning to the budget).

Usage (the budget may be given once or per K)::

    python benchmarks/batched_seeds.py --out results/batched_seeds
    python benchmarks/batched_seeds.py --ks 1 8 64 512 --budget 65536 65536 65536 8192
    python benchmarks/batched_seeds.py --device cuda --env-rng shared \
        --out results/batched_seeds_cuda
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import run_metadata, write_rows  # noqa: E402
from mdpo import PPO, BatchedPPO  # noqa: E402
from mdpo.core.utils import get_device  # noqa: E402
from mdpo.rl.callbacks import BaseCallback  # noqa: E402
from mdpo.rl.evaluation import evaluate_policy  # noqa: E402
from mdpo.rl.runners import make_vec_env  # noqa: E402

ENV = "torch:CartPole-v1"
N_ENVS = 8
PPO_SETTINGS = dict(
    n_steps=32,
    batch_size=256,
    n_epochs=20,
    gamma=0.98,
    gae_lambda=0.8,
    learning_rate=1e-3,
    ent_coef=0.0,
)
SOLVED = 475.0
EVAL_EPISODES = 10
EVAL_SEED_OFFSET = 10_000  # as the sweeps: eval envs far from the training envs' seeds


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on an accelerator)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched(
    k: int, budget: int, args: argparse.Namespace, device: torch.device, solve_steps: list[int]
) -> dict:
    """One batch of seeds ``0 .. k-1``; the training time until all solved, and its rate.
    Each seed's env steps to its first solved evaluation go to ``solve_steps`` (-1: never)."""
    batch = BatchedPPO(
        ENV, list(range(k)), n_envs=N_ENVS, device=device, env_rng=args.env_rng, **PPO_SETTINGS
    )
    solved_at = [None] * k  # (env steps, training seconds) of each seed's first solve
    clock = {"eval": 0.0, "start": 0.0, "next": args.eval_every, "evals": 0}

    def evaluate(b: BatchedPPO) -> bool:
        if b.num_timesteps < clock["next"]:
            return True
        clock["next"] += args.eval_every
        synchronize(device)
        tic = time.perf_counter()
        trained = tic - clock["start"] - clock["eval"]  # training seconds so far
        returns, _ = b.evaluate(EVAL_EPISODES, seed_offset=EVAL_SEED_OFFSET)
        clock["eval"] += time.perf_counter() - tic
        clock["evals"] += 1
        for i, member_returns in enumerate(returns):
            if solved_at[i] is None and np.mean(member_returns) >= SOLVED:
                solved_at[i] = (b.num_timesteps, trained)
        done = sum(s is not None for s in solved_at)
        print(f"  K={k}: {b.num_timesteps} steps, {done}/{k} solved", flush=True)
        return not (args.stop_when_solved and done == k)

    clock["start"] = time.perf_counter()
    batch.learn(budget, on_rollout_start=evaluate)
    synchronize(device)
    train_seconds = time.perf_counter() - clock["start"] - clock["eval"]
    steps = batch.num_timesteps
    all_solved = all(s is not None for s in solved_at)
    solve_steps.clear()
    solve_steps.extend(-1 if s is None else s[0] for s in solved_at)
    return {
        "mode": "batched",
        "K": k,
        "budget_per_seed": budget,
        "steps_per_seed": steps,
        "train_seconds": round(train_seconds, 2),
        "total_steps_per_s": round(k * steps / train_seconds),
        "solved_seeds": sum(s is not None for s in solved_at),
        "seconds_until_all_solved": (
            round(max(s[1] for s in solved_at), 2) if all_solved else float("nan")
        ),
        "steps_until_all_solved": max(s[0] for s in solved_at) if all_solved else -1,
        "evaluations": clock["evals"],
    }


class SolveClock(BaseCallback):
    """Evaluate every ``every`` steps as the batch does; stop when solved; time training."""

    def __init__(self, every: int, seed: int):
        super().__init__()
        self.every, self.next_eval, self.seed = every, every, seed
        self.eval_seconds, self.solved_at = 0.0, None
        self.env = make_vec_env(ENV)
        self.start = time.perf_counter()

    def _on_rollout_start(self) -> None:
        if self.num_timesteps < self.next_eval:
            return
        self.next_eval += self.every
        tic = time.perf_counter()
        returns, _ = evaluate_policy(
            self.model,
            self.env,
            n_eval_episodes=EVAL_EPISODES,
            return_episode_rewards=True,
            seed=EVAL_SEED_OFFSET + self.seed,
        )
        self.eval_seconds += time.perf_counter() - tic
        if np.mean(returns) >= SOLVED and self.solved_at is None:
            self.solved_at = (self.num_timesteps, tic - self.start - self.eval_seconds)

    def _on_step(self) -> bool:
        return self.solved_at is None


def separate(seed: int, budget: int, args: argparse.Namespace, device: torch.device) -> dict:
    """One separate run, stopped when solved."""
    agent = PPO("MlpPolicy", ENV, n_envs=N_ENVS, seed=seed, device=device, **PPO_SETTINGS)
    clock = SolveClock(args.eval_every, seed)
    clock.start = time.perf_counter()
    agent.learn(budget, callback=clock)
    synchronize(device)
    train_seconds = time.perf_counter() - clock.start - clock.eval_seconds
    solved = clock.solved_at is not None
    print(f"  separate seed {seed}: {agent.num_timesteps} steps, solved={solved}", flush=True)
    return {
        "mode": "separate (measured)",
        "K": 1,
        "budget_per_seed": budget,
        "steps_per_seed": agent.num_timesteps,
        "train_seconds": round(train_seconds, 2),
        "total_steps_per_s": round(agent.num_timesteps / train_seconds),
        "solved_seeds": int(solved),
        "seconds_until_all_solved": round(clock.solved_at[1], 2) if solved else float("nan"),
        "steps_until_all_solved": clock.solved_at[0] if solved else -1,
        "evaluations": -1,
        "seed": seed,
    }


def extrapolated(k: int, budget: int, measured: list[dict], solve_steps: list[int]) -> dict:
    """K separate runs one after another on one core: each seed's steps to solve (its batch
    member's, which is its separate run) at the measured separate runs' env steps/s."""
    rate = statistics.mean(r["total_steps_per_s"] for r in measured)
    all_solved = min(solve_steps) >= 0
    return {
        "mode": f"{k} separate (extrapolated from {len(measured)})",
        "K": k,
        "budget_per_seed": budget,
        "steps_per_seed": -1,
        "train_seconds": float("nan"),
        "total_steps_per_s": round(rate),
        "solved_seeds": -1,
        "seconds_until_all_solved": round(sum(solve_steps) / rate, 2)
        if all_solved
        else float("nan"),
        "steps_until_all_solved": max(solve_steps) if all_solved else -1,
        "evaluations": -1,
    }


def write_readme(out: str, meta: dict, rows: list[dict], checks: list[str]) -> None:
    lines = [
        "# Many seeds of CartPole PPO as one batched run",
        "",
        "Written by `benchmarks/batched_seeds.py` (its docstring says what is measured).",
        "",
        *[f"- {key}: `{value}`" for key, value in meta.items()],
        "",
        "| mode | K | steps per seed | total env steps/s | solved | s until all solved |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        solved = "" if r["solved_seeds"] < 0 else f"{r['solved_seeds']}/{r['K']}"
        steps = "" if r["steps_per_seed"] < 0 else str(r["steps_per_seed"])
        until = r["seconds_until_all_solved"]
        until = "-" if until != until else f"{until:.1f}"  # NaN: not every seed solved
        lines.append(
            f"| {r['mode']} | {r['K']} | {steps} | {r['total_steps_per_s']:,} | {solved} | "
            f"{until} |"
        )
    lines += [
        "",
        "Separate runs are extrapolated, not run K times: each seed's env steps to its first "
        "solved evaluation (those of its batch member: the member is its separate run) at the "
        "measured separate runs' env steps/s, summed over the seeds (one run after another on "
        "one core). A separate run stops when it solves; a batch trains on until its last "
        "member solves. Evaluation time is excluded everywhere (evaluations every "
        "`--eval-every` steps, 10 deterministic episodes).",
        "",
        "The measured separate runs against their batch members (-1: not solved within the "
        "budget):",
        "",
        *[f"- {check}" for check in checks],
        "",
    ]
    with open(os.path.join(out, "README.md"), "w") as handle:
        handle.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 8, 64, 512])
    parser.add_argument(
        "--budget", nargs="+", type=int, default=[100_000], help="env steps per seed (or per K)"
    )
    parser.add_argument("--eval-every", type=int, default=4096)
    parser.add_argument("--separate", type=int, default=3, help="separate runs measured")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--env-rng",
        default="per_seed",
        choices=["per_seed", "shared"],
        help="per_seed: the separate runs' env streams (K draws a step on a GPU); shared: one",
    )
    parser.add_argument(
        "--no-stop-when-solved",
        dest="stop_when_solved",
        action="store_false",
        help="train batches to the budget even once every seed solved",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="results/batched_seeds")
    args = parser.parse_args()
    if len(args.budget) not in (1, len(args.ks)):
        parser.error(f"--budget takes one value or one per K ({len(args.ks)}), not {args.budget}")
    budgets = args.budget * len(args.ks) if len(args.budget) == 1 else args.budget
    device = get_device(args.device)  # a clear error where CUDA is asked for and absent
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    command = "python " + shlex.join(sys.argv)
    meta = run_metadata(command) | {
        "device": str(device),
        "torch_threads": str(args.threads),
        "env_rng": args.env_rng,
        "load average at start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    print(meta, flush=True)
    rows = []
    measured = [separate(seed, max(budgets), args, device) for seed in range(args.separate)]
    rows += measured
    checks = []
    for k, budget in zip(args.ks, budgets):
        solve_steps: list[int] = []
        row = batched(k, budget, args, device, solve_steps)
        rows.append(row)
        if measured:
            rows.append(extrapolated(k, budget, measured, solve_steps))
        # the members that have a measured separate run: the same solve step expected
        for run in measured:
            if run["seed"] < k:
                member = solve_steps[run["seed"]]
                checks.append(
                    f"K={k}, seed {run['seed']}: separate run solved at "
                    f"{run['steps_until_all_solved']} steps, its batch member at {member}"
                )
        print(row, flush=True)
    meta["load average at the end (1, 5, 15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    columns = list(measured[0] if measured else rows[0])
    write_rows(
        os.path.join(args.out, "runs.csv"), [{c: r.get(c, "") for c in columns} for r in rows]
    )
    write_readme(args.out, meta, rows, checks)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
