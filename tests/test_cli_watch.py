"""mdpo record / enjoy and train --capture-video, headless: a video of one short episode that
decodes with the right number of frames."""

from __future__ import annotations

import json

from mdpo.cli import main

TRAIN = [
    "train",
    "PPO",
    "CartPole-v1",
    "-n",
    "64",
    "--set",
    "n_steps=64",
    "--set",
    "batch_size=64",
    "--no-progress",
]


def frames(path: str) -> int:
    import imageio.v3 as iio

    return len(iio.imread(path))  # every frame, decoded


def test_record_writes_decodable_videos_of_whole_episodes(in_tmp, capsys):
    assert main([*TRAIN, "--out", "run", "--capture-video"]) == 0
    out = capsys.readouterr().out
    assert "video of the final model: run/videos/step-64-episode-0.mp4" in out
    assert main(["record", "run", "--episodes", "2", "--out", "videos"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        path, _, text = line.partition(": return ")
        length = int(float(text))  # CartPole pays 1 a step
        assert frames(path) == length + 1  # the first observation, then one frame a step
    status = json.loads((in_tmp / "run" / "status.json").read_text())
    assert status["status"] == "completed"


def test_enjoy_without_a_display_points_to_record(in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["enjoy", "nothing-here.zip", "--env", "CartPole-v1"]) == 2
    assert "no display" in capsys.readouterr().err
