"""mdpo: Mirror Descent Policy Optimization and its baselines in PyTorch.

Layers (each imports only the ones below it; ``lint-imports`` checks it): :mod:`mdpo.cli` on
:mod:`mdpo.interop` on the hydro case study (:mod:`mdpo.envs.hydro`) on the families
(:mod:`mdpo.offline` | :mod:`mdpo.rules` on :mod:`mdpo.rl`) on :mod:`mdpo.core`.
"""

from mdpo import _moved  # noqa: E402, F401 - the old module paths, with a warning
from mdpo.core.learner import Learner  # noqa: E402
from mdpo.core.registry import ALGORITHMS  # noqa: E402
from mdpo.core.serialization import ModelFileError  # noqa: E402
from mdpo.core.version import __version__
from mdpo.interop import sb3 as _sb3  # noqa: E402, F401 - plugs in save_sb3 / load_sb3
from mdpo.offline.bc import BC  # noqa: E402
from mdpo.offline.learner import OfflineAgent  # noqa: E402
from mdpo.offline.oppo import OPPO  # noqa: E402
from mdpo.rl import (  # noqa: E402
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
from mdpo.rl.callbacks import (  # noqa: E402
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from mdpo.rl.evaluation import evaluate_policy  # noqa: E402
from mdpo.rules.tsddr import TSDDR  # noqa: E402


def load(path: str, env=None, device: str = "auto", **kwargs) -> Learner:
    """Load any mdpo agent from a model file; the algorithm is read from the file."""
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
