"""``--threads``: torch's CPU threads for the long-running commands.

One thread by default: the networks here are small, and torch's default (one thread per core)
loses more to synchronisation than it gains, most of all when the machine is busy
(``results/threads``: ``python benchmarks/threads.py``). ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse

import torch


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``--threads`` option."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, the fastest for small networks, see "
        "results/threads; 0: torch's default, one per core)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``args.threads`` (when the command has the option)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)
