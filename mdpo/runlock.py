"""One writer per run folder: an exclusive, non-blocking lock on ``RUN_DIR/.lock``.

``mdpo train`` (and ``--resume``), ``mdpo oppo train``, ``mdpo hydro tsddr`` / ``sddp`` and
sweeps hold it for as long as they write into the folder. A second command on the same folder
fails at once with :class:`RunFolderBusy` instead of mixing its files with the first one's. The
lock is the operating system's (``flock``): it is released when the process ends, however it
ends (even ``kill -9``), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

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
