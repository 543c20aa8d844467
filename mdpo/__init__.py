"""mdpo: Mirror Descent Policy Optimization and its baselines in PyTorch."""

__version__ = "0.1.0"

from mdpo.agents import ALGORITHMS, MDPO, PPO, TRPO, Agent, NonFiniteLossError, OnPolicyAgent  # noqa: E402
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
    "MDPO",
    "PPO",
    "TRPO",
    "Agent",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "ModelFileError",
    "NonFiniteLossError",
    "OnPolicyAgent",
    "StopTrainingOnRewardThreshold",
    "evaluate_policy",
    "load",
]
