"""One sweep run: train, evaluate on a schedule, write the run folder.

The run folder holds ``config.json``, ``status.json`` (running / completed / failed with the
error), ``tb/`` (TensorBoard events), ``eval.csv`` (the evaluation curve as it grows),
``final_model.zip`` and, written last and atomically, ``result.json``: what reports read. A run
without ``result.json`` is unfinished, whatever else its folder holds.

``python -m mdpo.cli.sweep.worker RUN_DIR`` runs the run whose ``config.json`` is in ``RUN_DIR``.
"""

from __future__ import annotations

import csv
import os
import sys
import time
import traceback
from typing import Any

import numpy as np
import torch

from mdpo.cli.sweep.spec import RunConfig, SweepSpecError, algorithm_class
from mdpo.core.limits import BadFileError, field_float, json_object, load_json_file
from mdpo.core.utils import code_version, write_json_atomic
from mdpo.rl.callbacks import BaseCallback
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import make_vec_env

EVAL_SEED_OFFSET = 10_000  # eval envs use seeds far from the training env's
#: what a run's ``status.json`` may say
STATUSES = ("pending", "running", "completed", "failed")


def load_run_config(run_dir: str) -> RunConfig:
    """The run config in ``run_dir/config.json``, read within the limits and checked field by
    field (:meth:`RunConfig.from_json`: its env id imports nothing).

    Raises:
        BadFileError: a missing, malformed or hostile ``config.json``; one line naming it.
    """
    path = os.path.join(run_dir, "config.json")
    return RunConfig.from_json(load_json_file(path), path)


def read_status(run_dir: str) -> dict[str, Any]:
    """A run's ``status.json``, checked: ``status`` one of :data:`STATUSES`, ``error`` a
    string, ``wall_time_s`` and ``final_return`` numbers (``null`` for a non-finite return).

    Returns:
        The checked fields (``{"status": "pending"}`` when there is no ``status.json``).

    Raises:
        BadFileError: a malformed ``status.json``; one line naming it and the field.
    """
    path = os.path.join(run_dir, "status.json")
    if not os.path.exists(path):
        return {"status": "pending"}
    data = json_object(load_json_file(path), path)
    status = data.get("status", "pending")
    if not isinstance(status, str) or status not in STATUSES:
        raise SweepSpecError(
            f"{path}: status must be one of {', '.join(STATUSES)}, not {_show(status)}"
        )
    checked: dict[str, Any] = {"status": status}
    if "error" in data:
        if not isinstance(data["error"], str):
            raise SweepSpecError(f"{path}: error must be a string, not {_show(data['error'])}")
        if data["error"].strip():  # an empty error says nothing (and has no first line)
            checked["error"] = data["error"]
    if "wall_time_s" in data:
        checked["wall_time_s"] = field_float(data["wall_time_s"], f"{path}: wall_time_s")
    if "final_return" in data:
        checked["final_return"] = field_float(
            data["final_return"], f"{path}: final_return", allow_none=True
        )
    return checked


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    return type(value).__name__ if value is not None else "null"


class EvalSchedule:
    """Deterministic evaluation every ``every`` steps (and at 0 and at the end).

    The eval env is separate from the training env and is reset with the same seed at every
    evaluation, so every evaluation (and every algorithm) sees the same initial states. A
    batch of runs (:mod:`mdpo.cli.sweep.batch`) evaluates all its members at once and hands
    each run's episodes to its schedule's :meth:`record`.
    """

    def __init__(self, run: RunConfig, path: str):

        self.run = run
        self.path = path
        self.env: Any = None  # made at the first evaluation (a batch evaluates on its own)
        self.next_at = 0
        self.rows: list[dict[str, Any]] = []
        self.eval_time = 0.0

    def due(self, num_timesteps: int, force: bool = False) -> bool:
        """Whether an evaluation is due at ``num_timesteps`` (``force``: unless one was just
        made there)."""
        if num_timesteps < self.next_at and not force:
            return False
        return not (self.rows and self.rows[-1]["timesteps"] == num_timesteps)

    def maybe_evaluate(self, model: Any, num_timesteps: int, force: bool = False) -> None:
        if not self.due(num_timesteps, force):
            return
        if self.env is None:
            self.env = make_vec_env(self.run.env)
        tic = time.perf_counter()
        returns, lengths = evaluate_policy(
            model,
            self.env,
            n_eval_episodes=self.run.eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
            seed=EVAL_SEED_OFFSET + self.run.seed,
        )
        self.eval_time += time.perf_counter() - tic
        self.record(num_timesteps, returns, lengths, force)

    def record(
        self, num_timesteps: int, returns: list[float], lengths: list[int], force: bool = False
    ) -> None:
        """Add an evaluation's episodes to the curve and to ``eval.csv``."""
        row = {
            "timesteps": num_timesteps,
            # the scheduled step (equal across seeds and algorithms), for averaging curves
            "nominal_timesteps": num_timesteps if force else self.next_at,
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "returns": [float(r) for r in returns],
        }
        self.rows.append(row)
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(
                    [
                        "timesteps",
                        "nominal_timesteps",
                        "mean_return",
                        "std_return",
                        "mean_length",
                        "returns",
                    ]
                )
            writer.writerow(
                [
                    row["timesteps"],
                    row["nominal_timesteps"],
                    row["mean_return"],
                    row["std_return"],
                    row["mean_length"],
                    " ".join(f"{r:.6g}" for r in returns),
                ]
            )
        while self.next_at <= num_timesteps:
            self.next_at += self.run.eval_every

    def close(self) -> None:
        """Close the eval env (if one was made)."""
        if self.env is not None:
            self.env.close()


