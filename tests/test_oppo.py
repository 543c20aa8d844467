"""Offline datasets, preference labels, OPPO and its behaviour-cloning baselines."""

from __future__ import annotations

import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from pendulum_mixture import mixture_dataset

from mdpo import BC, OPPO
from mdpo.cli.datasets import Teacher, collect, episodes_from_transitions, random_actor
from mdpo.offline.dataset import Episode, OfflineDataset
from mdpo.offline.oppo import masked_mse, norm_loss, weighted_triplet_loss
from mdpo.offline.preferences import (
    PreferencePairs,
    SegmentSampler,
    make_preferences,
    parse_labels,
    read_labels,
    scripted_labels,
    scripted_pairs,
    write_labels,
)

BOX1 = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
OBS2 = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


def hand_episode(length: int, first_reward: float, obs_offset: float = 0.0) -> Episode:
    """Observations ``[t + offset, -t]``, actions ``t / 10``, rewards ``first_reward + t``."""
    t = np.arange(length + 1, dtype=np.float32)
    obs = np.stack([t + obs_offset, -t], axis=1)
    actions = (np.arange(length, dtype=np.float32) / 10.0)[:, None]
    rewards = first_reward + np.arange(length, dtype=np.float64)
    terminations = np.zeros(length, bool)
    truncations = np.zeros(length, bool)
    truncations[-1] = True
    return Episode(obs, actions, rewards, terminations, truncations)


def hand_dataset() -> OfflineDataset:
    """Two episodes: 5 steps with rewards 0..4 and 3 steps with rewards 10..12."""
    return OfflineDataset(
        [hand_episode(5, 0.0), hand_episode(3, 10.0, 100.0)],
        "Pendulum-v1",
        OBS2,
        BOX1,
        ref_min_score=-10.0,
        ref_max_score=10.0,
    )


