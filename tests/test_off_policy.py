"""SAC and off-policy MDPO: losses and updates against independent computations, the replay
buffer's bootstrapping masks, the π_k refresh schedule, files and errors."""

import math

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch.distributions import Normal
from torch.nn import functional as F
from toy import make_counter

from mdpo import SAC, ModelFileError, OffPolicyMDPO
from mdpo.rl.buffers import ReplaySample
from mdpo.rl.mdpo_off import tsallis_log

ENV = "Hopper-v5"  # 3-dimensional actions: per-dimension sums are exercised


def random_batch(agent, size, seed):
    gen = torch.Generator().manual_seed(seed)
    obs_dim, act_dim = agent.policy.obs_dim, agent.policy.action_dim
    return ReplaySample(
        obs=torch.randn((size, obs_dim), generator=gen),
        actions=torch.rand((size, act_dim), generator=gen) * 2 - 1,
        next_obs=torch.randn((size, obs_dim), generator=gen),
        rewards=torch.randn((size,), generator=gen),
        dones=(torch.rand((size,), generator=gen) < 0.3).float(),
    )


def sb3_critic_state(critic):
    """Our stacked critics as SB3's ``qf{j}.{2i}`` Linear layers."""
    state = {}
    for i, (weight, bias) in enumerate(zip(critic.weights, critic.biases)):
        for j in range(critic.n_critics):
            state[f"qf{j}.{2 * i}.weight"] = weight[j].T.detach().clone()
            state[f"qf{j}.{2 * i}.bias"] = bias[j, 0].detach().clone()
    return state


# ------------------------------------------------------------------------------------ SAC
@pytest.mark.parametrize("ent_coef", ["auto", 0.05])
def test_sac_update_equals_sb3(ent_coef, monkeypatch):
    """Three gradient steps from the same weights, minibatches and noise: actor, critics,
    targets, temperature and the logged losses all equal SB3's ``SAC.train``."""
    kwargs = dict(batch_size=16, learning_rate=1e-3, tau=0.1, ent_coef=ent_coef)
    arch = dict(policy_kwargs={"net_arch": [8, 8]})
    ours = SAC("MlpPolicy", ENV, seed=0, device="cpu", **kwargs, **arch)
    theirs = SB3SAC("MlpPolicy", ENV, seed=0, device="cpu", **kwargs, **arch)
    theirs.set_logger(configure(None, []))
    actor_state = {k: v.clone() for k, v in ours.policy.actor.state_dict().items()}
    theirs.actor.load_state_dict(actor_state)
    theirs.critic.load_state_dict(sb3_critic_state(ours.policy.critic))
    # make the targets differ from the critics so that the target update is visible
    with torch.no_grad():
        ours.critic_target_params.data.add_(0.05)
    theirs.critic_target.load_state_dict(sb3_critic_state(ours.policy.critic_target))

    steps = 3
    batches = [random_batch(ours, 16, seed) for seed in range(steps)]
    sb3_batches = iter(
        ReplayBufferSamples(b.obs, b.actions, b.next_obs, b.dones[:, None], b.rewards[:, None])
        for b in batches
    )
    our_batches = iter(batches)
    monkeypatch.setattr(theirs.replay_buffer, "sample", lambda *a, **k: next(sb3_batches))
    monkeypatch.setattr(ours.replay_buffer, "sample", lambda *a, **k: next(our_batches))
    ours.train_rng = torch.Generator().manual_seed(7)
    twin = torch.Generator().manual_seed(7)
    noises = iter([torch.randn((16, 3), generator=twin) for _ in range(2 * steps)])
    monkeypatch.setattr(
        DiagGaussianDistribution,
        "sample",
        lambda self: self.distribution.mean + self.distribution.stddev * next(noises),
    )

    theirs.train(gradient_steps=steps, batch_size=16)
    ours.train(steps)

    for key, value in theirs.actor.state_dict().items():
        torch.testing.assert_close(ours.policy.actor.state_dict()[key], value, msg=key)
    for name in ("critic", "critic_target"):
        expected = getattr(theirs, name).state_dict()
        for key, value in sb3_critic_state(getattr(ours.policy, name)).items():
            torch.testing.assert_close(value, expected[key], msg=f"{name}.{key}")
    if ent_coef == "auto":
        torch.testing.assert_close(ours.ent_coef_module.log_value, theirs.log_ent_coef)
    logged = theirs.logger.name_to_value
    keys = ["actor_loss", "critic_loss", "ent_coef"] + (["ent_coef_loss"] * (ent_coef == "auto"))
    for key in keys:
        mine = float(ours._train_stats[key]) / ours._train_stats_count
        assert mine == pytest.approx(logged[f"train/{key}"], rel=1e-4, abs=1e-6), key
    assert ours._n_updates == theirs._n_updates == steps


