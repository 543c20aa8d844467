"""Model files: round trips, and clear errors for corrupt, foreign and hostile files."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from mdpo import PPO, Agent, ModelFileError, load
from mdpo.core import serialization as ser


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    agent = PPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=128,
        batch_size=64,
        seed=3,
        device="cpu",
        normalize_obs=True,
        learning_rate=ser_linear(),
    )
    agent.learn(256)
    path = tmp_path_factory.mktemp("model") / "ppo.zip"
    agent.save(str(path))
    return agent, str(path)


def rewrite(src, dst, change):
    """Copy the zip ``src`` to ``dst`` with ``change(name, data) -> data`` applied to members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = change(item.filename, zin.read(item))
            if data is not None:
                zout.writestr(item.filename, data)
    return str(dst)


def edit_json(member, **updates):
    """A ``change`` for :func:`rewrite` that updates keys of one JSON member."""

    def change(name, data):
        if name != member:
            return data
        doc = json.loads(data)
        doc.update(updates)
        return json.dumps(doc).encode()

    return change


def ser_linear():
    from mdpo.core.utils import linear_schedule

    return linear_schedule(1e-3, 1e-4)


def test_round_trip_gives_identical_actions(trained):
    agent, path = trained
    loaded = PPO.load(path, device="cpu")
    obs = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    # normalization statistics, counters, schedule and optimizer came back too
    np.testing.assert_array_equal(agent.normalizer.obs_rms.mean, loaded.normalizer.obs_rms.mean)
    assert loaded.num_timesteps == agent.num_timesteps == 256
    assert loaded.learning_rate(0.0) == pytest.approx(1e-4)
    torch.testing.assert_close(loaded.optimizer.exp_avg, agent.optimizer.exp_avg)
    assert type(load(path)) is PPO  # the generic loader reads the algorithm from the file


def test_file_is_json_and_tensors_only(trained):
    _, path = trained
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert names == {
            "mdpo.json",
            "config.json",
            "spaces.json",
            "state.json",
            "parameters.pt",
            "normalizer.pt",
            "rng.pt",
        }
        config = json.loads(zf.read("config.json"))
        assert config["n_steps"] == 128 and config["learning_rate"]["schedule"] == "linear"
        for name in names - {n for n in names if n.endswith(".json")}:
            torch.load(io.BytesIO(zf.read(name)), weights_only=True)


def test_single_and_batched_predict_shapes(trained):
    agent, _ = trained
    single, _ = agent.predict(np.zeros(3, np.float32), deterministic=True)
    batch, _ = agent.predict(np.zeros((4, 3), np.float32))
    assert single.shape == (1,) and batch.shape == (4, 1)
    assert np.all(np.abs(batch) <= 2.0)  # clipped to Pendulum's bounds
    with pytest.raises(ValueError, match="does not match the observation space"):
        agent.predict(np.zeros(5))


def test_get_and_set_parameters(trained):
    agent, _ = trained
    other = PPO("MlpPolicy", "Pendulum-v1", seed=99, device="cpu")
    other.set_parameters(agent.get_parameters())
    for key, value in agent.policy.state_dict().items():
        torch.testing.assert_close(other.policy.state_dict()[key], value)
    bad = agent.get_parameters()
    bad["policy"]["action_net.weight"] = torch.zeros(7, 7)
    with pytest.raises(ValueError, match="do not fit"):
        other.set_parameters(bad)


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.zip"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ModelFileError, match="not a valid zip"):
        PPO.load(str(path))


def test_truncated_zip(trained, tmp_path):
    _, path = trained
    data = open(path, "rb").read()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        PPO.load(str(cut))


def test_missing_file_and_member(tmp_path, trained):
    with pytest.raises(ModelFileError, match="does not exist"):
        PPO.load(str(tmp_path / "nope.zip"))
    _, path = trained
    broken = rewrite(
        path, tmp_path / "broken.zip", lambda name, data: None if name == "parameters.pt" else data
    )
    with pytest.raises(ModelFileError, match="no member 'parameters.pt'"):
        PPO.load(broken)