# ----------------------------------------------------------------------------------- datasets
def test_dataset_round_trip_through_minari(tmp_path, monkeypatch):
    import minari

    dataset = mixture_dataset(good=3, bad=2)
    dataset.info = {"kind": "test", "seed": 3}
    dataset.save("mdpo/pendulum/test-v0", root=str(tmp_path))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    loaded = minari.load_dataset("mdpo/pendulum/test-v0")
    assert loaded.total_episodes == len(dataset)
    assert loaded.total_steps == dataset.total_steps
    for ours, theirs in zip(dataset, loaded.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(theirs.observations, ours.observations)
        np.testing.assert_array_equal(theirs.actions, ours.actions)
        np.testing.assert_array_equal(theirs.rewards, ours.rewards)
        np.testing.assert_array_equal(theirs.terminations, ours.terminations)
        np.testing.assert_array_equal(theirs.truncations, ours.truncations)
    returns = dataset.returns
    np.testing.assert_allclose(
        100 * minari.get_normalized_score(loaded, returns), dataset.normalized_score(returns)
    )
    ours = OfflineDataset.load("mdpo/pendulum/test-v0", root=str(tmp_path))
    assert ours.env_id == "Pendulum-v1" and ours.info == {"kind": "test", "seed": 3}
    assert (ours.ref_min_score, ours.ref_max_score) == (
        dataset.ref_min_score,
        dataset.ref_max_score,
    )
    np.testing.assert_array_equal(ours.returns, returns)
    # by folder, and no overwrite without asking
    folder = os.path.join(str(tmp_path), "mdpo/pendulum/test-v0")
    assert len(OfflineDataset.load(folder)) == len(dataset)
    with pytest.raises(ValueError, match="already exists"):
        dataset.save("mdpo/pendulum/test-v0", root=str(tmp_path))
    dataset.save("mdpo/pendulum/test-v0", root=str(tmp_path), overwrite=True)


def test_dataset_errors(tmp_path, monkeypatch):
    from mdpo.offline import dataset as dataset_module

    with pytest.raises(FileNotFoundError, match="no Minari dataset 'mdpo/none/x-v0'"):
        OfflineDataset.load("mdpo/none/x-v0", root=str(tmp_path))
    discrete = gym.spaces.Discrete(2)
    with pytest.raises(ValueError, match="Box action spaces; CartPole-v1 has Discrete"):
        OfflineDataset([hand_episode(3, 0.0)], "CartPole-v1", OBS2, discrete)
    with pytest.raises(ValueError, match="needs 4 observations"):
        Episode(
            np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3), np.zeros(3, bool), np.zeros(3, bool)
        )
    no_refs = OfflineDataset([hand_episode(3, 0.0)], "Pendulum-v1", OBS2, BOX1)
    with pytest.raises(ValueError, match="no reference returns"):
        no_refs.normalized_score(1.0)
    # a metadata file that claims too many steps is refused before anything is read
    dataset = hand_dataset()
    path = dataset.save("mdpo/pendulum/big-v0", root=str(tmp_path))
    meta_path = os.path.join(path, "data", "metadata.json")
    import json

    with open(meta_path) as handle:
        meta = json.load(handle)
    meta["total_steps"] = 10**12
    with open(meta_path, "w") as handle:
        json.dump(meta, handle)
    with pytest.raises(ValueError, match="more than"):
        OfflineDataset.load("mdpo/pendulum/big-v0", root=str(tmp_path))
    # files that hold more than the metadata says are refused from their arrays' shapes
    small = hand_dataset()  # 8 steps
    path = small.save("mdpo/pendulum/liar-v0", root=str(tmp_path))
    meta_path = os.path.join(path, "data", "metadata.json")
    with open(meta_path) as handle:
        meta = json.load(handle)
    meta["total_steps"] = 1
    with open(meta_path, "w") as handle:
        json.dump(meta, handle)
    assert OfflineDataset.load("mdpo/pendulum/liar-v0", root=str(tmp_path)).total_steps == 8
    monkeypatch.setattr(dataset_module, "MAX_STEPS", 7)
    with pytest.raises(ValueError, match="hold 8 steps, more than the 7"):
        OfflineDataset.load("mdpo/pendulum/liar-v0", root=str(tmp_path))
    monkeypatch.setattr(dataset_module, "MAX_STEPS", 8)
    monkeypatch.setattr(dataset_module, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match="bytes of arrays, more than the 100"):
        OfflineDataset.load("mdpo/pendulum/liar-v0", root=str(tmp_path))


def test_top_episodes_and_normalized_score():
    dataset = hand_dataset()
    assert dataset.top_episodes(0.5).returns.tolist() == [33.0]  # 10 + 11 + 12
    assert dataset.top_episodes(1.0).returns.tolist() == [10.0, 33.0]
    np.testing.assert_allclose(dataset.normalized_score([0.0, 10.0]), [50.0, 100.0])


