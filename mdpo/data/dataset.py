"""Offline datasets: whole episodes in memory, stored in Minari's format.

A dataset is a list of :class:`Episode` (observations ``[T + 1, obs_dim]``, actions ``[T, ...]``,
rewards, terminations, truncations) with the env it came from and the reference returns that
turn a return into a D4RL-style normalized score, ``100 (R - R_random) / (R_expert - R_random)``.
On disk it is a Minari dataset (``minari.load_dataset`` reads it); the references are Minari's
``ref_min_score`` / ``ref_max_score``, and how the dataset was made is stored as JSON under the
metadata key ``"mdpo"``.

Minari finds datasets by id under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``);
the functions here take an explicit ``root`` too, or a dataset folder instead of an id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

# a dataset is read whole into memory: refuse files that claim or hold more than this many
# steps, or more than this many bytes of arrays
MAX_STEPS = 20_000_000
MAX_BYTES = 8 * 2**30


@dataclass
class Episode:
    """One episode of a dataset.

    Args:
        observations: ``[T + 1, *obs_shape]``: the first observation and every next one.
        actions: ``[T, *action_shape]``.
        rewards: ``[T]``.
        terminations: ``[T]`` bools (true at most at the last step).
        truncations: ``[T]`` bools (true at most at the last step).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.rewards)
        if n < 1:
            raise ValueError("an episode needs at least one step")
        if len(self.observations) != n + 1:
            raise ValueError(
                f"an episode of {n} steps needs {n + 1} observations, got {len(self.observations)}"
            )
        for name in ("actions", "terminations", "truncations"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"episode {name} have length {len(getattr(self, name))}, not {n}")

    @property
    def length(self) -> int:
        """Number of steps."""
        return len(self.rewards)

    @property
    def total_return(self) -> float:
        """Undiscounted return."""
        return float(np.sum(self.rewards))


