"""Sweeps against files from strangers: specs that would exhaust memory or disk, env ids that
would make gymnasium import a module, sweep folders whose files are malformed.

Every refusal is a one-line :class:`~mdpo.core.limits.BadFileError` (a ``SweepSpecError`` for the
spec) naming the file and the field; nothing is built, written or deleted first. Cases that
would take the machine down on unguarded code run in a forked child bounded in memory and time
(:func:`fuzzing.run_case`).
"""

from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import signal
import sys

import pytest
import yaml
from fuzzing import run_case

from mdpo.cli.main import main
from mdpo.cli.sweep import worker
from mdpo.cli.sweep.executors import prepare, record_failure, run_status
from mdpo.cli.sweep.report import load_results, write_report
from mdpo.cli.sweep.spec import RunConfig, SweepSpecError, load_spec, parse_spec, safe_name
from mdpo.cli.sweep.worker import write_json_atomic
from mdpo.core.limits import MAX_SWEEP_RUNS, MAX_SWEEP_SPEC_BYTES, BadFileError, load_json_file

SPEC = {
    "name": "tiny",
    "budget": 1024,
    "seeds": [0, 1],
    "envs": ["CartPole-v1"],
    "algorithms": ["PPO"],
    "eval": {"every": 512, "episodes": 1},
}
HEAD = "budget: 1000\nseeds: [0]\nenvs: [CartPole-v1]\nalgorithms: [PPO]\n"


