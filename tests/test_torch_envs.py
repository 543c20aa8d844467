"""Torch-native batched envs: step-for-step equivalence with gymnasium, autoreset, seeding,
the tensor runner against the NumPy runner, and agents training on them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mdpo.rl.runners import (
    Normalizer,
    TensorPolicy,
    TorchEnvRunner,
    TorchToNumpy,
    VecEnvRunner,
    check_env_id,
    make_vec_env,
    same_device,
)
from mdpo.rl.torch_classic import TORCH_ENVS, CartPole, Pendulum, make_torch_env

ENV_IDS = list(TORCH_ENVS)


def gym_observation(env_id: str, unwrapped: gym.Env) -> np.ndarray:
    """gymnasium's observation of its env's current state."""
    if env_id == "Pendulum-v1":
        return unwrapped._get_obs()
    if env_id == "Acrobot-v1":
        return unwrapped._get_ob()
    return np.array(unwrapped.state, dtype=np.float32)


def actions_for(env_id: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random actions, beyond the bounds for Box spaces (clipping is part of the dynamics);
    MountainCar pushes along its velocity and Acrobot mostly along its second joint's
    velocity, so that episodes reach the goal."""
    n = len(obs)
    if env_id == "CartPole-v1":
        return rng.integers(0, 2, n)
    if env_id == "Acrobot-v1":
        pump = np.where(obs[:, 5] > 0, 2, 0)
        return np.where(rng.random(n) < 0.2, rng.integers(0, 3, n), pump)
    if env_id == "Pendulum-v1":
        return rng.uniform(-2.5, 2.5, (n, 1)).astype(np.float32)
    push = np.where(obs[:, 1:2] >= 0, 1.0, -1.0)
    return (push + rng.uniform(-0.4, 0.4, (n, 1))).astype(np.float32)


