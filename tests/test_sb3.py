"""Stable-Baselines3 compatibility: import without unpickling, export back, the CLI, unsafe and
corrupt files, and an SB3 script run unchanged with our classes."""

import base64
import copy
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import TRPO as SB3TRPO
from stable_baselines3 import A2C as SB3A2C
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3 import TD3 as SB3TD3

import mdpo
from mdpo import MDPO, PPO, SAC, TRPO, ModelFileError, OffPolicyMDPO
from mdpo.cli.main import main
from mdpo.interop import sb3 as msb3

SMALL_ON = dict(n_steps=64, batch_size=32)
SMALL_OFF = dict(learning_starts=20, batch_size=32, policy_kwargs={"net_arch": [32, 32]})
IMPORT_CASES = [
    (
        SB3PPO,
        "Pendulum-v1",
        dict(**SMALL_ON, policy_kwargs={"net_arch": {"pi": [32], "vf": [8]}}),
        PPO,
    ),
    (SB3PPO, "CartPole-v1", dict(**SMALL_ON, policy_kwargs={"activation_fn": torch.nn.ReLU}), PPO),
    (SB3A2C, "Pendulum-v1", {}, PPO),
    (SB3A2C, "CartPole-v1", {}, PPO),
    (SB3TRPO, "Pendulum-v1", dict(n_steps=128, batch_size=64), TRPO),
    (SB3SAC, "Pendulum-v1", SMALL_OFF, SAC),
    (SB3TD3, "Pendulum-v1", SMALL_OFF, SAC),
]


def observations(space, n=64, seed=0):
    space = gym.spaces.Box(-3, 3, space.shape, np.float32) if not space.is_bounded() else space
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def train_sb3(cls, env_id, kwargs, path, steps=200):
    kwargs = copy.deepcopy(kwargs)  # SB3 adds keys to the policy_kwargs it is given
    model = cls("MlpPolicy", env_id, seed=0, device="cpu", **kwargs)
    model.learn(steps)
    model.save(path)
    return model


@pytest.mark.parametrize("cls,env_id,kwargs,ours", IMPORT_CASES)
def test_import_equals_sb3_actions_and_continues_training(cls, env_id, kwargs, ours, tmp_path):
    path = str(tmp_path / "sb3.zip")
    model = train_sb3(cls, env_id, kwargs, path)
    agent = mdpo.interop.sb3.load(path, device="cpu")
    assert type(agent) is ours
    obs = observations(model.observation_space)
    expected, _ = model.predict(obs, deterministic=True)
    actual, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), atol=1e-5)
    # the classmethod spelling, then more training on the env
    agent = ours.load_sb3(path, env=env_id, device="cpu")
    before = agent.num_timesteps
    budget = 64 if ours is not SAC else 40
    if ours in (PPO, TRPO):
        agent.n_steps, agent.batch_size = 64, 32  # a short rollout for the test
    agent.learn(budget, reset_num_timesteps=False)
    assert agent.num_timesteps >= before + budget


@pytest.mark.parametrize(
    "cls,env_id,kwargs,ours",
    [(SB3PPO, "Pendulum-v1", SMALL_ON, MDPO), (SB3SAC, "Pendulum-v1", SMALL_OFF, OffPolicyMDPO)],
)
def test_warm_start_mdpo_from_sb3(cls, env_id, kwargs, ours, tmp_path):
    path = str(tmp_path / "sb3.zip")
    model = train_sb3(cls, env_id, kwargs, path)
    agent = ours.load_sb3(path, env=env_id, device="cpu")
    obs = observations(model.observation_space)
    np.testing.assert_allclose(
        agent.predict(obs, deterministic=True)[0],
        model.predict(obs, deterministic=True)[0],
        atol=1e-5,
    )
    if ours is MDPO:
        agent.n_steps = 64
    agent.learn(64, reset_num_timesteps=False)


