"""Callbacks with Stable-Baselines3's interface, for every learner: the base class, lists,
checkpoints (every N steps or at iteration boundaries) and the progress bar. Evaluation in an
environment is online RL's (:mod:`mdpo.rl.callbacks`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from mdpo.core.utils import check_int

if TYPE_CHECKING:
    from mdpo.core.learner import Learner
    from mdpo.core.logger import Logger


class BaseCallback:
    """Base class: override the ``_on_*`` hooks; ``_on_step`` returning False stops training.

    Attributes set by :meth:`init_callback`: ``model``, ``logger``; kept up to date:
    ``n_calls`` (number of vector steps), ``num_timesteps`` (env transitions so far).
    """

    def __init__(self, verbose: int = 0):
        self.verbose = verbose
        self.model: Learner | None = None
        self.n_calls = 0
        self.num_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    @property
    def logger(self) -> Logger:
        assert self.model is not None
        return self.model.logger

    def init_callback(self, model: Learner) -> None:
        """Attach the agent."""
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_
        self.num_timesteps = self.model.num_timesteps
        self._on_training_start()

    def _on_training_start(self) -> None:
        pass

    def on_rollout_start(self) -> None:
        self._on_rollout_start()

    def _on_rollout_start(self) -> None:
        pass

    def on_step(self) -> bool:
        """Called after each vector step; returns False to stop training."""
        self.n_calls += 1
        self.num_timesteps = self.model.num_timesteps
        return self._on_step()

    def _on_step(self) -> bool:
        return True

    def on_rollout_end(self) -> None:
        self.num_timesteps = self.model.num_timesteps
        self._on_rollout_end()

    def _on_rollout_end(self) -> None:
        pass

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_end(self) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        """Share the caller's local variables with the callback."""
        self.locals.update(locals_)


class CallbackList(BaseCallback):
    """Several callbacks called in order."""

    def __init__(self, callbacks: list[BaseCallback]):
        super().__init__()
        self.callbacks = list(callbacks)

    def _init_callback(self) -> None:
        for callback in self.callbacks:
            callback.init_callback(self.model)
            callback.parent = self.parent

    def _on_training_start(self) -> None:
        for callback in self.callbacks:
            callback.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        for callback in self.callbacks:
            callback.on_rollout_start()

    def _on_step(self) -> bool:
        keep_going = True
        for callback in self.callbacks:
            keep_going = callback.on_step() and keep_going
        return keep_going

    def _on_rollout_end(self) -> None:
        for callback in self.callbacks:
            callback.on_rollout_end()

    def _on_training_end(self) -> None:
        for callback in self.callbacks:
            callback.on_training_end()


class ConvertCallback(BaseCallback):
    """Wraps a function ``f(locals, globals) -> bool`` (SB3's functional callbacks)."""

    def __init__(self, callback: Callable[[dict, dict], bool], verbose: int = 0):
        super().__init__(verbose)
        self.callback = callback

    def _on_step(self) -> bool:
        return bool(self.callback(self.locals, self.globals))


CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$")


