"""Segments of a dataset and preference labels (scripted, given, files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from offline_data import hand_dataset

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


def test_foresee_labels_compare_the_returns_of_the_steps_ahead():
    """``foresee=F`` (the authors' labelling, F = 200): a pair is labelled by the rewards of
    the F steps from each segment's start (fewer where the episode ends), computed from
    cumulative sums; checked against plain sums over the episodes' rewards."""
    dataset = hand_dataset()  # rewards 0..4 (5 steps) and 10..12 (3 steps)
    sampler = SegmentSampler(dataset, 2)
    episode, start = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 3, 0, 1])
    for horizon in (1, 2, 4, 200):
        expected = [
            list(dataset)[int(e)].rewards[int(s) : int(s) + horizon].sum()
            for e, s in zip(episode, start)
        ]
        got = sampler.window_returns(episode, start, horizon)
        np.testing.assert_allclose(got.numpy(), expected)
    assert parse_labels("scripted:K=2,foresee=200")["foresee"] == 200
    preferences = make_preferences("scripted:K=2,foresee=4", sampler)
    pairs = preferences.batch(400, torch.Generator().manual_seed(0))
    ra = sampler.window_returns(pairs.episode_a, pairs.start_a, 4)
    rb = sampler.window_returns(pairs.episode_b, pairs.start_b, 4)
    decided = ra != rb
    assert decided.any() and bool(((pairs.label == 1) == (ra > rb))[decided].all())
    own = sampler.gather(pairs.episode_a, pairs.start_a).returns
    assert not torch.equal(own, ra)  # another label than the segments' own returns
    with pytest.raises(ValueError, match="foresee= apply to scripted labels only"):
        parse_labels("file:labels.csv,foresee=200")
    with pytest.raises(ValueError, match="foresee must be positive"):
        parse_labels("scripted:foresee=0")
    with pytest.raises(ValueError, match="is over 2"):
        parse_labels(f"scripted:foresee={10**19}")
    # a horizon past every episode is the rest of each episode (no overflow)
    np.testing.assert_allclose(
        sampler.window_returns(episode, start, 2**62).numpy(),
        sampler.window_returns(episode, start, 100).numpy(),
    )
