"""HydroDispatch-v0: gymnasium's checker, the step against a direct LP solve, and an agent of
the suite running on it."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mdpo.envs.hydro  # noqa: F401 - registers HydroDispatch-v0
from mdpo.envs.hydro.model import build_deterministic_equivalent
from mdpo.rules.highs import HighsModel


def test_env_checker_and_episode():
    env = gym.make("HydroDispatch-v0", case="case3", horizon=6, load_scale=1.0)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,) and env.action_space.shape == (1,)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
        steps += 1
        done = terminated or truncated
        assert reward <= 0 and info["slack"] >= 0
    assert steps == 6 and obs[-1] == 1.0


def test_step_equals_the_target_lp():
    """A step's reward is minus the optimum of the one-stage LP with the same volume,
    inflow and target, solved directly."""
    env = mdpo.envs.hydro.HydroDispatchEnv("bolivia", horizon=3)
    obs, _ = env.reset(seed=1)
    action = np.linspace(-0.8, 0.8, 11)
    volumes = env.volumes.copy()
    inflow = env.inflow.copy()  # observed before the decision (hazard-decision)
    np.testing.assert_allclose(obs[11:22], inflow, rtol=1e-6)
    _, reward, _, _, info = env.step(action)
    target = (action + 1) / 2 * env.max_volume
    problem = build_deterministic_equivalent(
        env.case, inflow[None], volume_in=volumes, targets=target[None]
    )
    assert -reward == pytest.approx(HighsModel(problem.program).solve().objective, rel=1e-9)
    np.testing.assert_allclose(info["target"], target)


def test_ppo_runs_on_it():
    from mdpo import PPO

    agent = PPO(
        "MlpPolicy",
        "HydroDispatch-v0",
        n_steps=32,
        batch_size=16,
        n_epochs=1,
        env_kwargs={"case": "case3", "horizon": 8, "load_scale": 1.0},
        seed=0,
        device="cpu",
    )
    agent.learn(64)
    assert agent.num_timesteps == 64


def test_fixed_scenario_and_stage_record():
    """``reset(options={"scenario": ...})`` fixes the inflows; the recorded operating cost is
    the LP optimum minus the slack penalty, the recorded generation meets the load."""
    env = mdpo.envs.hydro.HydroDispatchEnv("bolivia", horizon=4)
    path = np.array([3, 0, 14, 7])
    action = np.full(11, 0.3)
    seen = []
    for seed in (0, 1):
        env.reset(seed=seed, options={"scenario": path})
        inflows = []
        for t in range(4):
            inflows.append(env.inflow.copy())
            _, reward, _, _, info = env.step(action)
            record = info["record"]
            penalty = env.problem.slack_penalty * info["slack"]
            assert info["stage_cost"] == pytest.approx(-reward - penalty, rel=1e-9, abs=1e-6)
            demand = 0.6 * env.case.base_mva * sum(load.pd for load in env.case.loads)
            supplied = record["thermal"] + record["hydro"] + record["deficit"]
            assert supplied == pytest.approx(demand, rel=1e-9)  # DC flow is lossless
            np.testing.assert_allclose(inflows[-1], env.case.stage_inflows(t)[0][path[t]])
        seen.append(np.array(inflows))
    np.testing.assert_array_equal(seen[0], seen[1])
    with pytest.raises(ValueError, match="options\\['scenario'\\] must be 4 integer"):
        env.reset(options={"scenario": [0, 1, 2]})
    with pytest.raises(ValueError, match="in \\[0, 15\\)"):
        env.reset(options={"scenario": [0, 1, 2, 15]})
