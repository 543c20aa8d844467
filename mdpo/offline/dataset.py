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

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mdpo.core.limits import (
    MAX_DATASET_BYTES,
    MAX_DATASET_STEPS,
    BadFileError,
    check_env_id_from_file,
    field_float,
    field_int,
    json_object,
    load_json_file,
    loads_json,
)
from mdpo.core.serialization import space_from_json

# a dataset is read whole into memory: refuse files that claim or hold more than this many
# steps, or more than this many bytes of arrays (mdpo.core.limits)
MAX_STEPS = MAX_DATASET_STEPS
MAX_BYTES = MAX_DATASET_BYTES


class DatasetError(BadFileError):
    """A dataset folder that is malformed, hostile or over the limits."""


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
        for name, space in (("observation", self.observation_space), ("action", self.action_space)):
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
            [self.episodes[i] for i in indices],
            self.env_id,
            self.observation_space,
            self.action_space,
            self.ref_min_score,
            self.ref_max_score,
            dict(self.info),
            dict(self.env_kwargs),
            self.dataset_id,
        )

    def scale_warning(self) -> str | None:
        """A warning when the references barely differ (the expert hardly beats random), so
        that normalized scores are a large multiple of small return differences; else
        ``None``."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        low, high = float(self.ref_min_score), float(self.ref_max_score)
        span = high - low
        if span > 0.05 * max(abs(low), abs(high), 1.0):
            return None
        return (
            f"the expert reference ({high:.1f}) barely beats the random one ({low:.1f}): a "
            f"normalized score is 100 × (R − {low:.1f}) / {span:.1f}, so small return "
            "differences make large scores; compare returns, or train a better teacher"
        )

    def summary(self) -> str:
        """One line: episodes, steps, return statistics and normalized scores."""
        r = self.returns
        text = (
            f"{len(self)} episodes, {self.total_steps} steps, return mean {r.mean():.1f} "
            f"(min {r.min():.1f}, max {r.max():.1f})"
        )
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
        # minari is slow to import (it loads its hub clients): only when writing a dataset
        import minari
        from minari.data_collector import EpisodeBuffer

        check_dataset_id(dataset_id)
        with minari_root(root):
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
                references = {
                    "ref_min_score": float(self.ref_min_score),
                    "ref_max_score": float(self.ref_max_score),
                }
                episodes = self.info.get("reference_episodes")
                if isinstance(episodes, int) and not isinstance(episodes, bool) and episodes > 0:
                    # the real count (Minari's default of 100 otherwise)
                    references["num_episodes_average_score"] = episodes

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

        The folder is read as data only: ``metadata.json`` is checked field by field and the
        HDF5 arrays are read with h5py, without Minari's loader (which builds an env from the
        metadata's ``env_spec`` when it lacks a space: code named in a file). The env id must
        be a registered one (:func:`mdpo.core.limits.check_env_id_from_file`); the steps and bytes
        the HDF5 files hold are counted from their shapes, each link counted, before any array
        is read.

        Raises:
            FileNotFoundError: no such dataset.
            DatasetError: the dataset is unreadable, hostile, too large, or not of Box spaces.
        """
        if not isinstance(dataset, str) or not dataset:
            raise DatasetError(f"a dataset is an id or a folder, not {dataset!r}")
        with minari_root(root):
            folder = dataset if os.path.isdir(os.path.join(dataset, "data")) else None
            if folder is None:
                check_dataset_id(dataset)
                folder = dataset_path(dataset)
        data = os.path.join(folder, "data")
        if not os.path.isfile(os.path.join(data, "metadata.json")):
            raise FileNotFoundError(
                f"no Minari dataset {dataset!r} (looked in {folder}); make one with "
                "`mdpo data make`, or point --root (or MINARI_DATASETS_PATH) at its folder"
            )
        where = os.path.join(data, "metadata.json")
        meta = json_object(load_json_file(where), where)
        steps = field_int(meta.get("total_steps", 0), f"{where}: total_steps", 0)
        if steps > MAX_STEPS:
            raise DatasetError(
                f"{where}: {steps} steps is more than the {MAX_STEPS} read into memory"
            )
        observation_space = _space_field(meta, "observation_space", where)
        action_space = _space_field(meta, "action_space", where)
        env_spec = json_object(_json_string(meta, "env_spec", where), f"{where}: env_spec")
        env_id = check_env_id_from_file(env_spec.get("id"), f"{where}: env_spec.id")
        env_kwargs = json_object(env_spec.get("kwargs") or {}, f"{where}: env_spec.kwargs")
        refs = [
            field_float(meta.get(k), f"{where}: {k}", allow_none=True)
            for k in ("ref_min_score", "ref_max_score")
        ]
        info = json_object(_json_string(meta, "mdpo", where, "{}"), f"{where}: mdpo")
        dataset_id = meta.get("dataset_id", dataset)
        dataset_id = dataset_id if isinstance(dataset_id, str) else dataset
        episodes = read_episodes(data, observation_space, action_space)
        return cls(
            episodes,
            env_id,
            observation_space,
            action_space,
            refs[0],
            refs[1],
            info,
            dict(env_kwargs),
            dataset_id,
        )


