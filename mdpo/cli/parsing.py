"""The command line's argument parser: help that shows every default. Light on purpose:
``mdpo --help`` imports only this and :mod:`argparse`."""

from __future__ import annotations

import argparse
from typing import Any


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its text already says it or there is
    none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default is None
            or action.default is False  # a flag (0 is a default to show)
            or action.default == argparse.SUPPRESS
        ):
            return text
        return text + " (default: %(default)s)"


class DefaultsParser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` shows every default (its subcommands' too)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
