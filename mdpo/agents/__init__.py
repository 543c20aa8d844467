"""Agents of the suite, by algorithm name."""

from mdpo.agents.base import Agent, NonFiniteLossError
from mdpo.agents.mdpo_off import OffPolicyMDPO
from mdpo.agents.mdpo_on import MDPO
from mdpo.agents.off_policy import OffPolicyAgent
from mdpo.agents.on_policy import OnPolicyAgent
from mdpo.agents.ppo import PPO
from mdpo.agents.sac import SAC
from mdpo.agents.trpo import TRPO
from mdpo.agents.tsddr import TSDDR

ALGORITHMS: dict[str, type[Agent]] = {
    "PPO": PPO,
    "TRPO": TRPO,
    "MDPO": MDPO,
    "SAC": SAC,
    "OffPolicyMDPO": OffPolicyMDPO,
    "TSDDR": TSDDR,
}

__all__ = [
    "ALGORITHMS",
    "MDPO",
    "PPO",
    "SAC",
    "TRPO",
    "TSDDR",
    "Agent",
    "OffPolicyMDPO",
    "NonFiniteLossError",
    "OffPolicyAgent",
    "OnPolicyAgent",
]