def write_yaml(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


# ----------------------------------------------------------- 7: memory and disk of a spec
# 8 hyperparameters of 10 values: 10^8 variants from about 400 bytes
GRID = (
    HEAD
    + "hyperparameters:\n  grid:\n"
    + "".join(
        f"    {name}: [{', '.join(str(v) for v in values)}]\n"
        for name, values in [
            ("gamma", [0.90 + i / 100 for i in range(10)]),
            ("gae_lambda", [0.90 + i / 100 for i in range(10)]),
            ("learning_rate", [i / 1000 for i in range(1, 11)]),
            ("ent_coef", [i / 100 for i in range(10)]),
            ("vf_coef", [i / 10 for i in range(1, 11)]),
            ("max_grad_norm", [i / 10 for i in range(1, 11)]),
            ("clip_range", [i / 20 for i in range(1, 11)]),
            ("n_epochs", list(range(1, 11))),
        ]
    )
)


def test_a_huge_grid_is_counted_and_refused_before_it_is_expanded(tmp_path):
    assert len(GRID) < 1000
    path = write_yaml(tmp_path / "grid.yaml", GRID)
    outcome, detail = run_case(load_spec, path, memory=512 << 20, timeout=20)
    assert outcome == "refused", detail
    assert f"over the limit of {MAX_SWEEP_RUNS}" in one_line(detail)
    assert "grid.yaml" in detail and "runs" in detail


def test_a_huge_seed_count_is_refused_before_the_seeds_are_built(tmp_path):
    path = write_yaml(tmp_path / "seeds.yaml", HEAD.replace("[0]", "100000000"))
    outcome, detail = run_case(load_spec, path, memory=512 << 20, timeout=20)
    assert outcome == "refused", detail
    assert "seeds is 100000000, over the limit" in one_line(detail)


def test_the_run_count_multiplies_seeds_envs_algorithms_and_variants():
    variants = {"list": [{"gamma": 0.9 + i / 1000} for i in range(60)]}
    spec = dict(SPEC, seeds=50, envs=["CartPole-v1", "Acrobot-v1"], hyperparameters=variants)
    # 50 seeds x 2 envs x 2 algorithms x 60 variants = 12000
    with pytest.raises(SweepSpecError, match=f"12000 runs .* over the limit of {MAX_SWEEP_RUNS}"):
        parse_spec(dict(spec, algorithms=["PPO", "TRPO"]))
    # an algorithm restricted to one env adds 50 x 1 x 60 runs only: 9000 in all
    restricted = dict(spec, algorithms=["PPO", {"name": "TRPO", "envs": ["CartPole-v1"]}])
    assert len(parse_spec(restricted).runs()) == 9000


def test_large_hyperparameters_multiplied_by_a_grid_are_refused():
    # a 0.5 MB value in every one of 10000 runs: 5 GB of config.json
    big = {"net_arch": [64] * 25_000}
    grid = {
        "policy_kwargs": [big],
        "gamma": [0.9 + i / 1000 for i in range(100)],
        "gae_lambda": [0.9 + i / 1000 for i in range(100)],
    }
    spec = dict(SPEC, seeds=[0], hyperparameters={"grid": grid})
    outcome, detail = run_case(parse_spec, spec, memory=1 << 30, timeout=20)
    assert outcome == "refused", detail
    assert "configs of the spec's 10000 runs would take about" in one_line(detail)


def laughs(depth: int) -> str:
    """A spec whose ``policy_kwargs`` holds 10^depth strings through ``depth`` levels of
    anchors, in under a kilobyte."""
    lines = [
        "algorithms:",
        "  - name: PPO",
        "    hyperparameters:",
        "      policy_kwargs:",
        "        l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for i in range(1, depth + 1):
        lines.append(f"        l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return HEAD.replace("algorithms: [PPO]\n", "") + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    path = write_yaml(tmp_path / "laughs.yaml", laughs(12))
    assert os.path.getsize(path) < 1500
    with pytest.raises(SweepSpecError) as err:
        load_spec(path)
    assert f"expands to more than {MAX_SWEEP_SPEC_BYTES} bytes" in one_line(str(err.value))
    assert "laughs.yaml" in str(err.value)
    # a few aliases that expand to little are fine
    assert load_spec(write_yaml(tmp_path / "ok.yaml", laughs(2))).runs()


def _sweep_run_in_small_files(path: str, out: str) -> None:
    # a file may grow to 10 MB at most: unguarded code fails here instead of filling the disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    code = main(["sweep", "run", path, "--workers", "1", "--out", out])
    assert code == 2, code


def test_an_alias_bomb_writes_nothing_and_leaves_no_temp_file(tmp_path, capsys):
    path = write_yaml(tmp_path / "laughs.yaml", laughs(12))
    out = tmp_path / "sw"
    outcome, detail = run_case(_sweep_run_in_small_files, path, str(out), timeout=60)
    assert outcome == "ok", detail
    assert not glob.glob(str(out / "*")) and not glob.glob(str(out / "**" / "*.tmp*"))


def test_a_cycle_of_yaml_aliases_is_refused(tmp_path):
    text = HEAD.replace("algorithms: [PPO]\n", "") + (
        "algorithms:\n  - name: PPO\n    hyperparameters:\n      policy_kwargs: &c {a: [*c]}\n"
    )
    with pytest.raises(SweepSpecError, match="nests deeper than 64 levels"):
        load_spec(write_yaml(tmp_path / "cycle.yaml", text))


def test_aliases_nesting_deeper_than_the_limit_are_refused(tmp_path):
    # each anchor is 20 deep; aliases of aliases make 80
    nest = "[" * 20 + "1" + "]" * 20
    text = HEAD.replace("algorithms: [PPO]\n", "") + (
        "algorithms:\n  - name: PPO\n    hyperparameters:\n      policy_kwargs:\n"
        f"        a: &a {nest}\n        b: &b {nest.replace('1', '*a')}\n"
        f"        c: &c {nest.replace('1', '*b')}\n        d: {nest.replace('1', '*c')}\n"
    )
    with pytest.raises(SweepSpecError, match="policy_kwargs.d.* nests deeper than 64"):
        load_spec(write_yaml(tmp_path / "deep.yaml", text))


@pytest.mark.parametrize(
    "text,message",
    [
        ("[" * 100_000 + "]" * 100_000, "nests deeper than 64 levels"),
        ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 1400)), "nests deeper than 64"),
        (HEAD.replace("1000", "1" * 5000), "an integer of 5000 characters"),
        (HEAD.replace("1000", "1" + ":00" * 340_000), "an integer of 1020001 characters"),
        (HEAD + "hyperparameters: {grid: {gamma: [.inf]}}\n", "is inf, not a finite number"),
        (HEAD + "hyperparameters: {grid: {gamma: [.nan]}}\n", "is nan, not a finite number"),
        (HEAD + "hyperparameters: {list: [{gamma: 2020-01-01}]}\n", "is a date; a spec holds JSON"),
        (HEAD + "hyperparameters: {list: [{gamma: !!binary aGVsbG8=}]}\n", "is a bytes"),
        (HEAD + "hyperparameters: {list: [{gamma: !!set {a}}]}\n", "is a set"),
        (HEAD + "hyperparameters: {list: [{1: 0.9}]}\n", "has the key 1: keys are strings"),
        ("x" * (MAX_SWEEP_SPEC_BYTES + 1), f"over the limit of {MAX_SWEEP_SPEC_BYTES}"),
        ("\x00\x01", "is not valid YAML"),
        (HEAD + "eval: {[a]: 1}\n", "is not valid YAML: while constructing a mapping"),
    ],
)
def test_hostile_yaml_is_refused_in_one_line(tmp_path, text, message):
    path = write_yaml(tmp_path / "spec.yaml", text)
    outcome, detail = run_case(load_spec, path, memory=512 << 20, timeout=5)
    assert outcome == "refused", detail
    assert message in one_line(detail) and "spec.yaml" in detail


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"algorithms": [["PPO"]]}, "an algorithm is a name or a mapping with a 'name' string"),
        ({"algorithms": [{"name": ["PPO"]}]}, "a mapping with a 'name' string"),
        ({"algorithms": [{"name": "PPO", "label": ["x"]}]}, "label of 'PPO' must be a string"),
        ({"algorithms": ["sb3:__class__"]}, "'__class__' is no class"),
        ({"device": ["cpu"]}, "device must be auto, cpu"),
        ({"n_envs": 10**6}, "n_envs is 1000000, over the limit"),
        ({"seeds": [0, 10**400]}, "seeds[1] is an integer of more than 100 digits"),
    ],
)
def test_malformed_spec_fields_are_refused_in_one_line(changes, message):
    with pytest.raises(SweepSpecError) as err:
        parse_spec(dict(SPEC, **changes))
    assert message in one_line(str(err.value))


