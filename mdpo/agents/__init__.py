"""Agents of the suite, by algorithm name."""

from mdpo.agents.base import Agent, NonFiniteLossError
from mdpo.agents.bc import BC
from mdpo.agents.mdpo_off import OffPolicyMDPO
from mdpo.agents.mdpo_on import MDPO
from mdpo.agents.off_policy import OffPolicyAgent
from mdpo.agents.offline import OfflineAgent
from mdpo.agents.on_policy import OnPolicyAgent
from mdpo.agents.oppo import OPPO
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
    "OPPO": OPPO,
    "BC": BC,
}

# the agents that learn from environment transitions (``mdpo train``, sweeps); TS-DDR learns
# from optimization problems (``mdpo hydro tsddr``), OPPO and BC from datasets (``mdpo oppo``)
RL_ALGORITHMS: dict[str, type[Agent]] = {
    name: cls for name, cls in ALGORITHMS.items() if cls.needs_env_runner
}

__all__ = [
    "ALGORITHMS",
    "BC",
    "OPPO",
    "RL_ALGORITHMS",
    "MDPO",
    "PPO",
    "SAC",
    "TRPO",
    "TSDDR",
    "Agent",
    "OffPolicyMDPO",
    "NonFiniteLossError",
    "OffPolicyAgent",
    "OfflineAgent",
    "OnPolicyAgent",
]
