"""Files from strangers, hydro side: cut files (bombs, too many cuts, NaN, truncated gzip, deep
JSON), case files, MathOptFormat files, TS-DDR and SDDP run folders (paths in checkpoints, the
JSON side files, the run folder lock) and HiGHS next to another HiGHS in the same process.

Each test fails on the code before the hardening (a traceback, an accepted hostile value, a
write outside the run folder, or memory and time without bound) and passes after it."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from fuzzing import run_case

from mdpo.core.limits import MAX_CUTS, BadFileError
from mdpo.envs.hydro import CaseDataError, load_case
from mdpo.envs.hydro.sddp import SDDP, CutFileError, cut_file_max_bytes, read_cuts_file
from mdpo.rules.lp import LPFormatError
from mdpo.rules.mof import read_mof

CASE3 = "envs/hydro/data/case3"
COMMON = ["--case", "case3", "--load-scale", "1.0", "--scenarios", "4", "--no-progress"]


@pytest.fixture(scope="module")
def case3():
    return load_case("case3")


@pytest.fixture(scope="module")
def cut_file(tmp_path_factory, case3):
    """A valid gzipped cut file of SDDP on case3 over 4 stages (two iterations)."""
    sddp = SDDP(case3, 4, load_scale=1.0)
    sddp.iterate()
    sddp.iterate()
    path = str(tmp_path_factory.mktemp("cuts") / "cuts.json.gz")
    sddp.save_cuts(path)
    return path


def cut_text(cuts, horizon=4, case="case3"):
    return json.dumps(
        {"case": case, "horizon": horizon, "stage_k": 0.0036, "load_scale": 1.0, "cuts": cuts}
    )


def load_into_sddp(path, horizon=4):
    SDDP(load_case("case3"), horizon, load_scale=1.0).load_cuts(path)


def main_status(argv, capsys):
    """``mdpo ...`` exit status and its standard error."""
    from mdpo.cli.main import main

    status = main(argv)
    return status, capsys.readouterr().err


# ------------------------------------------------------------------------- 6: cut file bombs
def test_cut_file_gzip_bomb_is_refused_before_it_is_parsed(tmp_path):
    """A small gzip whose text is over what MAX_CUTS cuts of the case's reservoirs take is
    refused once it has expanded that far, without parsing it (the old 2 GiB bound let it
    parse into gigabytes)."""
    limit = cut_file_max_bytes(1)
    path = str(tmp_path / "bomb.json.gz")
    chunk = b"[0, 0.0, [0.0]], " * 65536
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(
            b'{"case": "case3", "horizon": 4, "stage_k": 0.0036, "load_scale": 1.0, "cuts": ['
        )
        for _ in range(limit // len(chunk) + 1):
            handle.write(chunk)
        handle.write(b"[0, 0.0, [0.0]]]}")
    assert os.path.getsize(path) < limit // 50
    outcome, detail = run_case(load_into_sddp, path, memory=1 << 30, timeout=60)
    assert outcome == "refused", f"{outcome}: {detail}"
    assert "bytes of cuts" in detail and "\n" not in detail.strip()


def test_more_cuts_than_max_cuts_are_refused_before_they_are_built(tmp_path):
    """Short cuts (``[0,0,[0]],``) fit the byte bound many times over: the count is bounded
    before parsing (the old reader parsed and added them all)."""
    path = tmp_path / "many.json"
    path.write_text(
        '{"case": "case3", "horizon": 4, "stage_k": 0.0036, "load_scale": 1.0, '
        '"cuts": [' + "[0,0,[0]]," * MAX_CUTS + "[0,0,[0]]]}"
    )
    outcome, detail = run_case(load_into_sddp, str(path), memory=1 << 30, timeout=30)
    assert outcome == "refused", f"{outcome}: {detail}"
    assert f"more than {MAX_CUTS} cuts" in detail


@pytest.mark.parametrize(
    "text,message",
    [
        (cut_text([[0, float("nan"), [1.0]]]), "NaN"),
        (cut_text([[0, 1.0, [float("inf")]]]), "slope 0 must be a finite number"),
        (cut_text([[0, 1.0, [1.0]]]).replace("1.0]]", "1e999]]"), "must be a finite number"),
        (cut_text([[0, 1.0, [1.0, 2.0]]]), "2 slopes, not one per reservoir"),
        (cut_text([[4, 1.0, [1.0]]]), "cut 0 stage is 4, over the limit of 3"),
        (cut_text([[0.5, 1.0, [1.0]]]), "stage must be an integer"),
        (cut_text([{"t": 0}]), "must be [stage, intercept, [slopes]]"),
        (cut_text([[0, "1.0", [1.0]]]), "intercept must be a number"),
        (cut_text([], horizon="4"), "field 'horizon' must be an integer"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"cuts": [[0, 1.0', "not valid JSON"),
        ("[]", "must be a JSON object"),
    ],
)
def test_bad_cut_files_are_refused_in_one_line(tmp_path, text, message):
    """NaN or infinite coefficients, a wrong shape or stage, a list where the object belongs
    or deep nesting: a one-line CutFileError (a BadFileError) naming the file and the field
    (the old reader accepted the NaN and inf cuts, and raised RecursionError, TypeError)."""
    path = tmp_path / "cuts.json"
    path.write_text(text)
    with pytest.raises(CutFileError) as caught:
        load_into_sddp(str(path))
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert issubclass(CutFileError, BadFileError)


def test_truncated_or_corrupt_gzip_cut_files_are_refused(tmp_path, cut_file):
    data = open(cut_file, "rb").read()
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(data[: len(data) // 2])  # EOFError in the old reader
    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:40]) + data[40:])
    for path in (truncated, corrupt):
        with pytest.raises(CutFileError, match="not a readable cut file"):
            read_cuts_file(str(path), 1)


def test_simulate_with_a_bad_cut_file_is_a_one_line_error(tmp_path, cut_file, capsys):
    truncated = tmp_path / "cuts.json.gz"
    truncated.write_bytes(open(cut_file, "rb").read()[:-20])
    argv = [
        "hydro",
        "simulate",
        str(truncated),
        *COMMON,
        "--out",
        str(tmp_path / "sim"),
        "--stages",
        "4",
    ]
    status, err = main_status(argv, capsys)
    assert status == 2 and err.count("\n") == 1 and "not a readable cut file" in err


def test_a_huge_declared_horizon_allocates_nothing(tmp_path, case3):
    """The file's horizon sizes nothing: the policy holds the models of the stages simulated
    (the old code built one HiGHS model per stage of the file's horizon)."""
    from mdpo.cli.hydro import load_policy

    path = tmp_path / "cuts.json"
    path.write_text(cut_text([[0, 1.0, [-5.0]], [10**11, 2.0, [-1.0]]], horizon=10**12))

    def simulate():
        label, run = load_policy(str(path), load_case("case3"), 4, 1.0)
        assert label == "SDDP"
        run(np.zeros((2, 4), dtype=np.int64), False)

    outcome, detail = run_case(simulate, memory=1 << 30, timeout=20)
    assert outcome == "ok", f"{outcome}: {detail}"


def test_cut_files_round_trip_and_compare_with_the_problem(tmp_path, case3, cut_file):
    cuts = read_cuts_file(cut_file, 1)
    assert cuts.horizon == 4 and cuts.slopes.shape == (len(cuts.stages), 1)
    assert np.all(np.isfinite(cuts.slopes)) and cuts.stages.max() < 4
    with pytest.raises(CutFileError, match="horizon"):
        SDDP(case3, 5, load_scale=1.0).load_cuts(cut_file)
    with pytest.raises(CutFileError, match="load_scale"):
        SDDP(case3, 4, load_scale=0.5).load_cuts(cut_file)
    with pytest.raises(ValueError, match="non-finite"):
        SDDP(case3, 4, load_scale=1.0).add_cut(0, float("nan"), np.zeros(1))


# ---------------------------------------------------------- 13: case and MathOptFormat files
@pytest.fixture
def case_dir(tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(CASE3, folder)
    return folder


def edit(folder, name, change):
    path = folder / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["PowerModels.json", "hydro.json"])
def test_deeply_nested_case_json_is_refused(case_dir, name):
    (case_dir / name).write_text("[" * 100_000 + "]" * 100_000)  # RecursionError before
    with pytest.raises(CaseDataError, match=f"{name} is not valid JSON: it nests deeper"):
        load_case(str(case_dir))


@pytest.mark.parametrize(
    "name,change,message",
    [
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(downstream_turn=5),
            "field 'downstream_turn' must be a list of plant indices, not 5",
        ),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(downstream_spill=["x"]),
            "field 'downstream_spill' = 'x' is not a valid int",
        ),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(name={"a": [1] * 1000}),
            "field 'name' = an object is not a plant name",
        ),
        (
            "PowerModels.json",
            lambda d: d["gen"]["1"].update(cost=["x", 1.0, 0.0]),
            "field 'cost' = 'x' is not a valid float",
        ),
        (
            "PowerModels.json",
            lambda d: d["gen"]["1"].update(cost=[1.0, "nan"]),
            "field 'cost' = 'nan' is not a valid float",
        ),
        (
            "PowerModels.json",
            lambda d: d["gen"]["1"].update(index=list(range(10000))),
            "gen a list: field 'index' = a list is not a valid int",
        ),
        # the fields of the AC and SOC power flows
        (
            "PowerModels.json",
            lambda d: d["bus"]["1"].update(vmin=1.2),
            "bus 1: vmin 1.2 > vmax 1.1",
        ),
        (
            "PowerModels.json",
            lambda d: d["gen"]["1"].update(qmin=5.0, qmax=-5.0),
            "gen 1: qmin 5.0 > qmax -5.0",
        ),
        (
            "PowerModels.json",
            lambda d: d["branch"]["1"].update(b_fr="x"),
            "field 'b_fr' = 'x' is not a valid float",
        ),
        (
            "PowerModels.json",
            lambda d: d.update(shunt={"1": {"index": 1, "shunt_bus": 99, "gs": 0, "bs": 1}}),
            "shunt 1: refers to unknown bus 99",
        ),
    ],
)
def test_hostile_case_fields_are_named_in_one_line(case_dir, name, change, message):
    edit(case_dir, name, change)
    with pytest.raises(CaseDataError) as caught:
        load_case(str(case_dir))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert len(str(caught.value)) < 500