@dataclass
class OfflineDataset:
    """Episodes of one environment, with the references of its normalized score.

    Args:
        episodes: the episodes.
        env_id: the gymnasium id of the env they come from (evaluation makes it).
        observation_space, action_space: the env's spaces.
        ref_min_score: the random policy's mean return (``None``: unknown).
        ref_max_score: the expert's mean return (``None``: unknown).
        info: how the dataset was made (kind, seed, teacher, command...), stored as JSON.
        env_kwargs: keyword arguments of ``gymnasium.make`` for ``env_id``.
        dataset_id: the Minari id it was saved under or loaded from.
    """

    episodes: list[Episode]
    env_id: str
    observation_space: spaces.Box
    action_space: spaces.Box
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_id: str | None = None

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("a dataset needs at least one episode")
        for name, space in (("observation", self.observation_space),
                            ("action", self.action_space)):  # fmt: skip
            if not isinstance(space, spaces.Box):
                raise ValueError(
                    f"offline datasets support Box {name} spaces; {self.env_id} has {space}"
                )

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    @property
    def total_steps(self) -> int:
        """Number of transitions."""
        return int(sum(e.length for e in self.episodes))

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode."""
        return np.array([e.total_return for e in self.episodes])

    @property
    def lengths(self) -> np.ndarray:
        """Length of each episode."""
        return np.array([e.length for e in self.episodes])

    @property
    def max_episode_steps(self) -> int:
        """The env's time limit (from its spec), else the longest episode."""
        import gymnasium as gym

        with contextlib.suppress(gym.error.Error, ModuleNotFoundError):
            limit = gym.spec(self.env_id).max_episode_steps
            if limit:
                return max(int(limit), int(self.lengths.max()))
        return int(self.lengths.max())

    def flat_transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """Observations ``[N, obs_dim]`` (each step's, not the final ones) and actions
        ``[N, act_dim]`` of every episode in order, flattened per step."""
        obs = np.concatenate([e.observations[:-1] for e in self.episodes])
        act = np.concatenate([e.actions for e in self.episodes])
        return obs.reshape(len(obs), -1), act.reshape(len(act), -1)

    def normalized_score(self, returns: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """``100 (R - ref_min) / (ref_max - ref_min)`` of returns ``R``.

        Raises:
            ValueError: when the dataset has no reference returns.
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(
                f"dataset {self.dataset_id or self.env_id!r} has no reference returns "
                "(ref_min_score / ref_max_score): normalized scores are undefined"
            )
        span = self.ref_max_score - self.ref_min_score
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / span

    def top_episodes(self, fraction: float) -> OfflineDataset:
        """The ``ceil(fraction * len)`` episodes of highest return (filtered BC's data).

        Args:
            fraction: in (0, 1].
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        count = max(1, int(np.ceil(fraction * len(self.episodes))))
        order = np.argsort(-self.returns, kind="stable")[:count]
        return self.subset(sorted(order.tolist()))

    def subset(self, indices: Sequence[int]) -> OfflineDataset:
        """The episodes ``indices`` with the same env and references."""
        return OfflineDataset(
            [self.episodes[i] for i in indices], self.env_id, self.observation_space,
            self.action_space, self.ref_min_score, self.ref_max_score, dict(self.info),
            dict(self.env_kwargs), self.dataset_id,
        )  # fmt: skip

    def summary(self) -> str:
        """One line: episodes, steps, return statistics and normalized scores."""
        r = self.returns
        text = (f"{len(self)} episodes, {self.total_steps} steps, return mean {r.mean():.1f} "
                f"(min {r.min():.1f}, max {r.max():.1f})")  # fmt: skip
        if self.ref_min_score is not None and self.ref_max_score is not None:
            text += f", normalized {self.normalized_score(r.mean()):.1f}"
        return text

    # ----------------------------------------------------------------------------- Minari
    def save(self, dataset_id: str, root: str | None = None, overwrite: bool = False) -> str:
        """Write the dataset in Minari's format; returns its folder.

        Args:
            dataset_id: Minari id, ``namespace/env/name-vN`` (e.g. ``mdpo/hopper/medium-v0``).
            root: the datasets folder (default ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``).
            overwrite: replace an existing dataset of that id.
        """
        import minari
        from minari.data_collector import EpisodeBuffer

        check_dataset_id(dataset_id)
        with _minari_root(root):
            path = dataset_path(dataset_id)
            if os.path.exists(path):
                if not os.path.isfile(os.path.join(path, "data", "metadata.json")):
                    raise ValueError(f"{path} exists and is not a Minari dataset: not replaced")
                if not overwrite:
                    raise ValueError(
                        f"dataset {dataset_id!r} already exists at {path}; choose another id or "
                        "overwrite it (--force)"
                    )
                shutil.rmtree(path)
            buffers = [
                EpisodeBuffer(
                    id=i,
                    observations=np.asarray(e.observations, dtype=self.observation_space.dtype),
                    actions=np.asarray(e.actions, dtype=self.action_space.dtype),
                    rewards=np.asarray(e.rewards, dtype=np.float64),
                    terminations=np.asarray(e.terminations, dtype=bool),
                    truncations=np.asarray(e.truncations, dtype=bool),
                )
                for i, e in enumerate(self.episodes)
            ]
            references = {}
            if self.ref_min_score is not None and self.ref_max_score is not None:
                references = {"ref_min_score": float(self.ref_min_score),
                              "ref_max_score": float(self.ref_max_score)}  # fmt: skip
            import gymnasium as gym

            spec = gym.spec(self.env_id)
            if self.env_kwargs:
                spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **self.env_kwargs})
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=spec,
                eval_env=spec,
                algorithm_name=str(self.info.get("algorithm", "mdpo")),
                author="mdpo",
                author_email="mdpo@localhost",
                code_permalink="https://github.com/mdpo/mdpo",
                observation_space=self.observation_space,
                action_space=self.action_space,
                description=str(self.info.get("description", ""))
                or "an offline dataset made by mdpo",
                data_format="hdf5",
                **references,
            )
            dataset.storage.update_metadata({"mdpo": json.dumps(self.info, sort_keys=True)})
            self.dataset_id = dataset_id
            return path

    @classmethod
    def load(cls, dataset: str, root: str | None = None) -> OfflineDataset:
        """Read a Minari dataset by id (under ``root``) or from its folder.

        Raises:
            FileNotFoundError: no such dataset.
            ValueError: the dataset is unreadable, too large, or not of Box spaces.
        """
        from minari import MinariDataset

        with _minari_root(root):
            folder = dataset if os.path.isdir(os.path.join(dataset, "data")) else None
            folder = folder or dataset_path(dataset)
        data = os.path.join(folder, "data")
        if not os.path.isfile(os.path.join(data, "metadata.json")):
            raise FileNotFoundError(
                f"no Minari dataset {dataset!r} (looked in {folder}); make one with "
                "`mdpo data make` or set --data-root / MINARI_DATASETS_PATH"
            )
        try:
            with open(os.path.join(data, "metadata.json")) as handle:
                raw = json.load(handle)
            steps = int(raw.get("total_steps", 0))
            if steps > MAX_STEPS:
                raise ValueError(f"{steps} steps is more than the {MAX_STEPS} read into memory")
            check_stored_size(data)
            minari_dataset = MinariDataset(data)
            meta = minari_dataset.storage.metadata
            env_spec = json.loads(meta["env_spec"]) if meta.get("env_spec") else {}
            env_id = env_spec.get("id")
            if env_id is None:
                raise ValueError("the dataset does not name its environment (env_spec)")
            episodes = [
                Episode(
                    np.asarray(e.observations),
                    np.asarray(e.actions),
                    np.asarray(e.rewards),
                    np.asarray(e.terminations, bool),
                    np.asarray(e.truncations, bool),
                )
                for e in minari_dataset.iterate_episodes()
            ]
            info = json.loads(meta.get("mdpo", "{}"))
        except (KeyError, TypeError, ValueError, OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"dataset {dataset!r} is not a readable Minari dataset: {err}"
            ) from None
        return cls(
            episodes, env_id, minari_dataset.observation_space, minari_dataset.action_space,
            meta.get("ref_min_score"), meta.get("ref_max_score"), info,
            dict(env_spec.get("kwargs") or {}), meta.get("dataset_id", dataset),
        )  # fmt: skip


