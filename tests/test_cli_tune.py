"""mdpo tune at a tiny budget: Optuna with 3 trials on CartPole, resumed to 4 from its storage;
the best trial's hyperparameters (as trained) written for mdpo train."""

from __future__ import annotations

import yaml

from mdpo.cli import main
from mdpo.cli.tune import SEARCH_SPACES, fit_minibatch

TUNE = [
    "tune",
    "PPO",
    "CartPole-v1",
    "--steps",
    "256",
    "--eval-every",
    "128",
    "--eval-episodes",
    "2",
    "--set",
    "n_steps=64",
    "--out",
    "study",
    "--no-progress",
]


def test_tune_runs_resumes_and_writes_the_best_trial(in_tmp, capsys):
    import optuna

    assert main([*TUNE, "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "0 trials done, 3 to run" in out and "train it: mdpo train PPO CartPole-v1" in out
    assert main([*TUNE, "--trials", "4"]) == 0
    assert "3 trials done, 1 to run" in capsys.readouterr().out
    study = optuna.load_study(study_name="PPO-CartPole-v1", storage="sqlite:///study/study.db")
    assert len(study.trials) == 4
    best = yaml.safe_load(open("study/best.yaml"))
    assert best["algo"] == "PPO" and best["value"] == study.best_value
    params = best["hyperparameters"]
    assert params["n_steps"] == 64 and params["batch_size"] <= 64  # fixed, and as trained
    assert set(params) == set(SEARCH_SPACES["PPO"])


def test_tune_refuses_what_it_cannot_tune(in_tmp, capsys):
    assert main(["tune", "BC", "CartPole-v1", "--out", "x"]) == 2
    assert "mdpo tune takes one of PPO" in capsys.readouterr().err
    assert fit_minibatch({"n_steps": 64, "batch_size": 256}, 2) == {
        "n_steps": 64,
        "batch_size": 128,
    }


def test_tune_report_plots_the_history_and_the_importances(in_tmp, capsys):
    import matplotlib.image

    assert main([*TUNE, "--trials", "3"]) == 0
    capsys.readouterr()
    assert main(["tune-report", "--out", "study"]) == 0
    assert "PPO-CartPole-v1: 3 trials" in capsys.readouterr().out
    for name in ("history", "importances"):
        assert matplotlib.image.imread(f"study/{name}.png").ndim == 3
    assert main(["tune-report", "--out", "empty"]) == 2


def test_two_processes_share_one_study(in_tmp):
    """Parallel workers on one machine: two `mdpo tune` processes on one SQLite storage run
    the study's trials between them and stop at --trials in all (at most one over each)."""
    import os
    import subprocess
    import sys

    import optuna

    command = [sys.executable, "-m", "mdpo", *TUNE, "--trials", "4", "--seed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    os.makedirs("study")
    workers = [
        subprocess.Popen([*command, str(seed)], env=env, stdout=subprocess.PIPE, text=True)
        for seed in (0, 1)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="PPO-CartPole-v1", storage="sqlite:///study/study.db")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5 and len(finished) == len(study.trials)
    assert all("best: trial" in out for out in outputs)