def test_sac_hand_computed_losses():
    """One-unit networks with set weights: the first step's losses by hand."""
    env = make_counter(continuous=True, max_episode_steps=5)
    agent = SAC(
        "MlpPolicy",
        env,
        ent_coef=0.5,
        batch_size=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": []},
    )
    actor, critic = agent.policy.actor, agent.policy.critic
    with torch.no_grad():  # mean = 0.1·t, log_std = -1 ; Q_j = w_j·(t, start, a) + b_j
        actor.mu.weight.copy_(torch.tensor([[0.1, 0.0]]))
        actor.mu.bias.zero_()
        actor.log_std.weight.zero_()
        actor.log_std.bias.fill_(-1.0)
        critic.weights[0].copy_(torch.tensor([[[1.0], [0.0], [2.0]], [[0.5], [0.0], [-1.0]]]))
        critic.biases[0].copy_(torch.tensor([[[0.0]], [[1.0]]]))
        agent.critic_target_params.data.copy_(agent.critic_params.data)
    batch = ReplaySample(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.5]]),
        torch.tensor([[2.0, 0.0]]),
        torch.tensor([1.0]),
        torch.tensor([0.0]),
    )
    agent.replay_buffer.sample = lambda *a, **k: batch
    agent.train_rng = torch.Generator().manual_seed(3)
    twin = torch.Generator().manual_seed(3)
    eps, eps_next = (
        torch.randn((1, 1), generator=twin).item(),
        torch.randn((1, 1), generator=twin).item(),
    )
    agent.train(1)

    sigma = math.exp(-1.0)

    def log_pi(mean, eps):
        u = mean + sigma * eps
        return -0.5 * eps**2 + 1.0 - 0.5 * math.log(2 * math.pi) - math.log(
            1 - math.tanh(u) ** 2 + 1e-6
        ), math.tanh(u)

    lp_next, a_next = log_pi(0.2, eps_next)
    q_next = min(1.0 * 2 + 2 * a_next, 0.5 * 2 - 1.0 * a_next + 1.0)
    target = 1.0 + 0.99 * (q_next - 0.5 * lp_next)
    q1, q2 = 1.0 + 2 * 0.5, 0.5 - 0.5 + 1.0
    critic_loss = 0.5 * ((q1 - target) ** 2 + (q2 - target) ** 2)
    stats = agent._train_stats
    assert float(stats["critic_loss"]) == pytest.approx(critic_loss, rel=1e-5)
    # the actor sees the critics after their step; recompute Q with the updated weights
    lp, a = log_pi(0.1, eps)
    with torch.no_grad():
        q_pi = critic(batch.obs, torch.tensor([[a]])).min(0).values.item()
    assert float(stats["actor_loss"]) == pytest.approx(0.5 * lp - q_pi, rel=1e-5)


