"""Torch-native envs against gymnasium's vector envs, and PPO on them (not a test).

Two parts, each printing its table and writing it to ``--out``:

1. ``speed``: environment steps per second (summed over the envs; random actions drawn each
   step on the env's side, autoreset included) of every torch-native env at 1, 64, 1024 and
   16384 envs, in float64 (the default) and float32, against gymnasium's ``SyncVectorEnv``
   of the same count (``SAME_STEP`` autoreset, as the runner uses) in the same run; for
   CartPole also gymnasium's own NumPy-vectorized ``CartPoleVectorEnv``. The median of
   ``--repeats`` timed runs of at least ``--seconds`` each.
2. ``rollout``: PPO's rollout collection on CartPole (policy forward, sampling, env step,
   buffer writes; transitions per second) at each ``--n-envs``: eager, with the env's step
   compiled, and with the whole rollout step compiled (what the runner does on a compiled
   env), the median of ``--repeats`` timed runs of at least ``--seconds`` each.
3. ``ppo``: wall time for PPO to solve CartPole-v1 (mean deterministic return >= 475 over 10
   episodes of gymnasium's CartPole-v1, evaluated every ``--eval-every`` steps; evaluation
   time excluded) with 1 gymnasium env and with 64 and 1024 torch envs, for each seed.

The GPU variant is the same script with ``--device cuda`` (it stops with a clear error where
CUDA is absent)::

    python benchmarks/torch_envs.py --out results/torch_envs
    python benchmarks/torch_envs.py --device cuda --out results/torch_envs_cuda
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import run_metadata, write_rows  # noqa: E402
from mdpo.core.utils import get_device  # noqa: E402
from mdpo.rl.torch_classic import TORCH_ENVS, make_torch_env  # noqa: E402

# PPO settings per variant: (env, n_envs, hyperparameters). The 1-env one is RL Zoo's
# CartPole-v1 PPO with its 8 × 32 rollout as 1 × 256; the torch ones spread a rollout of
# about 2k (64 envs) and 16k (1024 envs) steps over many envs.
PPO_1024 = dict(n_steps=16, batch_size=4096, n_epochs=10, learning_rate=1e-3)
COMPILED_ENV = {"env_kwargs": {"compile": True}}
PPO_VARIANTS = {
    "gymnasium, 1 env": (
        "CartPole-v1",
        1,
        dict(
            n_steps=256,
            batch_size=256,
            n_epochs=20,
            gamma=0.98,
            gae_lambda=0.8,
            learning_rate=1e-3,
            ent_coef=0.0,
        ),
    ),
    "torch, 64 envs": (
        "torch:CartPole-v1",
        64,
        dict(n_steps=32, batch_size=512, n_epochs=10, learning_rate=1e-3),
    ),
    "torch, 1024 envs": ("torch:CartPole-v1", 1024, PPO_1024),
    # the env compiled (TorchVectorEnv.compile_step): the runner then compiles the whole
    # rollout step, policy included (a CUDA graph on a GPU)
    "torch, 1024 envs, compiled env": ("torch:CartPole-v1", 1024, PPO_1024 | COMPILED_ENV),
    "torch, 1024 envs, compiled env and update": (
        "torch:CartPole-v1",
        1024,
        PPO_1024 | COMPILED_ENV | {"compile_update": True},
    ),
    "torch, 16384 envs, compiled env": (
        "torch:CartPole-v1",
        16384,
        PPO_1024 | COMPILED_ENV | {"n_steps": 8, "batch_size": 32768},
    ),
}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on an accelerator)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, n_envs: int, seconds: float, sync=lambda: None) -> float:
    """Env steps per second of ``step()`` (one vector step of ``n_envs``), timed for at least
    ``seconds`` and 3 calls after 2 warm-up calls."""
    for _ in range(2):
        step()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    sync()
    return calls * n_envs / (time.perf_counter() - start)


def torch_stepper(
    env_id: str, n_envs: int, device: torch.device, dtype: torch.dtype, compiled: bool = False
):
    env = make_torch_env(env_id, n_envs, device, dtype=dtype, compile=compiled)
    env.reset(seed=0)
    space = env.single_action_space
    generator = torch.Generator(device=device).manual_seed(0)
    if isinstance(space, gym.spaces.Discrete):
        return lambda: env.step(
            torch.randint(0, int(space.n), (n_envs,), generator=generator, device=device)
        )
    low, high = float(space.low[0]), float(space.high[0])
    shape = (n_envs, *space.shape)
    return lambda: env.step(
        low + (high - low) * torch.rand(shape, generator=generator, device=device)
    )


def gym_stepper(venv: gym.vector.VectorEnv):
    venv.reset(seed=0)
    venv.action_space.seed(0)
    return lambda: venv.step(venv.action_space.sample())


def speed(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for env_id in args.envs:
        for n_envs in args.n_envs:
            variants = {
                "torch float64": lambda n=n_envs, e=env_id: torch_stepper(
                    e, n, device, torch.float64
                ),
                "torch float32": lambda n=n_envs, e=env_id: torch_stepper(
                    e, n, device, torch.float32
                ),
                "torch float32 compiled": lambda n=n_envs, e=env_id: torch_stepper(
                    e, n, device, torch.float32, compiled=True
                ),
                "gymnasium SyncVectorEnv": lambda n=n_envs, e=env_id: gym_stepper(
                    gym.vector.SyncVectorEnv(
                        [lambda: gym.make(e)] * n,
                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
                    )
                ),
            }
            if env_id == "CartPole-v1":
                variants["gymnasium CartPoleVectorEnv (NumPy)"] = lambda n=n_envs: gym_stepper(
                    gym.make_vec("CartPole-v1", n, vectorization_mode="vector_entry_point")
                )
            if args.variants:
                keep = {"gymnasium SyncVectorEnv", *args.variants}  # the anchor stays
                variants = {k: v for k, v in variants.items() if k in keep}
            results = {}
            for name, make in variants.items():
                on_device = name.startswith("torch")
                sync = (lambda: synchronize(device)) if on_device else (lambda: None)
                runs = []
                for _ in range(args.repeats):
                    step = make()
                    runs.append(time_steps(step, n_envs, args.seconds, sync))
                results[name] = statistics.median(runs)
            anchor = results["gymnasium SyncVectorEnv"]
            for name, value in results.items():
                row = {
                    "env": env_id,
                    "n_envs": n_envs,
                    "implementation": name,
                    "device": str(device) if name.startswith("torch") else "cpu (NumPy)",
                    "steps_per_s": round(value),
                    "vs_SyncVectorEnv": round(value / anchor, 2),
                }
                rows.append(row)
                print(
                    f"{env_id:26s} {n_envs:6d} {name:38s} {value:14,.0f} steps/s "
                    f"{value / anchor:8.2f}x",
                    flush=True,
                )
    return rows


def rollout(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Transitions per second of PPO's rollout collection on CartPole, three ways."""
    from mdpo import PPO

    def collector(n_envs: int, mode: str):
        agent = PPO(
            "MlpPolicy",
            "torch:CartPole-v1",
            n_envs=n_envs,
            n_steps=16,
            batch_size=16 * n_envs,
            seed=0,
            device=device,
            env_kwargs={"compile": mode != "eager"},
        )
        agent.runner.reset(seed=0)

        def collect() -> None:
            policy = agent._rollout_policy()
            if mode == "env step compiled":  # a plain closure: the runner compiles no more
                agent.runner.rollout(16, lambda obs, t: policy(obs, t))
            else:
                agent.runner.rollout(16, policy)

        return collect

    rows = []
    for n_envs in args.n_envs:
        results = {}
        for mode in ("eager", "env step compiled", "rollout step compiled"):
            runs = []
            for _ in range(args.repeats):
                collect = collector(n_envs, mode)
                runs.append(
                    time_steps(collect, 16 * n_envs, args.seconds, lambda: synchronize(device))
                )
            results[mode] = statistics.median(runs)
        for mode, value in results.items():
            rows.append(
                {
                    "env": "CartPole-v1",
                    "n_envs": n_envs,
                    "rollout": mode,
                    "device": str(device),
                    "transitions_per_s": round(value),
                    "vs_eager": round(value / results["eager"], 2),
                }
            )
            print(
                f"rollout {n_envs:6d} envs {mode:22s} {value:14,.0f} transitions/s "
                f"{value / results['eager']:6.2f}x",
                flush=True,
            )
    return rows


