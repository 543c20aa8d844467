"""The command line: help, errors, a training run, evaluation, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mdpo.cli.main import main


def mdpo(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "mdpo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_help():
    result = mdpo("--help")
    assert result.returncode == 0 and "train" in result.stdout and "eval" in result.stdout
    result = mdpo("train", "--help")
    assert result.returncode == 0 and "--resume" in result.stdout and "--set" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "PPOX", "CartPole-v1"], "unknown algorithm 'PPOX'"),
        (["train", "PPO", "Nope-v9"], "unknown environment id 'Nope-v9'"),
        (["train", "PPO", "CartPole-v1", "--set", "n_stepz=4"], "did you mean 'n_steps'"),
        (["train", "PPO", "CartPole-v1", "--set", "n_steps"], "--set expects key=value"),
        (["train", "PPO", "CartPole-v1", "--steps", "0"], "--steps must be >= 1"),
        (["train", "PPO", "CartPole-v1", "--set", "learning_rate=-1"], "learning_rate must be > 0"),
        (["eval", "missing.zip", "--env", "CartPole-v1"], "neither a model file nor a run folder"),
        (["train", "--resume", "not-a-run"], "not a run folder"),
        (["train", "PPO", "CartPole-v1", "--n-envs", "0"], "--n-envs must be >= 1"),
    ],
)
def test_clear_errors(in_tmp, capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists("runs") or not os.listdir("runs")


def test_train_writes_a_run_folder_and_eval_reads_it(in_tmp, capsys):
    code = main(
        [
            "train",
            "PPO",
            "CartPole-v1",
            "--steps",
            "1024",
            "--set",
            "n_steps=256",
            "--set",
            "batch_size=64",
            "--eval-freq",
            "512",
            "--checkpoint-freq",
            "512",
            "--eval-episodes",
            "2",
            "--out",
            "run",
            "--no-progress",
        ]
    )
    assert code == 0
    names = set(os.listdir("run"))
    assert {"config.json", "status.json", "final_model.zip", "tb", "checkpoints", "eval"} <= names
    config = json.load(open("run/config.json"))
    assert config["hyperparameters"] == {"n_steps": 256, "batch_size": 64}
    assert config["command"].startswith("mdpo train PPO CartPole-v1")
    assert json.load(open("run/status.json"))["status"] == "completed"
    assert os.listdir("run/tb") == ["PPO_1"]
    assert os.path.exists("run/eval/evaluations.csv")
    capsys.readouterr()
    assert (
        main(["eval", "run/final_model.zip", "--env", "CartPole-v1", "--episodes", "3", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 3 and result["mean_reward"] > 0


def test_resume_after_sigkill(in_tmp):
    total, interval = 30_720, 2048
    # small minibatches make each iteration slow enough (~0.15 s) to be killed mid-run
    args = [
        "train",
        "PPO",
        "CartPole-v1",
        "--steps",
        str(total),
        "--set",
        "n_steps=512",
        "--set",
        "batch_size=32",
        "--set",
        "n_epochs=10",
        "--checkpoint-freq",
        str(interval),
        "--eval-freq",
        "100000",
        "--out",
        "run",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdpo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    progress = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            progress = json.load(open("run/status.json"))["num_timesteps"]
        except (OSError, ValueError, KeyError):
            pass
        if progress >= 8192:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists("run/final_model.zip")
    result = mdpo(*["train", "--resume", "run", "--no-progress"])
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("resuming"))
    resumed_at = int(line.split(" at ")[1].split()[0])
    # at most one checkpoint interval (plus the rollout in flight) of progress is lost
    assert resumed_at >= progress - interval - 512
    assert resumed_at % interval < 512  # checkpoints sit at iteration boundaries
    status = json.load(open("run/status.json"))
    assert status["status"] == "completed" and status["num_timesteps"] == total
    from mdpo import PPO

    assert PPO.load("run/final_model.zip").num_timesteps == total
    assert os.listdir("run/tb") == ["PPO_1"]  # the resumed run continues the same log
    # resuming a completed run does nothing
    again = mdpo("train", "--resume", "run", "--no-progress")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert PPO.load("run/final_model.zip").num_timesteps == total


def test_off_policy_checkpoints_keep_the_replay_buffer(in_tmp):
    """Checkpoints of an off-policy run carry its replay buffer, and a resumed run continues
    with it (the buffer of the next checkpoint holds the old transitions plus the new)."""
    args = [
        "train",
        "SAC",
        "Pendulum-v1",
        "--steps",
        "600",
        "--set",
        "learning_starts=100",
        "--set",
        "batch_size=32",
        "--checkpoint-freq",
        "200",
        "--eval-freq",
        "100000",
        "--out",
        "run",
        "--no-progress",
    ]
    assert main(args) == 0
    checkpoints = sorted(os.listdir("run/checkpoints"))
    assert checkpoints == [
        "rl_model_200_steps.zip",
        "rl_model_200_steps_replay_buffer.zip",
        "rl_model_400_steps.zip",
        "rl_model_400_steps_replay_buffer.zip",
    ]
    config = json.load(open("run/config.json"))
    config["total_timesteps"] = 800  # as if the run had stopped after its last checkpoint
    json.dump(config, open("run/config.json", "w"))
    os.remove("run/status.json")
    result = mdpo("train", "--resume", "run", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "from run/checkpoints/rl_model_400_steps.zip at 400 steps" in result.stdout
    from mdpo import SAC

    agent = SAC.load("run/checkpoints/rl_model_600_steps.zip")
    agent.load_replay_buffer("run/checkpoints/rl_model_600_steps_replay_buffer.zip")
    assert agent.replay_buffer.size == 600  # 400 restored + 200 collected after the resume


def test_train_evaluates_on_the_env_made_with_its_env_kwargs(in_tmp):
    """The evaluation env is made with the run's ``env_kwargs`` (here a 3-bus hydro case whose
    spaces differ from the default Bolivia ones)."""
    import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0

    kwargs = json.dumps({"case": "case3", "horizon": 6, "load_scale": 1.0})
    assert (
        main(
            [
                "train",
                "PPO",
                "HydroDispatch-v0",
                "--set",
                f"env_kwargs={kwargs}",
                "--set",
                "n_steps=64",
                "--steps",
                "128",
                "--eval-freq",
                "64",
                "--eval-episodes",
                "2",
                "--out",
                "hydro",
                "--no-progress",
            ]
        )
        == 0
    )
    with open("hydro/eval/evaluations.csv") as handle:
        assert len(handle.read().splitlines()) >= 3  # header and two evaluations
