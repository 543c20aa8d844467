"""Key-value logger with Stable-Baselines3's key names, printed and written to TensorBoard."""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from typing import Any, TextIO

import numpy as np


def next_run_dir(log_dir: str, name: str, reuse_latest: bool = False) -> str:
    """SB3's run-folder rule: ``log_dir/name_K`` with K one more than the largest existing."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    ids = [
        int(m.group(1))
        for entry in (os.listdir(log_dir) if os.path.isdir(log_dir) else [])
        if (m := pattern.match(entry))
    ]
    latest = max(ids, default=0)
    run_id = latest if reuse_latest and latest > 0 else latest + 1
    return os.path.join(log_dir, f"{name}_{run_id}")


class Logger:
    """Collects values between dumps; writes them to stdout and/or TensorBoard.

    Args:
        folder: TensorBoard run folder, or ``None`` for no TensorBoard output.
        verbose: print a table at each dump when >= 1.
        stream: where the table goes (default stdout).
    """

    def __init__(self, folder: str | None = None, verbose: int = 0, stream: TextIO | None = None):
        self.folder = folder
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.values: dict[str, Any] = {}
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked

            os.makedirs(folder, exist_ok=True)
            self._writer = SummaryWriter(log_dir=folder)

    def record(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` for the next dump."""
        self.values[key] = value

    def record_mean(self, key: str, value: float) -> None:
        """Average ``value`` with the other values recorded under ``key`` before the next dump."""
        self._sums[key] += float(value)
        self._counts[key] += 1

    def dump(self, step: int) -> None:
        """Write everything recorded since the last dump at ``step``."""
        values = dict(self.values)
        values.update({k: self._sums[k] / self._counts[k] for k in self._sums})
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float | np.floating | np.integer) and not isinstance(
                    value, bool
                ):
                    self._writer.add_scalar(key, float(value), step)
            self._writer.flush()
        if self.verbose >= 1 and values:
            self._print(values)
        self.values.clear()
        self._sums.clear()
        self._counts.clear()

    def _print(self, values: dict[str, Any]) -> None:
        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for key in sorted(values):
            group, _, name = key.rpartition("/")
            value = values[key]
            text = f"{value:<8.3g}" if isinstance(value, float) else str(value)
            groups[group].append((name, text))
        width_k = max(len(name) for rows in groups.values() for name, _ in rows) + 4
        width_v = max(len(text) for rows in groups.values() for _, text in rows)
        line = "-" * (width_k + width_v + 7)
        out = [line]
        for group, rows in groups.items():
            out.append(f"| {group + '/':<{width_k}} | {'':<{width_v}} |")
            out += [f"|    {name:<{width_k - 4}} | {text:<{width_v}} |" for name, text in rows]
        out.append(line)
        print("\n".join(out), file=self.stream, flush=True)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