# ------------------------------------------------------------------------------------ MDPO
def reference_mdpo_losses(agent, batch, noise):
    """Off-policy MDPO's losses from the equations, in float64, with separate layers and
    torch.distributions (nothing shared with the implementation under test)."""
    c, lam, q_prime = agent.kl_coef, agent.ent_coef, agent.tsallis_q
    d = lambda t: t.detach().double().clone()  # noqa: E731

    def actor_params(actor):
        return {k: d(v).requires_grad_() for k, v in actor.state_dict().items()}

    def actor_forward(p, obs):
        h = obs
        for i in (0, 2):
            h = F.relu(F.linear(h, p[f"latent_pi.{i}.weight"], p[f"latent_pi.{i}.bias"]))
        mean = F.linear(h, p["mu.weight"], p["mu.bias"])
        log_std = F.linear(h, p["log_std.weight"], p["log_std.bias"]).clamp(-20, 2)
        return mean, log_std

    def critic_params(ensemble):
        return [
            [
                (d(w[j]).requires_grad_(), d(b[j, 0]).requires_grad_())
                for w, b in zip(ensemble.weights, ensemble.biases)
            ]
            for j in range(ensemble.n_critics)
        ]

    def critic_forward(layers, x):
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            x = F.relu(x) if i < len(layers) - 1 else x
        return x.squeeze(-1)

    def log_density(mean, log_std, u):  # per dimension, squashed
        return Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)

    def logq(per_dim):
        if q_prime == 1.0:
            return per_dim.sum(-1)
        q = 2.0 - q_prime
        x = per_dim.exp().clamp_min(1e-6)
        return ((x ** (1 - q) - 1) / (1 - q)).sum(-1)

    pa = actor_params(agent.policy.actor)
    old = {k: d(v) for k, v in agent.policy.old_actor.state_dict().items()}
    qs = critic_params(agent.policy.critic)
    v = critic_params(agent.policy.value)[0]
    v_target = [
        (d(w[0]), d(b[0, 0]))
        for w, b in zip(agent.policy.value_target.weights, agent.policy.value_target.biases)
    ]
    obs, next_obs = d(batch.obs), d(batch.next_obs)
    mean, log_std = actor_forward(pa, obs)
    u = mean + log_std.exp() * noise.double()
    a = torch.tanh(u)
    old_mean, old_log_std = actor_forward(old, obs)
    log_pi, log_pi_old = (
        logq(log_density(mean, log_std, u)),
        logq(log_density(old_mean, old_log_std, u)),
    )
    q_pi = [critic_forward(layers, torch.cat([obs, a], -1)) for layers in qs]
    actor_loss = (c * log_pi + q_prime * (lam - c) * log_pi_old - q_pi[0]).mean()
    actor_loss = actor_loss + 1e-3 * (mean**2).mean() + 1e-3 * (log_std**2).mean()
    backup = d(batch.rewards) + (1 - d(batch.dones)) * agent.gamma * critic_forward(
        v_target, next_obs
    )
    v_backup = (torch.minimum(q_pi[0], q_pi[1]) - lam * log_pi).detach()
    q_data = [critic_forward(layers, torch.cat([obs, d(batch.actions)], -1)) for layers in qs]
    critic_loss = sum(0.5 * ((q - backup) ** 2).mean() for q in q_data)
    critic_loss = critic_loss + 0.5 * ((critic_forward(v, obs) - v_backup) ** 2).mean()
    actor_grad = torch.autograd.grad(actor_loss, list(pa.values()))
    flat_q = [t for layers in qs for layer in layers for t in layer]
    # our flat critic vector holds stacked weights [n, in, out] layer by layer, then V
    q_grads = torch.autograd.grad(critic_loss, flat_q + [t for layer in v for t in layer])
    return actor_loss, critic_loss, actor_grad, q_grads


