"""Callbacks that evaluate in an environment (Stable-Baselines3's ``EvalCallback`` and
``StopTrainingOnRewardThreshold``); the others are every learner's (:mod:`mdpo.core.callbacks`,
re-exported here)."""

from __future__ import annotations

import csv
import os

import numpy as np

from mdpo.core.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    ConvertCallback,
    IterationCheckpointCallback,
    ProgressBarCallback,
    as_callback,
    latest_checkpoint,
    list_checkpoints,
    replay_buffer_path,
    save_checkpoint,
)
from mdpo.core.utils import check_int
from mdpo.rl.evaluation import evaluate_policy
from mdpo.rl.runners import EnvSpec, make_vec_env

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "ConvertCallback",
    "EvalCallback",
    "IterationCheckpointCallback",
    "ProgressBarCallback",
    "StopTrainingOnRewardThreshold",
    "as_callback",
    "latest_checkpoint",
    "list_checkpoints",
    "replay_buffer_path",
    "save_checkpoint",
]


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
