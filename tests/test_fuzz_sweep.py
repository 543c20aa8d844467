"""Fuzzing the sweep readers: the spec parser, and a sweep folder's files as the report, resume
planning and the worker read them.

Each case starts from a valid input built once (a spec, a sweep folder of made-up completed
runs: nothing is trained), corrupts it (bytes, structure, nesting, alias bombs, huge grids) and
runs the reader in a forked child bounded in time and memory (:mod:`fuzzing`). The reader must
load the input or refuse it with a one-line :class:`~mdpo.core.limits.BadFileError`
(``SweepSpecError`` for specs); a traceback, a hang or a blown memory limit fails the test.
``MDPO_FUZZ_EXAMPLES=2000`` runs the long version.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import matplotlib
import pytest
import yaml
from fuzzing import (
    FUZZ,
    assert_loads_or_refuses,
    deep_json,
    json_mutation,
    mutate_bytes,
    rngs,
    run_case,
)
from hypothesis import given
from hypothesis import strategies as st

from mdpo.cli.sweep import report
from mdpo.cli.sweep.executors import prepare, record_failure, run_status
from mdpo.cli.sweep.spec import load_spec, parse_spec
from mdpo.cli.sweep.worker import load_run_config
from mdpo.core.limits import MAX_SWEEP_RUNS

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401 - imported once here, not in every child

SPEC = {
    "name": "fuzz",
    "budget": 1024,
    "seeds": [0, 1],
    "envs": ["CartPole-v1", "torch:CartPole-v1"],
    "algorithms": [
        "PPO",
        {
            "name": "sb3:PPO",
            "label": "SB3-PPO",
            "envs": ["CartPole-v1"],
            "hyperparameters": {"policy_kwargs": {"net_arch": [32, 32]}},
        },
    ],
    "eval": {"every": 512, "episodes": 2},
    "n_envs": 1,
    "device": "cpu",
    "hyperparameters": {"grid": {"gamma": [0.9, 0.99], "n_steps": [256]}},
}
SPEC_TEXTS = [yaml.safe_dump(SPEC).encode(), json.dumps(SPEC, indent=1).encode()]
#: PPO hyperparameters of ours and of Stable-Baselines3, for grids
GRID_NAMES = [
    "gamma",
    "gae_lambda",
    "learning_rate",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "clip_range",
    "n_epochs",
    "batch_size",
    "n_steps",
    "target_kl",
]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder for the cases' files (each case overwrites them)."""
    return tmp_path_factory.mktemp("fuzz_sweep")


def test_the_fixtures_are_valid(work, valid_sweep):
    """The inputs the fuzz tests corrupt load as they are."""
    for i, text in enumerate(SPEC_TEXTS):
        (work / f"spec{i}.yaml").write_bytes(text)
        assert len(load_spec(str(work / f"spec{i}.yaml")).runs()) == 2 * 3 * 2
    assert assert_loads_or_refuses(_report, str(valid_sweep), str(work / "rep")) == "ok"
    assert assert_loads_or_refuses(_resume, str(valid_sweep)) == "ok"


# -------------------------------------------------------------------------- (a) the spec
def _write(work, name: str, data: bytes | str) -> str:
    path = work / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


@FUZZ
@given(rng=rngs(), which=st.sampled_from([0, 1]), times=st.integers(1, 4))
def test_spec_parser_on_mutated_bytes(work, rng, which, times):
    data = SPEC_TEXTS[which]
    for _ in range(times):
        data = mutate_bytes(data, rng)
    assert_loads_or_refuses(load_spec, _write(work, "bytes.yaml", data))


@FUZZ
@given(rng=rngs(), times=st.integers(1, 4), as_yaml=st.booleans())
def test_spec_parser_on_mutated_structure(work, rng, times, as_yaml):
    value = json.loads(json.dumps(SPEC))
    for _ in range(times):
        value = json_mutation(value, rng)
    assert_loads_or_refuses(parse_spec, value)  # the mapping, as sweep.json holds it
    text = yaml.safe_dump(value) if as_yaml else json.dumps(value)
    assert_loads_or_refuses(load_spec, _write(work, "structure.yaml", text))