def make_callback(run: RunConfig, schedule: EvalSchedule, ours: bool):
    """A callback of the right library that drives the evaluation schedule."""
    if ours:
        base = BaseCallback
    else:
        from stable_baselines3.common.callbacks import BaseCallback as base

    class SweepEval(base):
        # evaluations happen as a rollout starts: the data collected so far has been trained
        # on (on-policy agents update between rollouts; off-policy ones every few steps)
        def _on_training_start(self) -> None:
            schedule.maybe_evaluate(self.model, self.model.num_timesteps)

        def _on_rollout_start(self) -> None:
            schedule.maybe_evaluate(self.model, self.model.num_timesteps)

        def _on_step(self) -> bool:
            return True

    return SweepEval()


def run_one(run: RunConfig, run_dir: str) -> dict[str, Any]:
    """Train and evaluate one run into ``run_dir``; returns the result (also written there).

    Any exception is recorded in ``status.json`` as a failure and re-raised.
    """

    torch.set_num_threads(1)
    os.makedirs(run_dir, exist_ok=True)
    status_path = os.path.join(run_dir, "status.json")
    started = time.time()
    running = {
        "status": "running",
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(status_path, running)
    try:
        cls = algorithm_class(run.algorithm)
        ours = ":" not in run.algorithm
        kwargs = dict(run.hyperparameters)
        if ours:
            kwargs["n_envs"] = run.n_envs
            env: Any = run.env
        else:
            # optional dependency (the dev extra): only for SB3 baselines
            from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

            env = sb3_make_vec_env(run.env, n_envs=run.n_envs, seed=run.seed)
        model = cls(
            "MlpPolicy",
            env,
            seed=run.seed,
            device=run.device,
            tensorboard_log=os.path.join(run_dir, "tb"),
            verbose=0,
            **kwargs,
        )
        schedule = EvalSchedule(run, os.path.join(run_dir, "eval.csv"))
        tic = time.perf_counter()
        model.learn(run.budget, callback=make_callback(run, schedule, ours), tb_log_name="run")
        train_time = time.perf_counter() - tic - schedule.eval_time  # evaluations excluded
        schedule.maybe_evaluate(model, model.num_timesteps, force=True)  # the final model
        schedule.close()
        model.save(os.path.join(run_dir, "final_model.zip"))
        return write_result(run, run_dir, schedule, int(model.num_timesteps), started, train_time)
    except BaseException as err:
        write_failure(run_dir, err, started)
        raise


def write_result(
    run: RunConfig,
    run_dir: str,
    schedule: EvalSchedule,
    steps: int,
    started: float,
    train_time: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a finished run's ``result.json`` (atomically: it marks the run complete), then
    ``status.json``; returns the result.

    Args:
        run: the run.
        run_dir: its folder.
        schedule: its evaluations (the last one is the final model's).
        steps: env steps trained.
        started: ``time.time()`` when the run started.
        train_time: seconds of training, evaluations excluded.
        extra: more fields for ``result.json`` (e.g. the batch the run was trained in).
    """
    result = {
        "run_id": run.run_id,
        "config": run.to_json(),
        "final_return": schedule.rows[-1]["mean_return"],
        "final_returns": schedule.rows[-1]["returns"],
        "num_timesteps": steps,
        "curve": [
            {k: row[k] for k in ("timesteps", "nominal_timesteps", "mean_return", "std_return")}
            for row in schedule.rows
        ],
        "wall_time_s": time.time() - started,
        "train_time_s": train_time,
        "eval_time_s": schedule.eval_time,
        "steps_per_s": steps / max(train_time, 1e-9),
        "code_version": code_version(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    write_json_atomic(os.path.join(run_dir, "result.json"), result)
    done = {
        "status": "completed",
        "final_return": result["final_return"],
        "wall_time_s": result["wall_time_s"],
    }
    write_json_atomic(os.path.join(run_dir, "status.json"), done)
    return result


def write_failure(run_dir: str, err: BaseException, started: float) -> None:
    """Record in ``status.json`` that the run failed with ``err``."""
    write_json_atomic(
        os.path.join(run_dir, "status.json"),
        {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "wall_time_s": time.time() - started,
        },
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m mdpo.cli.sweep.worker RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mdpo.cli.sweep.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = argv[0]
    try:
        run = load_run_config(run_dir)
    except BadFileError as err:  # nothing of the run is made: record why, in one line
        message = f"{type(err).__name__}: {err}"
        print(f"{run_dir}: {message}", file=sys.stderr)
        try:
            write_json_atomic(
                os.path.join(run_dir, "status.json"), {"status": "failed", "error": message}
            )
        except OSError:  # no folder to record it in: the message above says it
            pass
        return 2
    try:
        run_one(run, run_dir)
    except Exception as err:  # recorded in status.json; the exit code tells the executor
        print(f"run {run.run_id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
