"""The ``mdpo`` command line: one table of subcommands, each mounted from its own module.

Only the module of the command being run is imported: ``mdpo --help`` and ``mdpo --version``
import no torch, and ``mdpo plot`` imports no training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NamedTuple

from mdpo.cli.parsing import DefaultsParser
from mdpo.core.version import __version__


class Command(NamedTuple):
    """A subcommand: the module (under ``mdpo.cli``) whose ``function(subparsers)`` mounts
    it, and its line in ``mdpo --help``."""

    module: str
    function: str
    help: str


COMMANDS: dict[str, Command] = {
    name: Command(*fields)
    for name, fields in {
        "train": ("train", "add_parsers", "train an agent into a run folder (or resume one)"),
        "eval": ("train", "add_parsers", "evaluate a saved model (a run folder or a file)"),
        "plot": ("plot", "add_parser", "plot the evaluation curves of run folders"),
        "enjoy": ("watch", "add_parsers", "watch an agent act, in a window"),
        "record": ("watch", "add_parsers", "record episodes of an agent as MP4 videos"),
        "tune": ("tune", "add_parser", "tune hyperparameters with Optuna (resumable)"),
        "tune-report": ("tune", "add_parser", "plot a study's history and importances"),
        "sweep": ("sweep.command", "add_parser", "benchmark sweeps: run a spec, report it"),
        "data": ("offline", "add_parsers", "offline datasets and preference labels"),
        "oppo": ("offline", "add_parsers", "offline preference-guided policy optimization"),
        "hydro": ("hydro", "add_parser", "the hydrothermal dispatch case study (TS-DDR, SDDP)"),
        "import-sb3": ("convert", "add_parsers", "a Stable-Baselines3 zip into an mdpo model"),
        "export-sb3": ("convert", "add_parsers", "an mdpo model into a Stable-Baselines3 zip"),
    }.items()
}


class _Mount:
    """The subparsers object a command module mounts on: each command gets its line from
    :data:`COMMANDS` (one place for it)."""

    def __init__(self, sub: Any):
        self.sub = sub

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("help", COMMANDS[name].help)
        return self.sub.add_parser(name, **kwargs)


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``mdpo``, with the full parsers of ``commands`` (default all)
    and the others listed by their one line only."""
    parser = DefaultsParser(
        prog="mdpo",
        description="Train, evaluate and benchmark policy-optimization agents.",
    )
    parser.add_argument("--version", action="version", version=f"mdpo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = list(COMMANDS) if commands is None else commands
    mounted: set[tuple[str, str]] = set()
    for name in wanted:
        command = COMMANDS[name]
        if (command.module, command.function) not in mounted:
            mounted.add((command.module, command.function))
            module = importlib.import_module(f"mdpo.cli.{command.module}")
            getattr(module, command.function)(_Mount(sub))
    for name, command in COMMANDS.items():
        if name not in sub.choices:  # listed in `mdpo --help`, its module left unimported
            sub.add_parser(name, help=command.help)
    # `mdpo --help` lists the commands in the table's order
    sub._choices_actions.sort(key=lambda action: list(COMMANDS).index(action.dest))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mdpo``; user errors print one line and exit with status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # the first word names the command; only its module is imported
    parser = build_parser([argv[0]] if argv and argv[0] in COMMANDS else [])
    args = parser.parse_args(argv)
    args.argv = argv

    from mdpo.cli.run_folder import RunFolderBusy
    from mdpo.cli.threads import apply_threads
    from mdpo.rules.backend import SolveError

    try:
        apply_threads(args)
        return args.func(args)
    # the user's input, or a problem it made that a solver could not solve (an AC stage
    # without enough reactive power, a case with too little generation...)
    except (ValueError, FileNotFoundError, RunFolderBusy, SolveError) as err:
        # (BadFileError and ModelFileError are ValueErrors): one line, never a traceback
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mdpo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