@FUZZ
@given(rng=rngs(), deep=deep_json, block=st.booleans())
def test_spec_parser_on_deep_nesting(work, rng, deep, block):
    value = json.loads(json.dumps(SPEC))
    where = rng.choice(["seeds", "envs", "algorithms", "eval", "hyperparameters"])
    value[where] = "DEEP"
    text = yaml.safe_dump(value)
    if block:  # nesting by indentation: a list in a list in a list ...
        depth = len(deep) // 2
        nested = "".join(" " * (2 * i) + "-\n" for i in range(min(depth, 700)))
        text = text.replace("DEEP\n", "\n" + nested)
    else:
        text = text.replace("DEEP", deep)
    assert _outcome(load_spec, _write(work, "deep.yaml", text)) == "refused"


@FUZZ
@given(
    rng=rngs(),
    depth=st.integers(1, 14),
    fanout=st.integers(2, 12),
    where=st.sampled_from(["policy_kwargs", "grid", "list", "seeds", "envs", "eval"]),
)
def test_spec_parser_on_alias_bombs(work, rng, depth, fanout, where):
    anchors = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, depth + 1):
        anchors.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]")
    bomb = "{" + ", ".join(anchors) + "}"
    top = f"*a{depth}"
    value = json.loads(json.dumps(SPEC))
    if where == "policy_kwargs":
        value["algorithms"][1]["hyperparameters"]["policy_kwargs"] = "BOMB"
    elif where == "grid":
        value["hyperparameters"]["grid"]["gamma"] = "BOMB"
    elif where == "list":
        value["hyperparameters"] = {"list": "BOMB"}
    else:
        value[where] = "BOMB"
    # the anchors are defined in a key of their own the spec does not know, or in place
    text = yaml.safe_dump(value).replace("BOMB", bomb if rng.random() < 0.5 else f"[{bomb}, {top}]")
    outcome = _outcome(load_spec, _write(work, "bomb.yaml", text))
    if fanout**depth > 1_000_000:  # more than the spec may expand to, wherever it is
        assert outcome == "refused"


@FUZZ
@given(
    keys=st.integers(1, len(GRID_NAMES)),
    values=st.integers(1, 30),
    seeds=st.integers(1, 200),
    envs=st.integers(1, 2),
)
def test_spec_parser_on_huge_grids(work, keys, values, seeds, envs):
    grid = {name: [round(0.5 + i / 1000, 4) for i in range(values)] for name in GRID_NAMES[:keys]}
    value = dict(SPEC, seeds=seeds, algorithms=["PPO"], envs=["CartPole-v1", "Acrobot-v1"][:envs])
    value["hyperparameters"] = {"grid": grid}
    runs = seeds * envs * values**keys
    outcome, detail = run_case(load_spec, _write(work, "grid.yaml", yaml.safe_dump(value)))
    assert outcome in ("ok", "refused"), detail
    assert (outcome == "ok") == (runs <= MAX_SWEEP_RUNS), detail
    if outcome == "refused":
        assert f"over the limit of {MAX_SWEEP_RUNS}" in detail


def _outcome(fn, *args) -> str:
    return assert_loads_or_refuses(fn, *args)


# ------------------------------------------------------------------ (b) a sweep folder
def _result(config: dict, final: float) -> dict:
    curve = [
        {"timesteps": t, "nominal_timesteps": t, "mean_return": final * t / 1024, "std_return": 0.5}
        for t in (0, 512, 1024)
    ]
    return {
        "run_id": "",
        "config": config,
        "final_return": final,
        "final_returns": [final],
        "num_timesteps": 1024,
        "curve": curve,
        "wall_time_s": 3.0,
        "train_time_s": 2.0,
        "eval_time_s": 0.5,
        "steps_per_s": 500.0,
        "code_version": "fuzz",
        "finished": "2024-01-01T00:00:00",
    }


