"""Files from strangers, Stable-Baselines3 side: VecNormalize pickles (shared-structure bombs,
deep nesting, huge integers, unhashable keys, hostile statistics) and SB3 zips (stride-0
weights, sizes in ``data`` that would allocate without bound, deep or non-finite JSON, type
confusion, NaN weights).

Each test fails on the code before the hardening (a hang, memory without bound, a traceback, a
message of several lines, or a hostile value accepted) and passes after it."""

import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3 import SAC as SB3SAC

import mdpo
from mdpo import ModelFileError
from mdpo.core.limits import (
    MAX_DEPTH,
    MAX_DISCRETE_ACTIONS,
    MAX_INT_DIGITS,
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    BadFileError,
)
from mdpo.interop import sb3 as msb3
from mdpo.interop.safe_pickle import UnsupportedPickle, read_symbolic
from tests.fuzzing import run_case

SMALL = {"net_arch": [8]}


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small real SB3 files, saved once: PPO on CartPole (Discrete actions) and Pendulum (Box),
    SAC on Pendulum, and a VecNormalize pickle of Pendulum after a few steps."""
    folder = tmp_path_factory.mktemp("sb3")
    paths = {}
    for name, cls, env_id, kwargs in (
        ("ppo_discrete", SB3PPO, "CartPole-v1", {"n_steps": 64, "batch_size": 32}),
        ("ppo_box", SB3PPO, "Pendulum-v1", {"n_steps": 64, "batch_size": 32}),
        ("sac", SB3SAC, "Pendulum-v1", {"buffer_size": 1000}),
    ):
        model = cls("MlpPolicy", env_id, seed=0, device="cpu", policy_kwargs=dict(SMALL), **kwargs)
        paths[name] = str(folder / f"{name}.zip")
        model.save(paths[name])
    paths["vecnormalize"] = str(folder / "vecnormalize.pkl")
    make_vecnormalize().save(paths["vecnormalize"])
    return paths


def make_vecnormalize():
    """SB3's VecNormalize of Pendulum after a few steps."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Pendulum-v1", 1, seed=0))
    venv.reset()
    for _ in range(5):
        venv.step(np.zeros((1, 1), dtype=np.float32))
    return venv


def rewrite_zip(src, dst, replace):
    """``src`` with members replaced (``None`` removes one)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = replace.get(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)
    return str(dst)


def read_data(path):
    return json.loads(zipfile.ZipFile(path).read("data"))


def read_params(path):
    return torch.load(io.BytesIO(zipfile.ZipFile(path).read("policy.pth")), weights_only=True)


def torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def with_data(src, dst, change):
    data = read_data(src)
    change(data)
    return rewrite_zip(src, dst, {"data": json.dumps(data).encode()})


def with_params(src, dst, change):
    params = read_params(src)
    change(params)
    return rewrite_zip(src, dst, {"policy.pth": torch_bytes(params)})


def assert_one_line(message, *names):
    """A refusal's message: one line, naming each of ``names`` (the file, the field)."""
    assert "\n" not in message.strip(), message
    assert "weights_only=False" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


def refusal(fn, *args, **kwargs):
    """The message of the :class:`ModelFileError` ``fn`` raises (in this process)."""
    with pytest.raises(ModelFileError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def load_cpu(path, vecnormalize=None):
    mdpo.interop.sb3.load(path, device="cpu", vecnormalize=vecnormalize)


# ------------------------------------------------------------------------ pickles (hole 4)
def get(index):
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


def memo_bomb(levels=40, width=10, close=b"l", seed=b"]", first=0):
    """Pickle opcodes that leave on the stack a list (``close=b"l"``) or tuple (``b"t"``) of
    ``width`` references to the level below, ``levels`` deep: a few hundred bytes that are
    ``width ** levels`` objects to print, hash or compare (``first``: the memo entries
    written before)."""
    ops = [seed, b"\x94"]  # memo[first]: the seed
    for level in range(1, levels):
        ops += [b"(", get(first + level - 1) * width, close, b"\x94"]
    return b"".join(ops)


LIST_BOMB = b"\x80\x04" + memo_bomb()
BOMBS = {
    # the issue's own file: the shared list names the class's module (str() of it hangs)
    "module-name": (
        b"\x80\x04]\x94"
        + b"".join(b"(" + (b"h" + bytes([k - 1])) * 10 + b"l\x94" for k in range(1, 40))
        + b"\x8c\x0cVecNormalize\x93."
    ),
    # a shared tuple as a dict key (hash() of it hangs)
    "dict-key": b"\x80\x04}\x94" + memo_bomb(close=b"t", seed=b")", first=1) + b"Ns.",
    # a shared list as a VecNormalize's state
    "state": (LIST_BOMB + b"\x94\x8c\x05numpy\x8c\x0cVecNormalize\x93)\x81" + get(39) + b"b."),
    # deep nesting (a hundred thousand tuples)
    "deep": b"\x80\x04)" + b"\x85" * 100_000 + b".",
    # deep nesting of lists through APPEND
    "deep-lists": b"\x80\x04" + b"]" * 50_000 + b"a" * 49_999 + b".",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_shared_and_deep_pickles_are_refused_at_once(name, files, tmp_path):
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(BOMBS[name])
    outcome, detail = run_case(read_symbolic, BOMBS[name], timeout=10)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, "UnsupportedPickle")
    assert any(word in detail for word in ("objects", "deeper", "dict key")), detail
    # the issue's path: an SB3 model with this as its VecNormalize file
    outcome, detail = run_case(load_cpu, files["ppo_box"], str(path), timeout=20)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, "ModelFileError", str(path))


