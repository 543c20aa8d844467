"""Holes found by trying the readers as an attacker would (issue 18): model files, datasets,
run folders. Each test reproduces one hole; the hydro, sweep and SB3/pickle holes are in
``test_hardening_hydro.py``, ``test_hardening_sweep.py`` and ``test_hardening_sb3.py``."""

from __future__ import annotations

import json
import os
import sys

import h5py
import numpy as np
import pytest
import torch
from fuzzing import replace_member, rewrite_zip, run_case, tensor_bytes
from offline_data import hand_dataset

from mdpo import BC, PPO, SAC, Agent, ModelFileError
from mdpo.cli.main import main
from mdpo.cli.run_folder import run_folder_lock
from mdpo.core.limits import BadFileError, loads_json
from mdpo.offline import dataset as dataset_module
from mdpo.offline.dataset import DatasetError, OfflineDataset


@pytest.fixture(scope="module")
def ppo_file(tmp_path_factory):
    agent = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu", seed=0)
    return agent.save(str(tmp_path_factory.mktemp("ppo") / "ppo.zip"))


def edit_member(path, dst, member, edit):
    """Copy the model zip ``path`` to ``dst`` with ``edit(json_object)`` applied to a member."""

    def change(name, data):
        if name != member:
            return data
        obj = json.loads(data)
        edit(obj)
        return json.dumps(obj).encode()

    return rewrite_zip(path, str(dst), change)


