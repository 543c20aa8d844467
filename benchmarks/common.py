"""What every benchmark writes next to its figures: how, where and with what it ran."""

from __future__ import annotations

import csv
import os
import platform
import time

from mdpo.core.utils import code_version


def run_metadata(command: str) -> dict[str, str]:
    """Command, code version, date, machine and library versions of this run."""
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "command": command,
        "commit": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
    }


def write_rows(path: str, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the same keys) as a CSV file."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