def test_shared_structure_within_the_limit_is_read():
    """Sharing itself is fine (numpy dtypes are shared in every real pickle): a bomb a little
    under the limit is read, and each use of the shared list counts."""
    small = (
        memo_bomb(levels=6, width=10) + b"."
    )  # (protocol 0 header: none needed)  # 10**5 uses of the empty list
    value = read_symbolic(small)
    assert len(value) == 10 and value[0][0][0][0][0] == []
    assert value[0] is value[1]  # still shared: nothing was copied
    over = (
        b"\x80\x04" + memo_bomb(levels=7, width=10) + b"."
    )  # 10**6 + 10**5 ... > MAX_PICKLE_OBJECTS
    with pytest.raises(UnsupportedPickle, match="objects"):
        read_symbolic(over)


def test_self_referencing_and_unhashable_pickles_are_refused():
    loop = b"\x80\x04]\x94" + get(0) + b"a."  # a list that holds itself
    with pytest.raises(UnsupportedPickle, match="changes after it is shared"):
        read_symbolic(loop)
    key = b"\x80\x04}\x94]\x94Ns."  # {[]: None}
    with pytest.raises(UnsupportedPickle, match="dict key that is a list"):
        read_symbolic(key)
    assert issubclass(UnsupportedPickle, BadFileError)


def long4(digits):
    """A LONG4 opcode holding a number of ``digits`` decimal digits (as pickle stores it:
    little-endian two's complement, so nothing here converts to decimal)."""
    raw = b"\xff" * (digits * 10 // 24 + 1) + b"\x00"  # 8 bits a byte, ~3.32 bits a digit
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


INTEGERS = {
    # LONG4 and LONG1 (binary), INT and LONG (decimal text)
    "LONG4": long4,
    "LONG1": lambda digits: b"\x8a\xff" + b"\xff" * 254 + b"\x00",  # ~600 digits
    "INT": lambda digits: b"I" + b"9" * digits + b"\n",
    "LONG": lambda digits: b"L" + b"9" * digits + b"L\n",
}


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 50, 200_000])
@pytest.mark.parametrize("opcode", sorted(INTEGERS))
def test_huge_integers_are_refused_without_converting(opcode, digits):
    data = b"\x80\x04" + INTEGERS[opcode](digits) + b"."
    outcome, detail = run_case(read_symbolic, data, timeout=5)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, f"more than {MAX_INT_DIGITS} digits")
    # a hundred digits is fine
    assert read_symbolic(b"\x80\x04I" + b"9" * MAX_INT_DIGITS + b"\n.") == 10**MAX_INT_DIGITS - 1


def vecnormalize_with(files, tmp_path, **changes):
    """A VecNormalize like the fixture's, saved with attributes (or ``obs_rms_*``) changed."""
    venv = make_vecnormalize()
    for key, value in changes.items():
        if key.startswith("obs_rms_"):
            setattr(venv.obs_rms, key[len("obs_rms_") :], value)
        else:
            setattr(venv, key, value)
    path = str(tmp_path / "vecnormalize.pkl")
    venv.save(path)
    return path