def _json_string(meta: dict[str, Any], key: str, where: str, default: str | None = None) -> Any:
    """A metadata field that Minari stores as a JSON string (spaces, env spec, our info)."""
    text = meta.get(key, default)
    if text is None:
        raise DatasetError(f"{where}: no {key} (mdpo reads datasets that describe it)")
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise DatasetError(f"{where}: {key} must be a JSON string")
    return loads_json(text, f"{where}: {key}")


def _space_field(meta: dict[str, Any], key: str, where: str) -> spaces.Space:
    """A ``Box`` (or ``Discrete``) space of the metadata; a missing one is refused (Minari
    would build the env to find it)."""
    try:
        return space_from_json(_json_string(meta, key, where), f"{where}: {key}")
    except BadFileError as err:
        raise DatasetError(str(err)) from None


def _hard_link(group: Any, name: str, where: str) -> Any:
    """``group[name]`` if it is a hard link inside the file (external and soft links, which
    can point at other files, are refused) and not a virtual dataset (made of other files)."""
    import h5py  # slow to import: only when a dataset is read

    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise DatasetError(f"{where}: {name} is a {type(link).__name__}, not data in the file")
    item = group[name]
    if isinstance(item, h5py.Dataset) and item.is_virtual:
        raise DatasetError(f"{where}: {name} is a virtual dataset (made of other files)")
    return item


def _episode_groups(handle: Any, where: str) -> list[tuple[int, Any]]:
    """The ``episode_N`` groups of an open HDF5 file, in the order of ``N``."""
    import h5py  # slow to import: only when a dataset is read

    groups = []
    for name in handle:
        match = re.fullmatch(r"episode_(\d{1,9})", name)
        if match is None:
            continue
        group = _hard_link(handle, name, where)
        if not isinstance(group, h5py.Group):
            raise DatasetError(f"{where}: {name} is not a group of arrays")
        groups.append((int(match.group(1)), group))
    return sorted(groups, key=lambda pair: pair[0])


EPISODE_ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations")


def _data_files(data: str) -> list[str]:
    names = sorted(n for n in os.listdir(data) if n.endswith((".hdf5", ".h5")))
    if not names:
        raise DatasetError(f"{data}: no HDF5 file")
    return [os.path.join(data, n) for n in names]