def compare_with_gymnasium(
    env_id, seed, steps, n_envs=3, max_episode_steps=None, redraw_only_finished=True, **kwargs
):
    """Step the torch env and one gymnasium env per slot with the same actions; at every
    reset of the torch env, give gymnasium's env the same initial state. Returns the number
    of (terminated, truncated) episode ends seen.

    Acrobot is compared step by step from the torch env's state: torch's vectorized float64
    sin / cos differ from the C library's in the last bit for about 0.2% of arguments, and
    the driven double pendulum amplifies such differences until free-running trajectories
    part (measured: up to 2.3 apart within an episode, the flags still agreeing); every other
    env runs free over whole episodes."""
    env = make_torch_env(env_id, n_envs, max_episode_steps=max_episode_steps, **kwargs)
    env.redraw_only_finished = redraw_only_finished
    make_kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    gym_envs = [gym.make(env_id, **make_kwargs) for _ in range(n_envs)]
    obs, _ = env.reset(seed=seed)

    def restart(i: int) -> None:
        gym_envs[i].reset(seed=seed + i)  # resets the time limit; the state is then set
        gym_envs[i].unwrapped.state = env.state[i].double().numpy().copy()
        np.testing.assert_array_equal(
            obs[i].numpy(), gym_observation(env_id, gym_envs[i].unwrapped)
        )

    for i in range(n_envs):
        restart(i)
    rng = np.random.default_rng(seed)
    ends = np.zeros(2, int)
    follow = env_id == "Acrobot-v1"
    for _ in range(steps):
        actions = actions_for(env_id, obs.numpy(), rng)
        if follow:
            for i, g in enumerate(gym_envs):
                g.unwrapped.state = env.state[i].numpy().copy()
        obs, reward, terminated, truncated, info = env.step(torch.as_tensor(actions))
        for i, g in enumerate(gym_envs):
            g_obs, g_reward, g_terminated, g_truncated, _ = g.step(actions[i])
            np.testing.assert_allclose(info["final_obs"][i].numpy(), g_obs, rtol=1e-5, atol=1e-5)
            assert float(reward[i]) == pytest.approx(float(g_reward), rel=1e-6, abs=1e-6)
            assert (bool(terminated[i]), bool(truncated[i])) == (g_terminated, g_truncated)
            assert bool(info["_final_obs"][i]) == (g_terminated or g_truncated)
            if g_terminated or g_truncated:
                ends += (g_terminated, g_truncated)
                restart(i)
            else:
                np.testing.assert_array_equal(obs[i].numpy(), info["final_obs"][i].numpy())
    return ends


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_gymnasium_over_whole_episodes(env_id, seed):
    """float64 state (the default): observations, rewards and both flags as gymnasium's, over
    whole episodes and their resets, at gymnasium's own time limits."""
    steps = {"CartPole-v1": 600, "Pendulum-v1": 500, "MountainCarContinuous-v0": 600}
    ends = compare_with_gymnasium(env_id, seed, steps.get(env_id, 1100))
    assert ends.sum() >= 3  # whole episodes were compared, resets included
    if env_id != "Pendulum-v1":  # Pendulum never terminates
        assert ends[0] >= 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_matches_gymnasium_with_short_time_limits(env_id):
    """Truncations (and terminations) with a short limit, both sides built with it."""
    ends = compare_with_gymnasium(env_id, seed=3, steps=200, max_episode_steps=25)
    assert ends[1] >= 3


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_accelerator_autoreset_path_matches_gymnasium(env_id):
    """The autoreset of accelerators (all envs draw, ``torch.where`` keeps the finished ones'
    draws), forced on the CPU."""
    ends = compare_with_gymnasium(
        env_id, seed=7, steps=200, max_episode_steps=25, redraw_only_finished=False
    )
    assert ends[1] >= 3


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.bool])
def test_discrete_actions_of_any_integer_dtype(dtype):
    """Acrobot's torque and CartPole's force do not depend on the integer dtype (an unsigned
    0 - 1 would wrap around)."""
    for env_id, n in (("Acrobot-v1", 3), ("CartPole-v1", 2)):
        reference, other = make_torch_env(env_id, 4), make_torch_env(env_id, 4)
        reference.reset(seed=0)
        other.reset(seed=0)
        actions = torch.tensor([0, 1, 0, 1]) if dtype is torch.bool else torch.arange(4) % n
        expected = reference.step(actions.long())[0]
        torch.testing.assert_close(other.step(actions.to(dtype))[0], expected)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_float32_state_matches_gymnasium_one_step_at_a_time(env_id):
    """float32 state: each step from gymnasium's own state agrees to float32 precision (whole
    float32 trajectories of Pendulum and Acrobot drift apart, as the module says)."""
    env = make_torch_env(env_id, 64, dtype=torch.float32)
    g = gym.make(env_id).unwrapped
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(30):
        state = env.state.double().numpy().copy()
        actions = actions_for(env_id, obs.numpy(), rng)
        obs, reward, terminated, _, info = env.step(torch.as_tensor(actions))
        for i in range(64):
            g.state = state[i].copy()
            g.steps_beyond_terminated = None  # CartPole: a fresh step, not one past the end
            g_obs, g_reward, g_terminated, _, _ = g.step(actions[i])
            np.testing.assert_allclose(info["final_obs"][i].numpy(), g_obs, rtol=1e-5, atol=1e-5)
            assert float(reward[i]) == pytest.approx(float(g_reward), rel=1e-5, abs=1e-5)
            assert bool(terminated[i]) == g_terminated


def test_terminated_and_truncated_together_as_gymnasium():
    """From a fixed start (reset options low = high = 0) pushing right always ends at the same
    step K; with max_episode_steps = K both flags are set at once, as gymnasium's TimeLimit."""
    env = CartPole(2)
    env.reset(seed=0, options={"low": 0.0, "high": 0.0})
    assert torch.equal(env.state, torch.zeros(2, 4, dtype=torch.float64))
    right = torch.ones(2, dtype=torch.int64)
    k = 1
    while not env.step(right)[2].all():
        k += 1
    env = CartPole(2, max_episode_steps=k)
    g = gym.make("CartPole-v1", max_episode_steps=k)
    env.reset(options={"low": 0.0, "high": 0.0})
    g.reset(options={"low": 0.0, "high": 0.0})
    for _ in range(k):
        _, _, terminated, truncated, info = env.step(right)
        g_obs, _, g_terminated, g_truncated, _ = g.step(1)
    assert g_terminated and g_truncated
    assert terminated.all() and truncated.all()
    np.testing.assert_allclose(info["final_obs"][0].numpy(), g_obs, rtol=1e-6)


