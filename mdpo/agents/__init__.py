"""Agents of the suite, by algorithm name."""

from mdpo.agents.base import Agent, NonFiniteLossError
from mdpo.agents.mdpo_on import MDPO
from mdpo.agents.on_policy import OnPolicyAgent
from mdpo.agents.ppo import PPO
from mdpo.agents.trpo import TRPO

ALGORITHMS: dict[str, type[Agent]] = {"PPO": PPO, "TRPO": TRPO, "MDPO": MDPO}

__all__ = ["ALGORITHMS", "MDPO", "PPO", "TRPO", "Agent", "NonFiniteLossError", "OnPolicyAgent"]
