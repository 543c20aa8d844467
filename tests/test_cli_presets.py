"""mdpo train --preset zoo|paper and --preset-file: per-env hyperparameters and budgets, `lin_X`
schedules, overrides, and a preset file read as data."""

from __future__ import annotations

import json

import pytest

from mdpo import PPO, TRPO
from mdpo.cli import main
from mdpo.cli.presets import NAMES, load_preset, preset_entry, resolve_schedules


def test_zoo_preset_trains_with_the_zoo_values(in_tmp, capsys):
    args = ["train", "PPO", "CartPole-v1", "--preset", "zoo", "--steps", "256", "--out", "run"]
    assert main([*args, "--no-progress"]) == 0
    config = json.loads((in_tmp / "run" / "config.json").read_text())
    assert config["n_envs"] == 8 and config["total_timesteps"] == 256  # --steps overrides
    hyper = config["hyperparameters"]
    assert hyper["n_steps"] == 32 and hyper["batch_size"] == 256
    assert hyper["learning_rate"] == "lin_0.001"
    model = PPO.load(str(in_tmp / "run" / "final_model.zip"))
    assert model.n_steps == 32 and model.batch_size == 256 and model.n_epochs == 20
    assert model.learning_rate.initial == pytest.approx(1e-3)  # a linear schedule


def test_zoo_preset_of_trpo_takes_the_zoo_values(in_tmp):
    """RL Baselines3 Zoo's trpo.yml, CartPole-v1: n_envs 2, n_steps 512, cg_damping 1e-3."""
    args = ["train", "TRPO", "CartPole-v1", "--preset", "zoo", "-n", "1024", "--out", "run"]
    assert main([*args, "--no-progress"]) == 0
    config = json.loads((in_tmp / "run" / "config.json").read_text())
    assert config["n_envs"] == 2
    model = TRPO.load(str(in_tmp / "run" / "final_model.zip"))
    assert (model.n_steps, model.batch_size, model.n_critic_updates) == (512, 512, 20)
    assert model.cg_damping == pytest.approx(1e-3) and model.gae_lambda == pytest.approx(0.98)


def test_every_preset_entry_is_valid_for_its_algorithm():
    from mdpo.cli.overrides import parse_overrides

    for name in NAMES:
        preset = load_preset(name)
        for algo, table in preset.items():
            if algo not in ("PPO", "SAC", "MDPO", "OffPolicyMDPO", "TRPO"):
                continue  # the YAML anchors' own keys
            for env in table:
                entry = preset_entry(preset, algo, env, name)
                pairs = [f"{k}={json.dumps(v)}" for k, v in entry["hyperparameters"].items()]
                parse_overrides(algo, pairs)
                resolve_schedules(entry["hyperparameters"])


def test_preset_errors_are_one_line(in_tmp, capsys):
    assert main(["train", "MDPO", "CartPole-v1", "--preset", "zoo", "--out", "a"]) == 2
    assert "has no MDPO preset for CartPole-v1" in capsys.readouterr().err
    assert main(["train", "PPO", "CartPole-v1", "--preset", "mine", "--out", "b"]) == 2
    assert "--preset takes one of zoo, paper" in capsys.readouterr().err
    (in_tmp / "p.yaml").write_text("PPO:\n  CartPole-v1:\n    n_envs: 1000000000\n")
    assert main(["train", "PPO", "CartPole-v1", "--preset-file", "p.yaml", "--out", "c"]) == 2
    assert "n_envs is 1000000000, over the limit" in capsys.readouterr().err
    (in_tmp / "q.yaml").write_text("PPO:\n  CartPole-v1:\n    hyperparameters: {nope: 1}\n")
    assert main(["train", "PPO", "CartPole-v1", "--preset-file", "q.yaml", "--out", "d"]) == 2
    assert "unknown hyperparameter 'nope'" in capsys.readouterr().err
    (in_tmp / "r.yaml").write_text("a: &x [*x]\n")
    assert main(["train", "PPO", "CartPole-v1", "--preset-file", "r.yaml", "--out", "e"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
