"""Offline datasets: episodes, Minari files, normalized scores."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
from offline_data import BOX1, OBS2, hand_dataset, hand_episode
from pendulum_mixture import mixture_dataset

from mdpo.offline.dataset import Episode, OfflineDataset


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


def test_references_that_barely_differ_are_warned_about_and_their_count_recorded(tmp_path, capsys):
    from mdpo.cli import main

    close = OfflineDataset(
        [hand_episode(5, 0.0)],
        "Pendulum-v1",
        OBS2,
        BOX1,
        ref_min_score=-1175.0,
        ref_max_score=-1157.0,
        info={"reference_episodes": 5},
    )
    assert "barely beats" in close.scale_warning()
    assert hand_dataset().scale_warning() is None  # -10 vs 10
    path = close.save("mdpo/pendulum/close-v0", root=str(tmp_path))
    meta = json.loads(open(os.path.join(path, "data", "metadata.json")).read())
    assert meta["num_episodes_average_score"] == 5
    assert main(["data", "info", path]) == 0
    captured = capsys.readouterr()
    assert "reference_episodes: 5" in captured.out and "barely beats" in captured.err
