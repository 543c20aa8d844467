"""Agent behaviour: seeding, schedules, logging keys, callbacks, evaluation, env handling."""

import glob

import gymnasium as gym
import numpy as np
import pytest
import torch
from toy import make_counter

from mdpo import PPO, BaseCallback, CheckpointCallback, EvalCallback, evaluate_policy
from mdpo.core.utils import linear_schedule


class Record(BaseCallback):
    def __init__(self):
        super().__init__()
        self.returns = []
        self.calls = 0

    def _on_step(self):
        self.calls += 1
        return True

    def _on_rollout_end(self):
        self.returns.append([r for r, _ in self.model.runner.ep_info_buffer])


def run(seed, steps=1024):
    agent = PPO(
        "MlpPolicy", "CartPole-v1", n_steps=128, batch_size=32, n_envs=2, seed=seed, device="cpu"
    )
    record = Record()
    agent.learn(steps, callback=record)
    return agent, record


def test_same_seed_same_learning_curve():
    a, rec_a = run(7)
    b, rec_b = run(7)
    assert rec_a.returns == rec_b.returns
    for key, value in a.policy.state_dict().items():
        torch.testing.assert_close(b.policy.state_dict()[key], value, rtol=0, atol=0)
    c, rec_c = run(8)
    assert rec_c.returns != rec_a.returns


def test_agent_stream_is_not_the_weight_init_stream():
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=5, device="cpu")
    torch.manual_seed(5)  # the stream the weights were drawn from
    assert not torch.equal(torch.randn(100), torch.randn(100, generator=agent.rng))


def test_callback_steps_and_stop():
    agent, record = run(0, steps=512)
    assert record.calls == 512 // 2 and agent.num_timesteps == 512

    class StopAt(BaseCallback):
        def _on_step(self):
            return self.num_timesteps < 100

    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0, device="cpu")
    agent.learn(10_000, callback=StopAt())
    assert agent.num_timesteps == 100 and agent._n_updates == 10  # one full rollout trained


def test_function_callback_and_list():
    seen = []
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu")
    agent.learn(64, callback=[lambda loc, glob_: seen.append(1) or True])
    assert len(seen) == 64


def test_learning_rate_schedule_reaches_the_optimizer():
    agent = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        learning_rate=linear_schedule(1e-3, 0.0),
        seed=0,
        device="cpu",
    )
    rates = []

    class Watch(BaseCallback):
        def _on_rollout_start(self):
            rates.append(self.model.optimizer.param_groups[0]["lr"])

    agent.learn(256, callback=Watch())
    # set at each train(): after 64, 128, 192 of 256 steps -> 1e-3 · (1 − k/4)
    np.testing.assert_allclose(rates[1:], [7.5e-4, 5e-4, 2.5e-4])


def test_tensorboard_keys_and_eval_callback(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=64,
        batch_size=32,
        seed=0,
        device="cpu",
        tensorboard_log=str(tmp_path / "tb"),
    )
    evaluation = EvalCallback(
        "CartPole-v1",
        n_eval_episodes=2,
        eval_freq=64,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "eval"),
        verbose=0,
    )
    agent.learn(256, callback=evaluation, tb_log_name="run")
    agent.learn(128, tb_log_name="run")  # a second run gets its own folder
    folders = sorted(glob.glob(str(tmp_path / "tb" / "run_*")))
    assert [f.rsplit("_", 1)[1] for f in folders] == ["1", "2"]
    events = EventAccumulator(folders[0])
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for key in (
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "time/fps",
        "train/value_loss",
        "train/policy_gradient_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/entropy_loss",
        "train/explained_variance",
        "train/learning_rate",
        "eval/mean_reward",
    ):
        assert key in tags, key
    assert len(events.Scalars("eval/mean_reward")) == 4
    assert (tmp_path / "best" / "best_model.zip").exists()
    rows = (tmp_path / "eval" / "evaluations.csv").read_text().splitlines()
    assert rows[0].startswith("timesteps,mean_reward") and len(rows) == 5
    assert evaluation.best_mean_reward == max(np.mean(r) for r in evaluation.evaluations_results)


def test_checkpoint_callback_files(tmp_path):
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu")
    agent.learn(128, callback=CheckpointCallback(40, str(tmp_path), name_prefix="m"))
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"m_40_steps.zip", "m_80_steps.zip", "m_120_steps.zip"}
    assert PPO.load(str(tmp_path / "m_80_steps.zip")).num_timesteps == 80


def test_evaluate_policy_counts_episodes_exactly():
    class Fixed:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros(len(obs), np.int64), state

    venv = gym.vector.SyncVectorEnv(
        [lambda: make_counter(terminate_at=5), lambda: make_counter(terminate_at=3)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    returns, lengths = evaluate_policy(
        Fixed(), venv, n_eval_episodes=5, return_episode_rewards=True
    )
    # targets per env: (5 + 0)//2 = 2 and (5 + 1)//2 = 3 episodes
    assert sorted(lengths) == [3, 3, 3, 5, 5] and sorted(returns) == [3, 3, 3, 5, 5]
    mean, std = evaluate_policy(Fixed(), lambda: make_counter(terminate_at=4), n_eval_episodes=3)
    assert (mean, std) == (4.0, 0.0)


def test_discrete_predict_and_set_env():
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu")
    action, state = agent.predict(np.zeros(4, np.float32), deterministic=True)
    assert action.shape == () and action in (0, 1) and state is None
    actions, _ = agent.predict(np.zeros((3, 4), np.float32))
    assert actions.shape == (3,)
    with pytest.raises(ValueError, match="new env's observation space"):
        agent.set_env("Acrobot-v1")
    agent.set_env("CartPole-v1")
    agent.learn(32)
    assert agent.get_env().num_envs == 1


@pytest.mark.parametrize("vec_env_cls", ["async", "gymnasium-sync"])
def test_other_vector_envs_give_the_same_rollout(vec_env_cls):
    """The three vector env kinds step the same envs: same seed, same learning."""
    results = []
    for cls in ("sync", vec_env_cls):
        agent = PPO(
            "MlpPolicy",
            "CartPole-v1",
            n_envs=2,
            vec_env_cls=cls,
            n_steps=64,
            batch_size=64,
            n_epochs=2,
            seed=3,
            device="cpu",
        )
        agent.learn(256)
        results.append((list(agent.runner.ep_info_buffer), agent.policy.state_dict()))
        agent.get_env().close()
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], value, rtol=0, atol=0)


def test_progress_bar_runs(capsys):
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0, device="cpu")
    agent.learn(128, progress_bar=True)
    assert "128" in capsys.readouterr().err