# ----------------------------------------------------------------------------------- segments
def test_segments_by_hand():
    sampler = SegmentSampler(hand_dataset(), 4)
    # episode 0 (5 steps) has starts 0 and 1; episode 1 (3 steps) one padded segment
    assert sampler.n_starts.tolist() == [2, 1]
    seg = sampler.gather(torch.tensor([0, 1]), torch.tensor([1, 0]))
    np.testing.assert_array_equal(seg.observations[0, :, 0].numpy(), [1, 2, 3, 4])
    np.testing.assert_array_equal(seg.actions[0, :, 0].numpy(), np.float32([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_array_equal(seg.timesteps[0].numpy(), [1, 2, 3, 4])
    assert seg.mask[0].tolist() == [True] * 4
    assert seg.returns[0].item() == 1 + 2 + 3 + 4
    # left padding: one empty position, then the 3 steps of episode 1
    assert seg.mask[1].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(seg.observations[1, :, 0].numpy(), [0, 100, 101, 102])
    np.testing.assert_array_equal(seg.timesteps[1].numpy(), [0, 0, 1, 2])
    assert seg.returns[1].item() == 10 + 11 + 12
    # sampling: episodes in proportion to their length, starts where a segment fits
    episode, start = sampler.sample(40_000, torch.Generator().manual_seed(0))
    share = (episode == 0).double().mean().item()
    assert abs(share - 5 / 8) < 0.01
    assert set(start[episode == 0].tolist()) == {0, 1} and set(start[episode == 1].tolist()) == {0}
    with pytest.raises(ValueError, match="start 2 of episode 0 .length 5. does not begin"):
        sampler.check(np.array([0]), np.array([2]))


def test_scripted_labels_and_ties():
    a = torch.tensor([3.0, 1.0, 2.0])
    b = torch.tensor([1.0, 3.0, 2.0])
    labels, keep = scripted_labels(a, b, "drop")
    assert labels.tolist() == [1.0, 0.0, 0.5] and keep.tolist() == [True, True, False]
    labels, keep = scripted_labels(a, b, "half")
    assert keep.tolist() == [True, True, True]
    sampler = SegmentSampler(hand_dataset(), 3)
    pairs = scripted_pairs(sampler, 500, torch.Generator().manual_seed(1), "drop")
    ra = sampler.gather(pairs.episode_a, pairs.start_a).returns
    rb = sampler.gather(pairs.episode_b, pairs.start_b).returns
    assert bool(((pairs.label == 1) == (ra > rb)).all()) and bool((ra != rb).all())


def test_label_file_round_trip_and_errors(tmp_path):
    sampler = SegmentSampler(hand_dataset(), 3)
    pairs = PreferencePairs(
        torch.tensor([0, 1]),
        torch.tensor([2, 0]),
        torch.tensor([1, 0]),
        torch.tensor([0, 1]),
        torch.tensor([1.0, 0.5]),
    )
    path = write_labels(str(tmp_path / "labels.csv"), pairs)
    read = read_labels(path, sampler)
    assert read.episode_a.tolist() == [0, 1] and read.start_a.tolist() == [2, 0]
    assert read.label.tolist() == [1.0, 0.5]
    prefs = make_preferences(f"file:{path},K=3", sampler)
    assert not prefs.fresh and len(prefs.batch(8, torch.Generator().manual_seed(0))) == 8
    bad = tmp_path / "bad.csv"
    bad.write_text("episode_a,start_a,episode_b,start_b,label\n0,0,1,0,1\n0,3,1,0,1\n")
    with pytest.raises(ValueError, match="start 3 of episode 0"):
        read_labels(str(bad), sampler)
    bad.write_text("episode_a,start_a,episode_b,start_b,label\n0,0,1,0,2\n")
    with pytest.raises(ValueError, match="line 2: label 2.0 is not in"):
        read_labels(str(bad), sampler)
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match="the header must be"):
        read_labels(str(bad), sampler)
    with pytest.raises(ValueError, match="unknown option"):
        parse_labels("scripted:K=20,size=3")
    with pytest.raises(ValueError, match="source must be"):
        parse_labels("human:K=20")
    with pytest.raises(ValueError, match="segments of 20 steps but the sampler's segments have 3"):
        make_preferences("scripted:K=20", sampler)


# ----------------------------------------------------------------------------------- losses
def test_triplet_and_norm_losses_by_hand():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    negative = torch.tensor([[0.0, 2.5], [0.0, 1.0]])
    eps = 1e-6
    # by hand: pair 1: |p| = 1, |n| = 2.5 -> max(1 - 2.5 + 1, 0) = 0
    #          pair 2: |p| = 3, |n| = 1   -> max(3 - 1 + 1, 0) = 3
    d = lambda x: math.sqrt(sum((0 - v + eps) ** 2 for v in x))  # noqa: E731
    expected = [max(d([1, 0]) - d([0, 2.5]) + 1, 0), max(d([0, 3]) - d([0, 1]) + 1, 0)]
    assert expected[0] == 0.0 and abs(expected[1] - 3.0) < 1e-5
    loss = weighted_triplet_loss(anchor, positive, negative)
    assert abs(loss.item() - sum(expected) / 2) < 1e-6
    torch_loss = torch.nn.TripletMarginLoss(margin=1.0, p=2)(anchor, positive, negative)
    assert abs(loss.item() - torch_loss.item()) < 1e-6
    # weights: a tie (weight 0) contributes nothing; weight 1 and 0.5 average as weights
    weighted = weighted_triplet_loss(anchor, positive, negative, torch.tensor([1.0, 0.0]))
    assert weighted.item() == 0.0
    weighted = weighted_triplet_loss(anchor, positive, negative, torch.tensor([1.0, 0.5]))
    assert abs(weighted.item() - 0.5 * expected[1] / 1.5) < 1e-6
    z = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])  # norms 5, 1, 0
    assert abs(norm_loss(z).item() - (16 + 0 + 1) / 3) < 1e-6
    predicted = torch.tensor([[[1.0], [2.0], [9.0]]])
    target = torch.tensor([[[0.0], [0.0], [0.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mse(predicted, target, mask).item() == (1 + 4) / 2


def test_oppo_losses_against_a_plain_computation():
    dataset = mixture_dataset(good=2, bad=2)
    agent = OPPO(
        "MlpPolicy",
        dataset,
        seed=0,
        segment_length=5,
        batch_size=6,
        encoder_kwargs=dict(hidden=16, n_layers=1, ff=32, dropout=0.0),
    )
    agent.model.eval()
    gen = torch.Generator().manual_seed(3)
    pairs = agent.preferences.batch(6, gen)
    seg_a = agent.sampler.gather(pairs.episode_a, pairs.start_a)
    seg_b = agent.sampler.gather(pairs.episode_b, pairs.start_b)
    total, parts = agent.losses(seg_a, seg_b, pairs.label)
    # a plain loop over the pairs
    him, pref, norm = 0.0, 0.0, 0.0
    z_star = agent.z_star
    for segs in (seg_a, seg_b):
        z = agent.encode(segs)
        errors = []
        for i in range(len(z)):
            zi = z[i] / z[i].norm()
            for t in range(5):
                if segs.mask[i, t]:
                    inp = torch.cat([segs.observations[i, t], zi])
                    out = torch.tanh(agent.policy.head(agent.policy.body(inp)))
                    errors.append(((out - segs.actions[i, t]) ** 2).mean())
        him += torch.stack(errors).mean().item()
        norm += torch.stack([(zi.norm() - 1) ** 2 for zi in z]).mean().item()
    za, zb = agent.encode(seg_a), agent.encode(seg_b)
    hinge = []
    for i in range(len(pairs)):
        p, n = (za[i], zb[i]) if pairs.label[i] == 1 else (zb[i], za[i])
        hinge.append(max((z_star - p + 1e-6).norm() - (z_star - n + 1e-6).norm() + 1.0, 0.0))
    pref = float((sum(hinge) / len(hinge)).detach())
    assert abs(parts["him"].item() - him) < 1e-5
    assert abs(parts["norm"].item() - norm) < 1e-5
    assert abs(parts["preference"].item() - pref) < 1e-5
    assert abs(total.item() - (him + 0.1 * pref + 0.1 * norm)) < 1e-5


def test_encoder_ignores_padding():
    """The authors' encoder summed padded tokens; ours must not see them."""
    dataset = OfflineDataset(
        [hand_episode(3, 0.0), hand_episode(8, 0.0)], "Pendulum-v1", OBS2, BOX1, -10.0, 10.0
    )
    agent = OPPO(
        "MlpPolicy",
        dataset,
        seed=0,
        segment_length=5,
        encoder_kwargs=dict(hidden=16, n_layers=2, ff=32, dropout=0.0),
    )
    agent.model.eval()
    seg = agent.sampler.gather(torch.tensor([0]), torch.tensor([0]))
    assert seg.mask[0].tolist() == [False, False, True, True, True]
    z = agent.encode(seg)
    seg.observations[0, :2] = 123.0
    seg.actions[0, :2] = -0.7
    seg.timesteps[0, :2] = 5
    torch.testing.assert_close(agent.encode(seg), z)


def test_z_star_moves_towards_preferred_encodings():
    """Triplet steps on z* alone with fixed encodings: preferred ones around +e1, the others
    around -e1; z* starts far away and ends nearer the preferred ones."""
    dataset = mixture_dataset(good=2, bad=2)
    agent = OPPO(
        "MlpPolicy",
        dataset,
        seed=0,
        z_dim=3,
        z_learning_rate=0.05,
        encoder_kwargs=dict(hidden=8, n_layers=1, ff=16, dropout=0.0),
    )
    with torch.no_grad():
        agent.model.z_star.copy_(torch.tensor([0.0, 4.0, -3.0]))
    gen = torch.Generator().manual_seed(0)
    preferred = torch.tensor([1.0, 0.0, 0.0]) + 0.1 * torch.randn(64, 3, generator=gen)
    other = torch.tensor([-1.0, 0.0, 0.0]) + 0.1 * torch.randn(64, 3, generator=gen)
    label = (torch.rand(64, generator=gen) < 0.5).float()  # which side holds the preferred one
    z_a = torch.where(label[:, None] == 1, preferred, other)
    z_b = torch.where(label[:, None] == 1, other, preferred)

    def distances():
        zs = agent.z_star
        return (zs - preferred.mean(0)).norm().item(), (zs - other.mean(0)).norm().item()

    start_pos, start_neg = distances()
    for _ in range(300):
        loss = agent.z_star_loss(z_a, z_b, label)
        agent.z_optimizer.zero_grad()
        loss.backward()
        agent.z_optimizer.step()
    end_pos, end_neg = distances()
    assert end_pos < start_pos - 1.0
    assert end_pos + 1.0 < end_neg  # the margin holds on average
    assert agent.z_star_loss(z_a, z_b, label).item() < 0.05


def test_train_step_descends_and_refreshes_nothing_else():
    dataset = mixture_dataset(good=2, bad=2)
    agent = OPPO(
        "MlpPolicy",
        dataset,
        seed=0,
        batch_size=16,
        warmup_steps=0,
        learning_rate=1e-3,
        encoder_learning_rate=1e-3,
        encoder_kwargs=dict(hidden=16, n_layers=1, ff=32, dropout=0.0),
    )
    agent._setup_learn(10, True, "test")
    gen_state = agent.rng.get_state()
    pairs = agent.preferences.batch(16, agent.rng)
    agent.rng.set_state(gen_state)
    seg_a = agent.sampler.gather(pairs.episode_a, pairs.start_a)
    seg_b = agent.sampler.gather(pairs.episode_b, pairs.start_b)
    before, _ = agent.losses(seg_a, seg_b, pairs.label)
    z_before = agent.z_star
    agent.train_step()
    after, _ = agent.losses(seg_a, seg_b, pairs.label)
    assert after.item() < before.item()
    assert not torch.equal(agent.z_star, z_before)


# ----------------------------------------------------------------------------------- policies
def test_transformer_policy_is_causal_and_predict_gives_z_star_at_every_step():
    dataset = mixture_dataset(good=2, bad=1)
    agent = OPPO(
        "TransformerPolicy",
        dataset,
        seed=0,
        segment_length=4,
        policy_kwargs=dict(hidden=16, n_layers=2, ff=32, dropout=0.0),
        encoder_kwargs=dict(hidden=16, n_layers=1, ff=32, dropout=0.0),
    )
    agent.model.eval()
    seg = agent.sampler.gather(torch.tensor([0]), torch.tensor([10]))
    z = agent.context(agent.z_star[None])
    out = agent.model.policy(seg.observations, seg.actions, seg.timesteps, seg.mask, z)
    changed = agent.sampler.gather(torch.tensor([0]), torch.tensor([10]))
    changed.observations[0, 2:] += 5.0
    changed.actions[0, 1:] += 0.5
    out2 = agent.model.policy(
        changed.observations, changed.actions, changed.timesteps, changed.mask, z
    )
    torch.testing.assert_close(out2[0, :2], out[0, :2])  # steps 0, 1 never see the change
    assert not torch.allclose(out2[0, 2:], out[0, 2:])
    # predict over an episode: each action equals the policy on the last K steps with z* at
    # every step and the previous actions the policy took
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=5)
    state, observations, actions = None, [], []
    for t in range(6):
        action, state = agent.predict(obs, state)
        observations.append(agent.scaler.observations(obs[None])[0])
        k = min(t + 1, 4)
        window_obs = torch.as_tensor(np.array(observations[-k:]))[None]
        prev = (
            [agent.scaler.actions_to_unit(a[None])[0] for a in actions[-(k - 1) :]] if k > 1 else []
        )
        window_act = torch.as_tensor(np.array(prev + [np.zeros(1, np.float32)]))[None]
        times = torch.arange(t + 1 - k, t + 1)[None]
        expected = agent.model.policy(
            window_obs, window_act.float(), times, torch.ones(1, k, dtype=torch.bool), z
        )[0, -1]
        expected = agent.scaler.actions_from_unit(expected.clamp(-1, 1)).detach().numpy()
        np.testing.assert_allclose(action, expected, atol=1e-5)
        actions.append(action)
        obs, *_ = env.step(action)
    # a new episode starts from an empty history
    fresh, _ = agent.predict(obs, None)
    again, _ = agent.predict(obs, state, episode_start=np.array([True]))
    np.testing.assert_allclose(again, fresh, atol=1e-6)
    with pytest.raises(ValueError, match="not this policy's history of 2 episodes"):
        agent.predict(np.stack([obs, obs]), state)  # the state of one episode
    # a window of one step is still the transformer's path
    one = OPPO(
        "TransformerPolicy",
        dataset,
        seed=0,
        segment_length=1,
        policy_kwargs=dict(hidden=8, n_layers=1, ff=16, dropout=0.0),
        encoder_kwargs=dict(hidden=8, n_layers=1, ff=16, dropout=0.0),
    )
    assert one.predict(obs, None)[0].shape == (1,)


def test_save_load_and_resume_equal_an_uninterrupted_run(tmp_path):
    dataset = mixture_dataset(good=2, bad=2)
    kwargs = dict(
        seed=4,
        batch_size=8,
        segment_length=5,
        warmup_steps=3,
        encoder_kwargs=dict(hidden=16, n_layers=1, ff=32, dropout=0.0),
    )
    straight = OPPO("MlpPolicy", dataset, **kwargs).learn(6)
    first = OPPO("MlpPolicy", dataset, **kwargs).learn(3)
    path = first.save(str(tmp_path / "oppo.zip"))
    resumed = OPPO.load(path, env=dataset)
    resumed.learn(3, reset_num_timesteps=False)
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    obs = np.array([[0.5, -0.8, 1.0], [1.0, 0.0, -2.0]], np.float32)
    loaded = OPPO.load(path)  # no dataset: acting only, with the file's normalization
    np.testing.assert_allclose(loaded.predict(obs)[0], first.predict(obs)[0])
    bc = BC("MlpPolicy", dataset, seed=0).learn(5)
    bc_path = bc.save(str(tmp_path / "bc.zip"))
    np.testing.assert_allclose(BC.load(bc_path).predict(obs)[0], bc.predict(obs)[0])


def test_ties_soft_labels_given_labels_and_warm_up():
    # constant rewards: every fresh pair ties; a step still imitates and moves nothing by labels
    flat = OfflineDataset(
        [hand_episode(30, 0.0), hand_episode(30, 0.0)], "Pendulum-v1", OBS2, BOX1, -10.0, 10.0
    )
    for episode in flat:
        episode.rewards[:] = 1.0
    small = dict(encoder_kwargs=dict(hidden=8, n_layers=1, ff=16, dropout=0.0))
    agent = OPPO("MlpPolicy", flat, seed=0, segment_length=5, batch_size=8, **small)
    agent._setup_learn(3, True, "test")
    z_before = agent.z_star
    values = agent.train_step()
    assert values["preference_loss"].item() == 0.0 and values["him_loss"].item() > 0
    torch.testing.assert_close(agent.z_star, z_before)  # AdamW on a zero gradient: decay only
    # the encoder-and-policy loss gives z* no gradient
    dataset = mixture_dataset(good=2, bad=2)
    sampler = SegmentSampler(dataset, 5)
    pairs = PreferencePairs(
        torch.tensor([0, 1, 2]),
        torch.tensor([0, 3, 7]),
        torch.tensor([1, 2, 3]),
        torch.tensor([5, 0, 1]),
        torch.tensor([1.0, 0.5, 0.75]),
    )
    from mdpo.offline.preferences import Preferences

    given = Preferences(sampler, pairs, description="soft")
    agent = OPPO(
        "MlpPolicy",
        dataset,
        labels=given,
        seed=0,
        segment_length=5,
        batch_size=4,
        warmup_steps=10,
        **small,
    )
    seg_a = agent.sampler.gather(pairs.episode_a, pairs.start_a)
    seg_b = agent.sampler.gather(pairs.episode_b, pairs.start_b)
    total, parts = agent.losses(seg_a, seg_b, pairs.label)
    total.backward()
    assert agent.model.z_star.grad is None
    # soft labels weigh the triplet term by |2 label - 1|: 1, 0, 0.5
    za, zb = agent.encode(seg_a).detach(), agent.encode(seg_b).detach()
    zs = agent.z_star
    hinge = [
        torch.clamp_min((zs - p + 1e-6).norm() - (zs - n + 1e-6).norm() + 1.0, 0.0)
        for p, n in ((za[0], zb[0]), (za[2], zb[2]))
    ]
    expected = (hinge[0] + 0.5 * hinge[1]) / 1.5
    assert abs(agent.z_star_loss(za, zb, pairs.label).item() - expected.item()) < 1e-6
    # warm-up of the policy's learning rate: (step + 1) / W, then the rate
    for step, factor in ((0, 0.1), (8, 0.9), (9, 1.0), (50, 1.0)):
        agent.num_timesteps = step
        assert abs(agent._policy_lr() - 1e-4 * factor) < 1e-12
    agent.num_timesteps = 0
    agent.learn(2)
    # a model trained on given labels loads; it learns again once given labels
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        loaded = OPPO.load(agent.save(os.path.join(folder, "m.zip")), env=dataset)
    assert loaded.labels == "given: soft"
    with pytest.raises(ValueError, match="call set_preferences"):
        loaded.learn(1, reset_num_timesteps=False)
    loaded.set_preferences(Preferences(loaded.sampler, pairs))
    loaded.learn(1, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="over segments of 5 steps but segment_length=20"):
        OPPO("MlpPolicy", dataset, labels=given)


def test_bad_inputs(tmp_path):
    dataset = mixture_dataset(good=1, bad=1)
    with pytest.raises(ValueError, match="dataset id 'mdpo/../x-v0' must look like"):
        dataset.save("mdpo/../x-v0", root=str(tmp_path))
    with pytest.raises(ValueError, match="dataset id 'mdpo/pendulum' must look like"):
        dataset.save("mdpo/pendulum", root=str(tmp_path), overwrite=True)
    os.makedirs(tmp_path / "mdpo" / "keep-v0")
    with pytest.raises(ValueError, match="is not a Minari dataset: not replaced"):
        dataset.save("mdpo/keep-v0", root=str(tmp_path), overwrite=True)
    wide = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    unbounded = OfflineDataset([hand_episode(3, 0.0)], "Pendulum-v1", OBS2, wide)
    with pytest.raises(ValueError, match="needs finite bounds"):
        BC("MlpPolicy", unbounded)
    with pytest.raises(ValueError, match="segments of 10 steps but segment_length=20"):
        OPPO("MlpPolicy", dataset, labels="scripted:K=10")
    with pytest.raises(ValueError, match="batch_size must be"):
        OPPO("MlpPolicy", dataset, batch_size=0)
    with pytest.raises(ValueError, match="unknown policy 'CnnPolicy'"):
        OPPO("CnnPolicy", dataset)
    with pytest.raises(ValueError, match="filter_fraction must be in"):
        BC("MlpPolicy", dataset, filter_fraction=1.5)
    with pytest.raises(ValueError, match="OPPO needs a dataset"):
        OPPO("MlpPolicy", None)
    with pytest.raises(FileNotFoundError, match="no Minari dataset"):
        OPPO("MlpPolicy", "mdpo/none/none-v0", data_root="/nonexistent")


# ----------------------------------------------------------------------------------- making
def test_episodes_from_transitions_and_collect():
    arrays = {
        "obs": np.arange(5, dtype=np.float32)[:, None],
        "next_obs": np.arange(1, 6, dtype=np.float32)[:, None],
        "actions": np.zeros((5, 1), np.float32),
        "rewards": np.ones(5),
        "terminations": np.array([False, True, False, False, False]),
        "truncations": np.zeros(5, bool),
        "first": np.array([True, False, True, False, False]),
    }
    episodes = episodes_from_transitions(arrays)
    assert [e.length for e in episodes] == [2, 3]
    assert episodes[0].terminations.tolist() == [False, True]
    assert episodes[1].truncations.tolist() == [False, False, True]  # cut by the stream's end
    np.testing.assert_array_equal(episodes[1].observations[:, 0], [2, 3, 4, 5])
    env = gym.make("Pendulum-v1")
    a = collect("Pendulum-v1", random_actor(env.action_space, 3), 3, steps=450)
    b = collect("Pendulum-v1", random_actor(env.action_space, 3), 3, steps=450)
    assert [e.length for e in a] == [200, 200, 50] and a[-1].truncations[-1]
    for x, y in zip(a, b, strict=True):  # deterministic given the seed
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.observations, y.observations)


def test_teacher_picks_expert_and_medium(tmp_path):
    teacher = Teacher(str(tmp_path), "Pendulum-v1", "PPO", 4096, 0, 1024)
    returns = [-1500.0, -1100.0, -700.0, -300.0, -500.0]
    teacher.state = {
        "complete": True,
        "references": {"random": -1200.0, "expert": -300.0},
        "snapshots": [{"step": 1000 * (i + 1), "mean_return": r} for i, r in enumerate(returns)],
    }
    assert teacher.expert()["step"] == 4000
    # a third of the way from random (-1200) to expert (-300): -900; -1100 and -700 tie at
    # 200 away, the first wins
    assert teacher.medium()["step"] == 2000
    with pytest.raises(ValueError, match="unknown teacher algorithm 'OPPO'"):
        Teacher(str(tmp_path / "x"), "Pendulum-v1", "OPPO")


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


# ----------------------------------------------------------------------------------- learning
@pytest.mark.learning
def test_oppo_beats_behaviour_cloning_on_a_pendulum_mixture():
    """20 stabilizing and 20 pushing-down Pendulum episodes, scripted labels on 20-step
    segments. Budget: 2000 gradient steps each, a small encoder (width 32, one layer).
    Measured (normalized; benchmarks/oppo_pendulum.py, results/oppo_pendulum): OPPO 89.0 with
    seed 0 (37.0 and 86.2 with seeds 1 and 2), BC -32.8 (-32.3, -28.4)."""
    from pendulum_mixture import START

    torch.set_num_threads(1)
    dataset = mixture_dataset(good=20, bad=20)
    bc = BC("MlpPolicy", dataset, seed=0, learning_rate=1e-3).learn(2000)
    oppo = OPPO(
        "MlpPolicy",
        dataset,
        seed=0,
        learning_rate=1e-3,
        encoder_learning_rate=1e-3,
        z_learning_rate=1e-2,
        warmup_steps=200,
        encoder_kwargs=dict(hidden=32, n_layers=1, ff=64, dropout=0.0),
    )
    oppo.learn(2000)
    bc_score = bc.evaluate(10, seed=100, reset_options=START)["mean_normalized"]
    oppo_score = oppo.evaluate(10, seed=100, reset_options=START)["mean_normalized"]
    print(f"normalized: OPPO {oppo_score:.1f}, BC {bc_score:.1f}")
    assert bc_score < 0.0  # BC on the mixture drops the pendulum: worse than random
    assert oppo_score > 50.0
    assert oppo_score > bc_score + 50.0
