"""The ``mdpo`` command line (:mod:`mdpo.cli.main` mounts every subcommand), its run folders
(:mod:`mdpo.cli.run_folder`) and benchmark sweeps (:mod:`mdpo.cli.sweep`)."""

from mdpo.cli.main import main

__all__ = ["main"]