def check_stored_size(data: str) -> None:
    """Raise ``ValueError`` if the HDF5 files in the dataset folder ``data`` hold more than
    :data:`MAX_STEPS` steps (rows of the episodes' ``rewards``) or :data:`MAX_BYTES` of arrays,
    whatever the metadata says: only the arrays' shapes are read."""
    import h5py

    steps = stored = 0

    def count(name: str, item: Any) -> None:
        nonlocal steps, stored
        if isinstance(item, h5py.Dataset):
            stored += int(item.size) * item.dtype.itemsize
            if name.rsplit("/", 1)[-1] == "rewards":
                steps += int(item.shape[0]) if item.shape else 1

    for name in sorted(os.listdir(data)):
        if name.endswith((".hdf5", ".h5")):
            with h5py.File(os.path.join(data, name), "r") as handle:
                handle.visititems(count)
    if steps > MAX_STEPS:
        raise ValueError(f"the files hold {steps} steps, more than the {MAX_STEPS} read into "
                         "memory")  # fmt: skip
    if stored > MAX_BYTES:
        raise ValueError(f"the files hold {stored} bytes of arrays, more than the {MAX_BYTES} "
                         "read into memory")  # fmt: skip


DATASET_ID = re.compile(r"^([A-Za-z0-9_.-]+/){0,2}[A-Za-z0-9_.-]+-v\d+$")


def check_dataset_id(dataset_id: str) -> None:
    """Raise ``ValueError`` unless ``dataset_id`` is ``(namespace/)(env/)name-vN`` with plain
    names (no ``..``, no absolute path: an id never leaves the datasets folder)."""
    parts = dataset_id.split("/")
    if not DATASET_ID.match(dataset_id) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"dataset id {dataset_id!r} must look like namespace/env/name-v0 "
                         "(letters, digits, '_', '-', '.'; a version -vN at the end)")  # fmt: skip


def datasets_root() -> str:
    """Minari's datasets folder: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return root or os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def dataset_path(dataset_id: str) -> str:
    """The folder Minari uses for ``dataset_id`` (as Minari computes it, without creating it)."""
    return os.path.join(datasets_root(), dataset_id)


@contextlib.contextmanager
def _minari_root(root: str | None):
    """Point Minari at ``root`` for the duration (it reads ``MINARI_DATASETS_PATH``)."""
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
