"""Shared test set-up: one torch thread (the machine has two cores), small helpers."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MUJOCO_GL", "disable")


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside a temporary folder (runs write nothing into the checkout)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