# ------------------------------------------------------------ 7: env ids read from files
@pytest.fixture()
def marker(tmp_path, monkeypatch):
    """A module ``sweep_marker_mod`` on the path that leaves a file behind when imported."""
    folder = tmp_path / "mods"
    folder.mkdir()
    flag = tmp_path / "imported"
    (folder / "sweep_marker_mod.py").write_text(f"open({str(flag)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(folder))
    yield flag
    sys.modules.pop("sweep_marker_mod", None)


@pytest.mark.parametrize("env", ["sweep_marker_mod:Evil-v0", "torch:sweep_marker_mod:Evil-v0"])
def test_a_spec_env_id_never_imports_a_module(tmp_path, marker, env):
    path = write_yaml(tmp_path / "spec.yaml", yaml.safe_dump(dict(SPEC, envs=["CartPole-v1", env])))
    with pytest.raises(SweepSpecError, match=r"spec.yaml: envs\[1\]: .* not a plain environment"):
        load_spec(path)
    assert not marker.exists()


def test_a_run_config_env_id_never_imports_a_module(tmp_path, marker):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = parse_spec(SPEC).runs()[0].to_json()
    (run_dir / "config.json").write_text(json.dumps(dict(config, env="sweep_marker_mod:Evil-v0")))
    assert worker.main([str(run_dir)]) == 2
    assert not marker.exists()
    status = load_json_file(str(run_dir / "status.json"))
    assert status["status"] == "failed"
    assert "config.json: env: 'sweep_marker_mod:Evil-v0' is not a plain" in one_line(
        status["error"]
    )


def test_a_sweep_json_env_id_never_imports_a_module(tmp_path, marker):
    # a guard: gymnasium 1.4's gym.spec imports nothing either, but gym.make does
    sweep = make_sweep(tmp_path / "sw")
    data = json.loads((sweep / "sweep.json").read_text())
    data["spec"]["envs"] = ["sweep_marker_mod:Evil-v0"]
    (sweep / "sweep.json").write_text(json.dumps(data))
    results, _ = load_results(str(sweep))  # the spec is unknown here: every run counts
    assert len(results) == 2
    assert not marker.exists()


# --------------------------------------------------------------- 7: temporary files
def test_a_failed_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "status.json"
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"status": "failed", "bad": {1, 2}})
    assert os.listdir(tmp_path) == []