MARKER = "GAMMA_MARKER_XYZ"


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"gamma": float("nan")}, "gamma"),
        ({"gamma": "0.99"}, "gamma"),
        ({"gamma": 10**150}, "digits"),
        ({"clip_obs": -1.0}, "clip_obs"),
        ({"norm_obs": [1, 2]}, "norm_obs"),
        ({"obs_rms_var": np.array([1.0, -1.0, 1.0])}, "obs_rms"),
        ({"obs_rms_var": np.array([1.0, np.inf, 1.0])}, "obs_rms"),
        ({"obs_rms_mean": np.array([np.nan, 0.0, 0.0])}, "obs_rms"),
        ({"obs_rms_var": np.ones(5)}, "obs_rms.var"),
        ({"obs_rms_count": float("inf")}, "obs_rms.count"),
    ],
)
def test_hostile_vecnormalize_statistics_are_refused(files, tmp_path, changes, field):
    path = vecnormalize_with(files, tmp_path, **changes)
    message = refusal(msb3.read_vecnormalize, path)
    assert_one_line(message, path, field)


def test_huge_integer_text_in_a_vecnormalize_file(files, tmp_path):
    """A 200 000-digit ``INT`` opcode in place of ``gamma``: refused in one line, no
    conversion (before: Python's own 4300-digit refusal, or an OverflowError traceback)."""
    path = vecnormalize_with(files, tmp_path, gamma=MARKER)
    data = (tmp_path / "vecnormalize.pkl").read_bytes()
    spliced = data.replace(b"\x8c\x10" + MARKER.encode(), b"I" + b"7" * 200_000 + b"\n")
    assert spliced != data
    (tmp_path / "vecnormalize.pkl").write_bytes(spliced)
    outcome, detail = run_case(msb3.read_vecnormalize, path, timeout=10)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, path, "digits")


# ----------------------------------------------------------------- weights' memory (hole 3)
def hostile_mlp(files, tmp_path, width, depth=2):
    """A PPO on CartPole whose policy network has ``depth`` hidden layers of ``width``, each
    weight a stride-0 view of one stored number: a small file that describes
    ``width ** 2`` parameters a layer."""

    def change(params):
        params["mlp_extractor.policy_net.0.weight"] = torch.zeros(1).expand(width, 4)
        params["mlp_extractor.policy_net.0.bias"] = torch.zeros(1).expand(width)
        for i in range(1, depth):
            params[f"mlp_extractor.policy_net.{2 * i}.weight"] = torch.zeros(1).expand(width, width)
            params[f"mlp_extractor.policy_net.{2 * i}.bias"] = torch.zeros(1).expand(width)
        params["action_net.weight"] = torch.zeros(1).expand(2, width)

    return with_params(files["ppo_discrete"], tmp_path / "strided.zip", change)


def test_stride0_weights_of_the_issue_are_refused(files, tmp_path):
    """The issue's ``torch.zeros(1).expand(65536, 65536)``: 94 KB that asked for 17 GB."""
    path = hostile_mlp(files, tmp_path, 65536)
    assert zipfile.ZipFile(path).getinfo("policy.pth").file_size < 200_000
    outcome, detail = run_case(load_cpu, path, memory=512 << 20, timeout=30)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, path, "policy.pth")


def test_stride0_weights_within_the_width_limits_are_refused(files, tmp_path):
    """Widths within the limits and shapes that chain: only the storage behind the weights
    tells that the file does not hold them (serialization.Archive.tensors checks it)."""
    path = hostile_mlp(files, tmp_path, 8192)
    outcome, detail = run_case(load_cpu, path, memory=192 << 20, timeout=30)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, path, "policy.pth")


def test_network_is_checked_against_the_weights_before_it_is_built(files, tmp_path, monkeypatch):
    """An observation space of a million elements with weights for 4: refused before any
    network is built (before: a 1M × 8 layer was allocated, then the weights did not fit)."""

    def built(*args, **kwargs):
        raise AssertionError("a network was built from a file whose weights do not fit it")

    monkeypatch.setattr(mdpo.PPO, "_setup_model", built)

    def wide(data):
        data["observation_space"]["_shape"] = [1 << 20]
        data["observation_space"]["low"] = "[-inf]"
        data["observation_space"]["high"] = "[inf]"

    path = with_data(files["ppo_discrete"], tmp_path / "wide.zip", wide)
    message = refusal(load_cpu, path)
    assert_one_line(message, path, "mlp_extractor.policy_net.0.weight", "do not fit")

    def more_actions(data):
        data["action_space"]["n"] = str(MAX_DISCRETE_ACTIONS)

    path = with_data(files["ppo_discrete"], tmp_path / "actions.zip", more_actions)
    message = refusal(load_cpu, path)
    assert_one_line(message, path, "action_net.weight", "do not fit")


