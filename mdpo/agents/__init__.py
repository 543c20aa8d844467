"""Agents of the suite, by algorithm name."""

from mdpo.agents.base import Agent, NonFiniteLossError
from mdpo.agents.on_policy import OnPolicyAgent
from mdpo.agents.ppo import PPO

ALGORITHMS: dict[str, type[Agent]] = {"PPO": PPO}

__all__ = ["ALGORITHMS", "PPO", "Agent", "NonFiniteLossError", "OnPolicyAgent"]
