"""Run folders: one writer at a time (an exclusive, non-blocking lock on ``RUN_DIR/.lock``),
and their own files read back within the limits, repaired after a crash.

``mdpo train`` (and ``--resume``), ``mdpo oppo train``, ``mdpo hydro tsddr`` / ``sddp`` and
sweeps hold it for as long as they write into the folder. A second command on the same folder
fails at once with :class:`RunFolderBusy` instead of mixing its files with the first one's. The
lock is the operating system's (``flock``): it is released when the process ends, however it
ends (even ``kill -9``), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import os
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from mdpo.core.callbacks import latest_checkpoint
from mdpo.core.limits import (
    MAX_JSON_BYTES,
    BadFileError,
    check_env_id_from_file,
    field_float,
    field_int,
    json_object,
    load_json_file,
    loads_json,
)
from mdpo.core.utils import write_json_atomic, write_text_atomic

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process is writing into this run folder."""


@contextlib.contextmanager
def run_folder_lock(folder: str, what: str = "run") -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the ``with`` block.

    Raises:
        RunFolderBusy: another process holds it.
    """
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderBusy(
                f"another {what} is writing into {folder!r}: wait for it to finish, or choose "
                "another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------ reading a run's own files
def read_run_json(path: str) -> dict[str, Any]:
    """A run folder's JSON file (``config.json``, ``status.json``, ``summary.json``) as an
    object, within :mod:`mdpo.core.limits`; env ids in it (``env``, ``env_id``, and
    ``hyperparameters.env_id``) must be registered, plain ids.

    Raises:
        BadFileError: naming the file and the field.
    """
    data = json_object(load_json_file(path), path)
    for key in ("env", "env_id"):
        if data.get(key) is not None:
            check_env_id_from_file(data[key], f"{path}: {key}")
    hyper = data.get("hyperparameters")
    if hyper is not None:
        json_object(hyper, f"{path}: hyperparameters")
        if hyper.get("env_id") is not None:
            check_env_id_from_file(hyper["env_id"], f"{path}: hyperparameters.env_id")
        if hyper.get("env_kwargs") is not None:
            json_object(hyper["env_kwargs"], f"{path}: hyperparameters.env_kwargs")
    return data


def clean_interrupted_saves(run_dir: str) -> list[str]:
    """Remove the temporary files that saves killed midway left in ``run_dir`` (``.tmp-*.zip``
    of model files, ``*.tmp`` of JSON files); call it only while holding the folder's lock.
    Returns the paths removed."""
    removed = []
    for folder, _, names in os.walk(run_dir):
        for name in names:
            if (name.startswith(".tmp-") and name.endswith(".zip")) or name.endswith(".tmp"):
                path = os.path.join(folder, name)
                os.remove(path)
                removed.append(path)
    return removed


def repair_csv(path: str, step_column: str, upto: int | None) -> list[dict[str, str]]:
    """Keep the whole, readable rows of an appended CSV log (``evaluations.csv``) whose step is
    at most ``upto`` (the step a run resumes from; later rows will be written again), rewrite
    the file atomically with them, and return them. A row torn by a crash (too few fields,
    numbers that do not parse) is dropped, so it never stops a resume."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="") as handle:
            text = handle.read(MAX_JSON_BYTES + 1)
    except (OSError, UnicodeDecodeError) as err:
        raise BadFileError(f"{path} cannot be read: {err}") from None
    if len(text) > MAX_JSON_BYTES:
        raise BadFileError(f"{path} is over {MAX_JSON_BYTES} bytes")
    if not text.endswith("\n"):  # the last line lacks its newline: torn by a crash
        text = text[: text.rfind("\n") + 1]
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise BadFileError(f"{path} is not a CSV file: {err}") from None
    if not rows or step_column not in rows[0]:
        raise BadFileError(f"{path}: no header with a {step_column!r} column")
    header, kept = rows[0], []
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        record = dict(zip(header, row))
        try:
            step = field_int(loads_json(record[step_column], path), f"{path}: {step_column}", 0)
            for key, value in record.items():
                if key != step_column and value and " " not in value:
                    field_float(loads_json(value, path), f"{path}: {key}")
        except BadFileError:
            continue
        if upto is None or step <= upto:
            kept.append(record)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([record[key] for key in header] for record in kept)
    write_text_atomic(path, out.getvalue())
    return kept