def ppo(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from mdpo import PPO
    from mdpo.rl.callbacks import BaseCallback
    from mdpo.rl.evaluation import evaluate_policy

    class SolveClock(BaseCallback):
        """Evaluate every ``every`` steps; stop when solved; time training only."""

        def __init__(self, every: int):
            super().__init__()
            self.every, self.next_eval = every, every
            self.eval_seconds, self.solved_at, self.last_mean = 0.0, None, float("nan")

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next_eval:
                return True
            self.next_eval += self.every
            tic = time.perf_counter()
            mean, _ = evaluate_policy(self.model, "CartPole-v1", n_eval_episodes=10, seed=0)
            self.eval_seconds += time.perf_counter() - tic
            self.last_mean = mean
            if mean >= 475:
                self.solved_at = self.num_timesteps
                return False
            return True

    rows = []
    for name, (env_id, n_envs, params) in PPO_VARIANTS.items():
        if args.ppo_variants and name not in args.ppo_variants:
            continue
        for seed in args.seeds:
            torch.manual_seed(seed)
            agent = PPO("MlpPolicy", env_id, n_envs=n_envs, seed=seed, device=device, **params)
            clock = SolveClock(args.eval_every)
            tic = time.perf_counter()
            agent.learn(args.ppo_budget, callback=clock)
            synchronize(device)
            train_seconds = time.perf_counter() - tic - clock.eval_seconds
            row = {
                "variant": name,
                "device": str(device),
                "seed": seed,
                "solved": clock.solved_at is not None,
                "env_steps": clock.solved_at or agent.num_timesteps,
                "train_seconds": round(train_seconds, 2),
                "last_eval_mean": clock.last_mean,
            }
            rows.append(row)
            print(
                f"PPO {name:18s} seed {seed}: solved={row['solved']} after {row['env_steps']:,} "
                f"steps, {train_seconds:.1f} s of training (last eval {clock.last_mean:.1f})",
                flush=True,
            )
    return rows


def plot(out: str) -> None:
    """``speed.png``: steps/s against the number of envs, one panel per env, from
    ``speed.csv``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(out, "speed.csv")) as handle:
        rows = list(csv.DictReader(handle))
    envs = list(dict.fromkeys(row["env"] for row in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.6), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        mine = [row for row in rows if row["env"] == env_id]
        for name in dict.fromkeys(row["implementation"] for row in mine):
            points = [
                (int(r["n_envs"]), float(r["steps_per_s"]))
                for r in mine
                if r["implementation"] == name
            ]
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set(xscale="log", yscale="log", title=env_id, xlabel="envs")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"env steps/s ({mine[0]['device']})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "speed.png"), dpi=110)
    print(f"wrote {os.path.join(out, 'speed.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=["speed", "rollout", "ppo", "all", "plot"],
        default="all",
        help="plot: redraw speed.png from OUT/speed.csv",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--envs", nargs="+", default=list(TORCH_ENVS), choices=list(TORCH_ENVS))
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 64, 1024, 16384])
    parser.add_argument("--seconds", type=float, default=1.0, help="least time of a timed run")
    parser.add_argument(
        "--variants", nargs="+", help="speed: these implementations only (and the anchor)"
    )
    parser.add_argument(
        "--ppo-variants", nargs="+", choices=list(PPO_VARIANTS), help="ppo: these variants only"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=8192)
    parser.add_argument("--ppo-budget", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="results/torch_envs")
    args = parser.parse_args()
    if args.part == "plot":
        plot(args.out)
        return
    device = get_device(args.device)  # a clear error where CUDA is asked for and absent
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    command = "python " + shlex.join(sys.argv)
    meta = run_metadata(command) | {"device": str(device), "torch_threads": str(args.threads)}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    print(meta, flush=True)
    parts = ["speed", "rollout", "ppo"] if args.part == "all" else [args.part]
    for part in parts:
        rows = {"speed": speed, "rollout": rollout, "ppo": ppo}[part](args, device)
        write_rows(os.path.join(args.out, f"{part}.csv"), rows)
        with open(os.path.join(args.out, f"{part}_meta.txt"), "w") as handle:
            handle.writelines(f"{key}: {value}\n" for key, value in meta.items())
        if part == "speed":
            plot(args.out)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
