"""Old module paths (before the layered packages) keep working, with a DeprecationWarning.

``import mdpo.sb3`` gives :mod:`mdpo.interop.sb3`, ``from mdpo.utils import linear_schedule``
gives :mod:`mdpo.core.utils`'s, and so on for every module that moved (the table below). The
aliases go in a later release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

MOVED = {
    "mdpo.agents": "mdpo",
    "mdpo.agents.base": "mdpo.rl.base",
    "mdpo.agents.bc": "mdpo.offline.bc",
    "mdpo.agents.mdpo_off": "mdpo.rl.mdpo_off",
    "mdpo.agents.mdpo_on": "mdpo.rl.mdpo_on",
    "mdpo.agents.off_policy": "mdpo.rl.off_policy",
    "mdpo.agents.offline": "mdpo.offline.learner",
    "mdpo.agents.on_policy": "mdpo.rl.on_policy",
    "mdpo.agents.oppo": "mdpo.offline.oppo",
    "mdpo.agents.ppo": "mdpo.rl.ppo",
    "mdpo.agents.sac": "mdpo.rl.sac",
    "mdpo.agents.trpo": "mdpo.rl.trpo",
    "mdpo.agents.tsddr": "mdpo.rules.tsddr",
    "mdpo.buffers": "mdpo.rl.buffers",
    "mdpo.callbacks": "mdpo.rl.callbacks",
    "mdpo.data": "mdpo.offline",
    "mdpo.data.dataset": "mdpo.offline.dataset",
    "mdpo.data.make": "mdpo.cli.datasets",
    "mdpo.offline.make": "mdpo.cli.datasets",
    "mdpo.data.preferences": "mdpo.offline.preferences",
    "mdpo.envs.torch_classic": "mdpo.rl.torch_classic",
    "mdpo.evaluation": "mdpo.rl.evaluation",
    "mdpo.flat_params": "mdpo.core.flat_params",
    "mdpo.limits": "mdpo.core.limits",
    "mdpo.logger": "mdpo.core.logger",
    "mdpo.networks": "mdpo.rl.networks",
    "mdpo.optim": "mdpo.rules",
    "mdpo.optim.highs": "mdpo.rules.highs",
    "mdpo.optim.lp": "mdpo.rules.lp",
    "mdpo.optim.multistage": "mdpo.rules.multistage",
    "mdpo.runners": "mdpo.rl.runners",
    "mdpo.safe_pickle": "mdpo.interop.safe_pickle",
    "mdpo.sb3": "mdpo.interop.sb3",
    "mdpo.serialization": "mdpo.core.serialization",
    "mdpo.sweep": "mdpo.cli.sweep",
    "mdpo.utils": "mdpo.core.utils",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and hands back the module at its new place."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: Any) -> Any:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes in a "
            "later release)",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        pass  # the module is already executed at its new place


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