def test_wrong_target_class(tmp_path):
    path = str(tmp_path / "sb3.zip")
    train_sb3(SB3SAC, "Pendulum-v1", SMALL_OFF, path, steps=30)
    with pytest.raises(ValueError, match="can be loaded as SAC, OffPolicyMDPO, not"):
        PPO.load_sb3(path)


EXPORT_CASES = [
    (PPO, "Pendulum-v1", {}, SB3PPO),
    (PPO, "CartPole-v1", {}, SB3PPO),
    (TRPO, "Pendulum-v1", {}, SB3TRPO),
    (MDPO, "Pendulum-v1", {}, SB3PPO),  # observation normalization folded into the weights
    (SAC, "Pendulum-v1", {"learning_starts": 50}, SB3SAC),
    (OffPolicyMDPO, "Pendulum-v1", {"learning_starts": 50}, SB3SAC),
]


@pytest.mark.parametrize("ours,env_id,kwargs,cls", EXPORT_CASES)
def test_export_loads_in_sb3_with_equal_actions(ours, env_id, kwargs, cls, tmp_path):
    agent = ours("MlpPolicy", env_id, n_envs=1, seed=0, device="cpu", **kwargs)
    if ours in (PPO, TRPO, MDPO):
        agent.n_steps = 256
        agent.batch_size = min(getattr(agent, "batch_size", 64), 64)
    agent.learn(512 if ours in (PPO, TRPO, MDPO) else 120)
    path = agent.save_sb3(str(tmp_path / "exported"))
    model = cls.load(path, env=gym.make(env_id), device="cpu")
    obs = observations(model.observation_space)
    np.testing.assert_allclose(
        np.asarray(model.predict(obs, deterministic=True)[0], float),
        np.asarray(agent.predict(obs, deterministic=True)[0], float),
        atol=1e-5,
    )
    model.learn(64)  # SB3 keeps training it


