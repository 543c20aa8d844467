"""``mdpo import-sb3`` and ``mdpo export-sb3``: Stable-Baselines3 zips to and from mdpo model
files (the reader never unpickles; :mod:`mdpo.interop.sb3`)."""

from __future__ import annotations

import argparse

from mdpo.interop import sb3
from mdpo.rl.base import Agent


def command_import_sb3(args: argparse.Namespace) -> int:
    """``mdpo import-sb3``: a Stable-Baselines3 zip into an mdpo model file (no unpickling)."""

    agent = sb3.load(args.model, algo=args.algo, device="cpu")
    path = agent.save(args.out)
    print(f"{args.model}: SB3 {sb3.SB3Model(args.model).algo} -> mdpo {agent.algo_name}: {path}")
    return 0


def command_export_sb3(args: argparse.Namespace) -> int:
    """``mdpo export-sb3``: an mdpo model file into a Stable-Baselines3 zip."""
    agent = Agent.load(args.model, device="cpu")
    path = agent.save_sb3(args.out)
    print(f"{args.model}: mdpo {agent.algo_name} -> {path}")
    return 0


def add_parsers(sub) -> None:
    """Mount ``import-sb3`` and ``export-sb3`` on the ``mdpo`` parser."""
    import_sb3 = sub.add_parser("import-sb3")
    import_sb3.add_argument("model", help="SB3 .zip (PPO, A2C, SAC, TD3, sb3-contrib TRPO)")
    import_sb3.add_argument("--out", required=True, help="mdpo model file to write")
    import_sb3.add_argument(
        "--algo", help="our class to load into (default the counterpart: PPO, TRPO or SAC)"
    )
    import_sb3.set_defaults(func=command_import_sb3)
    export_sb3 = sub.add_parser("export-sb3")
    export_sb3.add_argument("model", help="mdpo model file")
    export_sb3.add_argument("--out", required=True, help="SB3 .zip to write")
    export_sb3.set_defaults(func=command_export_sb3)