def _write_big(path: str) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    write_json_atomic(path, {"curve": list(range(1_000_000))})


def test_a_write_that_fills_the_disk_leaves_no_temp_file(tmp_path):
    outcome, detail = run_case(_write_big, str(tmp_path / "result.json"))
    assert outcome == "error" and "File too large" in detail, detail
    assert os.listdir(tmp_path) == []


def test_non_finite_numbers_are_written_as_strict_json(tmp_path):
    path = str(tmp_path / "result.json")
    write_json_atomic(path, {"final_return": float("nan"), "curve": [float("-inf"), 1.5]})
    assert load_json_file(path) == {"final_return": None, "curve": [None, 1.5]}


# --------------------------------------------------- 13: malformed files of a sweep folder
def result_of(run: RunConfig, final: float) -> dict:
    curve = [
        {"timesteps": t, "nominal_timesteps": t, "mean_return": final * t / 1024, "std_return": 0.0}
        for t in (0, 512, 1024)
    ]
    return {
        "run_id": run.run_id,
        "config": run.to_json(),
        "final_return": final,
        "final_returns": [final],
        "num_timesteps": 1024,
        "curve": curve,
        "wall_time_s": 2.0,
        "train_time_s": 1.5,
        "eval_time_s": 0.2,
        "steps_per_s": 600.0,
        "code_version": "test",
        "finished": "2024-01-01T00:00:00",
    }


def make_sweep(folder, spec=SPEC):
    """A sweep folder as ``mdpo sweep run`` leaves it, without training: its spec's runs
    completed with made-up results."""
    runs = parse_spec(json.loads(json.dumps(spec))).runs()
    (folder / "runs").mkdir(parents=True)
    (folder / "sweep.json").write_text(
        json.dumps(
            {
                "name": spec["name"],
                "spec": spec,
                "invocations": [
                    {
                        "command": "mdpo sweep run s.yaml",
                        "time": "2024-01-01T00:00:00",
                        "code_version": "test",
                    }
                ],
            }
        )
    )
    for i, run in enumerate(runs):
        run_dir = folder / "runs" / run.run_id
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(run.to_json()))
        (run_dir / "result.json").write_text(json.dumps(result_of(run, 10.0 + i)))
        (run_dir / "status.json").write_text(
            json.dumps({"status": "completed", "final_return": 10.0 + i, "wall_time_s": 2.0})
        )
    return folder


DEEP = "[" * 100_000 + "]" * 100_000

# (file, its new content, what the message must say); a run's files are the first run's
SWEEP_CASES = [
    ("sweep.json", DEEP, "sweep.json is not valid JSON: it nests deeper than 64 levels"),
    ("sweep.json", "[1, 2]", "sweep.json must be a JSON object, not a list"),
    ("sweep.json", '{"name": "x", "invocations": {"a": 1}}', "invocations must be a list"),
    ("sweep.json", '{"invocations": [[1]]}', "sweep.json: invocations[0] must be a JSON object"),
    ("result.json", DEEP, "result.json is not valid JSON: it nests deeper than 64 levels"),
    ("result.json", "[1, 2]", "result.json must be a JSON object, not a list"),
    ("result.json", '{"config": [1]}', "result.json: config must be a JSON object, not a list"),
]
REPORT_CASES = [
    ("result.json", {"wall_time_s": 10**400}, "result.json is not valid JSON: an integer of 401"),
    ("result.json", {"steps_per_s": 10**400}, "an integer of 401 digits"),
    ("result.json", {"final_return": "high"}, "result.json: final_return must be a number"),
    ("result.json", {"curve": [[0, 1.0]]}, "result.json: curve[0] must be a JSON object"),
    ("result.json", {"curve": {"0": 1}}, "result.json: curve must be a list, not an object"),
    ("result.json", {"config": {"env": "CartPole-v1"}}, "config.label must be a string, not null"),
    ("result.json", {"run_id": None}, "result.json: run_id must be a string, not null"),
    ("status.json", DEEP, "status.json is not valid JSON: it nests deeper than 64 levels"),
    ("status.json", "[1]", "status.json must be a JSON object, not a list"),
    ("status.json", {"status": ["failed"]}, "status.json: status must be one of"),
    ("status.json", {"status": "failed", "error": 5}, "status.json: error must be a string"),
]