@pytest.mark.parametrize("tsallis_q", [1.0, 1.5])
def test_mdpo_off_losses_and_gradients_equal_reference(tsallis_q):
    agent = OffPolicyMDPO(
        "MlpPolicy",
        ENV,
        seed=0,
        device="cpu",
        batch_size=32,
        tsallis_q=tsallis_q,
        kl_coef=0.7,
        policy_kwargs={"net_arch": [8, 8]},
    )
    with torch.no_grad():  # π_k different from π_θ, V' from V
        agent.old_actor_params.data.add_(0.1 * torch.randn_like(agent.old_actor_params.data))
        agent.value_target_params.data.add_(0.05)
    batch = random_batch(agent, 32, seed=1)
    agent.replay_buffer.sample = lambda *a, **k: batch
    agent.train_rng = torch.Generator().manual_seed(4)
    noise = torch.randn((32, 3), generator=torch.Generator().manual_seed(4))
    actor_loss, critic_loss, actor_grad, critic_grads = reference_mdpo_losses(agent, batch, noise)
    agent.train(1)

    stats = agent._train_stats
    assert float(stats["actor_loss"]) == pytest.approx(actor_loss.item(), rel=1e-4)
    assert float(stats["critic_loss"] + stats["value_loss"]) == pytest.approx(
        critic_loss.item(), rel=1e-4
    )
    ours_actor = agent.actor_params.grad
    torch.testing.assert_close(
        ours_actor, torch.cat([g.reshape(-1) for g in actor_grad]).float(), rtol=1e-3, atol=1e-5
    )
    # the reference's grads are per critic and layer (w, b); ours are stacked over critics,
    # all weights then all biases, for the Q ensemble and then V
    n_layers = len(agent.policy.critic.weights)
    per_q = [critic_grads[2 * n_layers * j : 2 * n_layers * (j + 1)] for j in range(2)]
    per_v = [critic_grads[4 * n_layers :]]

    def stacked(per_critic):
        weights = [torch.stack([c[2 * i] for c in per_critic]) for i in range(n_layers)]
        biases = [torch.stack([c[2 * i + 1] for c in per_critic]) for i in range(n_layers)]
        return [t.reshape(-1) for t in weights + biases]

    expected = torch.cat(stacked(per_q) + stacked(per_v)).float()
    torch.testing.assert_close(agent.critic_params.grad, expected, rtol=1e-3, atol=1e-5)


def test_tsallis_log():
    x = torch.tensor([1e-3, 0.2, 1.0, 3.0, 50.0])
    torch.testing.assert_close(tsallis_log(x, 1.0), torch.log(x))
    torch.testing.assert_close(tsallis_log(x, 1.5), 2.0 * (1.0 - x.pow(-0.5)))  # closed form
    torch.testing.assert_close(tsallis_log(x, 1.0 + 1e-4), torch.log(x), rtol=1e-3, atol=1e-3)
    assert tsallis_log(torch.tensor([0.0]), 1.0).item() == pytest.approx(math.log(1e-6))


@pytest.mark.parametrize("tsallis_q", [1.0, 1.7])
def test_mdpo_actor_loss_with_uniform_old_policy_and_c_equal_lambda_is_sacs(tsallis_q):
    """π_k uniform on [-1, 1]^d and c = λ: the proximity term vanishes and the loss is SAC's
    ``λ·log π − Q`` (with Q1)."""
    lam = 0.3
    agent = OffPolicyMDPO(
        "MlpPolicy", ENV, kl_coef=lam, ent_coef=lam, tsallis_q=tsallis_q, seed=0, device="cpu"
    )
    gen = torch.Generator().manual_seed(0)
    log_pi, q1 = torch.randn(64, generator=gen), torch.randn(64, generator=gen)
    uniform = torch.full((64,), -3 * math.log(2.0))
    sac = (lam * log_pi - q1).mean()
    assert agent.actor_objective(log_pi, uniform, q1).mean().item() == pytest.approx(sac.item())
    # and with c ≠ λ it is not
    agent.kl_coef = 1.0
    assert agent.actor_objective(log_pi, uniform, q1).mean().item() != pytest.approx(sac.item())


