"""mdpo: Mirror Descent Policy Optimization and its baselines in PyTorch.

Layers (each imports only the ones below it; ``lint-imports`` checks it): :mod:`mdpo.cli` on
:mod:`mdpo.interop` on the hydro case study (:mod:`mdpo.envs.hydro`) on the families
(:mod:`mdpo.offline` | :mod:`mdpo.rules` on :mod:`mdpo.rl`) on :mod:`mdpo.core`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mdpo import _moved  # noqa: F401 - the old module paths, with a warning
from mdpo.core.version import __version__

#: where each public name lives; imported on first use (PEP 562), so that ``import mdpo`` and
#: ``mdpo --help`` do not pay for torch until an agent is asked for
_PUBLIC = {
    "ALGORITHMS": "mdpo.core.registry",
    "Learner": "mdpo.core.learner",
    "ModelFileError": "mdpo.core.serialization",
    "BC": "mdpo.offline.bc",
    "OfflineAgent": "mdpo.offline.learner",
    "OPPO": "mdpo.offline.oppo",
    "MDPO": "mdpo.rl.mdpo_on",
    "PPO": "mdpo.rl.ppo",
    "BatchedPPO": "mdpo.rl.batched",
    "SAC": "mdpo.rl.sac",
    "TRPO": "mdpo.rl.trpo",
    "Agent": "mdpo.rl.base",
    "NonFiniteLossError": "mdpo.rl.base",
    "OffPolicyAgent": "mdpo.rl.off_policy",
    "OffPolicyMDPO": "mdpo.rl.mdpo_off",
    "OnPolicyAgent": "mdpo.rl.on_policy",
    "BaseCallback": "mdpo.rl.callbacks",
    "CallbackList": "mdpo.rl.callbacks",
    "CheckpointCallback": "mdpo.rl.callbacks",
    "EvalCallback": "mdpo.rl.callbacks",
    "StopTrainingOnRewardThreshold": "mdpo.rl.callbacks",
    "evaluate_policy": "mdpo.rl.evaluation",
    "TSDDR": "mdpo.rules.tsddr",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from mdpo.core.learner import Learner
    from mdpo.core.registry import ALGORITHMS
    from mdpo.core.serialization import ModelFileError
    from mdpo.offline.bc import BC
    from mdpo.offline.learner import OfflineAgent
    from mdpo.offline.oppo import OPPO
    from mdpo.rl import (
        MDPO,
        PPO,
        SAC,
        TRPO,
        Agent,
        NonFiniteLossError,
        OffPolicyAgent,
        OffPolicyMDPO,
        OnPolicyAgent,
    )
    from mdpo.rl.batched import BatchedPPO
    from mdpo.rl.callbacks import (
        BaseCallback,
        CallbackList,
        CheckpointCallback,
        EvalCallback,
        StopTrainingOnRewardThreshold,
    )
    from mdpo.rl.evaluation import evaluate_policy
    from mdpo.rules.tsddr import TSDDR


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mdpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


def load(path: str, env: Any = None, device: str = "auto", **kwargs: Any) -> Learner:
    """Load any mdpo agent from a model file; the algorithm is read from the file."""
    from mdpo.core.learner import Learner

    return Learner.load(path, env=env, device=device, **kwargs)


__all__ = [
    "__version__",
    "ALGORITHMS",
    "BC",
    "OPPO",
    "MDPO",
    "PPO",
    "SAC",
    "TRPO",
    "TSDDR",
    "Agent",
    "BatchedPPO",
    "Learner",
    "OffPolicyMDPO",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "ModelFileError",
    "NonFiniteLossError",
    "OffPolicyAgent",
    "OfflineAgent",
    "OnPolicyAgent",
    "StopTrainingOnRewardThreshold",
    "evaluate_policy",
    "load",
]
