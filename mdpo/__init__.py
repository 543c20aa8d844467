"""mdpo: Mirror Descent Policy Optimization and its baselines in PyTorch."""

__version__ = "0.1.0"

from mdpo.agents import (  # noqa: E402
    ALGORITHMS,
    BC,
    MDPO,
    OPPO,
    PPO,
    SAC,
    TRPO,
    TSDDR,
    Agent,
    NonFiniteLossError,
    OffPolicyAgent,
    OffPolicyMDPO,
    OnPolicyAgent,
)
from mdpo.callbacks import (  # noqa: E402
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from mdpo.evaluation import evaluate_policy  # noqa: E402
from mdpo.serialization import ModelFileError  # noqa: E402


def load(path: str, env=None, device: str = "auto", **kwargs) -> Agent:
    """Load any mdpo agent from a model file; the algorithm is read from the file."""
    return Agent.load(path, env=env, device=device, **kwargs)


__all__ = [
    "ALGORITHMS",
    "BC",
    "OPPO",
    "MDPO",
    "PPO",
    "SAC",
    "TRPO",
    "TSDDR",
    "Agent",
    "OffPolicyMDPO",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "ModelFileError",
    "NonFiniteLossError",
    "OffPolicyAgent",
    "OnPolicyAgent",
    "StopTrainingOnRewardThreshold",
    "evaluate_policy",
    "load",
]
