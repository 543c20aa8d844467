"""Segments of a dataset and preference labels over pairs of them.

A segment is ``K`` consecutive steps of one episode, named by ``(episode, start)``. Segments
are drawn with episodes weighted by their length (as the OPPO code, so that every step is about
equally likely) and a start uniform over the positions where a whole segment fits; an episode
shorter than ``K`` gives a segment padded on the left, with a mask. (The OPPO code starts
anywhere and pads the end of the episode; a segment cut short by the episode's end then has a
smaller return for a reason that is not the behaviour's, which misleads a teacher comparing
returns when rewards are negative, e.g. on Pendulum.) Episodes shorter than ``K`` still give
shorter segments, compared on their sums as they are: on Hopper or Walker2d such an episode is
one that fell early, and its lower sum is deserved.

Labels: ``1`` means the first segment of the pair is preferred, ``0`` the second, ``0.5`` a tie.
They come from :class:`ScriptedTeacher` (the segment with the larger true return wins), fresh
pairs at every step or a fixed set of queries drawn once, or from a CSV file of given labels
(:func:`read_labels`; e.g. human ones), with columns ``episode_a,start_a,episode_b,start_b,label``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
import torch

from mdpo.core.limits import MAX_INT_DIGITS, BadFileError
from mdpo.offline.dataset import OfflineDataset

# a label file is read whole: refuse larger ones
MAX_LABEL_BYTES = 16 * 2**20  # about a million labels
LABEL_COLUMNS = ("episode_a", "start_a", "episode_b", "start_b", "label")


@dataclass
class Segments:
    """A batch of segments as tensors (left-padded; ``mask`` true on real steps).

    Args:
        observations: ``[B, K, obs_dim]`` (zeros where padded).
        actions: ``[B, K, act_dim]`` (zeros where padded).
        timesteps: ``[B, K]`` step index within the episode (0 where padded).
        mask: ``[B, K]`` bools.
        returns: ``[B]`` sum of the segment's rewards.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    timesteps: torch.Tensor
    mask: torch.Tensor
    returns: torch.Tensor

    @staticmethod
    def cat(first: Segments, second: Segments) -> Segments:
        """The two batches as one (``first``'s segments, then ``second``'s): one network pass
        instead of two."""
        return Segments(
            *(torch.cat((getattr(first, f), getattr(second, f))) for f in Segments.FIELDS)
        )

    FIELDS = ("observations", "actions", "timesteps", "mask", "returns")