def test_autoreset_restarts_only_finished_envs():
    env = Pendulum(4, max_episode_steps=5)
    env.reset(seed=0)
    actions = torch.zeros(4, 1)
    for _ in range(2):
        env.step(actions)
    env.elapsed_steps[2:] = 4  # envs 2 and 3 are one step from their limit
    before = env.state.clone()
    obs, _, terminated, truncated, info = env.step(actions)
    assert truncated.tolist() == [False, False, True, True] and not terminated.any()
    assert info["_final_obs"].tolist() == [False, False, True, True]
    assert env.elapsed_steps.tolist() == [3, 3, 0, 0]
    # unfinished envs continue: the returned observation is the step's; finished ones restart
    np.testing.assert_array_equal(obs[:2].numpy(), info["final_obs"][:2].numpy())
    expected_final = Pendulum(2)._observe(Pendulum(2)._dynamics(before[2:].T, actions[2:])[0])
    np.testing.assert_allclose(info["final_obs"][2:].numpy(), expected_final.numpy(), rtol=1e-6)
    assert not torch.allclose(obs[2:], info["final_obs"][2:])
    th, thdot = env.state[2:].unbind(1)
    assert (th.abs() <= np.pi).all() and (thdot.abs() <= 1.0).all()  # Pendulum's start range


def test_seeding_is_reproducible_and_seeds_differ():
    def trajectory(seed):
        env = make_torch_env("Acrobot-v1", 8, max_episode_steps=20)
        out = [env.reset(seed=seed)[0]]
        for t in range(60):
            out.append(env.step(torch.full((8,), t % 3))[0])
        return torch.stack(out)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))


