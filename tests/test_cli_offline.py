"""The offline commands end to end: mdpo data make / labels / info, mdpo oppo train / eval."""

from __future__ import annotations

import math
import os

import numpy as np

from mdpo.offline.dataset import OfflineDataset


# ----------------------------------------------------------------------------------- CLI
def test_cli_makes_datasets_labels_trains_resumes_and_evaluates(tmp_path, capsys):
    import json

    import minari

    from mdpo.cli.main import main

    root, teacher = str(tmp_path / "data"), str(tmp_path / "teacher")
    common = [
        "--root",
        root,
        "--teacher-dir",
        teacher,
        "--teacher-steps",
        "4096",
        "--teacher-eval-every",
        "2048",
        "--reference-episodes",
        "2",
        "--no-progress",
    ]
    for kind, size in (
        ("medium-replay", []),
        ("medium", ["--episodes", "2"]),
        ("medium-expert", ["--steps", "500"]),
        ("random", ["--steps", "300"]),
    ):
        assert main(["data", "make", "Pendulum-v1", "--kind", kind, *size, *common]) == 0
    out = capsys.readouterr().out
    # the medium snapshot is the first (the second has the higher return): its 2048 steps
    assert "mdpo/pendulum/medium-replay-v0: 11 episodes, 2048 steps" in out
    with open(os.path.join(teacher, "teacher.json")) as handle:
        state = json.load(handle)["state"]
    assert [s["step"] for s in state["snapshots"]] == [2048, 4096]
    os.environ["MINARI_DATASETS_PATH"] = root
    try:
        mixed = minari.load_dataset("mdpo/pendulum/medium-expert-v0")
        assert mixed.total_steps == 500
        assert mixed.storage.metadata["ref_min_score"] == state["references"]["random"]
        info = json.loads(mixed.storage.metadata["mdpo"])
        assert info["kind"] == "medium-expert" and "mdpo data make" in info["command"]
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    # the same command gives the same data; an existing id is not replaced without --force
    assert main(["data", "make", "Pendulum-v1", "--kind", "random", "--steps", "300", *common]) == 2
    assert "exists" in capsys.readouterr().err
    again = [
        "data",
        "make",
        "Pendulum-v1",
        "--kind",
        "random",
        "--steps",
        "300",
        "--id",
        "mdpo/pendulum/random-v1",
        *common,
    ]
    assert main(again) == 0
    first = OfflineDataset.load("mdpo/pendulum/random-v0", root)
    second = OfflineDataset.load("mdpo/pendulum/random-v1", root)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)

    labels = str(tmp_path / "labels.csv")
    assert (
        main(
            [
                "data",
                "labels",
                "mdpo/pendulum/medium-replay-v0",
                "--root",
                root,
                "--labels",
                "scripted:K=10,queries=50",
                "--out",
                labels,
            ]
        )
        == 0
    )
    run = str(tmp_path / "run")
    train = [
        "oppo",
        "train",
        "--dataset",
        "mdpo/pendulum/medium-replay-v0",
        "--root",
        root,
        "--labels",
        f"file:{labels},K=10",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--eval-episodes",
        "1",
        "--checkpoint-every",
        "3",
        "--out",
        run,
        "--no-progress",
        "--set",
        "segment_length=10",
        "--set",
        "batch_size=4",
        "--set",
        'encoder_kwargs={"hidden": 8, "n_layers": 1, "ff": 16}',
    ]
    assert main(train) == 0
    with open(os.path.join(run, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["steps"] == 6 and math.isfinite(summary["final_normalized"])
    assert summary["code_version"].startswith("mdpo ") and summary["started_on"].startswith("mdpo ")
    with open(os.path.join(run, "evaluations.csv")) as handle:
        assert [row.split(",")[0] for row in handle.read().split()[1:]] == ["3", "6"]
    assert main(["oppo", "train", "--resume", run]) == 0
    assert "already complete" in capsys.readouterr().out
    os.remove(os.path.join(run, "summary.json"))
    assert main(["oppo", "train", "--resume", run, "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    result = str(tmp_path / "eval.json")
    assert (
        main(
            [
                "oppo",
                "eval",
                os.path.join(run, "final_model.zip"),
                "--episodes",
                "2",
                "--out",
                result,
            ]
        )
        == 0
    )
    assert "normalized score" in capsys.readouterr().out
    for algo in ("BC", "FilteredBC"):
        assert (
            main(
                [
                    "oppo",
                    "train",
                    "--dataset",
                    "mdpo/pendulum/medium-expert-v0",
                    "--root",
                    root,
                    "--algo",
                    algo,
                    "--steps",
                    "4",
                    "--eval-every",
                    "4",
                    "--eval-episodes",
                    "1",
                    "--out",
                    str(tmp_path / algo),
                    "--no-progress",
                ]
            )
            == 0
        )
    # errors name the culprit
    assert main(["oppo", "train", "--dataset", "mdpo/pendulum/none-v0", "--root", root]) == 2
    assert "no Minari dataset 'mdpo/pendulum/none-v0'" in capsys.readouterr().err
    assert (
        main(
            [
                "oppo",
                "train",
                "--dataset",
                "mdpo/pendulum/medium-v0",
                "--root",
                root,
                "--algo",
                "BC",
                "--labels",
                "scripted:K=5",
            ]
        )
        == 2
    )
    assert "--labels applies to OPPO" in capsys.readouterr().err
    assert main(["data", "make", "Pendulum-v1", "--kind", "medium", *common]) == 2
    assert "give exactly one of episodes and steps" in capsys.readouterr().err