def check_stored_size(data: str) -> None:
    """Raise :class:`DatasetError` if the HDF5 files in the dataset folder ``data`` hold more
    than :data:`MAX_STEPS` steps (rows of the episodes' ``rewards``) or :data:`MAX_BYTES` of
    arrays, whatever the metadata says: only the arrays' shapes are read, and an array that is
    linked from several episodes counts once per link (it would be read once per link)."""
    import h5py  # slow to import: only when a dataset is read

    steps = stored = 0
    for path in _data_files(data):
        try:
            with h5py.File(path, "r") as handle:
                for _, group in _episode_groups(handle, path):
                    for name in EPISODE_ARRAYS:
                        if name not in group:
                            continue
                        item = _hard_link(group, name, path)
                        if not isinstance(item, h5py.Dataset):
                            raise DatasetError(f"{path}: {group.name}/{name} is not an array")
                        stored += int(item.size) * item.dtype.itemsize
                        if name == "rewards":
                            steps += int(item.shape[0]) if item.shape else 1
                        if steps > MAX_STEPS or stored > MAX_BYTES:
                            break
        except (OSError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(f"{path} is not a readable HDF5 file: {_first_line(err)}") from None
    if steps > MAX_STEPS:
        raise DatasetError(
            f"the files hold {steps} steps, more than the {MAX_STEPS} read into memory"
        )
    if stored > MAX_BYTES:
        raise DatasetError(
            f"the files hold {stored} bytes of arrays, more than the {MAX_BYTES} read into memory"
        )


def read_episodes(
    data: str, observation_space: spaces.Space, action_space: spaces.Space
) -> list[Episode]:
    """The episodes of a Minari dataset's ``data`` folder, read with h5py after
    :func:`check_stored_size`; every array's dtype and shape is checked against the spaces."""
    import h5py  # slow to import: only when a dataset is read

    check_stored_size(data)
    obs_shape = tuple(observation_space.shape or ())
    act_shape = tuple(action_space.shape or ())
    episodes = []
    for path in _data_files(data):
        try:
            with h5py.File(path, "r") as handle:
                for _, group in _episode_groups(handle, path):
                    arrays = {}
                    for name in EPISODE_ARRAYS:
                        if name not in group:
                            raise DatasetError(f"{path}: {group.name} has no {name}")
                        item = _hard_link(group, name, path)
                        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "biuf":
                            raise DatasetError(f"{path}: {group.name}/{name} is not numbers")
                        arrays[name] = item[()]
                    obs, act = arrays["observations"], arrays["actions"]
                    if obs.shape[1:] != obs_shape or act.shape[1:] != act_shape:
                        raise DatasetError(
                            f"{path}: {group.name} has observations {obs.shape[1:]} and actions "
                            f"{act.shape[1:]}, the spaces say {obs_shape} and {act_shape}"
                        )
                    for name in ("rewards", "terminations", "truncations"):
                        if arrays[name].ndim != 1:
                            raise DatasetError(f"{path}: {group.name}/{name} is not a vector")
                    rewards = arrays["rewards"].astype(np.float64)
                    if not (np.isfinite(rewards).all() and np.isfinite(obs).all()):
                        raise DatasetError(f"{path}: {group.name} holds non-finite numbers")
                    try:
                        episodes.append(
                            Episode(
                                obs,
                                act,
                                rewards,
                                arrays["terminations"].astype(bool),
                                arrays["truncations"].astype(bool),
                            )
                        )
                    except ValueError as err:
                        raise DatasetError(f"{path}: {group.name}: {err}") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(f"{path} is not a readable HDF5 file: {_first_line(err)}") from None
    if not episodes:
        raise DatasetError(f"{data}: the dataset holds no episode")
    return episodes


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


DATASET_ID = re.compile(r"^([A-Za-z0-9_.-]+/){0,2}[A-Za-z0-9_.-]+-v\d+$")


def check_dataset_id(dataset_id: str) -> None:
    """Raise ``ValueError`` unless ``dataset_id`` is ``(namespace/)(env/)name-vN`` with plain
    names (no ``..``, no absolute path: an id never leaves the datasets folder)."""
    parts = dataset_id.split("/")
    if not DATASET_ID.match(dataset_id) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"dataset id {dataset_id!r} must look like namespace/env/name-v0 "
            "(letters, digits, '_', '-', '.'; a version -vN at the end)"
        )


def datasets_root() -> str:
    """Minari's datasets folder: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return root or os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def dataset_path(dataset_id: str) -> str:
    """The folder Minari uses for ``dataset_id`` (as Minari computes it, without creating it)."""
    return os.path.join(datasets_root(), dataset_id)


@contextlib.contextmanager
def minari_root(root: str | None):
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
