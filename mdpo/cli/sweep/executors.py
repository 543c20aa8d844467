"""Running a sweep: planning (skip what is done), a local process pool, and Ray.

Every run is executed by :func:`mdpo.cli.sweep.worker.run_one` in a process of its own (a
subprocess locally, a Ray worker on a cluster), so that a run that raises or is killed is
recorded as failed while the others go on.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from mdpo.cli.sweep.report import read_sweep_json
from mdpo.cli.sweep.spec import RunConfig, SweepSpec, SweepSpecError
from mdpo.cli.sweep.worker import read_status, run_one
from mdpo.core.limits import BadFileError, json_object, load_json_file
from mdpo.core.utils import code_version, write_json_atomic


@dataclass
class SweepPlan:
    """The runs of a sweep folder: those already completed, and those to (re)run."""

    out: str
    done: list[RunConfig] = field(default_factory=list)
    todo: list[RunConfig] = field(default_factory=list)

    def run_dir(self, run: RunConfig) -> str:
        return os.path.join(self.out, "runs", run.run_id)


def prepare(spec: SweepSpec, out: str, command: str) -> SweepPlan:
    """Set up ``out`` for ``spec``: completed runs are kept, the others start clean.

    Everything is checked before anything is written or deleted: the files already in ``out``
    (each completed run's ``result.json``, ``sweep.json``) are read within the limits of
    :mod:`mdpo.core.limits`.

    Raises:
        SweepSpecError: a completed run in ``out`` was made with other settings.
        BadFileError: a malformed ``result.json`` or ``sweep.json`` in ``out`` (one line naming
            the file and the field); nothing is deleted to make up for it.
    """
    plan = SweepPlan(out)
    for run in spec.runs():
        run_dir = plan.run_dir(run)
        result_path = os.path.join(run_dir, "result.json")
        if not os.path.exists(result_path):
            plan.todo.append(run)
            continue
        try:
            result = json_object(load_json_file(result_path), result_path)
            done_config = json_object(result.get("config"), f"{result_path}: config")
        except BadFileError as err:
            # not redone silently: redoing deletes the folder, which is the user's to decide
            raise SweepSpecError(f"{err}; delete {run_dir} to run it again") from None
        if done_config != run.to_json():
            raise SweepSpecError(
                f"run {run.run_id} in {out!r} was completed with other settings; the spec "
                "changed: use another --out"
            )
        plan.done.append(run)

    # the folders to clear are plain folders inside out/runs: no link leads the clearing out
    runs_dir = os.path.join(out, "runs")
    for path in [runs_dir] + [plan.run_dir(run) for run in plan.todo]:
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
            raise SweepSpecError(f"{path} is a link or a file, not a run folder: remove it")
    sweep = read_sweep_json(out)
    history = sweep["invocations"] if sweep else []
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    sweep_path = os.path.join(out, "sweep.json")
    history.append(
        {
            "command": command,
            "code_version": code_version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    write_json_atomic(sweep_path, {"name": spec.name, "spec": spec.source, "invocations": history})
    for run in plan.todo:  # failed or interrupted runs start again from nothing
        run_dir = plan.run_dir(run)
        if os.path.exists(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
        write_json_atomic(os.path.join(run_dir, "config.json"), run.to_json())
    return plan


@contextlib.contextmanager
def sweep_lock(out: str) -> Iterator[None]:
    """Hold an exclusive lock on the sweep folder; a second sweep on it fails at once."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepSpecError(f"another sweep is running in {out!r}") from None
        yield


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` so that running runs are stopped and recorded."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent() -> None:
    """In a child process: be killed when the sweep's process dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def record_failure(run_dir: str, error: str) -> None:
    """Mark a run failed unless its own process already recorded why."""
    status_path = os.path.join(run_dir, "status.json")
    try:
        if read_status(run_dir)["status"] in ("failed", "completed"):
            return
    except BadFileError:
        pass  # a malformed status says nothing: this one replaces it
    write_json_atomic(status_path, {"status": "failed", "error": error})


def run_completed(run_dir: str) -> bool:
    """A run is complete when its ``result.json`` exists, whatever its process said."""
    return os.path.exists(os.path.join(run_dir, "result.json"))


def run_status(run_dir: str) -> dict[str, Any]:
    """``status.json`` of a run, checked (:func:`~mdpo.cli.sweep.worker.read_status`);
    ``{"status": "pending"}`` when absent or malformed (the sweep goes on: only the progress
    line and the failure messages read it)."""
    try:
        return read_status(run_dir)
    except BadFileError:
        return {"status": "pending"}


class Progress:
    """One line: runs done / running / failed, with an ETA from the runs finished so far."""

    def __init__(self, total: int, done: int, parallel: int, stream: TextIO | None = None):
        self.total, self.done, self.parallel = total, done, max(parallel, 1)
        self.failed = self.running = 0
        self.durations: list[float] = []
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.time()
        self._last = ""

    def update(self, running: int, finished: float | None = None, failed: bool = False) -> None:
        """Redraw with ``running`` runs in flight; ``finished`` is the duration of a run that
        just ended (completed, or failed when ``failed``)."""
        self.running = running
        if finished is not None:
            if failed:
                self.failed += 1
            else:  # failures are often quick: only completed runs predict the others
                self.durations.append(finished)
                self.done += 1
        remaining = self.total - self.done - self.failed
        eta = "?"
        if self.durations and remaining:
            parallel = min(self.parallel, remaining)
            seconds = sum(self.durations) / len(self.durations) * remaining / parallel
            eta = time.strftime("%H:%M:%S", time.gmtime(seconds))
        elif not remaining:
            eta = "0"
        line = (
            f"sweep: {self.done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, ETA {eta}"
        )
        if line != self._last:
            self._last = line
            self.stream.write(("\r" + line) if self.tty else line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


@dataclass
class Job:
    """One process of a sweep: the module it runs and the runs it trains (one, or a batch)."""

    module: str
    runs: list[RunConfig]


def run_local(plan: SweepPlan, workers: int, stream: TextIO | None = None) -> list[RunConfig]:
    """Run ``plan.todo`` as subprocesses, ``workers`` at a time; returns the failed runs."""
    jobs = [Job("mdpo.cli.sweep.worker", [run]) for run in plan.todo]
    return run_jobs(plan, jobs, workers, stream)


def run_batched(plan: SweepPlan, workers: int, stream: TextIO | None = None) -> list[RunConfig]:
    """Run ``plan.todo`` with the runs that differ only by seed trained as one batch each
    (:mod:`mdpo.cli.sweep.batch`), ``workers`` processes at a time; the runs that cannot be
    batched run on their own as :func:`run_local` runs them, after a one-line notice each.
    Returns the failed runs."""
    from mdpo.cli.sweep.batch import group_runs  # torch, only for this backend

    batches, alone = group_runs(plan.todo)
    notices = stream or sys.stderr
    for run, reason in alone:
        print(f"{run.run_id}: not batched ({reason}); it runs on its own", file=notices)
    jobs = [Job("mdpo.cli.sweep.batch", runs) for runs in batches]
    jobs += [Job("mdpo.cli.sweep.worker", [run]) for run, _ in alone]
    return run_jobs(plan, jobs, workers, stream)


def run_jobs(
    plan: SweepPlan, jobs: list[Job], workers: int, stream: TextIO | None = None
) -> list[RunConfig]:
    """Run ``jobs`` as subprocesses, ``workers`` at a time; returns the failed runs.

    A job's output goes to its first run's ``log.txt`` (the other runs of a batch get a
    ``log.txt`` that points there); a run without ``result.json`` when its job ends failed.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending = list(jobs)
    running: dict[subprocess.Popen, tuple[Job, Any, float]] = {}
    failed: list[RunConfig] = []
    progress = Progress(len(plan.done) + len(plan.todo), len(plan.done), workers, stream)
    progress.update(0)
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                run_dirs = [plan.run_dir(run) for run in job.runs]
                log = open(os.path.join(run_dirs[0], "log.txt"), "w")
                for run_dir in run_dirs[1:]:
                    with open(os.path.join(run_dir, "log.txt"), "w") as pointer:
                        pointer.write(
                            f"trained in one batch of {len(run_dirs)} runs; the batch's log is "
                            f"{os.path.join(run_dirs[0], 'log.txt')}\n"
                        )
                proc = subprocess.Popen(
                    [sys.executable, "-m", job.module, *run_dirs],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=_die_with_parent,
                )
                running[proc] = (job, log, time.time())
                progress.update(sum(len(j.runs) for j, _, _ in running.values()))
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                job, log, started = running.pop(proc)
                log.close()
                in_flight = sum(len(j.runs) for j, _, _ in running.values())
                # a batch's time is shared by its runs (for the ETA of the others)
                duration = (time.time() - started) / len(job.runs)
                for run in job.runs:
                    run_dir = plan.run_dir(run)
                    ok = run_completed(run_dir)
                    if not ok:
                        record_failure(
                            run_dir, f"the run's process exited with code {proc.returncode}"
                        )
                        failed.append(run)
                    progress.update(in_flight, duration, failed=not ok)
    except BaseException:
        for proc, (job, log, _) in running.items():
            proc.terminate()
            proc.wait()
            log.close()
            for run in job.runs:
                record_failure(plan.run_dir(run), "interrupted: the sweep was stopped")
        raise
    finally:
        progress.close()
    return failed


def _zip_folder(folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, folder))
    return buffer.getvalue()


def _ray_task(config: dict[str, Any]) -> bytes:
    """Run one run in a temporary folder on whichever node Ray picked; return the folder."""
    run = RunConfig.from_json(config, "the run's config")
    folder = tempfile.mkdtemp(prefix="mdpo-run-")
    try:
        write_json_atomic(os.path.join(folder, "config.json"), config)
        try:
            run_one(run, folder)
        except Exception:  # recorded in status.json, which travels back
            pass
        return _zip_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _install_run_folder(data: bytes, run_dir: str) -> None:
    """Replace ``run_dir`` by the folder a Ray task sent back.

    ``result.json`` is moved in last, so the run counts as complete only once everything
    else is in place.
    """
    incoming = run_dir + ".incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(incoming)
    os.makedirs(run_dir, exist_ok=True)
    names = sorted(os.listdir(incoming), key=lambda name: name == "result.json")
    for name in names:
        target = os.path.join(run_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(incoming, name), target)
    shutil.rmtree(incoming, ignore_errors=True)


def run_ray(
    plan: SweepPlan, workers: int, address: str | None = None, stream: TextIO | None = None
) -> list[RunConfig]:
    """Run ``plan.todo`` as Ray tasks (one CPU each); returns the failed runs.

    With ``address`` the tasks go to that cluster; otherwise a local Ray instance with
    ``workers`` CPUs is started for the sweep. Tasks run in temporary folders on their nodes
    and send the run folder back, so no shared filesystem is needed.
    """
    try:
        import ray  # optional dependency (the ray extra)
    except ImportError:
        raise SweepSpecError('the ray backend needs Ray: pip install -e ".[ray]"') from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:  # the cluster's nodes need mdpo (and the envs) installed
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    parallel = int(ray.cluster_resources().get("CPU", workers))
    if address and parallel != workers:
        print(
            f"ray: the cluster has {parallel} CPUs; --workers {workers} is not used",
            file=sys.stderr,
        )
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    futures = {task.remote(run.to_json()): run for run in plan.todo}
    failed: list[RunConfig] = []
    progress = Progress(len(plan.done) + len(plan.todo), len(plan.done), parallel, stream)
    progress.update(min(parallel, len(futures)))
    try:
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=1.0)
            for ref in ready:
                run = futures.pop(ref)
                run_dir = plan.run_dir(run)
                try:
                    _install_run_folder(ray.get(ref), run_dir)
                except Exception as err:  # the task or its worker died
                    os.makedirs(run_dir, exist_ok=True)
                    record_failure(run_dir, f"Ray task failed: {type(err).__name__}: {err}")
                ok = run_completed(run_dir)
                if not ok:
                    failed.append(run)
                # queued time is not run time: take the duration the run measured itself
                duration = float(run_status(run_dir).get("wall_time_s", 0.0))
                progress.update(min(parallel, len(futures)), duration, not ok)
    except BaseException:
        for ref, run in futures.items():
            ray.cancel(ref, force=True)
            record_failure(plan.run_dir(run), "interrupted: the sweep was stopped")
        raise
    finally:
        progress.close()
        if started_here:
            ray.shutdown()
    return failed