def corrupt(sweep, name: str, content) -> str:
    """Give the first run (or the sweep) the file ``name`` with ``content``: a text, or a dict
    merged into the valid JSON. A run given a bad ``status.json`` loses its result."""
    first = sorted((sweep / "runs").iterdir())[0]
    path = sweep / name if name == "sweep.json" else first / name
    if name == "status.json":
        (first / "result.json").unlink()
    if isinstance(content, dict):
        content = json.dumps({**json.loads(path.read_text()), **content})
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize("name,content,message", SWEEP_CASES + REPORT_CASES)
def test_a_report_refuses_a_malformed_file_in_one_line(tmp_path, name, content, message):
    sweep = make_sweep(tmp_path / "sw")
    path = corrupt(sweep, name, content)
    with pytest.raises(BadFileError) as err:
        write_report(str(sweep), str(tmp_path / "rep"), "mdpo sweep report sw")
    assert message in one_line(str(err.value))
    assert path in str(err.value)
    assert not os.path.exists(tmp_path / "rep")


@pytest.mark.parametrize("name,content,message", SWEEP_CASES)
def test_resume_planning_refuses_a_malformed_file_before_touching_anything(
    tmp_path, name, content, message
):
    spec = parse_spec(json.loads(json.dumps(SPEC)))
    sweep = make_sweep(tmp_path / "sw")
    second = sorted((sweep / "runs").iterdir())[1]
    (second / "result.json").unlink()  # a run to redo, whose folder would be cleared
    path = corrupt(sweep, name, content)
    before = {
        p: open(p, "rb").read()
        for p in glob.glob(f"{sweep}/**/*", recursive=True)
        if os.path.isfile(p)
    }
    with pytest.raises(BadFileError) as err:
        prepare(spec, str(sweep), "mdpo sweep run s.yaml")
    assert message in one_line(str(err.value)) and path in str(err.value)
    after = {
        p: open(p, "rb").read()
        for p in glob.glob(f"{sweep}/**/*", recursive=True)
        if os.path.isfile(p)
    }
    assert after == before


def test_a_report_reads_null_returns_as_nan(tmp_path):
    # a diverged run's return is written as null (strict JSON): the report still reads it
    sweep = make_sweep(tmp_path / "sw")
    first = sorted((sweep / "runs").iterdir())[0]
    result = json.loads((first / "result.json").read_text())
    result["final_return"] = None
    result["curve"][-1]["mean_return"] = None
    (first / "result.json").write_text(json.dumps(result))
    results, others = load_results(str(sweep))
    assert len(results) == 2 and not others
    finals = sorted(str(r["final_return"]) for r in results)
    assert finals == ["11.0", "nan"]


def _worker_exits_with_2(run_dir: str) -> None:
    code = worker.main([run_dir])
    assert code == 2, code


