"""Fuzz the Stable-Baselines3 readers: VecNormalize pickles
(``mdpo.interop.sb3.read_vecnormalize``, on top of ``mdpo.interop.safe_pickle``) and SB3 zips
(``mdpo.interop.sb3.load``). Real files saved by stable_baselines3 are corrupted (bytes,
truncations, bit flips), given hostile structures (memo bombs, deep nesting, huge integers,
self-references), hostile ``data`` JSON and hostile tensors (expanded views, shapes beyond their
storage, NaN, wrong dtypes or ranks); each case is loaded or refused with the project's own
error (:class:`mdpo.core.limits.BadFileError`), in one line, within time and memory.
``MDPO_FUZZ_EXAMPLES=2000`` makes it a long run (see ``tests/fuzzing.py``)."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch
from fuzzing import (
    FUZZ,
    assert_loads_or_refuses,
    json_mutation,
    mutate_bytes,
    replace_member,
    rewrite_zip,
    rngs,
    tensor_bytes,
)
from hypothesis import given
from hypothesis import strategies as st

import mdpo
from mdpo.interop import sb3 as msb3

#: stand-ins pickled in place of VecNormalize fields, replaced by hostile opcodes
MARKERS = {
    "gamma": "MARKER_GAMMA_000",
    "clip_obs": "MARKER_CLIP__000",
    "mean": "MARKER_MEAN__000",
    "norm_obs": "MARKER_NORM__000",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real SB3 files (saved once, no training): PPO on Pendulum and on CartPole (ReLU, so its
    ``policy_kwargs`` is a serialized record), SAC on Pendulum, a VecNormalize of Pendulum, and
    the same VecNormalize with :data:`MARKERS` in place of some fields."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    root = tmp_path_factory.mktemp("sb3fuzz")
    paths = {"root": root}
    for name, cls, env_id, kwargs in (
        ("ppo", SB3PPO, "Pendulum-v1", {"n_steps": 64, "batch_size": 32}),
        (
            "ppo_discrete",
            SB3PPO,
            "CartPole-v1",
            {"n_steps": 64, "batch_size": 32, "policy_kwargs": {"activation_fn": torch.nn.ReLU}},
        ),
        ("sac", SB3SAC, "Pendulum-v1", {"buffer_size": 1000}),
    ):
        kwargs.setdefault("policy_kwargs", {})["net_arch"] = [8]
        paths[name] = str(root / f"{name}.zip")
        cls("MlpPolicy", env_id, seed=0, device="cpu", **kwargs).save(paths[name])

    def vecnormalize(markers):
        venv = VecNormalize(make_vec_env("Pendulum-v1", 1, seed=0))
        venv.reset()
        for _ in range(5):
            venv.step(np.zeros((1, 1), dtype=np.float32))
        if markers:
            venv.gamma, venv.clip_obs = MARKERS["gamma"], MARKERS["clip_obs"]
            venv.norm_obs, venv.obs_rms.mean = MARKERS["norm_obs"], MARKERS["mean"]
        path = str(root / f"vecnormalize{'-markers' if markers else ''}.pkl")
        venv.save(path)
        return path

    # (paths, not bytes: hypothesis prints the arguments of a failing case)
    paths["vecnormalize"] = vecnormalize(False)
    paths["template"] = vecnormalize(True)
    for marker in MARKERS.values():
        assert read(paths["template"]).count(b"\x8c\x10" + marker.encode()) == 1
    return paths


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def read_vecnormalize(path):
    msb3.read_vecnormalize(path)


def load_cpu(path, vecnormalize=None):
    mdpo.interop.sb3.load(path, device="cpu", vecnormalize=vecnormalize)


def write(files, name, data):
    path = files["root"] / name
    path.write_bytes(data)
    return str(path)


# ------------------------------------------------------------------------- hostile pickles
def long_get(index):
    return b"j" + struct.pack("<I", index)


def long_put(index):
    return b"r" + struct.pack("<I", index)


def memo_bomb(rng):
    """A list or tuple of references to the level below, up to 40 levels: a few hundred
    bytes, up to ``20 ** 40`` objects once every reference is counted. Memo entries from 10**6
    up (clear of the file's own)."""
    levels, width = rng.randint(3, 40), rng.randint(2, 20)
    close, seed = rng.choice([(b"l", b"]"), (b"t", b")")])
    base = 1_000_000 + rng.randrange(1000) * 100
    ops = [seed, long_put(base)]
    for level in range(1, levels):
        ops += [b"(", long_get(base + level - 1) * width, close, long_put(base + level)]
    return b"".join(ops)


def deep(rng):
    """Nesting from just over the limit to a hundred thousand levels."""
    depth = rng.choice([65, 66, 200, 5000, 100_000])
    kind = rng.randrange(3)
    if kind == 0:  # tuples
        return b")" + b"\x85" * depth
    if kind == 1:  # lists, through APPEND
        return b"]" * depth + b"a" * (depth - 1)
    return b"}" + b"(\x8c\x01k}" * (depth - 1) + b"u" * (depth - 1)  # dicts, through SETITEMS


def huge_int(rng):
    digits = rng.choice([101, 400, 4301, 200_000])
    kind = rng.randrange(4)
    if kind == 0:
        return b"I" + b"9" * digits + b"\n"
    if kind == 1:
        return b"L" + b"9" * digits + b"L\n"
    if kind == 2:
        return b"\x8a\xff" + b"\x7f" * 255
    raw = b"\x7f" * (digits * 10 // 24 + 1)
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def odd_structure(rng):
    """Self-references, unhashable or shared keys, BUILD on plain values, stray marks."""
    return rng.choice(
        [
            b"]" + long_put(2_000_000) + long_get(2_000_000) + b"a",  # a list holding itself
            b"}(]N" + b"u",  # a list as a dict key
            b"}" + long_put(2_000_001) + b"(" + long_get(2_000_001) + b"Nu",  # the dict as its key
            b"]Nb",  # BUILD on a list
            b"(",  # a MARK where a value belongs
            b"\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02O8\x85R",  # an object dtype call
            b"g99999999999999999999999\n",  # GET of a memo entry never written
            b"I00\n",  # protocol 0's False
        ]
    )


HOSTILE_PICKLES = [memo_bomb, deep, huge_int, odd_structure]


@FUZZ
@given(rng=rngs(), count=st.integers(1, 3), through_load=st.booleans())
def test_vecnormalize_byte_mutations(files, rng, count, through_load):
    data = read(files["vecnormalize"])
    for _ in range(count):
        data = mutate_bytes(data, rng)
    path = write(files, "mutated.pkl", data)
    if through_load:  # the user's path: an SB3 model and its VecNormalize file
        assert_loads_or_refuses(load_cpu, files["ppo"], path)
    else:
        assert_loads_or_refuses(read_vecnormalize, path)


@FUZZ
@given(rng=rngs(), field=st.sampled_from(sorted(MARKERS)), maker=st.sampled_from(HOSTILE_PICKLES))
def test_vecnormalize_hostile_structures(files, rng, field, maker):
    marker = b"\x8c\x10" + MARKERS[field].encode()
    data = read(files["template"]).replace(marker, maker(rng))
    # the other markers keep a plain value: a string where a number belongs
    path = write(files, "hostile.pkl", data)
    outcome = assert_loads_or_refuses(read_vecnormalize, path, timeout=20)
    assert outcome == "refused"  # a string in place of gamma, or the hostile value, never passes


@FUZZ
@given(rng=rngs(), maker=st.sampled_from(HOSTILE_PICKLES))
def test_bare_hostile_pickles(files, rng, maker):
    """The hostile structures as a whole file, and wrapped as the state of a VecNormalize."""
    body = maker(rng)
    if rng.randrange(2):
        body = b"\x8c\x05numpy\x8c\x0cVecNormalize\x93)\x81" + body + b"b"
    path = write(files, "bare.pkl", b"\x80\x04" + body + b".")
    assert assert_loads_or_refuses(read_vecnormalize, path, timeout=20) == "refused"


# ------------------------------------------------------------------------------- SB3 zips
MODELS = ["ppo", "ppo_discrete", "sac"]


@FUZZ
@given(
    rng=rngs(),
    model=st.sampled_from(MODELS),
    member=st.sampled_from([None, "data", "policy.pth", "pytorch_variables.pth"]),
    count=st.integers(1, 3),
)
def test_sb3_zip_byte_mutations(files, rng, model, member, count):
    """The zip's bytes (``member=None``), or one member's bytes in a valid zip."""
    if member is None:
        with open(files[model], "rb") as handle:
            data = handle.read()
        for _ in range(count):
            data = mutate_bytes(data, rng)
        path = write(files, "mutated.zip", data)
    else:
        data = zipfile.ZipFile(files[model]).read(member)
        for _ in range(count):
            data = mutate_bytes(data, rng)
        path = rewrite_zip(
            files[model], str(files["root"] / "mutated.zip"), replace_member(member, data)
        )
    assert_loads_or_refuses(load_cpu, path)


@FUZZ
@given(rng=rngs(), model=st.sampled_from(MODELS), count=st.integers(1, 4))
def test_sb3_data_json_mutations(files, rng, model, count):
    data = json.loads(zipfile.ZipFile(files[model]).read("data"))
    for _ in range(count):
        data = json_mutation(data, rng)
    text = json.dumps(data)  # NaN and Infinity among the hostile values stay as written
    if rng.randrange(8) == 0:  # or the document nested past the limit
        depth = rng.choice([65, 1000, 100_000])
        text = "[" * depth + text + "]" * depth
    path = rewrite_zip(
        files[model], str(files["root"] / "data.zip"), replace_member("data", text.encode())
    )
    assert_loads_or_refuses(load_cpu, path)


def beyond_storage(rng):
    """A tensor whose declared shape exceeds the storage saved with it (the pickle inside the
    ``.pth`` edited, as an attacker would)."""
    raw = tensor_bytes({"w": torch.zeros(7, 11)})
    inner = zipfile.ZipFile(io.BytesIO(raw))
    big = rng.choice([12, 1 << 16, (1 << 31) - 1])
    size = b"J" + struct.pack("<i", big) + b"J" + struct.pack("<i", big) + b"\x86"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for item in inner.infolist():
            data = inner.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"K\x07K\x0b\x86", size, 1)
            zout.writestr(item.filename, data)
    return out.getvalue()


def hostile_tensor(rng, like):
    """A tensor (or not) to put where ``like`` (a tensor, or what an earlier change put there)
    was."""
    like = like if isinstance(like, torch.Tensor) else torch.zeros(3)
    shape = tuple(like.shape) or (1,)
    kind = rng.randrange(12)
    if kind == 0:  # a stride-0 view: a few bytes in the file, any size once copied
        return torch.zeros(1).expand(rng.choice([65536, 8192, shape[0]]), rng.choice([65536, 8]))
    if kind == 1:
        return torch.zeros(1).expand(*shape)
    if kind == 2:
        value = torch.randn(shape)
        value.view(-1)[rng.randrange(value.numel())] = rng.choice([np.nan, np.inf, -np.inf])
        return value
    if kind == 3:
        return torch.zeros(
            shape,
            dtype=rng.choice(
                [
                    torch.int64,
                    torch.bool,
                    torch.uint8,
                    torch.complex64,
                    torch.float16,
                    torch.bfloat16,
                    torch.float64,
                ]
            ),
        )
    if kind == 4:
        return torch.zeros(*shape, 1, 1)  # another rank
    if kind == 5:
        return torch.zeros(0)
    if kind == 6:
        return torch.tensor(1.0)
    if kind == 7:
        return torch.randn(shape[::-1]).T if len(shape) == 2 else torch.randn(shape)[..., ::1]
    if kind == 8:  # a view into a larger storage
        return torch.randn(like.numel() + 100)[50 : 50 + like.numel()].view(shape)
    if kind == 9:
        return torch.randn(tuple(n + rng.randint(1, 3) for n in shape))
    if kind == 10:
        return [torch.zeros(shape)]
    return {"nested": torch.zeros(shape)}


@FUZZ
@given(rng=rngs(), model=st.sampled_from(MODELS), count=st.integers(1, 3))
def test_sb3_hostile_tensors(files, rng, model, count):
    """``policy.pth`` (or ``pytorch_variables.pth``) with tensors replaced, added or removed,
    or written with shapes beyond their storage."""
    archive = zipfile.ZipFile(files[model])
    member = "policy.pth" if rng.randrange(4) or model != "sac" else "pytorch_variables.pth"
    if rng.randrange(8) == 0:
        payload = beyond_storage(rng)
    else:
        params = torch.load(io.BytesIO(archive.read(member)), weights_only=True)
        for _ in range(count):
            action = rng.randrange(6)
            keys = sorted(params)
            if action == 0 and keys:
                del params[rng.choice(keys)]
            elif action == 1 or not keys:
                params[
                    rng.choice(
                        [
                            "extra",
                            "log_std",
                            "action_net.weight",
                            "actor.mu.weight",
                            "critic.qf2.0.weight",
                        ]
                    )
                ] = torch.zeros(3)
            else:
                key = rng.choice(keys)
                params[key] = hostile_tensor(rng, params[key])
        payload = tensor_bytes(params)
    path = rewrite_zip(
        files[model], str(files["root"] / "tensors.zip"), replace_member(member, payload)
    )
    assert_loads_or_refuses(load_cpu, path)


def test_unchanged_files_load(files):
    """The fuzzed files themselves load (so a refusal above is the mutation's doing)."""
    for model in MODELS:
        assert assert_loads_or_refuses(load_cpu, files[model]) == "ok"
    assert assert_loads_or_refuses(load_cpu, files["ppo"], files["vecnormalize"]) == "ok"