@pytest.fixture()
def evil_module(tmp_path, monkeypatch):
    """A module ``evilmod`` on the path that, if ever imported, writes a file."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nPendulum = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("evilmod", None)
    yield marker
    sys.modules.pop("evilmod", None)


# --------------------------------------------------------------------- 1. code from a dataset
def saved_dataset(tmp_path, name="mdpo/pendulum/test-v0"):
    return hand_dataset().save(name, root=str(tmp_path / "datasets"))


def edit_metadata(folder, edit):
    path = os.path.join(folder, "data", "metadata.json")
    with open(path) as handle:
        meta = json.load(handle)
    edit(meta)
    with open(path, "w") as handle:
        json.dump(meta, handle)


def test_hole1_dataset_env_spec_never_builds_an_env(tmp_path, evil_module):
    pwned = tmp_path / "PWNED"
    folder = saved_dataset(tmp_path)

    def hostile(meta):
        del meta["observation_space"]  # Minari then builds the env from env_spec to find it
        spec = json.loads(meta["env_spec"])
        spec.update(entry_point="os:system", kwargs={"command": f"touch {pwned}"})
        meta["env_spec"] = json.dumps(spec)

    edit_metadata(folder, hostile)
    with pytest.raises(DatasetError, match="observation_space"):
        OfflineDataset.load(folder)
    assert main(["data", "info", folder]) == 2
    assert (
        main(
            ["data", "labels", folder, "--labels", "scripted:K=2", "--out", str(tmp_path / "l.csv")]
        )
        == 2
    )
    assert not pwned.exists()

    def evil_id(meta):
        spec = json.loads(meta["env_spec"])
        spec.update(id="evilmod:Pendulum-v1", entry_point="evilmod:Pendulum")
        meta["env_spec"] = json.dumps(spec)

    folder = saved_dataset(tmp_path, "mdpo/pendulum/evil-v0")
    edit_metadata(folder, evil_id)
    with pytest.raises(BadFileError, match="not a plain environment id"):
        OfflineDataset.load(folder)
    assert not evil_module.exists()


# ------------------------------------------------------------- 2. modules named in files
def test_hole2_env_id_in_a_model_file_or_run_config_is_never_imported(tmp_path, evil_module):
    agent = BC("MlpPolicy", hand_dataset(), batch_size=4, device="cpu", seed=0)
    path = agent.save(str(tmp_path / "bc.zip"))
    evil = edit_member(
        path, tmp_path / "evil.zip", "config.json", lambda c: c.update(env_id="evilmod:Pendulum-v1")
    )
    with pytest.raises(ModelFileError, match="not a plain environment id"):
        Agent.load(evil)
    assert main(["oppo", "eval", evil, "--episodes", "1"]) == 2
    # a run folder's config.json, read back by --resume
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "algo": "BC",
        "class": "BC",
        "policy": "MlpPolicy",
        "dataset": "x",
        "seed": 0,
        "data_root": None,
        "steps": 10,
        "eval_every": 5,
        "eval_episodes": 1,
        "checkpoint_every": 5,
        "device": "cpu",
        "hyperparameters": {"env_id": "evilmod:Pendulum-v1"},
    }
    (run / "config.json").write_text(json.dumps(config))
    assert main(["oppo", "train", "--resume", str(run)]) == 2
    online = tmp_path / "online"
    online.mkdir()
    (online / "config.json").write_text(
        json.dumps(
            {
                "algo": "PPO",
                "env": "evilmod:Pendulum-v1",
                "total_timesteps": 10,
                "seed": 0,
                "n_envs": 1,
                "device": "cpu",
                "hyperparameters": {},
                "checkpoint_freq": 5,
                "eval_freq": 5,
                "eval_episodes": 1,
            }
        )
    )
    assert main(["train", "--resume", str(online)]) == 2
    assert not evil_module.exists()


# --------------------------------------------------------- 3. memory from sizes in small files
def test_hole3_sizes_in_a_model_file_are_bounded_before_allocating(ppo_file, tmp_path):
    huge_discrete = edit_member(
        ppo_file,
        tmp_path / "d.zip",
        "spaces.json",
        lambda s: s.update(action_space={"type": "Discrete", "n": 50_000_000, "start": 0}),
    )
    wide = edit_member(
        ppo_file,
        tmp_path / "w.zip",
        "config.json",
        lambda c: c.update(policy_kwargs={"net_arch": [4096, 4096]}),
    )
    for path, reason in ((huge_discrete, "over the limit"), (wide, "the file holds only")):
        outcome, detail = run_case(Agent.load, path, memory=1 << 30)
        assert outcome == "refused" and reason in detail, (outcome, detail)


def test_hole3_expanded_tensors_and_huge_buffer_in_a_checkpoint(tmp_path):
    agent = SAC("MlpPolicy", "Pendulum-v1", learning_starts=10, buffer_size=100, device="cpu")
    agent.learn(20)
    path = agent.save(str(tmp_path / "sac.zip"))
    buffer_path = str(tmp_path / "buffer.zip")
    agent.save_replay_buffer(buffer_path)
    params = agent.get_parameters()
    name = next(k for k in params["policy"] if k.endswith("weight"))
    params["policy"][name] = torch.zeros(1).expand(*params["policy"][name].shape)
    expanded = rewrite_zip(
        path, str(tmp_path / "x.zip"), replace_member("parameters.pt", tensor_bytes(params))
    )
    with pytest.raises(ModelFileError, match="expanded view"):
        SAC.load(expanded)
    # a checkpoint asking for a 1e9 buffer, and a stored buffer that is an expanded view
    with pytest.raises(ModelFileError, match="buffer_size is 1000000000, over the limit"):
        SAC.load(
            edit_member(
                path, tmp_path / "big.zip", "config.json", lambda c: c.update(buffer_size=10**9)
            )
        )
    loaded = SAC.load(path)
    import zipfile

    with zipfile.ZipFile(buffer_path) as zf:
        state = torch.load(__import__("io").BytesIO(zf.read("buffer.pt")), weights_only=True)
    key = next(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() == 2)
    state[key] = torch.zeros(1).expand(10**6, state[key].shape[1])
    bomb = rewrite_zip(
        buffer_path, str(tmp_path / "bomb.zip"), replace_member("buffer.pt", tensor_bytes(state))
    )
    outcome, detail = run_case(loaded.load_replay_buffer, bomb, memory=1 << 30)
    assert outcome == "refused" and "expanded view" in detail, (outcome, detail)


# ----------------------------------------------------------- 5. hard links in a dataset file
def test_hole5_hard_linked_episodes_count_once_per_link(tmp_path, monkeypatch):
    folder = saved_dataset(tmp_path)
    with h5py.File(os.path.join(folder, "data", "main_data.hdf5"), "a") as handle:
        for k in range(2, 300):
            handle[f"episode_{k}"] = handle["episode_0"]  # a hard link: no new data
    monkeypatch.setattr(dataset_module, "MAX_STEPS", 1000)  # 298 links x 5 steps + 8 > 1000
    with pytest.raises(DatasetError, match="steps, more than the 1000"):
        OfflineDataset.load(folder)


def test_hole5_links_to_other_files_are_refused(tmp_path):
    folder = saved_dataset(tmp_path)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as handle:
        handle["rewards"] = np.zeros(3)
    with h5py.File(os.path.join(folder, "data", "main_data.hdf5"), "a") as handle:
        del handle["episode_1/rewards"]
        handle["episode_1/rewards"] = h5py.ExternalLink(str(other), "rewards")
    with pytest.raises(DatasetError, match="ExternalLink"):
        OfflineDataset.load(folder)


# ------------------------------------------------------------ 9. one writer per run folder
def test_hole9_a_second_writer_is_refused(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = [
        "train",
        "PPO",
        "CartPole-v1",
        "--steps",
        "64",
        "--set",
        "n_steps=64",
        "--set",
        "batch_size=64",
        "--out",
        run,
        "--no-progress",
    ]
    with run_folder_lock(run):  # another process's run, as far as flock is concerned
        assert main(args) == 2
        assert "another mdpo train is writing" in capsys.readouterr().err
        assert not os.path.exists(os.path.join(run, "config.json"))
    assert main(args) == 0
    with run_folder_lock(run):
        assert main(["train", "--resume", run]) == 2
    dataset = saved_dataset(tmp_path)
    offline = str(tmp_path / "offline")
    with run_folder_lock(offline):
        assert (
            main(
                [
                    "oppo",
                    "train",
                    "--algo",
                    "BC",
                    "--dataset",
                    dataset,
                    "--steps",
                    "2",
                    "--out",
                    offline,
                    "--no-progress",
                ]
            )
            == 2
        )
        assert "another mdpo oppo train is writing" in capsys.readouterr().err


# ------------------------------------------------------------------ 10. resume keeps its env
def finish_later(run, total):
    """Make a finished run look interrupted before ``total`` steps."""
    config = json.loads((run / "config.json").read_text())
    config["total_timesteps"] = total
    (run / "config.json").write_text(json.dumps(config))
    (run / "status.json").write_text(json.dumps({"status": "running"}))


def test_hole10_resume_trains_on_the_runs_env_kwargs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "PPO",
                "Pendulum-v1",
                "--steps",
                "128",
                "--set",
                "n_steps=64",
                "--set",
                "batch_size=64",
                "--set",
                'env_kwargs={"g": 2.0}',
                "--checkpoint-freq",
                "64",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    finish_later(run, 192)
    seen = []
    learn = Agent.learn

    def spy(self, *args, **kwargs):
        seen.append([env.unwrapped.g for env in self.get_env().envs])
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(Agent, "learn", spy)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert seen == [[2.0]]


# ------------------------------------------------------ 11. torn lines and leftovers on resume
def test_hole11_resume_survives_a_torn_row_and_cleans_up(tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "PPO",
                "CartPole-v1",
                "--steps",
                "256",
                "--set",
                "n_steps=64",
                "--set",
                "batch_size=64",
                "--checkpoint-freq",
                "128",
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
    csv_path = run / "eval" / "evaluations.csv"
    with open(csv_path, "a") as handle:
        handle.write("19000")  # a row torn by a crash
    leftover = run / "checkpoints" / ".tmp-abc123.zip"
    leftover.write_bytes(b"half a zip")
    finish_later(run, 384)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not leftover.exists()
    rows = csv_path.read_text().splitlines()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == list(range(64, 385, 64))  # no gap, no repeat: the schedule went on
    status = loads_json((run / "status.json").read_bytes(), "status.json")
    assert status["status"] == "completed"


def test_hole11_status_json_is_strict_json_without_an_evaluation(tmp_path):
    run = tmp_path / "run"
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
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    text = (run / "status.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in status.json"))


# ---------------------------------------------------------------- 13. tracebacks, not errors
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "member, edit, match",
    [
        ("config.json", None, "nests deeper"),
        ("mdpo.json", lambda m: m.update(format_version="2"), "format_version"),
        ("mdpo.json", lambda m: m.update(format_version=[]), "format_version"),
        ("mdpo.json", lambda m: m.update(format_version=None), "format_version"),
        ("state.json", lambda s: s.update(num_timesteps=float("inf")), "num_timesteps"),
        ("state.json", lambda s: s.update(num_timesteps=10**200), "digits"),
        ("spaces.json", lambda s: s.update(observation_space=[1, 2]), "must be a JSON object"),
        ("state.json", lambda s: s.clear() or s.update(x=1), "num_timesteps"),
    ],
)
def test_hole13_bad_json_members_give_one_line_errors(ppo_file, tmp_path, member, edit, match):
    if edit is None:
        path = rewrite_zip(ppo_file, str(tmp_path / "m.zip"), replace_member(member, DEEP.encode()))
    else:
        path = edit_member(ppo_file, tmp_path / "m.zip", member, edit)
    outcome, detail = run_case(Agent.load, path)
    assert outcome == "refused" and match in detail and "\n" not in detail, (outcome, detail)


def test_hole13_non_finite_weights_and_pickles_are_refused(ppo_file, tmp_path):
    agent = PPO.load(ppo_file)
    params = agent.get_parameters()
    name = next(iter(params["policy"]))
    params["policy"][name] = params["policy"][name].clone().fill_(float("nan"))
    nan = rewrite_zip(
        ppo_file, str(tmp_path / "nan.zip"), replace_member("parameters.pt", tensor_bytes(params))
    )
    with pytest.raises(ModelFileError, match="non-finite"):
        PPO.load(nan)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    hostile = rewrite_zip(
        ppo_file, str(tmp_path / "p.zip"), replace_member("parameters.pt", buffer.getvalue())
    )
    with pytest.raises(ModelFileError) as info:
        PPO.load(hostile)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_hole13_bad_dataset_metadata_gives_one_line_errors(tmp_path):
    cases = [
        (lambda m: m.update(ref_min_score="low"), "ref_min_score must be a number"),
        (
            lambda m: m.update(observation_space=json.dumps({"type": "Dict", "spaces": {}})),
            "unknown space type",
        ),
        (lambda m: m.update(env_spec=DEEP), "nests deeper"),
        (lambda m: m.update(total_steps=[1]), "total_steps must be an integer"),
    ]
    for k, (edit, match) in enumerate(cases):
        folder = saved_dataset(tmp_path, f"mdpo/pendulum/bad{k}-v0")
        edit_metadata(folder, edit)
        with pytest.raises(BadFileError, match=match) as info:
            OfflineDataset.load(folder)
        assert "\n" not in str(info.value)


def test_hole13_resume_with_a_list_for_an_object(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2, 3]")
    assert main(["train", "--resume", str(run)]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