class CheckpointCallback(BaseCallback):
    """Save the whole agent every ``save_freq`` calls (vector steps), as SB3's.

    A checkpoint is a full model file: weights, optimizer, normalization statistics, step
    counter and RNG states, written atomically, so ``Agent.load`` + ``learn(...,
    reset_num_timesteps=False)`` resumes from it. See :func:`latest_checkpoint`.

    Args:
        save_freq: save every this many calls (each call is ``n_envs`` env steps).
        save_path: folder of the checkpoints.
        name_prefix: file name prefix; files are ``{prefix}_{num_timesteps}_steps.zip``.
        keep_last: keep only the newest this many checkpoints (all when ``None``).
        save_replay_buffer: also save an off-policy agent's replay buffer (see
            :func:`replay_buffer_path`).
        save_vecnormalize: accepted for SB3 compatibility; statistics are in the model file.
        verbose: print a line per checkpoint when >= 2.
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        keep_last: int | None = None,
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.save_freq = check_int(save_freq, "save_freq")
        self.save_path = save_path
        self.name_prefix = name_prefix
        self.keep_last = keep_last
        self.save_replay_buffer = save_replay_buffer

    def _init_callback(self) -> None:
        os.makedirs(self.save_path, exist_ok=True)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save()
        return True

    def save(self) -> str:
        """Write a checkpoint now and prune old ones; returns its path."""
        return save_checkpoint(
            self.model,
            self.save_path,
            self.name_prefix,
            self.keep_last,
            self.verbose,
            self.save_replay_buffer,
        )


class IterationCheckpointCallback(BaseCallback):
    """Save a full checkpoint at the first iteration boundary after every ``save_freq`` steps.

    Unlike :class:`CheckpointCallback` (which saves mid-rollout, as SB3's), the checkpoint is
    taken when a rollout is about to start: the last rollout has been trained on and the step
    counter matches the weights and optimizer, so a resumed run continues from that point
    (with freshly reset envs: episodes in flight at the checkpoint are not restored).

    Args:
        save_freq: env steps (summed over the envs) between checkpoints.
        save_path: folder of the checkpoints.
        name_prefix: file name prefix (``{prefix}_{num_timesteps}_steps.zip``).
        keep_last: keep only the newest this many checkpoints (all when ``None``).
        save_replay_buffer: also save an off-policy agent's replay buffer, so that a resumed
            run continues with its data (default True).
        verbose: print a line per checkpoint when >= 2.
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        keep_last: int | None = 2,
        save_replay_buffer: bool = True,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.save_freq = check_int(save_freq, "save_freq")
        self.save_path = save_path
        self.name_prefix = name_prefix
        self.keep_last = keep_last
        self.save_replay_buffer = save_replay_buffer
        self._next_save = save_freq

    def _on_training_start(self) -> None:
        os.makedirs(self.save_path, exist_ok=True)
        done = self.model.num_timesteps
        self._next_save = (done // self.save_freq + 1) * self.save_freq

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self._next_save:
            self.save()

    def save(self) -> str:
        """Write a checkpoint now and prune old ones; returns its path."""
        steps = self.model.num_timesteps
        self._next_save = (steps // self.save_freq + 1) * self.save_freq
        return save_checkpoint(
            self.model,
            self.save_path,
            self.name_prefix,
            self.keep_last,
            self.verbose,
            self.save_replay_buffer,
        )


def save_checkpoint(
    model: Learner,
    folder: str,
    name_prefix: str,
    keep_last: int | None,
    verbose: int = 0,
    save_replay_buffer: bool = False,
) -> str:
    """Save ``{folder}/{name_prefix}_{steps}_steps.zip``; keep only the newest ``keep_last``.

    With ``save_replay_buffer`` (off-policy agents), the replay buffer goes next to it, in
    :func:`replay_buffer_path`, and is pruned with it.
    """
    path = os.path.join(folder, f"{name_prefix}_{model.num_timesteps}_steps.zip")
    if save_replay_buffer and hasattr(model, "save_replay_buffer"):
        model.save_replay_buffer(replay_buffer_path(path))  # first: the checkpoint marks done
    model.save(path)
    if verbose >= 2:
        print(f"Saving model checkpoint to {path}")
    if keep_last is not None:
        for old in list_checkpoints(folder, name_prefix)[:-keep_last]:
            os.remove(old)
            if os.path.exists(replay_buffer_path(old)):
                os.remove(replay_buffer_path(old))
    return path


def replay_buffer_path(checkpoint: str) -> str:
    """Where the replay buffer of ``checkpoint`` (``..._steps.zip``) is kept."""
    return checkpoint[: -len(".zip")] + "_replay_buffer.zip"


def list_checkpoints(folder: str, name_prefix: str | None = None) -> list[str]:
    """Checkpoint files in ``folder``, oldest (fewest steps) first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = CHECKPOINT_PATTERN.match(name)
        if match and (name_prefix is None or match.group("prefix") == name_prefix):
            found.append((int(match.group("steps")), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(folder: str, name_prefix: str | None = None) -> str | None:
    """The checkpoint with the most steps in ``folder``, or ``None``."""
    checkpoints = list_checkpoints(folder, name_prefix)
    return checkpoints[-1] if checkpoints else None


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over the training budget, updated after each rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = None

    def _on_training_start(self) -> None:

        total = self.model.planned_timesteps  # the budget rounded up to whole iterations
        self.bar = tqdm(
            total=total, initial=self.model.num_timesteps, unit="step", dynamic_ncols=True
        )

    def _on_rollout_end(self) -> None:
        self.bar.update(self.model.num_timesteps - self.bar.n)

    def _on_training_end(self) -> None:
        self.bar.update(self.model.num_timesteps - self.bar.n)
        self.bar.close()


def as_callback(callback: Any) -> BaseCallback | None:
    """Accept ``None``, a callback, a list of callbacks, or a function (SB3's conventions)."""
    if callback is None:
        return None
    if isinstance(callback, list):
        return CallbackList([c for c in (as_callback(x) for x in callback) if c is not None])
    if isinstance(callback, BaseCallback):
        return callback
    if callable(callback):
        return ConvertCallback(callback)
    raise ValueError(f"callback must be a BaseCallback, a list or a function, got {callback!r}")