def test_foreign_zip_sb3(tmp_path):
    from stable_baselines3 import PPO as SB3PPO

    path = tmp_path / "sb3.zip"
    SB3PPO("MlpPolicy", "CartPole-v1", device="cpu").save(str(path))
    with pytest.raises(ModelFileError, match="Stable-Baselines3"):
        Agent.load(str(path))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_payload_is_refused_without_running(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, path = trained
    payload = io.BytesIO()
    torch.save({"policy": _Exploit()}, payload)
    hostile = rewrite(
        path,
        tmp_path / "hostile.zip",
        lambda n, d: payload.getvalue() if n == "parameters.pt" else d,
    )
    with pytest.raises(ModelFileError, match="could not be loaded as plain tensors"):
        PPO.load(hostile)
    assert not (tmp_path / "PWNED").exists()
    # a plain pickle in a JSON member is just invalid JSON
    pickled = pickle.dumps(_Exploit())
    hostile = rewrite(path, tmp_path / "h2.zip", lambda n, d: pickled if n == "config.json" else d)
    with pytest.raises(ModelFileError, match="not valid JSON"):
        PPO.load(hostile)
    assert not (tmp_path / "PWNED").exists()


def test_oversized_member_is_refused(trained):
    _, path = trained
    with ser.Archive(path) as archive, pytest.raises(ModelFileError, match="over the limit"):
        archive.read("parameters.pt", limit=1000)


def test_zip_bomb_with_a_lying_directory_is_caught(tmp_path):
    """A member whose directory entry understates its size must not be read past the claim."""
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mdpo.json", json.dumps({"format": ser.FORMAT_NAME, "format_version": 1}))
        zf.writestr("big.pt", b"\0" * 5_000_000)  # compresses to a few kB
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last central-directory entry is big.pt
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")  # claim 1000 bytes
    path.write_bytes(bytes(data))
    with ser.Archive(str(path)) as archive:
        with pytest.raises(ModelFileError, match="corrupt"):
            archive.read("big.pt", limit=100_000)


def test_wrong_algorithm_is_named(trained, tmp_path):
    _, path = trained
    other = rewrite(path, tmp_path / "x.zip", edit_json("mdpo.json", algo="SAC"))
    with pytest.raises(ModelFileError, match="holds a SAC agent, not PPO"):
        PPO.load(other)


def test_newer_format_version_is_refused(trained, tmp_path):
    _, path = trained
    newer = rewrite(path, tmp_path / "v.zip", edit_json("mdpo.json", format_version=99))
    with pytest.raises(ModelFileError, match="upgrade mdpo"):
        PPO.load(newer)


def test_load_with_env_checks_spaces(trained):
    _, path = trained
    with pytest.raises(ValueError, match="observation space"):
        PPO.load(path, env="CartPole-v1")
    agent = PPO.load(path, env="Pendulum-v1", device="cpu")
    agent.learn(128, reset_num_timesteps=False)
    assert agent.num_timesteps == 384


def test_activation_class_is_saved_by_name(tmp_path):
    from torch import nn

    agent = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=32,
        device="cpu",
        policy_kwargs={"activation_fn": nn.ReLU, "net_arch": [16]},
    )
    path = agent.save(str(tmp_path / "relu"))
    loaded = PPO.load(path)
    assert loaded.policy_kwargs == {"activation_fn": "relu", "net_arch": [16]}
    assert isinstance(loaded.policy.mlp_extractor.policy_net[1], nn.ReLU)
    with pytest.raises(ValueError, match="policy_kwargs must be plain values"):
        PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [16], "x": object()})


def test_foreign_config_cannot_request_huge_networks(trained, tmp_path):
    _, path = trained
    huge = rewrite(
        path, tmp_path / "huge.zip", edit_json("config.json", policy_kwargs={"net_arch": [10**9]})
    )
    with pytest.raises(ModelFileError, match="layer size"):
        PPO.load(huge)


def test_discrete_actions_with_an_offset_start(tmp_path):
    import gymnasium as gym
    from gymnasium import spaces
    from toy import CounterEnv

    class Shifted(CounterEnv):
        def __init__(self):
            super().__init__(terminate_at=5)
            self.action_space = spaces.Discrete(3, start=-1)
            self.seen = []

        def step(self, action):
            assert self.action_space.contains(action), action
            return super().step(action)

    agent = PPO("MlpPolicy", Shifted(), n_steps=32, batch_size=32, seed=0, device="cpu")
    agent.learn(64)  # the env asserts every training action is in the space
    actions, _ = agent.predict(np.zeros((200, 2), np.float32))
    assert set(actions.tolist()) <= {-1, 0, 1} and -1 in actions
    assert isinstance(agent.action_space, gym.spaces.Discrete)


@pytest.mark.parametrize("algo", ["TRPO", "MDPO"])
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_other_on_policy_agents_round_trip(algo, env_id, tmp_path):
    import mdpo

    cls = getattr(mdpo, algo)
    extra = {"vf_batch_size": 64} if algo == "MDPO" else {"batch_size": 64}
    agent = cls("MlpPolicy", env_id, n_steps=128, seed=0, device="cpu", **extra)
    agent.learn(256)
    path = agent.save(str(tmp_path / algo))
    loaded = load(path, env=env_id, device="cpu")
    assert type(loaded) is cls and loaded.num_timesteps == 256
    obs = np.random.default_rng(0).normal(size=(8, *agent.observation_space.shape))
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    for name, state in agent.get_parameters().items():
        if name != "policy":  # optimizer states
            other = loaded.get_parameters()[name]
            torch.testing.assert_close(other["exp_avg"], state["exp_avg"])
    loaded.learn(128, reset_num_timesteps=False)  # and training goes on
    assert loaded.num_timesteps == 384