class SegmentSampler:
    """Draws segments of length ``segment_length`` from a dataset and gathers them as tensors.

    Args:
        dataset: the episodes.
        segment_length: ``K``.
        device: where the tensors live.
        observation_transform: applied to the observations once (e.g. normalization), ``None``
            to keep them.
        action_transform: applied to the actions once (e.g. scaling to [-1, 1]).
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        segment_length: int,
        device: torch.device | str = "cpu",
        observation_transform=None,
        action_transform=None,
    ):
        if (
            isinstance(segment_length, bool)
            or not isinstance(segment_length, int)
            or (segment_length < 1)
        ):
            raise ValueError(f"segment_length must be a positive integer, got {segment_length!r}")
        self.dataset = dataset
        self.segment_length = segment_length
        self.device = torch.device(device)
        lengths = dataset.lengths
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        obs, act = dataset.flat_transitions()
        obs, act = obs.astype(np.float32), act.astype(np.float32)
        if observation_transform is not None:
            obs = observation_transform(obs)
        if action_transform is not None:
            act = action_transform(act)
        self._obs = torch.as_tensor(obs, device=self.device)
        self._act = torch.as_tensor(act, device=self.device)
        self._rew = torch.as_tensor(
            np.concatenate([e.rewards for e in dataset]), dtype=torch.float64, device=self.device
        )
        self._time = torch.as_tensor(
            np.concatenate([np.arange(n) for n in lengths]), dtype=torch.long, device=self.device
        )
        self._lengths_t = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        self._offsets_t = torch.as_tensor(self.offsets, dtype=torch.long, device=self.device)
        self._episode_p = torch.as_tensor(lengths / lengths.sum(), dtype=torch.float64)
        # cumulative rewards of the flat transitions (0 first): any window's return in O(1)
        self._reward_sums = torch.cat(
            (torch.zeros(1, dtype=torch.float64, device=self.device), self._rew.cumsum(0))
        )

    def window_returns(
        self, episode: torch.Tensor, start: torch.Tensor, horizon: int
    ) -> torch.Tensor:
        """``[N]`` sums of the rewards of the ``horizon`` steps from each ``(episode, start)``
        (fewer where the episode ends first): the authors' scripted labels look 200 steps
        ahead of a 20-step segment (``foresee``)."""
        episode, start = episode.to(self.device), start.to(self.device)
        horizon = min(int(horizon), int(self.lengths.max()))  # no episode is longer
        first = self._offsets_t[episode] + start
        end = self._offsets_t[episode] + torch.minimum(start + horizon, self._lengths_t[episode])
        return self._reward_sums[end] - self._reward_sums[first]

    @property
    def n_starts(self) -> np.ndarray:
        """Number of possible starts of each episode."""
        return np.maximum(self.lengths - self.segment_length, 0) + 1

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` segments ``(episode, start)`` (CPU long tensors), episodes weighted by length."""
        episode = torch.multinomial(self._episode_p, n, replacement=True, generator=generator)
        n_starts = torch.as_tensor(self.n_starts)[episode]
        start = (torch.rand(n, generator=generator, dtype=torch.float64) * n_starts).long()
        return episode, torch.minimum(start, n_starts - 1)

    def check(self, episode: np.ndarray, start: np.ndarray, what: str = "segment") -> None:
        """Raise ``ValueError`` naming the first ``(episode, start)`` that is not a segment."""
        episode, start = np.asarray(episode), np.asarray(start)
        bad_episode = (episode < 0) | (episode >= len(self.lengths))
        if bad_episode.any():
            i = int(np.flatnonzero(bad_episode)[0])
            raise ValueError(
                f"{what} {i}: episode {int(episode[i])} is not in the dataset "
                f"({len(self.lengths)} episodes)"
            )
        bad_start = (start < 0) | (start >= self.n_starts[episode])
        if bad_start.any():
            i = int(np.flatnonzero(bad_start)[0])
            raise ValueError(
                f"{what} {i}: start {int(start[i])} of episode {int(episode[i])} (length "
                f"{int(self.lengths[episode[i]])}) does not begin a segment of "
                f"{self.segment_length} steps"
            )

    def gather(self, episode: torch.Tensor, start: torch.Tensor) -> Segments:
        """The segments ``(episode, start)`` as a :class:`Segments` batch."""
        k = self.segment_length
        episode = episode.to(self.device)
        start = start.to(self.device)
        length = self._lengths_t[episode]
        real = torch.clamp(length - start, max=k)  # steps of the segment inside the episode
        pad = (k - real)[:, None]
        j = torch.arange(k, device=self.device)[None, :]
        mask = j >= pad
        index = self._offsets_t[episode][:, None] + start[:, None] + (j - pad).clamp_min(0)
        m = mask[..., None]
        return Segments(
            observations=torch.where(m, self._obs[index], 0.0),
            actions=torch.where(m, self._act[index], 0.0),
            timesteps=torch.where(mask, self._time[index], 0),
            mask=mask,
            returns=torch.where(mask, self._rew[index], 0.0).sum(dim=1),
        )