@pytest.mark.parametrize(
    "model,field,value",
    [
        ("ppo_discrete", "action_space.n", str(1 << 40)),  # before: a 35 TB allocation error
        ("ppo_discrete", "action_space.n", "0"),
        ("ppo_discrete", "action_space.n", True),
        ("ppo_discrete", "action_space.start", str(10**30)),
        ("ppo_box", "observation_space._shape", [1e300]),  # before: OverflowError traceback
        ("ppo_box", "observation_space._shape", [1 << 30]),
        ("ppo_box", "observation_space._shape", [1 << 10, 1 << 10, 2]),
        ("ppo_box", "observation_space._shape", [1] * 40),
        ("ppo_box", "observation_space._shape", "3"),  # before: read as (3,)
        ("ppo_box", "observation_space.dtype", "(100000000,)f8"),
        ("ppo_box", "observation_space.dtype", "object"),
        ("ppo_box", "observation_space.low", "[nan nan nan]"),
        ("ppo_box", "observation_space.low", ["-1"] * 3),
        ("ppo_box", "observation_space.high", "[1 2]"),
        ("sac", "buffer_size", 1 << 40),  # before: accepted (allocated as the run goes)
        ("sac", "batch_size", 1e30),
        ("sac", "gradient_steps", -2),  # (-1 is SB3's "as many as collected")
        ("ppo_box", "n_steps", 1 << 40),  # before: accepted (allocated at the first rollout)
        ("ppo_box", "n_epochs", "10"),
        ("ppo_box", "n_envs", 1 << 40),
        ("ppo_box", "num_timesteps", 1e300),
        ("ppo_box", "policy_kwargs.net_arch", [MAX_LAYER_WIDTH + 1]),
        ("ppo_box", "policy_kwargs.net_arch", [8] * (MAX_LAYERS + 1)),
        ("ppo_box", "policy_kwargs.net_arch", {"pi": [1 << 30], "vf": [8]}),
        ("ppo_box", "policy_kwargs.net_arch", {"pi": "x" * 100}),
    ],
)
def test_sizes_in_data_are_bounded(files, tmp_path, model, field, value):
    def change(data):
        *path, last = field.split(".")
        node = data
        for key in path:
            node = node[key]
        node[last] = value

    path = with_data(files[model], tmp_path / "sizes.zip", change)
    outcome, detail = run_case(load_cpu, path, memory=512 << 20, timeout=30)
    assert outcome == "refused", f"{outcome}: {detail[-600:]}"
    assert_one_line(detail, path, field.split(".")[0] if "._shape" not in field else "_shape")


def test_hidden_layers_over_the_limits_are_refused(files, tmp_path):
    """Widths and depths read from the weights: within MAX_LAYER_WIDTH and MAX_LAYERS (the
    file holds every number here; before, it was built as it came)."""

    def deep(params):
        for i in range(MAX_LAYERS + 1):
            params[f"mlp_extractor.policy_net.{2 * i}.weight"] = torch.zeros(8, 4 if i == 0 else 8)
            params[f"mlp_extractor.policy_net.{2 * i}.bias"] = torch.zeros(8)

    path = with_params(files["ppo_discrete"], tmp_path / "deep.zip", deep)
    assert_one_line(refusal(load_cpu, path), path, "hidden layers", "policy_net")

    def wide(params):
        width = MAX_LAYER_WIDTH + 1
        params["mlp_extractor.policy_net.0.weight"] = torch.zeros(width, 4)
        params["mlp_extractor.policy_net.0.bias"] = torch.zeros(width)
        params["action_net.weight"] = torch.zeros(2, width)

    path = with_params(files["ppo_discrete"], tmp_path / "wide.zip", wide)
    assert_one_line(refusal(load_cpu, path), path, "width", "policy_net")


# --------------------------------------------------------------- tracebacks (hole 13)
@pytest.mark.parametrize(
    "name,data,field",
    [
        ("deep", b"[" * 100_000 + b"]" * 100_000, "'data'"),  # before: RecursionError
        ("deep-object", b'{"a":' * 5000 + b"1" + b"}" * 5000, "'data'"),
        ("nan", None, "'data'"),  # before: NaN read as a hyperparameter
        ("list", b"[1, 2]", "'data'"),
        ("string", b'"PPO"', "'data'"),
        ("bigint", b'{"n_steps": ' + b"9" * 5000 + b"}", "'data'"),
    ],
)
def test_data_json_is_parsed_within_the_limits(files, tmp_path, name, data, field):
    if data is None:
        data = zipfile.ZipFile(files["ppo_box"]).read("data")
        data = data.replace(b'"gamma": 0.99', b'"gamma": NaN')
        assert b"NaN" in data
    path = rewrite_zip(files["ppo_box"], tmp_path / f"{name}.zip", {"data": data})
    message = refusal(load_cpu, path)
    assert_one_line(message, path, field)
    if name == "deep":
        assert f"{MAX_DEPTH}" in message