@pytest.fixture(scope="module")
def valid_sweep(tmp_path_factory):
    """A sweep folder as ``mdpo sweep run`` leaves it, made without training: the last run
    failed, the others completed with made-up results."""
    folder = tmp_path_factory.mktemp("valid_sweep")
    runs = parse_spec(json.loads(json.dumps(SPEC))).runs()
    (folder / "runs").mkdir()
    (folder / "sweep.json").write_text(
        json.dumps(
            {
                "name": "fuzz",
                "spec": SPEC,
                "invocations": [
                    {
                        "command": "mdpo sweep run s.yaml",
                        "time": "2024-01-01T00:00:00",
                        "code_version": "fuzz",
                    }
                ],
            },
            indent=1,
        )
    )
    for i, run in enumerate(runs):
        run_dir = folder / "runs" / run.run_id
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(run.to_json(), indent=1))
        if i == len(runs) - 1:
            status = {"status": "failed", "error": "ValueError: boom\nmore", "wall_time_s": 1.0}
        else:
            result = dict(_result(run.to_json(), float(i)), run_id=run.run_id)
            (run_dir / "result.json").write_text(json.dumps(result, indent=1))
            status = {"status": "completed", "final_return": float(i), "wall_time_s": 3.0}
        (run_dir / "status.json").write_text(json.dumps(status, indent=1))
    return folder


def _report(sweep: str, out: str) -> None:
    try:
        report.write_report(sweep, out, "mdpo sweep report")
    except ValueError as err:
        # a sweep.json whose spec now names other runs leaves none to report: said in a line
        if "has no completed runs" not in str(err) or type(err) is not ValueError:
            raise


def _resume(sweep: str) -> None:
    spec = parse_spec(json.loads(json.dumps(SPEC)))
    prepare(spec, sweep, "mdpo sweep run s.yaml")


def _files(folder) -> list[str]:
    names = ["sweep.json"]
    for run_dir in sorted(os.listdir(folder / "runs")):
        for name in sorted(os.listdir(folder / "runs" / run_dir)):
            names.append(f"runs/{run_dir}/{name}")
    return names


def _corrupt(data: bytes, rng: random.Random, kind: int, deep: str) -> bytes:
    if kind == 0:
        for _ in range(rng.randint(1, 3)):
            data = mutate_bytes(data, rng)
        return data
    if kind == 1:
        value = json.loads(data)
        for _ in range(rng.randint(1, 3)):
            value = json_mutation(value, rng)
        return json.dumps(value).encode()
    # deep nesting, in place of the file or of one of its members
    value = json.loads(data)
    if isinstance(value, dict) and rng.random() < 0.7:
        value[rng.choice(sorted(value))] = "DEEP"
        return json.dumps(value).replace('"DEEP"', deep).encode()
    return deep.encode()


@FUZZ
@given(rng=rngs(), kind=st.integers(0, 2), deep=deep_json, pick=st.integers(0, 10_000))
def test_sweep_folder_readers_on_mutated_files(work, valid_sweep, rng, kind, deep, pick):
    folder = work / "sweep"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(valid_sweep, folder)
    files = _files(folder)
    name = files[pick % len(files)]
    path = folder / name
    path.write_bytes(_corrupt(path.read_bytes(), rng, kind, deep))

    shutil.rmtree(work / "rep", ignore_errors=True)
    assert_loads_or_refuses(_report, str(folder), str(work / "rep"))
    run_dir = os.path.dirname(str(path)) if name.startswith("runs/") else None
    if run_dir:
        assert_loads_or_refuses(load_run_config, run_dir)
        # the executor's own readers never fail on a run's files: they overwrite them
        assert run_case(run_status, run_dir)[0] == "ok"
        assert run_case(record_failure, run_dir, "stopped")[0] == "ok"
    assert_loads_or_refuses(_resume, str(folder))