def test_old_policy_refreshed_every_m_steps():
    m = 50
    agent = OffPolicyMDPO(
        "MlpPolicy",
        "Pendulum-v1",
        old_policy_interval=m,
        learning_starts=20,
        batch_size=8,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    refreshes = []

    class Watch:
        last = None

    def record(_locals, _globals):
        current = agent.old_actor_params.data.clone()
        if Watch.last is not None and not torch.equal(current, Watch.last):
            refreshes.append(agent.num_timesteps)
        Watch.last = current
        return True

    agent.learn(230, callback=record)
    # the callback runs after each env step, before that step's update and refresh: a refresh
    # at step k is seen at step k + 1
    assert refreshes == [51, 101, 151, 201]


# ------------------------------------------------------------------------------------ buffer
@pytest.mark.parametrize("ending", ["terminate", "truncate"])
def test_replay_buffer_masks(ending):
    """Terminations are stored with done = 1, truncations with done = 0, both with the
    episode's real last observation as next_obs (not the next episode's first)."""
    env = (
        make_counter(terminate_at=4, continuous=True)
        if ending == "terminate"
        else make_counter(max_episode_steps=4, continuous=True)
    )
    agent = SAC(
        "MlpPolicy",
        env,
        learning_starts=1000,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    agent.learn(12)
    buf = agent.replay_buffer
    assert buf.size == 12
    t, next_t = buf.obs[:12, 0], buf.next_obs[:12, 0]
    torch.testing.assert_close(t, torch.tensor([0.0, 1, 2, 3] * 3))
    torch.testing.assert_close(next_t, torch.tensor([1.0, 2, 3, 4] * 3))
    ends = torch.tensor([0.0, 0, 0, 1] * 3)
    torch.testing.assert_close(buf.dones[:12], ends if ending == "terminate" else torch.zeros(12))
    # the episode's start value is kept in next_obs at the end (not the next reset's)
    torch.testing.assert_close(buf.next_obs[:12, 1], buf.obs[:12, 1])


def test_replay_buffer_wraps_and_round_trips(tmp_path):
    agent = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        buffer_size=50,
        learning_starts=1000,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    agent.learn(70)
    buf = agent.replay_buffer
    assert (buf.size, buf.pos) == (50, 20)
    path = agent.save_replay_buffer(str(tmp_path / "buffer"))
    other = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        buffer_size=50,
        seed=1,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    other.load_replay_buffer(path)
    for name in ("obs", "actions", "next_obs", "rewards", "dones"):
        torch.testing.assert_close(getattr(other.replay_buffer, name)[:50], getattr(buf, name)[:50])
    assert (other.replay_buffer.size, other.replay_buffer.pos) == (50, 20)
    small = SAC("MlpPolicy", "Pendulum-v1", buffer_size=10, seed=1, device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        small.load_replay_buffer(path)
    with pytest.raises(ModelFileError, match="mdpo-replay-buffer"):
        agent.save(str(tmp_path / "model"))
        other.load_replay_buffer(str(tmp_path / "model.zip"))


# ------------------------------------------------------------------------------------ API
@pytest.mark.parametrize("algo", [SAC, OffPolicyMDPO])
def test_save_load_predict_and_continue(algo, tmp_path):
    agent = algo(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=50,
        batch_size=16,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )
    agent.learn(120)
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    action, _ = agent.predict(obs, deterministic=True)
    assert action.shape == (5, 1) and np.all(np.abs(action) <= 2.0)
    path = agent.save(str(tmp_path / "agent"))
    loaded = algo.load(path, env="Pendulum-v1", device="cpu")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, rtol=1e-6)
    for name, module in agent._state_modules().items():
        mine, theirs = module.state_dict(), loaded._state_modules()[name].state_dict()
        for key in mine:
            if isinstance(mine[key], torch.Tensor):
                torch.testing.assert_close(theirs[key], mine[key], msg=f"{name}.{key}")
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 160


def test_discrete_action_space_refused():
    for algo in (SAC, OffPolicyMDPO):
        with pytest.raises(ValueError, match=r"Box action spaces; the env has Discrete\(2\)"):
            algo("MlpPolicy", "CartPole-v1", device="cpu")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ent_coef="automatic"), "ent_coef"),
        (dict(ent_coef=-1.0), "ent_coef"),
        (dict(tau=1.5), "tau"),
        (dict(train_freq=(1, "episode")), "train_freq"),
        (dict(gradient_steps=-2), "gradient_steps"),
        (dict(buffer_size=0), "buffer_size"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAC("MlpPolicy", "Pendulum-v1", device="cpu", **kwargs)


def test_bad_tsallis_coefficient():
    with pytest.raises(ValueError, match="tsallis_q"):
        OffPolicyMDPO("MlpPolicy", "Pendulum-v1", tsallis_q=2.5, device="cpu")


def test_critic_ensemble_members_equal_separate_networks():
    """The batched ensemble computes what separate Linear/ReLU stacks with its weights compute,
    and ``forward_member`` what ``forward`` computes for that member."""
    from mdpo.rl.networks import CriticEnsemble

    torch.manual_seed(0)
    ensemble = CriticEnsemble(5, [16, 8], "relu", n_critics=3)
    x, a = torch.randn(32, 3), torch.randn(32, 2)
    values = ensemble(x, a)
    assert values.shape == (3, 32)
    for j in range(3):
        h = torch.cat([x, a], -1)
        for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases)):
            h = h @ w[j] + b[j, 0]
            h = torch.relu(h) if i < 2 else h
        torch.testing.assert_close(values[j], h.squeeze(-1))
        torch.testing.assert_close(ensemble.forward_member(j, x, a), values[j])


