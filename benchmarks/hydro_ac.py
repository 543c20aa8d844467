"""The Bolivia case study on the AC network (issue 21): every method judged on the AC stage
problems of the 100 evaluation paths (seed 2024), 96 stages reported.

Runs the documented ``mdpo hydro`` commands in order, each into ``OUT/<name>``; a step whose
folder already holds ``summary.json`` is skipped, and the training steps (SDDP, TS-DDR) resume
from their own checkpoints, so the script can be stopped and started again (across sessions).
Each command's line goes to ``OUT/commands.md`` with the commit it ran on; the table comes from
``mdpo hydro compare`` at the end.

    python benchmarks/hydro_ac.py --out results/hydro/bolivia_ac            # every step
    python benchmarks/hydro_ac.py --out results/hydro/bolivia_ac --only bound myopic

Budget (2 cores; see results/hydro/README.md for why): SDDP trains on the SOC relaxation with
the DC study's stopping rule and a time limit; the TS-DDR rules start from the DC study's
trained rules and are fine-tuned on AC for ``--tsddr-steps`` steps; TS-LDR (no DC model was
kept) and PPO (100k env steps) train on AC from scratch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

DC = "results/hydro/bolivia_dc"


def steps(out: str, tsddr_steps: int, workers: int) -> dict[str, list[str]]:
    """Step name → the ``mdpo`` arguments of its command."""
    common = ["--case", "bolivia", "--formulation", "ac", "--scenarios", "100"]
    tsddr = [
        "hydro", "tsddr", *common, "--stages", "96", "--batch", "4", "--workers", str(workers),
        "--eval-freq", "25", "--eval-scenarios", "20", "--checkpoint-freq", "5",
    ]  # fmt: skip
    return {
        "bound": ["hydro", "bound", *common, "--horizon", "96", "--workers", str(workers)],
        "myopic": ["hydro", "simulate", "myopic", *common, "--stages", "96"],
        "sddp_dc_cuts": [
            "hydro",
            "simulate",
            f"{DC}/sddp/cuts.json.gz",
            *common,
            "--stages",
            "96",
        ],  # fmt: skip
        "sddp": [
            "hydro",
            "sddp",
            *common,
            "--horizon",
            "126",
            "--report",
            "96",
            "--iterations",
            "2000",
            "--time-limit",
            "3600",
            "--stall-iterations",
            "30",
            "--stall-tolerance",
            "1e-5",
        ],  # fmt: skip
        "tsddr_strict": [
            *tsddr,
            "--policy",
            "strict",
            "--steps",
            str(tsddr_steps),
            "--init",
            f"{DC}/tsddr_strict/best_model.zip",
        ],  # fmt: skip
        "tsddr_lstm": [
            *tsddr,
            "--policy",
            "lstm",
            "--steps",
            str(tsddr_steps),
            "--init",
            f"{DC}/tsddr_lstm/best_model.zip",
        ],  # fmt: skip
        "tsldr": [*tsddr, "--policy", "linear", "--steps", str(tsddr_steps)],
        # PPO trains on HydroDispatch-v0 with AC stage problems (rewards × 0.001, as the DC
        # study), then its best evaluated model is simulated on the evaluation paths
        "ppo_train": [
            "train",
            "PPO",
            "HydroDispatch-v0",
            "--set",
            'env_kwargs={"case": "bolivia", "horizon": 96, "reward_scale": 0.001, '
            '"formulation": "ac"}',
            "--steps",
            "100000",
            "--eval-freq",
            "10000",
            "--eval-episodes",
            "5",
            "--threads",
            "1",
        ],  # fmt: skip
        "ppo": [
            "hydro",
            "simulate",
            os.path.join(out, "ppo_train", "eval", "best_model.zip"),
            *common,
            "--stages",
            "96",
            "--label",
            "PPO (100k steps)",
        ],  # fmt: skip
    }


def finished(folder: str) -> bool:
    """A step is done when its folder holds its result: ``summary.json`` (hydro commands) or
    ``final_model.zip`` (a training run of ``mdpo train``)."""
    return any(
        os.path.exists(os.path.join(folder, name)) for name in ("summary.json", "final_model.zip")
    )


def commit() -> str:
    """The commit the code runs on (with ``+`` when the work tree differs from it)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "status", "--porcelain", "mdpo"], capture_output=True, text=True)
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/hydro/bolivia_ac", help="results folder")
    parser.add_argument("--only", nargs="*", help="these steps only (default: all, in order)")
    parser.add_argument("--tsddr-steps", type=int, default=100, help="TS-DDR steps on AC")
    parser.add_argument("--workers", type=int, default=2, help="solver processes")
    args = parser.parse_args()
    plan = steps(args.out, args.tsddr_steps, args.workers)
    unknown = set(args.only or []) - set(plan)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; the steps are {', '.join(plan)}")
    os.makedirs(args.out, exist_ok=True)
    for name, mdpo_args in plan.items():
        if args.only and name not in args.only:
            continue
        folder = os.path.join(args.out, name)
        if finished(folder):
            print(f"{name}: done ({folder})", flush=True)
            continue
        # mdpo train resumes a run folder with --resume (its other flags come from the run)
        resume = name == "ppo_train" and os.path.exists(os.path.join(folder, "config.json"))
        mdpo_args = ["train", "--resume", folder] if resume else [*mdpo_args, "--out", folder]
        command = ["mdpo", *mdpo_args, "--no-progress"]
        line = shlex.join(command)
        print(f"{name}: {line}", flush=True)
        start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        with open(os.path.join(args.out, "commands.md"), "a") as log:
            log.write(f"- `{name}` started {start} on {commit()}: `{line}`\n")
        done = subprocess.run([sys.executable, "-m", "mdpo", *command[1:]])
        if done.returncode != 0:
            print(f"{name}: failed with status {done.returncode}", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