def test_spaces_are_gymnasium_s():
    for env_id in ENV_IDS:
        env, g = make_torch_env(env_id, 5), gym.make(env_id)
        assert env.single_observation_space == g.observation_space
        assert env.single_action_space == g.action_space
        assert env.max_episode_steps == g.spec.max_episode_steps
        assert env.observation_space.shape == (5, *g.observation_space.shape)
        obs, _ = env.reset(seed=0)
        assert obs.dtype == torch.float32 and obs.shape == (5, *g.observation_space.shape)
        assert all(env.single_observation_space.contains(o) for o in obs.numpy())


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no torch-native version of 'Hopper-v5'"):
        make_torch_env("Hopper-v5")
    with pytest.raises(ValueError, match="torch:MountainCar-v0"):
        check_env_id("torch:MountainCar-v0")
    with pytest.raises(ValueError, match="num_envs"):
        CartPole(0)
    with pytest.raises(ValueError, match="dtype"):
        make_torch_env("CartPole-v1", dtype="float16")
    with pytest.raises(ValueError, match="gravity"):
        make_torch_env("CartPole-v1", gravity=3.0)
    env = CartPole(3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(3, dtype=torch.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"integer actions of shape \(3,\)"):
        env.step(torch.zeros(3))
    with pytest.raises(ValueError, match="one integer seed"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="low=1.0 is greater than high=0.0"):
        env.reset(options={"low": 1.0, "high": 0.0})
    with pytest.raises(ValueError, match=r"reset options \['low', 'high'\], got \['reset_mask'\]"):
        env.reset(options={"reset_mask": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"\['x_init', 'y_init'\], got \['low'\]"):
        Pendulum(2).reset(options={"low": 0.0})
    pendulum = Pendulum(3)
    pendulum.reset()
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        pendulum.step(torch.zeros(3))


def test_devices(monkeypatch):
    """``auto`` is the CPU without CUDA; asking for CUDA without it is a clear error, from the
    env and from an agent, before anything runs."""
    from mdpo import PPO

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert CartPole(2, device="auto").device == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        CartPole(2, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        PPO("MlpPolicy", "torch:CartPole-v1", n_envs=4, device="cuda")
    agent = PPO("MlpPolicy", "torch:CartPole-v1", n_envs=4, n_steps=8, batch_size=32)
    assert agent.device == torch.device("cpu") and agent.get_env().device == agent.device
    with pytest.raises(ValueError, match="lives on cpu"):
        make_vec_env(CartPole(2), device="meta")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda"), torch.device("cuda:1"))


def linear_policy(obs_dim: int, env_id: str):
    """A fixed deterministic policy, as a tensor function and a NumPy one."""
    weights = torch.linspace(-1.0, 1.0, obs_dim)

    def act(obs: torch.Tensor) -> torch.Tensor:
        score = obs @ weights
        if env_id in ("CartPole-v1", "Acrobot-v1"):
            return (score > 0).long()
        return torch.tanh(score)[:, None]

    return act


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("normalize", [False, True])
def test_tensor_runner_equals_numpy_runner(env_id, normalize):
    """The same env behind the tensor runner and behind the NumPy runner (through
    :class:`TorchToNumpy`) gives the same rollouts, episode statistics and normalization
    statistics (the NumPy :class:`Normalizer` is the reference of the tensor one)."""
    n_envs, obs_dim = 5, TORCH_ENVS[env_id].single_observation_space.shape[0]
    act = linear_policy(obs_dim, env_id)
    runners = []
    for cls in (TorchEnvRunner, VecEnvRunner):
        env = make_torch_env(env_id, n_envs, max_episode_steps=15)
        venv = env if cls is TorchEnvRunner else TorchToNumpy(env)
        normalizer = Normalizer((obs_dim,), normalize, normalize, gamma=0.9)
        runners.append(cls(venv, torch.device("cpu"), normalizer, stats_window_size=50))
    tensor_runner, numpy_runner = runners
    for runner in runners:
        runner.reset(seed=4)

    def tensor_policy(obs, t):
        action = act(obs)
        return action, action

    def numpy_policy(obs, t):
        action = act(torch.from_numpy(obs)).numpy()
        return action, action

    def stop_after(k):  # a callback that stops the rollout after k steps
        calls = []
        return lambda: calls.append(1) or len(calls) < k

    for steps, stop in ((16, None), (16, 5), (16, None)):
        a = tensor_runner.rollout(steps, tensor_policy, stop and stop_after(stop))
        b = numpy_runner.rollout(steps, numpy_policy, stop and stop_after(stop))
        assert a.stopped == b.stopped == (stop is not None)
        assert len(a.rewards) == len(b.rewards) == (stop or steps)
        for field in ("obs", "actions", "rewards", "final_obs", "last_obs"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-5)
        for field in (
            "terminated",
            "truncated",
            "episode_starts",
            "final_step",
            "final_env",
            "last_episode_starts",
        ):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        if stop is None:
            assert len(a.final_step) >= n_envs  # episodes ended in every full rollout
    stats_a, stats_b = list(tensor_runner.ep_info_buffer), list(numpy_runner.ep_info_buffer)
    assert [length for _, length in stats_a] == [length for _, length in stats_b]
    np.testing.assert_allclose([r for r, _ in stats_a], [r for r, _ in stats_b], rtol=1e-6)
    if normalize:
        na, nb = tensor_runner.normalizer, numpy_runner.normalizer
        np.testing.assert_allclose(na.obs_rms.mean, nb.obs_rms.mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(na.obs_rms.var, nb.obs_rms.var, rtol=1e-5)
        np.testing.assert_allclose(na.ret_rms.var, nb.ret_rms.var, rtol=1e-5)
        np.testing.assert_allclose(na.returns, nb.returns, rtol=1e-6, atol=1e-7)
        assert na.obs_rms.count == nb.obs_rms.count


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_compiled_rollout_step_gives_the_eager_rollouts(env_id):
    """The runner on a compiled env, given a :class:`TensorPolicy` (noise per step, a fixed
    input), returns the rollouts of the runner on the eager env drawing for every env: every
    field, a rollout stopped by its callback included, and the same episode and
    normalization statistics afterwards."""
    n_envs, obs_dim, steps = 5, TORCH_ENVS[env_id].single_observation_space.shape[0], 16
    act = linear_policy(obs_dim, env_id)
    noise = torch.randn(steps, n_envs, generator=torch.Generator().manual_seed(0))

    def noisy(obs, noise_t, scale):
        action = act(obs + scale * noise_t[:, None])
        return action, action

    runners = []
    for compiled in (False, True):
        env = make_torch_env(env_id, n_envs, max_episode_steps=7, compile=compiled)
        env.redraw_only_finished = False
        normalizer = Normalizer((obs_dim,), True, True, gamma=0.9)
        runners.append(TorchEnvRunner(env, torch.device("cpu"), normalizer))
        runners[-1].reset(seed=2)
    eager, captured = runners
    policy = TensorPolicy(noisy, (noise,), (0.1,))

    def stop_after(k):
        calls = []
        return lambda: calls.append(1) or len(calls) < k

    for stop in (None, 5, None):
        a = eager.rollout(steps, policy, stop and stop_after(stop))
        b = captured.rollout(steps, policy, stop and stop_after(stop))
        assert a.stopped == b.stopped and len(b.rewards) == (stop or steps)
        for field in ("obs", "actions", "rewards", "final_obs", "last_obs"):
            torch.testing.assert_close(getattr(b, field), getattr(a, field), rtol=1e-5, atol=1e-5)
        for field in ("terminated", "truncated", "episode_starts", "final_step", "final_env"):
            assert torch.equal(getattr(b, field), getattr(a, field)), field
        assert torch.equal(b.last_episode_starts, a.last_episode_starts)
    assert captured._captured_step.checked  # the compiled step ran
    assert captured._captured_step.compiled is not captured._captured_step.eager
    episodes, reference = list(captured.ep_info_buffer), list(eager.ep_info_buffer)
    assert len(episodes) >= n_envs and [n for _, n in episodes] == [n for _, n in reference]
    np.testing.assert_allclose([r for r, _ in episodes], [r for r, _ in reference], rtol=1e-6)
    for rms in ("obs_rms", "ret_rms"):
        mine, theirs = getattr(captured.normalizer, rms), getattr(eager.normalizer, rms)
        np.testing.assert_allclose(mine.mean, theirs.mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(mine.var, theirs.var, rtol=1e-6)
        assert mine.count == theirs.count


def test_ppo_rollout_on_tensors_equals_numpy_path():
    """PPO's tensor collection path (torch env on its device) produces the same training
    batch as its NumPy path (the same env through :class:`TorchToNumpy`)."""
    from mdpo import PPO
    from mdpo.rl.callbacks import CallbackList

    batches = []
    for env in (CartPole(8, max_episode_steps=20), TorchToNumpy(CartPole(8, max_episode_steps=20))):
        agent = PPO("MlpPolicy", env, n_steps=32, batch_size=64, seed=3, device="cpu")
        agent._setup_learn(256, True, "PPO")
        callback = CallbackList([])
        callback.init_callback(agent)
        batches.append(agent.collect_rollouts(callback))
    for field in ("obs", "actions", "old_values", "old_log_prob", "advantages", "returns"):
        torch.testing.assert_close(getattr(batches[0], field), getattr(batches[1], field))


def test_sac_replay_buffer_on_tensors_equals_numpy_path():
    """SAC's collection (warm-up and policy actions) fills the same replay buffer from a torch
    env on its device as from the same env through the NumPy path."""
    from mdpo import SAC

    buffers = []
    for env in (Pendulum(2, max_episode_steps=30), TorchToNumpy(Pendulum(2, max_episode_steps=30))):
        agent = SAC("MlpPolicy", env, learning_starts=40, batch_size=16, seed=1, device="cpu")
        agent.learn(100)
        buffers.append(agent.replay_buffer)
    a, b = buffers
    assert a.size == b.size == 100
    for field in ("obs", "actions", "next_obs", "rewards", "dones"):
        torch.testing.assert_close(getattr(a, field)[: a.size], getattr(b, field)[: b.size])


@pytest.mark.parametrize(
    "algo,env_id",
    [
        ("TRPO", "torch:Acrobot-v1"),
        ("MDPO", "torch:MountainCarContinuous-v0"),
        ("OffPolicyMDPO", "torch:Pendulum-v1"),
    ],
)
def test_agents_train_unchanged_and_resume(algo, env_id, tmp_path):
    """Every agent family runs on torch envs, saves, loads onto a torch env and continues."""
    import mdpo as agents

    cls = getattr(agents, algo)
    extra = {"learning_starts": 20, "batch_size": 16} if algo == "OffPolicyMDPO" else {}
    extra |= {"n_steps": 32} if algo != "OffPolicyMDPO" else {}
    agent = cls("MlpPolicy", env_id, n_envs=4, seed=0, **extra)
    agent.learn(256)
    assert agent.num_timesteps == 256
    path = agent.save(str(tmp_path / "model"))
    loaded = cls.load(path, env=env_id)
    assert isinstance(loaded.runner, TorchEnvRunner)
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.num_timesteps == 384


@pytest.mark.learning
def test_ppo_solves_torch_cartpole():
    """PPO on 64 torch CartPoles reaches >= 475 (deterministic, 20 episodes of gymnasium's
    own CartPole-v1) within 100k steps at seed 0."""
    from mdpo import PPO
    from mdpo.rl.evaluation import evaluate_policy

    agent = PPO(
        "MlpPolicy",
        "torch:CartPole-v1",
        n_envs=64,
        n_steps=32,
        batch_size=512,
        n_epochs=10,
        learning_rate=1e-3,
        gae_lambda=0.95,
        gamma=0.99,
        seed=0,
        device="cpu",
    )
    agent.learn(100_000)
    mean, _ = evaluate_policy(agent, "CartPole-v1", n_eval_episodes=20, seed=0)
    assert mean >= 475, mean


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_compiled_step_computes_what_the_eager_step_does(env_id, device):
    """``compile_step()``: each step's arithmetic through torch.compile (a CUDA graph on a
    GPU) gives the eager step's observations, rewards, flags and final observations, from
    the same state, with the same draws (the eager env set to draw for every env, as the
    compiled one does), over episodes short enough that autoresets happen. Compared step by
    step from the eager env's state (the compiled kernels' sin / cos may differ in the last
    bit, which Acrobot and Pendulum amplify over free-running trajectories)."""
    n, rng = 6, np.random.default_rng(0)
    eager = make_torch_env(env_id, n, device, max_episode_steps=12)
    eager.redraw_only_finished = False
    compiled = make_torch_env(env_id, n, device, max_episode_steps=12).compile_step()
    assert compiled.redraw_only_finished is False
    obs_e, _ = eager.reset(seed=5)
    obs_c, _ = compiled.reset(seed=5)
    torch.testing.assert_close(obs_c, obs_e)
    ends = 0
    for _ in range(40):
        compiled.state = eager.state
        compiled.elapsed_steps = eager.elapsed_steps.clone()
        action = torch.as_tensor(actions_for(env_id, obs_e.cpu().numpy(), rng), device=device)
        out_e = eager.step(action)
        out_c = compiled.step(action)
        for got, expected in zip(out_c[:4], out_e[:4]):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out_c[4]["_final_obs"], out_e[4]["_final_obs"])
        torch.testing.assert_close(
            out_c[4]["final_obs"], out_e[4]["final_obs"], rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(compiled.elapsed_steps, eager.elapsed_steps)
        obs_e = out_e[0]
        ends += int(out_e[4]["_final_obs"].sum())
    assert ends >= n  # autoresets were exercised


def eager_and_compiled_ppo(env_id: str, max_episode_steps: int, **hyper):
    """Two PPO agents on ``env_id``: on the eager env set to draw new states for every env
    (as the compiled env does) and on the compiled env."""
    from mdpo import PPO

    def make(compiled: bool) -> PPO:
        env_kwargs = {"compile": compiled, "max_episode_steps": max_episode_steps}
        return PPO("MlpPolicy", env_id, env_kwargs=env_kwargs, **hyper)

    eager, compiled = make(False), make(True)
    eager.runner.venv.redraw_only_finished = False
    return eager, compiled


@pytest.mark.parametrize("device", DEVICES)
def test_an_agent_on_the_compiled_env_trains_as_on_the_eager_one(device):
    """``env_kwargs={"compile": True}`` reaches the torch env, and PPO on it trains as on the
    eager env drawing for every env (the same rollouts, so the same parameters): whole
    rollouts through the runner, which keeps observations and episode starts across steps
    (on CUDA the compiled step is a CUDA graph, whose outputs the next replay overwrites).
    A non-boolean value is one clear error."""
    eager, compiled = eager_and_compiled_ppo(
        "torch:CartPole-v1",
        20,
        n_envs=8,
        n_steps=32,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device=device,
    )
    assert compiled.runner.venv.redraw_only_finished is False
    for agent in (eager, compiled):
        agent.learn(512)
    assert len(compiled.runner.ep_info_buffer) > 10  # episodes ended (autoresets included)
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(compiled.policy.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert list(compiled.runner.ep_info_buffer) == list(eager.runner.ep_info_buffer)
    with pytest.raises(ValueError, match="compile must be true or false, got 'yes'"):
        make_torch_env("CartPole-v1", 2, compile="yes")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("env_id", ["torch:Pendulum-v1", "torch:Acrobot-v1"])
def test_the_captured_rollout_step_computes_what_the_eager_steps_do(env_id, device):
    """On a compiled env the runner compiles the whole rollout step (policy and sampling, env
    step, observation and reward normalization, episode statistics) as one function; PPO
    trained through it ends where PPO on the eager env (drawing for every env) ends: the
    same weights, normalization statistics, discounted returns and episodes. Continuous
    (Gaussian noise, clipping) and discrete (Gumbel-max) actions; episodes cut at 25 steps
    so that autoresets happen inside the compiled step."""
    eager, compiled = eager_and_compiled_ppo(
        env_id,
        25,
        n_envs=6,
        n_steps=40,
        batch_size=80,
        n_epochs=2,
        seed=3,
        device=device,
        normalize_obs=True,
        normalize_reward=True,
    )
    for agent in (eager, compiled):
        agent.learn(720)  # three rollouts
    captured = compiled.runner._captured_step
    assert captured is not None and captured.checked  # it ran, compiled:
    assert captured.compiled is not captured.eager
    assert eager.runner._captured_step is None
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(compiled.policy.state_dict()[key], value, rtol=1e-5, atol=1e-5)
    mine, theirs = compiled.normalizer, eager.normalizer
    for rms in ("obs_rms", "ret_rms"):
        for field in ("mean", "var"):
            np.testing.assert_allclose(
                getattr(getattr(mine, rms), field), getattr(getattr(theirs, rms), field), rtol=1e-6
            )
        assert getattr(mine, rms).count == getattr(theirs, rms).count
    np.testing.assert_allclose(mine.returns, theirs.returns, rtol=1e-6, atol=1e-9)
    episodes, reference = list(compiled.runner.ep_info_buffer), list(eager.runner.ep_info_buffer)
    assert len(episodes) == len(reference) >= 6 * (720 // 6 // 25)  # 120 steps per env
    assert [length for _, length in episodes] == [length for _, length in reference]
    np.testing.assert_allclose(
        [ret for ret, _ in episodes], [ret for ret, _ in reference], rtol=1e-5
    )


def test_a_compilation_that_fails_steps_eagerly_with_a_warning(monkeypatch):
    """Where torch.compile cannot compile (every compiled call raises, as on a platform
    without a C++ compiler), the compiled env steps and the runner's rollout step run
    eagerly after one warning each, and PPO trains as on the eager env."""

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    env = make_torch_env("CartPole-v1", 3, compile=True)
    env.reset(seed=0)
    with pytest.warns(RuntimeWarning, match=r"CartPole: torch.compile failed .* the env step"):
        env.step(torch.zeros(3, dtype=torch.long))
    eager, fallback = eager_and_compiled_ppo(
        "torch:CartPole-v1", 10, n_envs=4, n_steps=16, batch_size=32, n_epochs=1, seed=1
    )
    eager.learn(128)
    with pytest.warns(RuntimeWarning, match="the rollout step runs eagerly"):
        fallback.learn(128)
    for key, value in eager.policy.state_dict().items():
        torch.testing.assert_close(fallback.policy.state_dict()[key], value, rtol=0, atol=0)