def test_a_number_that_overflows_a_float_is_named(case_dir):
    edit(case_dir, "PowerModels.json", lambda d: d["bus"]["1"].update(bus_i=12345.0))
    path = case_dir / "PowerModels.json"
    path.write_text(path.read_text().replace("12345.0", "1e999"))  # OverflowError before
    with pytest.raises(CaseDataError, match="PowerModels.json bus: field 'bus_i' = inf is not"):
        load_case(str(case_dir))


def test_a_long_cascade_is_checked_without_recursion(case_dir):
    """5000 plants in a chain: the loop check walks it without recursing (RecursionError
    before); the case is then refused for its inflows, in one line."""
    hydro = json.loads((case_dir / "hydro.json").read_text())
    plant = hydro["Hydrogenerators"][0]
    plants = [
        {**plant, "index": i, "downstream_turn": [i + 1] if i < 5000 else []}
        for i in range(1, 5001)
    ]
    hydro["Hydrogenerators"] = plants
    (case_dir / "hydro.json").write_text(json.dumps(hydro))
    with pytest.raises(CaseDataError, match="not a whole number of scenarios for 5000 plants"):
        load_case(str(case_dir))
    plants[-1]["downstream_turn"] = [1]
    (case_dir / "hydro.json").write_text(json.dumps(hydro))
    with pytest.raises(CaseDataError, match=r"the cascade loops: 1 -> 2 -> .* \.\.\.$"):
        load_case(str(case_dir))