def test_sac_learn_equals_sb3_end_to_end(monkeypatch):
    """Collection (warm-up and sampled actions), the replay buffer across truncations, and
    300 gradient steps: ``learn`` from the same weights, env seeds, action noise, minibatch
    indices and training noise ends with SB3's parameters."""
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.vec_env import DummyVecEnv

    steps, starts, limit = 400, 100, 60
    kwargs = dict(learning_starts=starts, batch_size=32, policy_kwargs={"net_arch": [16, 16]})
    ours = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        seed=3,
        device="cpu",
        env_kwargs={"max_episode_steps": limit},
        **copy_kwargs(kwargs),
    )
    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1", max_episode_steps=limit)])
    theirs = SB3SAC("MlpPolicy", venv, seed=3, device="cpu", **copy_kwargs(kwargs))
    theirs.actor.load_state_dict(ours.policy.actor.state_dict())
    theirs.critic.load_state_dict(sb3_critic_state(ours.policy.critic))
    theirs.critic_target.load_state_dict(sb3_critic_state(ours.policy.critic_target))

    # ours draws warm-up uniforms and action noise from rng, minibatch indices and training
    # noise from train_rng; SB3 gets the same draws from twin generators
    ours.rng, collection = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    ours.train_rng, training = torch.Generator().manual_seed(12), torch.Generator().manual_seed(12)
    space = theirs.action_space

    def uniform_action():
        u = torch.rand((1, 1), generator=collection).numpy()[0] * 2 - 1
        return (space.low + 0.5 * (u + 1.0) * (space.high - space.low)).astype(np.float32)

    def gaussian_sample(self):
        mean = self.distribution.mean
        generator = collection if mean.shape[0] == 1 else training
        return mean + self.distribution.stddev * torch.randn(mean.shape, generator=generator)

    def replay_sample(self, batch_size, env=None):
        upper = self.buffer_size if self.full else self.pos
        return self._get_samples(
            torch.randint(upper, (batch_size,), generator=training).numpy(), env=env
        )

    monkeypatch.setattr(space, "sample", uniform_action)
    monkeypatch.setattr(DiagGaussianDistribution, "sample", gaussian_sample)
    monkeypatch.setattr(ReplayBuffer, "sample", replay_sample)
    theirs.learn(steps)
    ours.learn(steps)

    assert ours._n_updates == theirs._n_updates == steps - starts
    for key, value in theirs.actor.state_dict().items():
        torch.testing.assert_close(
            ours.policy.actor.state_dict()[key], value, atol=1e-5, rtol=1e-4, msg=key
        )
    expected = theirs.critic.state_dict()
    for key, value in sb3_critic_state(ours.policy.critic).items():
        torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=1e-4, msg=key)
    torch.testing.assert_close(
        ours.ent_coef_module.log_value, theirs.log_ent_coef, atol=1e-6, rtol=1e-5
    )
    # SB3 keeps done and timeout apart and bootstraps when both are set: the same masks
    buffer = theirs.replay_buffer
    sb3_done = buffer.dones[:steps, 0] * (1 - buffer.timeouts[:steps, 0])
    np.testing.assert_allclose(ours.replay_buffer.dones[:steps].numpy(), sb3_done)
    assert buffer.timeouts[:steps, 0].sum() == steps // limit  # truncations were crossed


def copy_kwargs(kwargs):
    import copy

    return copy.deepcopy(kwargs)  # SB3 adds keys to the policy_kwargs it is given