def scripted_labels(
    returns_a: torch.Tensor, returns_b: torch.Tensor, ties: str = "drop"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scripted teacher: the segment with the larger true return is preferred.

    Args:
        returns_a, returns_b: ``[N]`` segment returns.
        ties: ``"drop"`` (equal returns give no label) or ``"half"`` (labelled 0.5).

    Returns:
        ``(labels, keep)``: ``[N]`` float labels (1: a preferred) and the pairs kept.
    """
    if ties not in ("drop", "half"):
        raise ValueError(f"ties must be 'drop' or 'half', got {ties!r}")
    labels = (returns_a > returns_b).to(torch.float32)
    tie = returns_a == returns_b
    labels = torch.where(tie, torch.full_like(labels, 0.5), labels)
    keep = ~tie if ties == "drop" else torch.ones_like(tie)
    return labels, keep


@dataclass
class PreferencePairs:
    """Labelled pairs of segments: ``(episode_a, start_a)`` vs ``(episode_b, start_b)``."""

    episode_a: torch.Tensor
    start_a: torch.Tensor
    episode_b: torch.Tensor
    start_b: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return len(self.label)

    def select(self, index: torch.Tensor) -> PreferencePairs:
        """The pairs ``index``."""
        return PreferencePairs(
            self.episode_a[index],
            self.start_a[index],
            self.episode_b[index],
            self.start_b[index],
            self.label[index],
        )


class Preferences:
    """Where OPPO's labelled pairs come from; :meth:`batch` gives ``n`` pairs a step.

    Args:
        sampler: segments of the dataset trained on.
        pairs: a fixed set of labelled pairs (drawn from at each step), or ``None`` for fresh
            scripted pairs at every step.
        ties: the scripted teacher's tie rule (fresh pairs).
        description: how the labels were made (stored with the model's training record).
        foresee: fresh pairs are labelled by the returns of this many steps from the segments'
            starts (``None``: the segments' own returns).
    """

    def __init__(
        self,
        sampler: SegmentSampler,
        pairs: PreferencePairs | None = None,
        ties: str = "drop",
        description: str = "",
        foresee: int | None = None,
    ) -> None:
        self.sampler = sampler
        self.pairs = pairs
        self.ties = ties
        self.description = description
        self.foresee = foresee
        if pairs is not None and len(pairs) == 0:
            raise ValueError(f"no labelled pairs ({description or 'preferences'})")

    @property
    def fresh(self) -> bool:
        """Fresh scripted pairs at every step (no fixed set)."""
        return self.pairs is None

    def batch(self, n: int, generator: torch.Generator) -> PreferencePairs:
        """``n`` labelled pairs. Fresh pairs keep their ties, labelled 0.5: a tie gives no
        preference signal (OPPO weighs it 0, as the authors' code drops it from the triplet
        term) but its segments still count for imitation, and a batch of ties only is no error."""
        if self.pairs is not None:
            index = torch.randint(len(self.pairs), (n,), generator=generator)
            return self.pairs.select(index)
        return scripted_pairs(self.sampler, n, generator, "half", self.foresee)


def scripted_pairs(
    sampler: SegmentSampler,
    n: int,
    generator: torch.Generator,
    ties: str = "drop",
    foresee: int | None = None,
) -> PreferencePairs:
    """``n`` random pairs labelled by the scripted teacher (ties dropped or 0.5): the larger
    return of the segment itself, or with ``foresee`` of the ``foresee`` steps from its start
    (the authors' code: 200)."""
    ea, sa = sampler.sample(n, generator)
    eb, sb = sampler.sample(n, generator)
    horizon = sampler.segment_length if foresee is None else foresee
    returns_a = sampler.window_returns(ea, sa, horizon).cpu()
    returns_b = sampler.window_returns(eb, sb, horizon).cpu()
    labels, keep = scripted_labels(returns_a, returns_b, ties)
    return PreferencePairs(ea[keep], sa[keep], eb[keep], sb[keep], labels[keep])


def write_labels(path: str, pairs: PreferencePairs) -> str:
    """Write labelled pairs as CSV (the format :func:`read_labels` takes)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for row in zip(
            pairs.episode_a.tolist(),
            pairs.start_a.tolist(),
            pairs.episode_b.tolist(),
            pairs.start_b.tolist(),
            pairs.label.tolist(),
            strict=True,
        ):
            writer.writerow(row)
    return path


def _label_rows(path: str) -> list[list[float]]:
    """The rows of a label file, each checked (see :func:`read_labels`)."""
    rows = []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != LABEL_COLUMNS:
            raise LabelFileError(
                f"label file {path!r}: the header must be "
                f"{','.join(LABEL_COLUMNS)}, got {str(header)[:80]}"
            )
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                if len(row) != 5:
                    raise ValueError(f"{len(row)} fields, expected 5")
                if any(len(field) > MAX_INT_DIGITS for field in row):
                    raise ValueError(f"a field of more than {MAX_INT_DIGITS} characters")
                values = [int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4])]
            except ValueError as err:
                raise LabelFileError(f"label file {path!r}, line {line}: {err}") from None
            if not 0.0 <= values[4] <= 1.0:
                raise LabelFileError(
                    f"label file {path!r}, line {line}: label {values[4]} is not in [0, 1]"
                )
            rows.append(values)
    return rows


class LabelFileError(BadFileError):
    """A label file that is malformed or names segments the dataset does not have."""


def read_labels(path: str, sampler: SegmentSampler) -> PreferencePairs:
    """Read given labels (CSV with columns ``episode_a,start_a,episode_b,start_b,label``;
    label 1 prefers segment a, 0 segment b, 0.5 a tie; values in between are soft labels).

    Raises:
        FileNotFoundError: no such file.
        LabelFileError: a malformed row, a segment not in the dataset, a label outside [0, 1], or
            a file over the size limit (each named).
    """
    size = os.path.getsize(path)
    if size > MAX_LABEL_BYTES:
        raise LabelFileError(f"label file {path!r} has {size} bytes, more than {MAX_LABEL_BYTES}")
    try:
        rows = _label_rows(path)
    except (csv.Error, UnicodeDecodeError) as err:
        raise LabelFileError(f"label file {path!r} is not a CSV text file: {err}") from None
    if not rows:
        raise LabelFileError(f"label file {path!r} holds no labels")
    data = np.array(rows, dtype=np.float64)
    ea, sa, eb, sb = (data[:, i].astype(np.int64) for i in range(4))
    for name, (e, s) in (("segment a of pair", (ea, sa)), ("segment b of pair", (eb, sb))):
        try:
            sampler.check(e, s, name)
        except ValueError as err:
            raise LabelFileError(f"label file {path!r}: {err}") from None
    as_long = lambda x: torch.as_tensor(x, dtype=torch.long)  # noqa: E731
    return PreferencePairs(
        as_long(ea),
        as_long(sa),
        as_long(eb),
        as_long(sb),
        torch.as_tensor(data[:, 4], dtype=torch.float32),
    )


def parse_labels(spec: str) -> dict:
    """Parse a labels spec:
    ``scripted:K=20[,queries=N][,ties=drop|half][,seed=S][,foresee=F]`` or
    ``file:PATH[,K=20]``. Returns a dict with ``source``, ``K``, ``queries``, ``ties``,
    ``seed``, ``path``, ``foresee`` (``None``: a pair is labelled by its segments' own
    returns; ``F``: by the returns of the ``F`` steps from their starts, the authors' 200)."""
    source, _, rest = spec.partition(":")
    result = {
        "source": source,
        "K": 20,
        "queries": None,
        "ties": "drop",
        "seed": 0,
        "path": None,
        "foresee": None,
    }
    if source not in ("scripted", "file"):
        raise ValueError(f"labels {spec!r}: the source must be 'scripted' or 'file'")
    parts = [p for p in rest.split(",") if p] if rest else []
    if source == "file":
        if not parts or "=" in parts[0]:
            raise ValueError(f"labels {spec!r}: give the file, e.g. file:labels.csv,K=20")
        result["path"] = parts.pop(0)
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or key not in ("K", "queries", "ties", "seed", "foresee"):
            raise ValueError(
                f"labels {spec!r}: unknown option {part!r} (K=, queries=, ties=, seed=, foresee=)"
            )
        if key == "ties":
            if value not in ("drop", "half"):
                raise ValueError(f"labels {spec!r}: ties must be drop or half, got {value!r}")
            result["ties"] = value
            continue
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"labels {spec!r}: {key} must be an integer, got {value!r}") from None
        if number < (0 if key == "seed" else 1):
            raise ValueError(f"labels {spec!r}: {key} must be positive, got {number}")
        if number > 2**31:
            raise ValueError(f"labels {spec!r}: {key} = {number} is over 2^31")
        result[key] = number
    if source == "file" and (result["queries"] is not None or result["foresee"] is not None):
        raise ValueError(f"labels {spec!r}: queries= and foresee= apply to scripted labels only")
    return result


def make_preferences(spec: str | dict, sampler: SegmentSampler) -> Preferences:
    """Build the label source a spec describes (see :func:`parse_labels`) over ``sampler``
    (whose segment length must be the spec's ``K``)."""
    options = parse_labels(spec) if isinstance(spec, str) else dict(spec)
    if options["K"] != sampler.segment_length:
        raise ValueError(
            f"labels are over segments of {options['K']} steps but the sampler's "
            f"segments have {sampler.segment_length}"
        )
    description = spec if isinstance(spec, str) else str(options)
    if options["source"] == "file":
        return Preferences(sampler, read_labels(options["path"], sampler), description=description)
    foresee = options.get("foresee")
    if options["queries"] is None:
        return Preferences(sampler, None, options["ties"], description, foresee)
    generator = torch.Generator().manual_seed(int(options["seed"]))
    pairs = scripted_pairs(sampler, int(options["queries"]), generator, options["ties"], foresee)
    return Preferences(sampler, pairs, options["ties"], description, foresee)
