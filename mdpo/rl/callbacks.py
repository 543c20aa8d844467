"""Callbacks with Stable-Baselines3's interface: checkpoints, evaluation, progress bar."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mdpo.core.utils import check_int
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import EnvSpec, make_vec_env

if TYPE_CHECKING:
    from mdpo.core.logger import Logger
    from mdpo.rl.base import Agent


class BaseCallback:
    """Base class: override the ``_on_*`` hooks; ``_on_step`` returning False stops training.

    Attributes set by :meth:`init_callback`: ``model``, ``logger``; kept up to date:
    ``n_calls`` (number of vector steps), ``num_timesteps`` (env transitions so far).
    """

    def __init__(self, verbose: int = 0):
        self.verbose = verbose
        self.model: Agent | None = None
        self.n_calls = 0
        self.num_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    @property
    def logger(self) -> Logger:
        assert self.model is not None
        return self.model.logger

    def init_callback(self, model: Agent) -> None:
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
    model: Agent,
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


class EvalCallback(BaseCallback):
    """Evaluate every ``eval_freq`` calls; log ``eval/mean_reward``; keep the best model.

    Args:
        eval_env: an env id, ``gymnasium.Env``, factory, or vector env, separate from training.
        callback_on_new_best: called when a new best mean return is reached.
        callback_after_eval: called after each evaluation.
        n_eval_episodes: episodes per evaluation.
        eval_freq: evaluate every this many calls (vector steps).
        log_path: folder for ``evaluations.csv`` (timesteps, mean, std, lengths, returns).
        best_model_save_path: folder for ``best_model.zip``.
        deterministic: evaluate the deterministic policy.
        render: render during evaluation.
        verbose: print each evaluation when >= 1.
        warn: unused; SB3 compatibility.
        seed: seed of the eval env's first reset (default: the agent's seed + 10 000).
    """

    def __init__(
        self,
        eval_env: EnvSpec,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        log_path: str | None = None,
        best_model_save_path: str | None = None,
        deterministic: bool = True,
        render: bool = False,
        verbose: int = 1,
        warn: bool = True,
        seed: int | None = None,
    ):
        super().__init__(verbose)
        check_int(eval_freq, "eval_freq")
        self.eval_env = make_vec_env(eval_env)
        self.callback_on_new_best = callback_on_new_best
        self.callback_after_eval = callback_after_eval
        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.log_path = log_path
        self.best_model_save_path = best_model_save_path
        self.deterministic = deterministic
        self.render = render
        self.seed = seed
        self.best_mean_reward = -np.inf
        self.last_mean_reward = -np.inf
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self.evaluations_length: list[list[int]] = []
        self._first_eval = True

    def _init_callback(self) -> None:
        model_space = self.model.observation_space
        if self.eval_env.single_observation_space.shape != model_space.shape:
            raise ValueError(
                f"the eval env's observation space {self.eval_env.single_observation_space} "
                f"differs from the training env's {model_space}"
            )
        for folder in (self.best_model_save_path, self.log_path):
            if folder is not None:
                os.makedirs(folder, exist_ok=True)
        for callback in (self.callback_on_new_best, self.callback_after_eval):
            if callback is not None:
                callback.init_callback(self.model)
                callback.parent = self

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq != 0:
            return True
        return self.evaluate()

    def evaluate(self) -> bool:
        """Run an evaluation now; returns False when a child callback asks to stop."""
        seed = None
        if self._first_eval:
            seed = self.seed if self.seed is not None else self.model.seed + 10_000
            self._first_eval = False
        returns, lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            render=self.render,
            return_episode_rewards=True,
            seed=seed,
        )
        mean_reward, std_reward = float(np.mean(returns)), float(np.std(returns))
        mean_length = float(np.mean(lengths))
        self.last_mean_reward = mean_reward
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(returns)
        self.evaluations_length.append(lengths)
        if self.log_path is not None:
            self._append_csv(mean_reward, std_reward, mean_length, returns)
        if self.verbose >= 1:
            print(
                f"Eval num_timesteps={self.num_timesteps}, "
                f"episode_reward={mean_reward:.2f} +/- {std_reward:.2f}, "
                f"episode_length={mean_length:.2f}"
            )
        self.logger.record("eval/mean_reward", mean_reward)
        self.logger.record("eval/mean_ep_length", mean_length)
        self.logger.dump(self.num_timesteps)
        keep_going = True
        if mean_reward > self.best_mean_reward:
            self.best_mean_reward = mean_reward
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model.zip"))
            if self.verbose >= 1:
                print("New best mean reward!")
            if self.callback_on_new_best is not None:
                keep_going = self.callback_on_new_best.on_step()
        if self.callback_after_eval is not None:
            keep_going = self.callback_after_eval.on_step() and keep_going
        return keep_going

    def _append_csv(self, mean: float, std: float, length: float, returns: list[float]) -> None:
        path = os.path.join(self.log_path, "evaluations.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(
                    ["timesteps", "mean_reward", "std_reward", "mean_ep_length", "returns"]
                )
            writer.writerow(
                [self.num_timesteps, mean, std, length, " ".join(f"{r:.6g}" for r in returns)]
            )


class StopTrainingOnRewardThreshold(BaseCallback):
    """Child of :class:`EvalCallback`: stop when the best mean return exceeds a threshold."""

    def __init__(self, reward_threshold: float, verbose: int = 0):
        super().__init__(verbose)
        self.reward_threshold = reward_threshold

    def _on_step(self) -> bool:
        assert isinstance(self.parent, EvalCallback), "use it as callback_on_new_best"
        return bool(self.parent.best_mean_reward < self.reward_threshold)


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over the training budget, updated after each rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        total = self.model._total_timesteps
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
