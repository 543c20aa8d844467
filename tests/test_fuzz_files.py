"""Fuzz the readers of model files, replay buffers, dataset folders, label files and run
folders: every malformed or hostile variant of a valid file is loaded or refused with the
project's own error (:class:`mdpo.core.limits.BadFileError`), one line, within time and memory.
``MDPO_FUZZ_EXAMPLES=2000`` makes it a long run (see ``tests/fuzzing.py``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile

import pytest
import torch
from fuzzing import (
    FUZZ,
    assert_loads_or_refuses,
    json_mutation,
    mutate_bytes,
    rewrite_zip,
    rngs,
    tensor_bytes,
)
from hypothesis import given
from hypothesis import strategies as st
from offline_data import hand_dataset

from mdpo import PPO, SAC, Agent
from mdpo.cli.main import main
from mdpo.offline.dataset import OfflineDataset
from mdpo.offline.preferences import SegmentSampler, read_labels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    ppo = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu", seed=0)
    sac = SAC("MlpPolicy", "Pendulum-v1", learning_starts=5, buffer_size=50, device="cpu")
    sac.learn(10)
    sac.save_replay_buffer(str(root / "buffer.zip"))
    dataset = hand_dataset().save("mdpo/pendulum/valid-v0", root=str(root / "datasets"))
    labels = root / "labels.csv"
    labels.write_text("episode_a,start_a,episode_b,start_b,label\n0,0,1,0,1\n0,1,1,1,0.5\n")
    run = root / "run"
    assert (
        main(
            [
                "train",
                "PPO",
                "CartPole-v1",
                "--steps",
                "64",
                "--set",
                "n_steps=64",
                "--set",
                "batch_size=64",
                "--eval-freq",
                "64",
                "--eval-episodes",
                "1",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    return {
        "ppo": ppo.save(str(root / "ppo.zip")),
        "sac": sac,
        "root": root,
        "buffer": str(root / "buffer.zip"),
        "dataset": dataset,
        "labels": str(labels),
        "run": str(run),
    }


def zip_members(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@FUZZ
@given(rng=rngs())
def test_model_file_bytes(files, tmp_path_factory, rng):
    data = open(files["ppo"], "rb").read()
    path = tmp_path_factory.mktemp("m") / "m.zip"
    path.write_bytes(mutate_bytes(data, rng))
    assert_loads_or_refuses(Agent.load, str(path))


@FUZZ
@given(
    rng=rngs(), member=st.sampled_from(["mdpo.json", "config.json", "spaces.json", "state.json"])
)
def test_model_file_json_members(files, tmp_path_factory, rng, member):
    def change(name, data):
        if name != member:
            return data
        if rng.randrange(4) == 0:
            return mutate_bytes(data, rng)
        return json.dumps(json_mutation(json.loads(data), rng)).encode()

    path = rewrite_zip(files["ppo"], str(tmp_path_factory.mktemp("m") / "m.zip"), change)
    assert_loads_or_refuses(Agent.load, path)


def hostile_tensor(rng: random.Random, shape: tuple[int, ...]) -> torch.Tensor:
    kind = rng.randrange(5)
    if kind == 0:
        return torch.zeros(1).expand(*[s * 1000 for s in shape])
    if kind == 1:
        return torch.full(shape, float(rng.choice(["nan", "inf", "-inf"])))
    if kind == 2:
        return torch.zeros(*[s + rng.randint(1, 3) for s in shape])
    if kind == 3:
        return torch.zeros(shape, dtype=rng.choice([torch.int64, torch.bool, torch.float16]))
    return torch.zeros(0)


@FUZZ
@given(rng=rngs())
def test_model_file_hostile_tensors(files, tmp_path_factory, rng):
    params = PPO.load(files["ppo"]).get_parameters()
    names = [
        (group, name)
        for group in params
        for name in params[group]
        if isinstance(params[group][name], torch.Tensor)
    ]
    group, name = rng.choice(names)
    params[group][name] = hostile_tensor(rng, tuple(params[group][name].shape))
    path = rewrite_zip(
        files["ppo"],
        str(tmp_path_factory.mktemp("m") / "m.zip"),
        lambda n, d: tensor_bytes(params) if n == "parameters.pt" else d,
    )
    assert_loads_or_refuses(Agent.load, path)


@FUZZ
@given(rng=rngs())
def test_replay_buffer(files, tmp_path_factory, rng):
    sac = files["sac"]
    members = zip_members(files["buffer"])
    state = torch.load(__import__("io").BytesIO(members["buffer.pt"]), weights_only=True)
    tensors = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() > 0]
    path = tmp_path_factory.mktemp("b") / "b.zip"
    if rng.randrange(2):
        key = rng.choice(tensors)
        state[key] = hostile_tensor(rng, tuple(state[key].shape))
        rewrite_zip(
            files["buffer"], str(path), lambda n, d: tensor_bytes(state) if n == "buffer.pt" else d
        )
    else:
        path.write_bytes(mutate_bytes(open(files["buffer"], "rb").read(), rng))
    assert_loads_or_refuses(sac.load_replay_buffer, str(path))


@FUZZ
@given(rng=rngs(), target=st.sampled_from(["metadata", "hdf5"]))
def test_dataset_folder(files, tmp_path_factory, rng, target):
    folder = tmp_path_factory.mktemp("d") / "set"
    shutil.copytree(files["dataset"], folder)
    data = folder / "data"
    if target == "metadata":
        meta = json.loads((data / "metadata.json").read_text())
        key = rng.choice(["observation_space", "action_space", "env_spec", "mdpo"])
        if rng.randrange(3) == 0:
            meta = json_mutation(meta, rng)
        elif isinstance(meta.get(key), str):  # a JSON string inside the JSON
            meta[key] = json.dumps(json_mutation(json.loads(meta[key]), rng))
        (data / "metadata.json").write_text(json.dumps(meta))
    else:
        hdf5 = data / "main_data.hdf5"
        hdf5.write_bytes(mutate_bytes(hdf5.read_bytes(), rng))
    assert_loads_or_refuses(OfflineDataset.load, str(folder))


def read_label_file(path: str, dataset_folder: str) -> None:
    read_labels(path, SegmentSampler(OfflineDataset.load(dataset_folder), 2))


@FUZZ
@given(rng=rngs())
def test_label_file(files, tmp_path_factory, rng):
    path = tmp_path_factory.mktemp("l") / "labels.csv"
    text = open(files["labels"], "rb").read()
    if rng.randrange(4) == 0:
        text += b"0,0,1,0," + rng.choice([b"nan", b"1e999", b"9" * 5000, b"\x00"]) + b"\n"
    path.write_bytes(mutate_bytes(text, rng))
    assert_loads_or_refuses(read_label_file, str(path), files["dataset"])


def resume(run: str) -> None:
    code = main(["train", "--resume", run, "--no-progress"])
    if code != 0:
        from mdpo.core.limits import BadFileError

        raise BadFileError(f"mdpo train --resume exited {code}")  # a one-line error, printed


@FUZZ
@given(rng=rngs(), target=st.sampled_from(["config.json", "status.json", "eval/evaluations.csv"]))
def test_run_folder(files, tmp_path_factory, rng, target):
    run = tmp_path_factory.mktemp("r") / "run"
    shutil.copytree(files["run"], run, ignore=shutil.ignore_patterns(".lock"))
    path = run / target
    data = path.read_bytes()
    if target.endswith(".json") and rng.randrange(2):
        path.write_text(json.dumps(json_mutation(json.loads(data), rng)))
    else:
        path.write_bytes(mutate_bytes(data, rng))
    if target != "status.json":
        (run / "status.json").write_text('{"status": "running"}')
    outcome = assert_loads_or_refuses(resume, str(run))
    assert outcome in ("ok", "refused")
    assert os.path.commonpath([str(run), os.path.realpath(str(run))])