@pytest.mark.parametrize(
    "model,field,value",
    [
        ("ppo_box", "gamma", "0.99"),  # before: silently ignored (the default used)
        ("ppo_box", "gamma", [0.99]),
        ("ppo_box", "learning_rate", {"a": 1}),
        ("ppo_box", "normalize_advantage", "yes"),
        ("ppo_box", "target_kl", "none"),
        ("ppo_box", "policy_kwargs", [1, 2]),
        ("ppo_box", "observation_space", [1, 2]),
        ("ppo_box", "action_space", "Box"),
        ("sac", "ent_coef", "auto_nan"),
        ("sac", "ent_coef", "auto; import os"),
        ("sac", "target_entropy", "-1"),
    ],
)
def test_type_confusion_in_data_is_refused(files, tmp_path, model, field, value):
    path = with_data(files[model], tmp_path / "types.zip", lambda data: data.update({field: value}))
    assert_one_line(refusal(load_cpu, path), path, field)


def test_constant_schedules_must_be_finite(files, tmp_path):
    def change(data):
        data["clip_range"]["value_schedule"] = "ConstantSchedule(val=1e999)"

    path = with_data(files["ppo_box"], tmp_path / "schedule.zip", change)
    assert_one_line(refusal(load_cpu, path), path, "clip_range", "finite")


def test_messages_from_the_file_stay_on_one_line(files, tmp_path):
    def change(data):
        data["policy_kwargs"] = {"features_extractor_class": "line one\nline two" + "x" * 5000}

    path = with_data(files["ppo_box"], tmp_path / "lines.zip", change)
    message = refusal(load_cpu, path)
    assert_one_line(message, path, "features_extractor_class")
    assert len(message) < 500


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("key", ["action_net.weight", "log_std", "value_net.bias"])
def test_non_finite_weights_are_refused(files, tmp_path, key, value):
    """Before: loaded, and every action came out NaN."""

    def change(params):
        params[key] = params[key].clone()
        params[key].view(-1)[0] = value

    path = with_params(files["ppo_box"], tmp_path / "nan.zip", change)
    assert_one_line(refusal(load_cpu, path), path, "policy.pth", key, "non-finite")


def test_non_finite_sac_weights_and_entropy_coefficient_are_refused(files, tmp_path):
    def change(params):
        params["critic_target.qf1.0.weight"] = params["critic_target.qf1.0.weight"].clone()
        params["critic_target.qf1.0.weight"][0, 0] = float("nan")

    path = with_params(files["sac"], tmp_path / "nan.zip", change)
    assert_one_line(refusal(load_cpu, path), path, "critic_target.qf1.0.weight")
    variables = torch_bytes({"log_ent_coef": torch.tensor([float("inf")])})
    path = rewrite_zip(files["sac"], tmp_path / "inf.zip", {"pytorch_variables.pth": variables})
    assert_one_line(refusal(load_cpu, path), path, "log_ent_coef")


@pytest.mark.parametrize(
    "params,words",
    [
        ({"x": torch.zeros(2, dtype=torch.int64)}, ["policy.pth", "'x'", "floating-point"]),
        ({"x": torch.zeros(2).to_sparse()}, ["policy.pth", "'x'", "dense"]),
        ([torch.zeros(2)], ["policy.pth", "dict of tensors"]),
        ({1: torch.zeros(2)}, ["policy.pth", "dict of tensors"]),
    ],
)
def test_tensor_members_hold_only_named_float_tensors(files, tmp_path, params, words):
    path = rewrite_zip(
        files["ppo_box"], tmp_path / "tensors.zip", {"policy.pth": torch_bytes(params)}
    )
    assert_one_line(refusal(load_cpu, path), path, *words)


def test_unexpected_weights_are_refused_before_they_are_touched(files, tmp_path):
    def change(params):
        params["extra"] = torch.zeros(3)

    path = with_params(files["ppo_box"], tmp_path / "extra.zip", change)
    assert_one_line(refusal(load_cpu, path), path, "'extra'", "no network has")


def test_real_files_still_load(files):
    """The checks refuse nothing SB3 writes."""
    for name in ("ppo_discrete", "ppo_box", "sac"):
        agent = mdpo.interop.sb3.load(
            files[name],
            device="cpu",
            vecnormalize=files["vecnormalize"] if name == "ppo_box" else None,
        )
        assert agent.policy is not None
