"""The batched backend of sweeps: the runs of a spec that differ only by seed, trained as one
batched computation (:class:`mdpo.rl.batched.BatchedPPO`) in one process.

``mdpo sweep run SPEC --backend batched`` (or ``backend: batched`` in the spec) groups the runs
to do by everything but their seed; a group of PPO runs on a torch-native env becomes one
batch. Each run of a batch gets the folder a run of the local backend gets (``eval.csv``,
``final_model.zip``, ``result.json``, ``status.json``) with the numbers its own separate run
would give (within float tolerance), so resuming and ``mdpo sweep report`` work as for any
sweep. Runs that cannot be batched (another algorithm, a gymnasium env, ``target_kl``,
normalization) run on their own, as the local backend runs them, after a one-line notice
naming the run and the reason.

``python -m mdpo.cli.sweep.batch RUN_DIR [RUN_DIR ...]`` trains the runs whose ``config.json``
are in those folders as one batch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

from mdpo.cli.sweep.spec import RunConfig, SweepSpecError
from mdpo.cli.sweep.worker import (
    EVAL_SEED_OFFSET,
    EvalSchedule,
    load_run_config,
    write_failure,
    write_result,
)
from mdpo.core.limits import BadFileError
from mdpo.core.utils import write_json_atomic
from mdpo.rl.batched import BatchedPPO

#: the algorithm the batched backend trains in batches
BATCHED_ALGORITHM = "PPO"


def unbatchable(run: RunConfig) -> str | None:
    """Why ``run`` cannot be trained in a batch (one line), or ``None`` when it can."""
    if run.algorithm != BATCHED_ALGORITHM:
        return f"only {BATCHED_ALGORITHM} is batched, not {run.algorithm}"
    return BatchedPPO.unsupported(run.env, run.hyperparameters)


def batch_key(run: RunConfig) -> str:
    """What the runs of one batch share: everything of their config but the seed."""
    config = run.to_json()
    del config["seed"]
    return json.dumps(config, sort_keys=True)


def group_runs(runs: list[RunConfig]) -> tuple[list[list[RunConfig]], list[tuple[RunConfig, str]]]:
    """Split ``runs`` into batches (runs equal but for their seed, in the order given) and
    the runs that cannot be batched, each with the reason.

    Returns:
        ``(batches, alone)``.
    """
    batches: dict[str, list[RunConfig]] = {}
    alone: list[tuple[RunConfig, str]] = []
    for run in runs:
        reason = unbatchable(run)
        if reason is not None:
            alone.append((run, reason))
        else:
            batches.setdefault(batch_key(run), []).append(run)
    return list(batches.values()), alone


def run_batch(runs: list[RunConfig], run_dirs: list[str]) -> list[dict[str, Any]]:
    """Train ``runs`` (equal but for their seeds) as one batch, each into its folder.

    Each folder ends as :func:`~mdpo.cli.sweep.worker.run_one` leaves a run's, plus
    ``result.json["batch"]``: the batch's size, its runs and its total env steps per second.
    Any exception is recorded in every run's ``status.json`` as a failure and re-raised.

    Returns:
        The runs' results.
    """
    torch.set_num_threads(1)
    started = time.time()
    if len({batch_key(run) for run in runs}) != 1:
        raise SweepSpecError(
            f"the runs {[run.run_id for run in runs]} differ by more than their seed: "
            "they cannot share a batch"
        )
    running = {
        "status": "running",
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for run_dir in run_dirs:
        os.makedirs(run_dir, exist_ok=True)
        write_json_atomic(os.path.join(run_dir, "status.json"), running)
    try:
        first = runs[0]
        reason = unbatchable(first)
        if reason is not None:
            raise SweepSpecError(f"run {first.run_id} cannot be batched: {reason}")
        model = BatchedPPO(
            first.env,
            [run.seed for run in runs],
            n_envs=first.n_envs,
            device=first.device,
            **first.hyperparameters,
        )
        schedules = [
            EvalSchedule(run, os.path.join(run_dir, "eval.csv"))
            for run, run_dir in zip(runs, run_dirs)
        ]

        def evaluate(batch: BatchedPPO, force: bool = False) -> None:
            # every schedule is the same (same budget and eval_every): the first decides
            if not schedules[0].due(batch.num_timesteps, force):
                return
            tic = time.perf_counter()
            # the env's defaults, as a separate run's EvalSchedule evaluates
            returns, lengths = batch.evaluate(
                first.eval_episodes, seed_offset=EVAL_SEED_OFFSET, env_kwargs={}
            )
            spent = time.perf_counter() - tic
            for schedule, member_returns, member_lengths in zip(schedules, returns, lengths):
                schedule.eval_time += spent
                schedule.record(batch.num_timesteps, member_returns, member_lengths, force)
            means = " ".join(f"{row.rows[-1]['mean_return']:.1f}" for row in schedules)
            print(f"{batch.num_timesteps} steps: eval returns {means}", flush=True)

        model.learn(first.budget, on_rollout_start=evaluate)
        evaluate(model, force=True)  # the final models
        paths = model.save([os.path.join(run_dir, "final_model.zip") for run_dir in run_dirs])
        print(f"saved {len(paths)} models", flush=True)
        steps, train_time = model.num_timesteps, model.train_time
        batch_info = {
            "size": len(runs),
            "run_ids": [run.run_id for run in runs],
            "total_steps_per_s": len(runs) * steps / max(train_time, 1e-9),
        }
        return [
            write_result(
                run, run_dir, schedule, steps, started, train_time, extra={"batch": batch_info}
            )
            for run, run_dir, schedule in zip(runs, run_dirs, schedules)
        ]
    except BaseException as err:
        for run_dir in run_dirs:
            write_failure(run_dir, err, started)
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m mdpo.cli.sweep.batch RUN_DIR [RUN_DIR ...]``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m mdpo.cli.sweep.batch RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    try:
        runs = [load_run_config(run_dir) for run_dir in argv]
    except BadFileError as err:  # nothing is trained: say why in every folder, in one line
        message = f"{type(err).__name__}: {err}"
        print(message, file=sys.stderr)
        for run_dir in argv:
            try:
                write_json_atomic(
                    os.path.join(run_dir, "status.json"), {"status": "failed", "error": message}
                )
            except OSError:
                pass
        return 2
    try:
        run_batch(runs, argv)
    except Exception as err:  # recorded in status.json; the exit code tells the executor
        ids = ", ".join(run.run_id for run in runs)
        print(f"batch of {ids} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
