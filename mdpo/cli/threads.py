"""``--threads``: torch's CPU threads for the long-running commands.

The networks here are small. On an idle machine torch's default (one thread per core) trains
SAC and OPPO about 1.5 times faster than one thread, and PPO and TS-DDR alike; on a busy
machine the default collapses (PPO 4 times, SAC 2.5 times slower than one thread), because
its threads wait for cores that other jobs hold (``results/threads``, made by
``python benchmarks/threads.py``). So the default, ``auto``, takes the cores that the 1-minute
load average says are free (at least one); ``--threads N`` fixes the count, ``--threads 0``
keeps torch's default.
"""

from __future__ import annotations

import argparse
import math
import os

import torch


def threads_value(text: str) -> int | str:
    """``auto`` or a non-negative integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes auto or a count, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--threads must be >= 0, got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``--threads`` option."""
    parser.add_argument(
        "--threads",
        type=threads_value,
        default="auto",
        help="torch CPU threads: auto (the cores the load average says are free, at least "
        "one), a count, or 0 (torch's default, one per core); see results/threads "
        "(default: auto)",
    )


def free_cores() -> int:
    """The cores not busy by the 1-minute load average (at least one)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume busy, the safe choice
        return 1
    return max(1, min(cores, cores - math.ceil(load - 0.5)))


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``args.threads`` (when the command has the option)."""
    threads = getattr(args, "threads", None)
    if threads is None or threads == 0:
        return
    torch.set_num_threads(free_cores() if threads == "auto" else threads)