def test_case_csv_is_read_within_bounds(case_dir):
    (case_dir / "inflows.csv").write_bytes(b"1,2,3\n\xff\xfe\n")  # UnicodeDecodeError before
    with pytest.raises(CaseDataError, match="not a table of numbers"):
        load_case(str(case_dir))
    (case_dir / "inflows.csv").write_text("1,2,nan\n")
    with pytest.raises(CaseDataError, match="values must be finite"):
        load_case(str(case_dir))


def test_mathoptformat_files_are_read_within_bounds(tmp_path):
    assert issubclass(CaseDataError, BadFileError) and issubclass(LPFormatError, BadFileError)
    deep = tmp_path / "deep.mof.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError before
    with pytest.raises(LPFormatError, match="nests deeper"):
        read_mof(str(deep))
    model = json.loads(open(f"{CASE3}/DCPPowerModel.mof.json").read())
    for change, message in [
        (lambda m: m.update(constraints={"a": 1}), "not a MathOptFormat model"),
        (lambda m: m["constraints"][0].update(set=[1]), "not a MathOptFormat model"),
        (lambda m: m["constraints"][0]["set"].update(type={"x": [1] * 500}), "a dict set"),
        (
            lambda m: m["objective"]["function"]["terms"][0].update(coefficient="1"),
            "must be a number, not str",
        ),
    ]:
        bad = json.loads(json.dumps(model))
        change(bad)
        path = tmp_path / "bad.mof.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(LPFormatError) as caught:
            read_mof(str(path))
        assert message in str(caught.value) and "\n" not in str(caught.value)
    nan = tmp_path / "nan.mof.json"
    nan.write_text(json.dumps(model).replace('"coefficient": 1.0', '"coefficient": NaN', 1))
    assert "NaN" in nan.read_text()
    with pytest.raises(LPFormatError, match="NaN"):
        read_mof(str(nan))


