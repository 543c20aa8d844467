"""Online reinforcement learning: vector envs and runners (gymnasium and torch-native),
normalization, networks, buffers, evaluation, callbacks, the agent base, and the on-policy
(PPO, TRPO, MDPO) and off-policy (SAC, off-policy MDPO) families, one algorithm a file."""

from mdpo.rl.base import Agent, NonFiniteLossError
from mdpo.rl.mdpo_off import OffPolicyMDPO
from mdpo.rl.mdpo_on import MDPO
from mdpo.rl.off_policy import OffPolicyAgent
from mdpo.rl.on_policy import OnPolicyAgent
from mdpo.rl.ppo import PPO
from mdpo.rl.sac import SAC
from mdpo.rl.trpo import TRPO

__all__ = [
    "MDPO",
    "PPO",
    "SAC",
    "TRPO",
    "Agent",
    "NonFiniteLossError",
    "OffPolicyAgent",
    "OffPolicyMDPO",
    "OnPolicyAgent",
]