@pytest.mark.parametrize(
    "content,message",
    [
        ("[1]", "config.json must be a JSON object, not a list"),
        (DEEP, "config.json is not valid JSON: it nests deeper than 64 levels"),
        ({"extra": 1}, "config.json: unknown field 'extra'"),
        ({"seed": 10**400}, "config.json is not valid JSON: an integer of 401 digits"),
        ({"seed": -1}, "config.json: seed is -1, below the least allowed, 0"),
        ({"n_envs": 10**9}, "config.json: n_envs is 1000000000, over the limit"),
        ({"hyperparameters": [1]}, "config.json: hyperparameters must be a JSON object"),
        ({"hyperparameters": {"seed": 3}}, "config.json: hyperparameters may not set 'seed'"),
        ({"device": "cuda; rm -rf"}, "config.json: device must be"),
    ],
)
def test_the_worker_refuses_a_malformed_config_in_one_line(tmp_path, content, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if isinstance(content, dict):
        content = json.dumps({**parse_spec(SPEC).runs()[0].to_json(), **content})
    (run_dir / "config.json").write_text(content)
    # in a bounded child: unguarded, some of these configs train, or allocate without bound
    outcome, detail = run_case(_worker_exits_with_2, str(run_dir), timeout=60)
    assert outcome == "ok", detail
    status = load_json_file(str(run_dir / "status.json"))
    assert status["status"] == "failed"
    assert message in one_line(status["error"])
    assert sorted(os.listdir(run_dir)) == ["config.json", "status.json"]  # nothing else made


def test_a_run_config_with_non_integer_counts_is_refused():
    config = parse_spec(SPEC).runs()[0].to_json()
    for field, value in [("budget", float("inf")), ("seed", 1.5), ("eval_every", True)]:
        with pytest.raises(BadFileError, match=f"the run config: {field} must be an integer"):
            RunConfig.from_json(dict(config, **{field: value}))


@pytest.mark.parametrize(
    "content",
    [
        "[1]",
        DEEP,
        '{"status": ["x"]}',
        '{"wall_time_s": "1"}',
        '{"status": "failed", "wall_time_s": ' + "9" * 400 + "}",
    ],
)
def test_the_executor_overwrites_a_malformed_status(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(content)
    status = run_status(str(run_dir))
    assert status == {"status": "pending"}
    assert float(status.get("wall_time_s", 0.0)) == 0.0
    record_failure(str(run_dir), "the run's process exited with code 1")
    assert load_json_file(str(run_dir / "status.json")) == {
        "status": "failed",
        "error": "the run's process exited with code 1",
    }


def test_a_valid_sweep_folder_still_reports_and_resumes(tmp_path):
    sweep = make_sweep(tmp_path / "sw")
    path = write_report(str(sweep), str(tmp_path / "rep"), "mdpo sweep report sw")
    assert "| PPO | CartPole-v1 | 2 |" in open(path).read()
    plan = prepare(parse_spec(json.loads(json.dumps(SPEC))), str(sweep), "mdpo sweep run s.yaml")
    assert len(plan.done) == 2 and not plan.todo
    assert len(load_json_file(str(sweep / "sweep.json"))["invocations"]) == 2
    shutil.rmtree(tmp_path / "rep")


# -------------------------------------------------------- 7: where a sweep writes and clears
@pytest.mark.parametrize("name", [".", "..", "/..", "../..", "..."])
def test_a_spec_name_never_names_a_parent_folder(name):
    spec = parse_spec(dict(SPEC, name=name))
    folder = os.path.normpath(os.path.join("sweeps", safe_name(spec.name)))
    assert os.path.dirname(folder) == "sweeps"


def test_resume_planning_never_clears_a_folder_a_link_leads_to(tmp_path):
    spec = parse_spec(json.loads(json.dumps(SPEC)))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / spec.runs()[0].run_id).mkdir(parents=True)
    (elsewhere / spec.runs()[0].run_id / "precious.txt").write_text("keep me")
    sweep = tmp_path / "sw"
    sweep.mkdir()
    os.symlink(elsewhere, sweep / "runs")
    with pytest.raises(SweepSpecError, match="is a link or a file, not a run folder"):
        prepare(spec, str(sweep), "mdpo sweep run s.yaml")
    assert (elsewhere / spec.runs()[0].run_id / "precious.txt").read_text() == "keep me"
    os.remove(sweep / "runs")
    (sweep / "runs").mkdir()
    os.symlink(elsewhere / spec.runs()[0].run_id, sweep / "runs" / spec.runs()[0].run_id)
    with pytest.raises(SweepSpecError, match="is a link or a file"):
        prepare(spec, str(sweep), "mdpo sweep run s.yaml")
    assert (elsewhere / spec.runs()[0].run_id / "precious.txt").read_text() == "keep me"


def test_an_empty_error_in_a_status_reads_as_none(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "failed", "error": ""}')
    assert run_status(str(tmp_path)) == {"status": "failed"}
