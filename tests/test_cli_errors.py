"""The command line's errors point the right way, in one line, before anything trains; `mdpo
eval` takes a run folder and finds the env there (issue 20, findings 3 and 4)."""

from __future__ import annotations

import json

import pytest

from mdpo.cli import main

TRAIN = ["train", "PPO", "Pendulum-v1", "--steps", "64", "--no-progress"]


@pytest.mark.parametrize(
    "sets, message",
    [
        (['policy_kwargs={"net_arch": [64, 64], "foo": 1}'], "'foo' is not a keyword of PPO's"),
        (['policy_kwargs="big"'], "policy_kwargs must be a JSON mapping"),
        (["net_arch=[64,64]"], "--set policy_kwargs='{\"net_arch\": [64,64]}'"),
        (['env_kwargs={"foo": 1}'], "env_kwargs {'foo': 1} do not fit Pendulum-v1"),
        (["n_steps=64", "n_steps=128"], "--set n_steps=... is given twice"),
    ],
)
def test_bad_overrides_are_one_line_errors_before_training(in_tmp, capsys, sets, message):
    args = [*TRAIN, "--out", "run"]
    for pair in sets:
        args += ["--set", pair]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not (in_tmp / "run" / "config.json").exists()


def test_eval_takes_a_run_folder_and_its_env(in_tmp, capsys):
    assert (
        main(
            [
                *TRAIN,
                "--set",
                "n_steps=64",
                "--set",
                "batch_size=64",
                "--set",
                'env_kwargs={"g": 2.0}',
                "--out",
                "run",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", "run", "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env"] == "Pendulum-v1" and result["model"].endswith("final_model.zip")
    # a bare model file needs --env, and the wrong env is named as such
    assert main(["eval", "run/final_model.zip", "--episodes", "1"]) == 2
    assert "--env" in capsys.readouterr().err
    assert main(["eval", "run/final_model.zip", "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err
    assert "is CartPole-v1 the env it was trained on?" in err and "\n" not in err.strip()


def test_import_sb3_of_an_mdpo_file_speaks_to_a_command_line_user(in_tmp, capsys):
    assert main([*TRAIN, "--set", "n_steps=64", "--set", "batch_size=64", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["import-sb3", "run/final_model.zip", "--out", "x.zip"]) == 2
    err = capsys.readouterr().err
    assert "already an mdpo model file: use it as it is" in err and "mdpo.load" not in err


def test_train_ends_with_the_score_of_its_final_model(in_tmp, capsys):
    """Under one evaluation interval no evaluation ran during training: one runs at the end."""
    args = [*TRAIN, "--set", "n_steps=64", "--set", "batch_size=64", "--out", "run"]
    assert main([*args, "--eval-episodes", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("done: PPO on Pendulum-v1, 64 steps (") and "final evaluation" in line
    assert "over 2 episodes; files in run" in line
    status = json.loads((in_tmp / "run" / "status.json").read_text())
    assert status["status"] == "completed" and status["last_eval_mean_reward"] < 0
    rows = (in_tmp / "run" / "eval" / "evaluations.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("64,")


def test_help_shows_defaults_and_a_rounded_budget_is_announced(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for default in ("(default: 10000)", "(default: 5)", "(default: auto)"):
        assert default in text
    args = [*TRAIN[:3], "--steps", "100", "--set", "n_steps=64", "--set", "batch_size=64"]
    assert main([*args, "--out", "run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "this run ends at 128 steps, not 100" in out and "n_steps × n_envs = 64 × 1" in out


def test_threads_option_sets_torchs_threads(in_tmp, monkeypatch, capsys):
    import torch

    from mdpo.cli import threads

    args = [*TRAIN, "--set", "n_steps=64", "--set", "batch_size=64"]
    try:
        assert main([*args, "--out", "a", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        # auto: the cores the load average leaves free, at least one
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.7, 0.0, 0.0))
        assert threads.free_cores() == 1
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert threads.free_cores() == 4
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
        assert threads.free_cores() == 1
        monkeypatch.setattr(threads, "free_cores", lambda: 3)
        assert main([*args, "--out", "b"]) == 0  # the default is auto
        assert torch.get_num_threads() == 3
        with pytest.raises(SystemExit):
            main([*args, "--out", "c", "--threads", "-1"])
        assert "--threads must be >= 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(1)


def test_plot_draws_the_evaluation_curves_of_runs(in_tmp, capsys):
    import matplotlib.image

    args = [*TRAIN, "--set", "n_steps=64", "--set", "batch_size=64", "--eval-freq", "64"]
    for seed in ("0", "1"):
        assert main([*args, "--steps", "128", "--seed", seed, "--out", f"run{seed}"]) == 0
    assert main(["plot", "run0", "run1", "--out", "figs/curves.png"]) == 0
    assert "wrote figs/curves.png (2 runs)" in capsys.readouterr().out
    assert matplotlib.image.imread("figs/curves.png").shape[2] in (3, 4)  # a real PNG
    (in_tmp / "empty").mkdir()
    assert main(["plot", "empty", "--out", "x.png"]) == 2
    assert "holds no evaluation yet" in capsys.readouterr().err


def test_small_conventions_n_log_interval_and_parallel_evaluation(in_tmp, capsys):
    args = [
        "train",
        "PPO",
        "CartPole-v1",
        "-n",
        "128",
        "--set",
        "n_steps=64",
        "--set",
        "batch_size=64",
        "--eval-freq",
        "64",
        "--eval-episodes",
        "4",
        "--n-eval-envs",
        "2",
        "--log-interval",
        "2",
        "--out",
        "run",
        "--no-progress",
    ]
    assert main(args) == 0
    config = json.loads((in_tmp / "run" / "config.json").read_text())
    assert config["total_timesteps"] == 128 and config["n_eval_envs"] == 2
    rows = (in_tmp / "run" / "eval" / "evaluations.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["64", "128"]
    assert all(len(row.split(",")[-1].split()) == 4 for row in rows)  # 4 episodes each
