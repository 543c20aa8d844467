"""Bad input gets a clear error naming the culprit, before training starts."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from toy import make_counter

from mdpo import PPO, CheckpointCallback, NonFiniteLossError


def test_unknown_env_id():
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v0'"):
        PPO("MlpPolicy", "NoSuchEnv-v0")


class DictObsEnv(gym.Env):
    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,))})
    action_space = spaces.Discrete(2)


class MultiDiscreteEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.MultiDiscrete([2, 3])


def test_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="PPO supports Box observation spaces; the env has Dict"):
        PPO("MlpPolicy", DictObsEnv())
    with pytest.raises(ValueError, match="action spaces; the env has MultiDiscrete"):
        PPO("MlpPolicy", MultiDiscreteEnv())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"learning_rate": -1e-3}, "learning_rate must be > 0"),
        ({"learning_rate": lambda p: -1.0}, "learning_rate\\(progress_remaining=1.0\\)"),
        ({"learning_rate": float("nan")}, "learning_rate must be finite"),
        ({"n_steps": 0}, "n_steps must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"n_epochs": -1}, "n_epochs must be >= 1"),
        ({"n_steps": 64, "batch_size": 65}, "batch_size=65 is larger than the rollout"),
        ({"n_steps": 8, "n_envs": 2, "batch_size": 17}, "n_steps × n_envs = 8 × 2 = 16"),
        ({"gamma": 1.5}, "gamma must be in \\[0, 1\\]"),
        ({"clip_range": 0}, "clip_range must be > 0"),
        ({"max_grad_norm": 0}, "max_grad_norm must be > 0"),
        ({"n_envs": 0}, "n_envs must be"),
        ({"policy_kwargs": {"activation_fn": "swishy"}}, "activation_fn='swishy'"),
        ({"device": "tpu:7"}, "device='tpu:7'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_unknown_policy_name():
    with pytest.raises(ValueError, match="unknown policy 'CnnPolicy'"):
        PPO("CnnPolicy", "CartPole-v1")


def test_cuda_without_cuda_is_clear():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        PPO("MlpPolicy", "CartPole-v1", device="cuda")


def test_non_positive_total_timesteps():
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="total_timesteps must be >= 1"):
        agent.learn(0)


class NanRewardAfter(gym.Wrapper):
    """Rewards become NaN after ``after`` steps: the loss then cannot be finite."""

    def __init__(self, env, after):
        super().__init__(env)
        self.after, self.count = after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        return obs, (np.nan if self.count > self.after else reward), terminated, truncated, info


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path):
    env = NanRewardAfter(make_counter(max_episode_steps=20, continuous=True), after=100)
    agent = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    checkpoints = CheckpointCallback(1, str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="loss is not finite .* at timestep 128"):
        agent.learn(1000, callback=checkpoints)
    saved = sorted(tmp_path.glob("*.zip"), key=lambda p: int(p.stem.split("_")[-2]))
    last = PPO.load(str(saved[-1]), device="cpu")
    for tensor in last.policy.state_dict().values():
        assert np.isfinite(tensor.numpy()).all()


@pytest.mark.parametrize(
    "algo,kwargs,match",
    [
        ("TRPO", {"line_search_shrinking_factor": 1.0}, "must be in \\(0, 1\\)"),
        ("TRPO", {"target_kl": 0}, "target_kl must be > 0"),
        ("TRPO", {"n_steps": 64, "batch_size": 128}, "batch_size=128 is larger than the rollout"),
        ("MDPO", {"t_k": 0.0}, "t_k must be > 0"),
        ("MDPO", {"t_k": "linear"}, "t_k must be a number"),
        ("MDPO", {"n_policy_steps": 0}, "n_policy_steps must be >= 1"),
        ("MDPO", {"n_steps": 64}, "vf_batch_size=128 is larger than the rollout"),
    ],
)
def test_bad_hyperparameters_of_trpo_and_mdpo(algo, kwargs, match):
    import mdpo

    with pytest.raises(ValueError, match=match):
        getattr(mdpo, algo)("MlpPolicy", "CartPole-v1", **kwargs)
