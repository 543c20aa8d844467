"""Hydro case data: the bundled cases load with the documented sizes, and bad data is refused
with an error that names the file, the element and the field."""

import json
import shutil

import numpy as np
import pytest

from mdpo.envs.hydro import CaseDataError, load_case


def test_bundled_cases():
    bolivia = load_case("bolivia")
    assert (len(bolivia.buses), len(bolivia.branches), len(bolivia.generators)) == (28, 31, 34)
    assert sum(g.hydro for g in bolivia.generators) == 11 and len(bolivia.plants) == 11
    assert bolivia.inflows.shape == (48, 11, 15)
    names = {p.index: p.name for p in bolivia.plants}
    cascades = {(p.name, names[d]) for p in bolivia.plants for d in p.downstream_turn}
    assert cascades == {("COR", "SIS"), ("ZON", "CHU"), ("TAQ1", "TAQ2")}
    # column c of inflows.csv is plant c // 15, scenario c % 15
    raw = np.loadtxt("envs/hydro/data/bolivia/inflows.csv", delimiter=",")
    assert bolivia.inflows[5, 2, 7] == raw[5, 2 * 15 + 7]
    case3 = load_case("case3")
    assert case3.inflows.shape == (12, 1, 3)
    np.testing.assert_allclose(case3.scenario_probabilities.sum(axis=1), 1.0)


@pytest.fixture
def case_dir(tmp_path):
    folder = tmp_path / "case"
    shutil.copytree("envs/hydro/data/case3", folder)
    return folder


def edit(folder, name, change):
    path = folder / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file,change,message",
    [
        ("PowerModels.json", lambda d: d["gen"]["1"].pop("pmax"), "gen 1: missing field 'pmax'"),
        ("PowerModels.json", lambda d: d["gen"]["1"].update(pmax=-1), "pmax = -1.0 must not be"),
        ("PowerModels.json", lambda d: d["gen"]["1"].update(gen_bus=9), "unknown bus 9"),
        ("PowerModels.json", lambda d: d["branch"]["1"].update(t_bus=7), "unknown bus 7"),
        ("PowerModels.json", lambda d: d["load"]["1"].update(load_bus=5), "unknown bus 5"),
        ("PowerModels.json", lambda d: d["branch"]["1"].update(rate_a=-2), "rate_a = -2.0"),
        ("PowerModels.json", lambda d: d.pop("cost_deficit"), "missing 'cost_deficit'"),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(index_grid=99),
            "unknown generator 99",
        ),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(max_volume=-0.5),
            "max_volume = -0.5",
        ),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(downstream_turn=[4]),
            "downstream_turn refers to unknown plant 4",
        ),
        (
            "hydro.json",
            lambda d: d["Hydrogenerators"][0].update(min_turn="fast"),
            "'min_turn' = 'fast' is not a valid float",
        ),
    ],
)
def test_bad_data_is_named(case_dir, file, change, message):
    edit(case_dir, file, change)
    with pytest.raises(CaseDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_case(str(case_dir))


def test_bad_inflows_and_files(case_dir, tmp_path):
    (case_dir / "inflows.csv").write_text("1,2\n3,4\n")  # 2 columns for 1 plant: 2 scenarios
    with pytest.raises(CaseDataError, match="3 columns, expected 2 scenarios"):
        load_case(str(case_dir))
    (case_dir / "inflows.csv").write_text("1,-2,3\n")
    with pytest.raises(CaseDataError, match="must not be negative"):
        load_case(str(case_dir))
    (case_dir / "inflows.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(CaseDataError, match="equal length"):
        load_case(str(case_dir))
    (case_dir / "hydro.json").unlink()
    with pytest.raises(CaseDataError, match="missing case file .*hydro.json"):
        load_case(str(case_dir))
    with pytest.raises(CaseDataError, match="unknown case 'nowhere'"):
        load_case("nowhere")


def test_cascade_loops_are_refused(tmp_path):
    folder = tmp_path / "bolivia"
    shutil.copytree("envs/hydro/data/bolivia", folder)

    def loop(data):
        plants = {p["index"]: p for p in data["Hydrogenerators"]}
        plants[1]["downstream_turn"] = [2]  # 2 already flows into 1

    edit(folder, "hydro.json", loop)
    with pytest.raises(CaseDataError, match="the cascade loops"):
        load_case(str(folder))
