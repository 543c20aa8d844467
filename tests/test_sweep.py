"""Sweeps: spec validation, local and Ray backends end to end, failures, resume, reports."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mdpo.cli.main import main
from mdpo.cli.sweep.report import write_report
from mdpo.cli.sweep.spec import SweepSpecError, parse_spec
from mdpo.cli.sweep.stats import bootstrap_ci, iqm, summarize

TINY = {
    "name": "tiny",
    "budget": 1024,
    "seeds": [0, 1],
    "envs": ["CartPole-v1"],
    "algorithms": ["PPO", "sb3:PPO"],
    "eval": {"every": 512, "episodes": 2},
    "hyperparameters": {"list": [{"n_steps": 256, "batch_size": 128, "n_epochs": 2}]},
}


def write_spec(path, spec):
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return str(path)


def spec_with(**changes):
    spec = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"algorithms": ["PPOO"]}, "unknown algorithm 'PPOO'"),
        ({"algorithms": ["sb3:PPOO"]}, "stable_baselines3 has no PPOO"),
        ({"algorithms": ["zoo:PPO"]}, "unknown algorithm library 'zoo'"),
        ({"envs": ["Nope-v0"]}, "unknown environment id 'Nope-v0'"),
        ({"envs": ["torch:Hopper-v5"]}, "unknown environment id 'torch:Hopper-v5'"),
        (
            {"envs": ["torch:CartPole-v1"], "algorithms": ["PPO", "sb3:PPO"]},
            "sb3:PPO cannot run the torch-native env 'torch:CartPole-v1'",
        ),
        ({"hyperparameters": {"grid": {"n_stepz": [1]}}}, "unknown hyperparameter 'n_stepz'"),
        (
            {"hyperparameters": {"grid": {"clip_range_vf": [0.2]}}, "algorithms": ["sb3:SAC"]},
            "unknown hyperparameter 'clip_range_vf' for sb3:SAC",
        ),
        ({"hyperparameters": {"grid": {}}}, "grid is empty"),
        ({"hyperparameters": {"grid": {"gamma": []}}}, "grid.gamma must be a non-empty list"),
        ({"hyperparameters": {"list": []}}, "list is empty"),
        ({"hyperparameters": {"list": [{"seed": 3}]}}, "may not set 'seed': the sweep sets it"),
        ({"algorithms": ["PPO", {"name": "PPO", "label": "PPO "}]}, "share the folder"),
        ({"device": "cdua"}, "device must be"),
        ({"hyperparameters": {"grid": 5}}, "grid is empty"),
        ({"algorithms": [{"name": "PPO", "hyperparameters": [1]}]}, "must be a mapping"),
        (
            {"algorithms": [{"name": "PPO", "hyperparameters": {"gama": 0.9}}]},
            "did you mean 'gamma'",
        ),
        ({"algorithms": ["PPO", "PPO"]}, "labels repeat"),
        ({"algorithms": []}, "algorithms must be a non-empty list"),
        ({"budget": 0}, "budget must be a positive integer"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [1, 1]}, "seeds repeat"),
        ({"eval": {"every": 5000}}, "larger than the budget"),
        ({"envs": None}, "the spec needs 'envs'"),
        ({"budgett": 5}, "unknown key 'budgett'"),
    ],
)
def test_spec_validation_errors(changes, message):
    with pytest.raises(SweepSpecError, match=message):
        parse_spec(spec_with(**changes))


def test_spec_expansion():
    spec = parse_spec(
        spec_with(hyperparameters={"grid": {"gamma": [0.9, 0.99], "n_steps": [64]}}, seeds=3)
    )
    runs = spec.runs()
    assert len(runs) == 3 * 2 * 2
    assert {r.variant for r in runs} == {"gamma=0.9,n_steps=64", "gamma=0.99,n_steps=64"}
    assert len({r.run_id for r in runs}) == len(runs)


def test_algorithms_restricted_to_some_envs():
    spec = parse_spec(
        spec_with(
            envs=["CartPole-v1", "Acrobot-v1"],
            seeds=[0],
            algorithms=["PPO", {"name": "sb3:PPO", "envs": ["Acrobot-v1"]}],
        )
    )
    assert sorted((r.algorithm, r.env) for r in spec.runs()) == [
        ("PPO", "Acrobot-v1"),
        ("PPO", "CartPole-v1"),
        ("sb3:PPO", "Acrobot-v1"),
    ]
    with pytest.raises(SweepSpecError, match="subset of the spec's envs"):
        parse_spec(spec_with(algorithms=[{"name": "PPO", "envs": ["Hopper-v5"]}]))
    # a torch-native env next to its gymnasium twin, the baseline on the twin only
    spec = parse_spec(
        spec_with(
            envs=["torch:CartPole-v1", "CartPole-v1"],
            seeds=[0],
            algorithms=["PPO", {"name": "sb3:PPO", "envs": ["CartPole-v1"]}],
        )
    )
    assert len(spec.runs()) == 3


def test_yaml_exponents_without_a_dot_are_numbers():
    spec = parse_spec(spec_with(hyperparameters={"list": [{"learning_rate": "1e-3"}]}))
    assert spec.runs()[0].hyperparameters["learning_rate"] == 1e-3


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algorithms: [PPO\n")
    assert main(["sweep", "run", str(path)]) == 2


def test_local_sweep_end_to_end_with_a_failing_run(in_tmp, capsys):
    spec = spec_with(
        hyperparameters={
            "list": [
                {"n_steps": 256, "batch_size": 128, "n_epochs": 2},
                {"n_steps": 64, "batch_size": 128},  # ours raises in the run (SB3 only warns)
            ]
        }
    )
    path = write_spec(in_tmp / "spec.yaml", spec)
    code = main(["sweep", "run", path, "--workers", "2", "--out", "sw"])
    assert code == 1  # some runs failed
    runs = sorted(os.listdir("sw/runs"))
    assert len(runs) == 8
    statuses = {r: json.load(open(f"sw/runs/{r}/status.json"))["status"] for r in runs}
    bad = [r for r in runs if "n_steps=64" in r and r.startswith("PPO__")]
    good = [r for r in runs if r not in bad]
    assert len(bad) == 2
    assert all(statuses[r] == "completed" for r in good)
    assert all(statuses[r] == "failed" for r in bad)
    error = json.load(open(f"sw/runs/{bad[0]}/status.json"))["error"]
    assert "batch_size=128 is larger than the rollout" in error
    for r in [r for r in good if "n_steps=256" in r]:
        result = json.load(open(f"sw/runs/{r}/result.json"))
        assert result["num_timesteps"] == 1024
        assert [p["nominal_timesteps"] for p in result["curve"]] == [0, 512, 1024]
        assert os.path.exists(f"sw/runs/{r}/final_model.zip")
        assert os.listdir(f"sw/runs/{r}/tb")
    capsys.readouterr()
    assert main(["sweep", "report", "sw", "--out", "rep"]) == 0
    summary = open("rep/summary.csv").read()
    assert "PPO [batch_size=128,n_epochs=2,n_steps=256]" in summary
    readme = open("rep/README.md").read()
    assert "failed:" in readme and "mdpo sweep run" in readme and "```yaml" in readme
    assert "**Partial: 6 of 8 runs have a result**" in readme
    assert os.path.getsize("rep/curves.png") > 1000


def test_interrupted_sweep_resumes_without_redoing_finished_runs(in_tmp):
    spec = spec_with(
        budget=4096,
        eval={"every": 4096, "episodes": 1},
        hyperparameters={"list": [{"n_steps": 256, "batch_size": 32}]},
        algorithms=["PPO"],
        seeds=[0, 1, 2, 3],
    )
    path = write_spec(in_tmp / "spec.yaml", spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdpo", "sweep", "run", path, "--workers", "1", "--out", "sw"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir("sw/runs"):
            done = [r for r in os.listdir("sw/runs") if os.path.exists(f"sw/runs/{r}/result.json")]
        if done:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {r: os.path.getmtime(f"sw/runs/{r}/result.json") for r in done}
    assert 1 <= len(finished) < 4
    assert main(["sweep", "run", path, "--workers", "2", "--out", "sw"]) == 0
    for r, mtime in finished.items():
        assert os.path.getmtime(f"sw/runs/{r}/result.json") == mtime  # not redone
    assert all(os.path.exists(f"sw/runs/{r}/result.json") for r in os.listdir("sw/runs"))
    invocations = json.load(open("sw/sweep.json"))["invocations"]
    assert len(invocations) == 2


def test_changed_spec_is_refused_for_completed_runs(in_tmp):
    path = write_spec(in_tmp / "spec.yaml", spec_with(algorithms=["PPO"], seeds=[0]))
    assert main(["sweep", "run", path, "--workers", "1", "--out", "sw"]) == 0
    before = open("sw/sweep.json").read()
    runs = sorted(os.listdir("sw/runs"))
    write_spec(in_tmp / "spec.yaml", spec_with(algorithms=["PPO"], seeds=[0], budget=2048))
    assert main(["sweep", "run", path, "--workers", "1", "--out", "sw"]) == 2
    assert open("sw/sweep.json").read() == before  # nothing written or deleted
    assert sorted(os.listdir("sw/runs")) == runs
    # a second sweep on a folder in use is refused
    from mdpo.cli.sweep.executors import sweep_lock
    from mdpo.cli.sweep.spec import SweepSpecError

    with sweep_lock("sw"), pytest.raises(SweepSpecError, match="another sweep is running"):
        with sweep_lock("sw"):
            pass


def test_ray_backend_end_to_end(in_tmp):
    pytest.importorskip("ray")
    path = write_spec(in_tmp / "spec.yaml", TINY)
    assert main(["sweep", "run", path, "--backend", "ray", "--workers", "2", "--out", "sw"]) == 0
    runs = os.listdir("sw/runs")
    assert len(runs) == 4
    for r in runs:
        assert json.load(open(f"sw/runs/{r}/status.json"))["status"] == "completed"
        assert os.path.exists(f"sw/runs/{r}/final_model.zip")


# ---------------------------------------------------------------------------- statistics
def test_iqm_hand_computed():
    assert iqm([0, 0, 1, 10]) == 0.5  # cut one at each end: mean(0, 1)
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # cut two at each end: mean(3, 4, 5, 6)
    assert iqm([5, 1, 3]) == 3.0  # floor(3/4) = 0 cut: the mean
    assert iqm([7.0]) == 7.0


def test_bootstrap_ci_hand_computed():
    # the mean of a resample of [0, 1] is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5% and 97.5% quantiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    # for many values the CI of the mean is close to mean ± 1.96·s/√n
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    low, high = bootstrap_ci(x)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.05)
    assert high == pytest.approx(x.mean() + half, abs=0.05)


def test_report_numbers_from_known_results(tmp_path):
    sweep = tmp_path / "sw"
    finals = {"A": [1.0, 2.0, 6.0], "B": [0.0, 0.0, 1.0, 10.0]}
    for algo, values in finals.items():
        for seed, value in enumerate(values):
            run_dir = sweep / "runs" / f"{algo}__Env__default__s{seed}"
            run_dir.mkdir(parents=True)
            config = {
                "algorithm": algo,
                "label": algo,
                "env": "CartPole-v1",
                "seed": seed,
                "variant": "default",
                "hyperparameters": {},
                "budget": 100,
                "eval_every": 50,
                "eval_episodes": 1,
                "n_envs": 1,
                "device": "cpu",
            }
            curve = [
                {
                    "timesteps": t,
                    "nominal_timesteps": t,
                    "mean_return": value * t / 100,
                    "std_return": 0.0,
                }
                for t in (0, 50, 100)
            ]
            (run_dir / "result.json").write_text(
                json.dumps(
                    {
                        "run_id": run_dir.name,
                        "config": config,
                        "final_return": value,
                        "final_returns": [value],
                        "num_timesteps": 100,
                        "curve": curve,
                        "wall_time_s": 10.0 + seed,
                        "train_time_s": 8.0,
                        "eval_time_s": 1.0,
                        "steps_per_s": 100.0 * (seed + 1),
                        "code_version": "test",
                    }
                )
            )
    write_report(str(sweep), str(tmp_path / "rep"), "mdpo sweep report sw")
    import csv

    rows = {r["algorithm"]: r for r in csv.DictReader(open(tmp_path / "rep" / "summary.csv"))}
    assert float(rows["A"]["mean"]) == pytest.approx(3.0)
    assert float(rows["A"]["iqm"]) == pytest.approx(3.0)
    assert float(rows["B"]["mean"]) == pytest.approx(2.75)
    assert float(rows["B"]["iqm"]) == pytest.approx(0.5)
    assert float(rows["A"]["median_wall_time_s"]) == 11.0
    assert float(rows["B"]["median_steps_per_s"]) == 250.0
    stats = summarize(finals["B"])
    assert float(rows["B"]["iqm_ci_low"]) == pytest.approx(stats["iqm_ci_low"])
    assert stats["mean_ci_low"] <= 2.75 <= stats["mean_ci_high"]