def test_import_does_not_import_stable_baselines3(tmp_path):
    path = str(tmp_path / "sb3.zip")
    train_sb3(SB3PPO, "CartPole-v1", SMALL_ON, path, steps=64)
    code = textwrap.dedent(f"""
        import sys
        import mdpo.interop.sb3
        agent = mdpo.interop.sb3.load({path!r}, device="cpu")
        print(type(agent).__name__, "stable_baselines3" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["PPO", "False"]


# ------------------------------------------------------------------------------------ unsafe
class CreatesFile:
    """Unpickling this creates ``path``: the payload an attacker would use."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def rewrite_zip(src, dst, replace):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = replace.get(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)


def test_pickle_payload_in_data_is_never_run(tmp_path):
    src, dst = str(tmp_path / "sb3.zip"), str(tmp_path / "evil.zip")
    train_sb3(SB3PPO, "CartPole-v1", SMALL_ON, src, steps=64)
    marker = str(tmp_path / "pwned")
    data = json.loads(zipfile.ZipFile(src).read("data"))
    evil = base64.b64encode(pickle.dumps(CreatesFile(marker))).decode()
    for key in ("policy_class", "observation_space", "action_space", "lr_schedule"):
        data[key][":serialized:"] = evil
    rewrite_zip(src, dst, {"data": json.dumps(data).encode()})
    agent = mdpo.interop.sb3.load(dst, device="cpu")  # the readable fields are enough
    assert type(agent) is PPO
    assert not os.path.exists(marker)


@pytest.mark.parametrize("member", ["policy.pth", "pytorch_variables.pth"])
def test_pickle_payload_in_tensors_fails_cleanly(member, tmp_path):
    src, dst = str(tmp_path / "sb3.zip"), str(tmp_path / "evil.zip")
    train_sb3(SB3SAC, "Pendulum-v1", SMALL_OFF, src, steps=30)
    marker = str(tmp_path / "pwned")
    buffer = io.BytesIO()
    torch.save({"log_ent_coef": CreatesFile(marker)}, buffer)
    rewrite_zip(src, dst, {member: buffer.getvalue()})
    with pytest.raises(ModelFileError, match="plain tensors"):
        mdpo.interop.sb3.load(dst, device="cpu")
    assert not os.path.exists(marker)


def test_corrupt_and_unsupported_files(tmp_path, monkeypatch):
    src = str(tmp_path / "sb3.zip")
    train_sb3(SB3PPO, "Pendulum-v1", SMALL_ON, src, steps=64)
    content = open(src, "rb").read()
    cases = {
        # (half a zip may still show an inner zip's directory: torch's .pth files are zips)
        "truncated.zip": (content[: len(content) // 2], "not a valid zip|no 'data' member"),
        "notzip.zip": (b"hello", "not a valid zip"),
    }
    for name, (payload, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ModelFileError, match=message):
            mdpo.interop.sb3.load(str(path))
    nodata = str(tmp_path / "nodata.zip")
    rewrite_zip(src, nodata, {"data": None})
    with pytest.raises(ModelFileError, match="no 'data' member"):
        mdpo.interop.sb3.load(nodata)
    badjson = str(tmp_path / "badjson.zip")
    rewrite_zip(src, badjson, {"data": b"{not json"})
    with pytest.raises(ModelFileError, match="not JSON"):
        mdpo.interop.sb3.load(badjson)
    # weights whose shapes contradict each other
    state = torch.load(io.BytesIO(zipfile.ZipFile(src).read("policy.pth")), weights_only=True)
    state["action_net.weight"] = torch.zeros(1, 7)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    shapes = str(tmp_path / "shapes.zip")
    rewrite_zip(src, shapes, {"policy.pth": buffer.getvalue()})
    with pytest.raises(ModelFileError, match="do not fit"):
        mdpo.interop.sb3.load(shapes)
    # an unknown algorithm, an unsupported space
    data = json.loads(zipfile.ZipFile(src).read("data"))
    stripped = {k: v for k, v in data.items() if k not in ("clip_range", "vf_coef")}
    unknown = str(tmp_path / "unknown.zip")
    rewrite_zip(src, unknown, {"data": json.dumps(stripped).encode()})
    with pytest.raises(ModelFileError, match="cannot tell which SB3 algorithm"):
        mdpo.interop.sb3.load(unknown)
    data["action_space"][":type:"] = "<class 'gymnasium.spaces.multi_discrete.MultiDiscrete'>"
    space = str(tmp_path / "space.zip")
    rewrite_zip(src, space, {"data": json.dumps(data).encode()})
    with pytest.raises(ModelFileError, match="MultiDiscrete.*not supported"):
        mdpo.interop.sb3.load(space)
    # oversized members are refused before they are read (a zip bomb)
    monkeypatch.setattr(msb3, "SB3_MEMBER_LIMIT", 1000)
    with pytest.raises(ModelFileError, match="over the limit"):
        mdpo.interop.sb3.load(src)
    # our own files are pointed to mdpo.load
    agent = PPO("MlpPolicy", "Pendulum-v1", device="cpu")
    ours = agent.save(str(tmp_path / "ours"))
    with pytest.raises(ModelFileError, match="mdpo model file"):
        mdpo.interop.sb3.load(ours)


# ------------------------------------------------------------------------------------ CLI
def test_cli_import_and_export(tmp_path, capsys):
    src = str(tmp_path / "sb3.zip")
    model = train_sb3(SB3SAC, "Pendulum-v1", SMALL_OFF, src, steps=40)
    ours, back = str(tmp_path / "ours.zip"), str(tmp_path / "back.zip")
    assert main(["import-sb3", src, "--out", ours]) == 0
    assert main(["export-sb3", ours, "--out", back]) == 0
    assert "SB3 SAC -> mdpo SAC" in capsys.readouterr().out
    again = SB3SAC.load(back, device="cpu")
    obs = observations(model.observation_space)
    np.testing.assert_allclose(
        again.predict(obs, deterministic=True)[0],
        model.predict(obs, deterministic=True)[0],
        atol=1e-5,
    )
    assert main(["import-sb3", src, "--out", ours, "--algo", "PPO"]) == 2
    assert "can be loaded as SAC, OffPolicyMDPO" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ drop-in
SCRIPT = """
import gymnasium as gym
import numpy as np
{imports}

eval_env = gym.make("CartPole-v1")
model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, seed=0, verbose=0)
checkpoints = CheckpointCallback(save_freq=256, save_path="{out}/ckpt", name_prefix="rl_model")
evaluation = EvalCallback(eval_env, eval_freq=256, n_eval_episodes=2, log_path="{out}/eval")
model.learn(total_timesteps=1024, callback=[checkpoints, evaluation])
model.save("{out}/model")
loaded = PPO.load("{out}/model")
obs, _ = eval_env.reset(seed=0)
action, _ = loaded.predict(obs, deterministic=True)
mean, std = evaluate_policy(loaded, eval_env, n_eval_episodes=3, deterministic=True)
print("ok", int(action), round(float(mean), 1) > 0, loaded.num_timesteps)
"""
IMPORTS = {
    "sb3": "from stable_baselines3 import PPO\n"
    "from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback\n"
    "from stable_baselines3.common.evaluation import evaluate_policy",
    "mdpo": "from mdpo import PPO, CheckpointCallback, EvalCallback, evaluate_policy",
}


@pytest.mark.parametrize("library", ["sb3", "mdpo"])
def test_sb3_script_runs_with_only_the_import_changed(library, tmp_path):
    out = str(tmp_path)
    script = SCRIPT.format(imports=IMPORTS[library], out=out)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=out)
    assert result.returncode == 0, result.stderr
    words = result.stdout.splitlines()[-1].split()
    assert words[0] == "ok" and words[2] == "True" and words[3] == "1024"
    assert os.path.exists(f"{out}/model.zip")
    assert len([n for n in os.listdir(f"{out}/ckpt") if n.endswith("_steps.zip")]) == 4


# ------------------------------------------------------------------------------------ VecNormalize
def test_vecnormalize_statistics_are_read_without_unpickling(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Pendulum-v1", 2, seed=0))
    model = SB3PPO("MlpPolicy", venv, n_steps=64, batch_size=32, seed=0, device="cpu")
    model.learn(256)
    model.save(str(tmp_path / "model"))
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    agent = PPO.load_sb3(
        str(tmp_path / "model.zip"), device="cpu", vecnormalize=str(tmp_path / "vecnormalize.pkl")
    )
    assert agent.normalize_obs and agent.normalizer.obs_rms.count == venv.obs_rms.count
    np.testing.assert_allclose(agent.normalizer.obs_rms.var, venv.obs_rms.var)
    obs = observations(model.observation_space)
    np.testing.assert_allclose(  # ours normalizes inside predict, as SB3's VecNormalize does
        agent.predict(obs, deterministic=True)[0],
        model.predict(venv.normalize_obs(obs), deterministic=True)[0],
        atol=1e-5,
    )
    # a pickle that would create a file when unpickled is refused, and nothing runs
    marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(ModelFileError, match="not a readable VecNormalize file"):
        PPO.load_sb3(str(tmp_path / "model.zip"), vecnormalize=str(evil))
    assert not os.path.exists(marker)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_symbolic_pickle_reader(protocol):
    from mdpo.interop.safe_pickle import Call, Global, as_array, read_symbolic

    plain = {"a": [1, 2.5, None, True], "b": ("x", -(2**40)), "c": {"d": [[], {}]}}
    if protocol >= 3:  # protocol 2 writes bytes as a call to _codecs.encode
        plain["e"] = b"yz"
    assert read_symbolic(pickle.dumps(plain, protocol=protocol)) == plain
    for array in (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.float64(2.5),
        np.asfortranarray(np.ones((2, 3), dtype=">i4")),
    ):
        rebuilt = as_array(read_symbolic(pickle.dumps(array, protocol=protocol)))
        np.testing.assert_array_equal(rebuilt, array)
    node = read_symbolic(pickle.dumps(CreatesFile("/nonexistent/x"), protocol=protocol))
    assert isinstance(node, Call) and node.func == Global("io", "open")
