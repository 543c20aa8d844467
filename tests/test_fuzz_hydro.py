"""Fuzzing the hydro readers: a case folder (``load_case``) with one file corrupted, an SDDP
cut file (``SDDP.load_cuts``) corrupted, and the AC and SOC MathOptFormat subproblems
(``read_mof``: expression graphs, quadratic and cone constraints) corrupted, each loaded or
refused with a one-line
:class:`~mdpo.core.limits.BadFileError` within the harness's time and memory bounds (see
``tests/fuzzing.py``; ``MDPO_FUZZ_EXAMPLES=2000`` for a long run)."""

import gzip
import json
import shutil

import pytest
from fuzzing import FUZZ, assert_loads_or_refuses, deep_json, json_mutation, mutate_bytes, rngs
from hypothesis import given
from hypothesis import strategies as st

from mdpo.envs.hydro import load_case
from mdpo.envs.hydro.sddp import SDDP
from mdpo.rules import read_mof

CASE_FILES = ["PowerModels.json", "hydro.json", "inflows.csv", "scenarioprobability.csv"]
JSON_FILES = ["PowerModels.json", "hydro.json"]
HORIZON = 4
#: declared counts far beyond the case: stages, horizons
HUGE = [-1, 2**31, 2**63, 10**99, 10**6]


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    """A copy of case3 and the bytes of each of its files (restored after every example)."""
    folder = tmp_path_factory.mktemp("fuzz_case") / "case3"
    shutil.copytree("envs/hydro/data/case3", folder)
    return folder, {name: (folder / name).read_bytes() for name in CASE_FILES}


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    """A folder, and a valid cut file of SDDP on case3 (2 iterations, 4 stages): its gzip
    bytes and its JSON."""
    folder = tmp_path_factory.mktemp("fuzz_cuts")
    sddp = SDDP(load_case("case3"), HORIZON, load_scale=1.0)
    sddp.iterate()
    sddp.iterate()
    sddp.save_cuts(str(folder / "valid.json.gz"))
    data = (folder / "valid.json.gz").read_bytes()
    return folder, data, json.loads(gzip.decompress(data))


def load_folder(folder: str) -> None:
    load_case(folder)


def load_cuts(path: str) -> None:
    SDDP(load_case("case3"), HORIZON, load_scale=1.0).load_cuts(path)


def check_case(case_folder, name: str, data: bytes) -> None:
    folder, originals = case_folder
    (folder / name).write_bytes(data)
    try:
        assert_loads_or_refuses(load_folder, str(folder))
    finally:
        (folder / name).write_bytes(originals[name])


@FUZZ
@given(rng=rngs(), name=st.sampled_from(CASE_FILES))
def test_case_files_with_corrupted_bytes(case_folder, rng, name):
    check_case(case_folder, name, mutate_bytes(case_folder[1][name], rng))


@FUZZ
@given(rng=rngs(), name=st.sampled_from(JSON_FILES))
def test_case_files_with_hostile_json_values(case_folder, rng, name):
    value = json_mutation(json.loads(case_folder[1][name]), rng)
    check_case(case_folder, name, json.dumps(value).encode())


@FUZZ
@given(text=deep_json, name=st.sampled_from(JSON_FILES))
def test_case_files_nested_deeply(case_folder, text, name):
    check_case(case_folder, name, text.encode())


def check_cuts(folder, data: bytes, name: str = "cuts.json.gz") -> str:
    path = folder / name
    path.write_bytes(data)
    return assert_loads_or_refuses(load_cuts, str(path))


@FUZZ
@given(rng=rngs(), zipped=st.booleans())
def test_cut_files_with_corrupted_bytes(cuts, rng, zipped):
    """Truncations and bit flips of the gzip itself, or of the JSON text inside it."""
    folder, data, _ = cuts
    if zipped:
        check_cuts(folder, mutate_bytes(data, rng))
    else:
        check_cuts(folder, gzip.compress(mutate_bytes(gzip.decompress(data), rng), 1))


@FUZZ
@given(rng=rngs())
def test_cut_files_with_hostile_json_values(cuts, rng):
    folder, _, valid = cuts
    check_cuts(folder, json.dumps(json_mutation(valid, rng)).encode(), "cuts.json")


@FUZZ
@given(
    key=st.sampled_from(["horizon", "stage", "slopes", "cuts"]),
    huge=st.sampled_from(HUGE),
    index=st.integers(0, 5),
)
def test_cut_files_declaring_huge_counts(cuts, key, huge, index):
    """A horizon, a stage or a number of slopes far beyond the case's (refused), or many
    cuts (loaded: more than MAX_CUTS is test_hardening_hydro's)."""
    folder, _, valid = cuts
    data = json.loads(json.dumps(valid))
    cut = data["cuts"][index % len(data["cuts"])]
    if key == "horizon":
        data["horizon"] = huge
    elif key == "stage":
        cut[0] = huge
    elif key == "slopes":
        cut[2] = [0.0] * (2 + min(abs(huge), 100_000))
    else:
        data["cuts"] = data["cuts"] * max(1, min(abs(huge), 20_000) // len(data["cuts"]))
    outcome = check_cuts(folder, gzip.compress(json.dumps(data).encode(), 1))
    if key in ("horizon", "stage", "slopes"):
        assert outcome == "refused"


MOF_FILES = ["ACPPowerModel.mof.json", "SOCWRConicPowerModel.mof.json"]


@pytest.fixture(scope="module")
def mof_files(tmp_path_factory):
    """A folder, and the bytes and JSON of case3's AC and SOC reference subproblems."""
    folder = tmp_path_factory.mktemp("fuzz_mof")
    originals = {}
    for name in MOF_FILES:
        data = open(f"envs/hydro/data/case3/{name}", "rb").read()
        originals[name] = (data, json.loads(data))
    return folder, originals


def check_mof(folder, data: bytes) -> str:
    path = folder / "model.mof.json"
    path.write_bytes(data)
    return assert_loads_or_refuses(read_mof, str(path))


@FUZZ
@given(rng=rngs(), name=st.sampled_from(MOF_FILES))
def test_mof_files_with_corrupted_bytes(mof_files, rng, name):
    folder, originals = mof_files
    check_mof(folder, mutate_bytes(originals[name][0], rng))


@FUZZ
@given(rng=rngs(), name=st.sampled_from(MOF_FILES))
def test_mof_files_with_hostile_json_values(mof_files, rng, name):
    """Hostile values anywhere: in expression nodes, node indices, cone components, sets."""
    folder, originals = mof_files
    check_mof(folder, json.dumps(json_mutation(originals[name][1], rng)).encode())


def test_the_valid_fixtures_load(case_folder, cuts, mof_files):
    """The unmutated files load: the fuzz cases start from valid data."""
    assert assert_loads_or_refuses(load_folder, str(case_folder[0])) == "ok"
    assert check_cuts(cuts[0], cuts[1]) == "ok"
    for data, _ in mof_files[1].values():
        assert check_mof(mof_files[0], data) == "ok"
