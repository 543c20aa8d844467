"""Offline data: datasets in Minari's format, made from the suite's own agents, and
preference labels over their segments (scripted or given)."""

from mdpo.offline.dataset import Episode, OfflineDataset

__all__ = ["Episode", "OfflineDataset"]