# ------------------------------------------------------------ 8, 9, 13: TS-DDR run folders
def tsddr_agent(best_model_path=None):
    from mdpo import TSDDR
    from mdpo.envs.hydro.problem import HydroProblem

    problem = HydroProblem("case3", 6, load_scale=1.0)
    return TSDDR(
        "StatePolicy",
        problem,
        eval_freq=1,
        eval_scenarios=4,
        seed=0,
        device="cpu",
        best_model_path=best_model_path,
    )


def rewrite_config(path, **changes):
    """The model zip ``path`` with its ``config.json`` changed (a tampered checkpoint)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    config.update(changes)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def stored_config(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def test_checkpoints_store_the_best_model_path_relative_to_their_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    agent = tsddr_agent(str(run / "best_model.zip"))
    checkpoint = agent.save(str(run / "checkpoint_0000001"))
    assert stored_config(checkpoint)["best_model_path"] == "best_model.zip"  # absolute before
    (tmp_path / "other").mkdir()
    elsewhere = agent.save(str(tmp_path / "other" / "model"))  # the best model lies outside
    assert stored_config(elsewhere)["best_model_path"] is None


def test_a_copied_run_folder_resumes_into_the_copy(tmp_path):
    from mdpo import TSDDR

    original = tmp_path / "original"
    original.mkdir()
    checkpoint = tsddr_agent(str(original / "best_model.zip")).save(str(original / "ckpt"))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    resumed = TSDDR.load(str(copy / os.path.basename(checkpoint)))
    assert resumed.best_model_path == os.path.realpath(copy / "best_model.zip")
    explicit = TSDDR.load(checkpoint, best_model_path=str(tmp_path / "chosen.zip"))
    assert explicit.best_model_path == str(tmp_path / "chosen.zip")


@pytest.mark.parametrize(
    "stored", ["/tmp/elsewhere/best_model.zip", "../../best_model.zip", ["best_model.zip"]]
)
def test_a_tampered_best_model_path_is_refused(tmp_path, stored):
    import mdpo
    from mdpo import TSDDR

    run = tmp_path / "run"
    run.mkdir()
    checkpoint = tsddr_agent(str(run / "best_model.zip")).save(str(run / "ckpt"))
    rewrite_config(checkpoint, best_model_path=stored)
    with pytest.raises(BadFileError, match="best_model_path") as caught:
        TSDDR.load(checkpoint)
    assert "\n" not in str(caught.value)
    # the generic loader never takes a path from the file: nothing is written on training
    assert mdpo.load(checkpoint, device="cpu").best_model_path is None


def tsddr_run_folder(tmp_path, **config_changes):
    """A TS-DDR run folder as ``mdpo hydro tsddr`` leaves it after 5 steps (a checkpoint,
    train_state.json, the best model and its JSON side file)."""
    out = tmp_path / "tsddr"
    out.mkdir()
    agent = tsddr_agent(str(out / "best_model.zip"))
    agent.learn(1)
    checkpoint = agent.save(str(out / "checkpoint_0000005"))
    if config_changes:
        rewrite_config(checkpoint, **config_changes)
    (out / "train_state.json").write_text(json.dumps({"steps": 5, "train_seconds": 1.0}))
    return out


def tsddr_argv(out, steps=6):
    return [
        "hydro",
        "tsddr",
        *COMMON,
        "--out",
        str(out),
        "--stages",
        "6",
        "--eval-freq",
        "1",
        "--eval-scenarios",
        "4",
        "--checkpoint-freq",
        "5",
        "--policy",
        "state",
        "--steps",
        str(steps),
    ]


def test_cli_tsddr_refuses_a_checkpoint_that_writes_outside_its_folder(tmp_path, capsys):
    evil = tmp_path / "evil"
    out = tsddr_run_folder(tmp_path, best_model_path=str(evil / "best_model.zip"))
    evil.mkdir()
    status, err = main_status(tsddr_argv(out), capsys)
    assert status == 2 and err.count("\n") == 1 and "absolute path" in err
    assert not os.listdir(evil)  # the old code saved its best model there


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("train_state.json", "[" * 100_000 + "]" * 100_000, "nests deeper"),
        ("train_state.json", "[1, 2]", "must be a JSON object"),
        ("train_state.json", '{"train_seconds": "soon"}', "train_seconds must be a number"),
        ("best_model.zip.json", '{"eval_mean_cost": NaN}', "NaN"),
        ("best_model.zip.json", '{"eval_mean_cost": 1e999}', "must be a finite number"),
    ],
)
def test_cli_tsddr_side_files_are_one_line_errors(tmp_path, capsys, name, text, message):
    out = tsddr_run_folder(tmp_path)
    (out / name).write_text(text)
    status, err = main_status(tsddr_argv(out), capsys)
    assert status == 2 and err.count("\n") == 1 and message in err and name in err


def test_cli_compare_and_plot_refuse_bad_summaries_in_one_line(tmp_path, capsys):
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "stages.csv").write_text("stage,total_volume,thermal_mw\n1,2,3\n")
    for text, message in [
        ("[1]", "must be a JSON object"),  # TypeError before
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"label": ["x"]}', "label must be a string"),
    ]:
        (folder / "summary.json").write_text(text)
        status, err = main_status(
            ["hydro", "compare", str(folder), "--out", str(tmp_path / "cmp")], capsys
        )
        assert status == 2 and err.count("\n") == 1 and message in err
        status, err = main_status(
            ["hydro", "plot", str(folder), "--case", "case3", "--out", str(tmp_path / "plot.png")],
            capsys,
        )
        assert status == 2 and err.count("\n") == 1 and message in err


def test_cli_sddp_refuses_a_bad_training_log_in_one_line(tmp_path, capsys, cut_file):
    out = tmp_path / "sddp"
    out.mkdir()
    shutil.copy(cut_file, out / "cuts.json.gz")
    argv = [
        "hydro",
        "sddp",
        *COMMON,
        "--out",
        str(out),
        "--horizon",
        "4",
        "--report",
        "4",
        "--iterations",
        "3",
    ]
    for text, message in [
        ("iteration,lower\n1,2\n", "lower_bound must be a number"),  # KeyError
        ("lower_bound,forward_cost,seconds\n1,nan,2\n", "finite number"),
        ("lower_bound\n" + "x" * 200_000 + "\n", "not a training log"),
    ]:
        (out / "training.csv").write_text(text)
        status, err = main_status(argv, capsys)
        assert status == 2 and err.count("\n") == 1 and message in err


# -------------------------------------------------------------------- 9: the run folder lock
@pytest.mark.parametrize("command", ["sddp", "tsddr"])
def test_hydro_commands_refuse_a_busy_run_folder(tmp_path, command):
    """A second writer into the same run folder stops at once, before writing anything (the
    old commands trained and wrote their files next to the first one's)."""
    from mdpo.cli.main import build_parser
    from mdpo.cli.run_folder import RunFolderBusy, run_folder_lock

    out = tmp_path / command
    argv = {
        "sddp": [
            "hydro",
            "sddp",
            *COMMON,
            "--out",
            str(out),
            "--horizon",
            "4",
            "--report",
            "4",
            "--iterations",
            "2",
        ],
        "tsddr": tsddr_argv(out, steps=2),
    }[command]
    args = build_parser().parse_args(argv)
    args.argv = argv
    with run_folder_lock(str(out), "test"):
        with pytest.raises(RunFolderBusy, match="another mdpo hydro"):
            args.func(args)
    assert os.listdir(out) == [".lock"]
    assert args.func(args) == 0  # free again once the first writer is done


# ------------------------------------------------------------------ 12: HiGHS thread clash
HIGHS_CLASH = """
import numpy as np, highspy
from mdpo.rules.highs import HighsModel
from mdpo.rules.lp import LinearProgram

def other_highs():  # a user's own HiGHS, with its default threads
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.addVars(2, np.zeros(2), np.full(2, 10.0))
    h.changeColsCost(2, np.array([0, 1], np.int32), np.array([1.0, 2.0]))
    h.addRow(1.0, np.inf, 2, np.array([0, 1], np.int32), np.array([1.0, 1.0]))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal

lp = LinearProgram(name="tiny", variables=["x", "y"], col_lower=np.zeros(2),
                   col_upper=np.full(2, 10.0), objective=np.array([1.0, 2.0]),
                   objective_constant=0.0, maximize=False, rows=["r"],
                   row_lower=np.array([1.0]), row_upper=np.array([np.inf]),
                   row_start=np.array([0, 2]), columns=np.array([0, 1]),
                   values=np.array([1.0, 1.0]))
other_highs()
first = HighsModel(lp)
assert first.solve().objective == 1.0
other_highs()
assert HighsModel(lp).solve().objective == 1.0 and first.solve().objective == 1.0
print("solved")
"""


def test_highs_backend_solves_after_another_highs_ran_with_default_threads():
    """HiGHS has one thread scheduler per process; a user's HiGHS started it with its default
    threads, so every solve of ours (threads=1) failed with 'Not Set'. Run in a fresh
    interpreter: the scheduler is process-wide state."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", HIGHS_CLASH],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=os.getcwd(),
    )
    assert done.returncode == 0 and "solved" in done.stdout, done.stderr[-2000:]