class RunFolder:
    """The folder of one long-running command (``mdpo train``, ``mdpo oppo train``,
    ``mdpo hydro tsddr``, ``mdpo hydro sddp``), written by one process at a time.

    It holds ``config.json`` (what the run is), ``status.json`` (``running``, ``failed`` with
    the error, ``completed``), checkpoints, logs and results. Every command goes through this
    one implementation: the lock, strict JSON written whole, the cleanup and repair a resume
    needs, the status on failure.

    Args:
        path: the folder (made when the run starts writing).
        command: the command, for messages (``"mdpo train"``).
    """

    def __init__(self, path: str, command: str):
        self.path = path
        self.command = command

    def file(self, *parts: str) -> str:
        """A path inside the folder."""
        return os.path.join(self.path, *parts)

    def holds_run(self) -> bool:
        """Whether a run was started here (its ``config.json`` exists)."""
        return os.path.exists(self.file("config.json"))

    @contextlib.contextmanager
    def writing(self, resume: bool = False) -> Iterator[RunFolder]:
        """Hold the folder's lock for the ``with`` block; on a resume, first remove what saves
        killed midway left behind.

        Raises:
            RunFolderBusy: another process writes here.
        """
        with run_folder_lock(self.path, self.command):
            if resume:
                clean_interrupted_saves(self.path)
            yield self

    def read_config(self) -> dict[str, Any]:
        """``config.json``, within the limits (env ids checked; see :func:`read_run_json`)."""
        return read_run_json(self.file("config.json"))

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` (strict JSON, whole)."""
        write_json_atomic(self.file("config.json"), config)

    def read_status(self) -> dict[str, Any] | None:
        """``status.json``, or ``None`` before the first status."""
        path = self.file("status.json")
        return read_run_json(path) if os.path.exists(path) else None

    def is_completed(self) -> bool:
        """Whether ``status.json`` says the run completed."""
        status = self.read_status()
        return status is not None and status.get("status") == "completed"

    def write_status(self, status: str, **extra: Any) -> None:
        """Write ``status.json``: ``status`` (``running``, ``failed``, ``completed``), the
        fields of ``extra``, and the time."""
        data = {"status": status, **extra, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(self.file("status.json"), data)

    @contextlib.contextmanager
    def failure_recorded(self, extra: Callable[[], dict[str, Any]] | None = None) -> Iterator[None]:
        """Record any exception of the ``with`` block in ``status.json`` as ``failed`` (with
        its traceback and the fields ``extra()`` gives at that moment), then let it go on."""
        try:
            yield
        except BaseException as err:
            self.write_status(
                "failed",
                error=f"{type(err).__name__}: {err}",
                traceback=traceback.format_exc(),
                **(extra() if extra is not None else {}),
            )
            raise

    def checkpoints(self, pattern: str) -> list[str]:
        """Files matching the glob ``pattern`` inside the folder, in name order (checkpoint
        names carry zero-padded step counts, so this is step order)."""
        return sorted(glob.glob(self.file(pattern)))

    def keep_last(self, pattern: str, keep: int) -> None:
        """Remove all but the newest ``keep`` files matching ``pattern``."""
        for old in self.checkpoints(pattern)[:-keep] if keep > 0 else self.checkpoints(pattern):
            os.remove(old)

    def repair_log(self, name: str, step_column: str, upto: int | None) -> list[dict[str, str]]:
        """Repair an appended CSV log of the folder (see :func:`repair_csv`)."""
        return repair_csv(self.file(name), step_column, upto)


def resolve_model(path: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(model file, env id, env kwargs)`` of a model file or a run folder of ``mdpo train``
    (the env and its kwargs from the run's ``config.json``; the final model, else the latest
    checkpoint)."""
    if not os.path.isdir(path):
        if not os.path.exists(path) and not os.path.exists(path + ".zip"):
            raise ValueError(f"{path!r} is neither a model file nor a run folder")
        return path, None, None
    folder = RunFolder(path, "mdpo eval")
    if not folder.holds_run():
        raise ValueError(f"{path!r} is a folder without config.json: not a run folder")
    config = folder.read_config()
    hyper = config.get("hyperparameters") or {}
    model = folder.file("final_model.zip")
    if not os.path.exists(model):
        model = latest_checkpoint(folder.file("checkpoints"))
        if model is None:
            raise ValueError(f"{path!r} holds no model yet (no final model, no checkpoint)")
    return model, config.get("env"), hyper.get("env_kwargs")
