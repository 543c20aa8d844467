"""TRPO's Fisher-vector product, eager and compiled (not a test): is compiling it worth it?

TRPO spends ``cg_max_steps + 1`` Fisher-vector products per iteration (conjugate gradient and
the step's curvature). ``TRPO.fisher_vector_product`` differentiates ``∇KL · v`` once more
(a double backward through a graph built once per iteration), which ``torch.compile`` does
not compile (no double backward). Timed here, per product, on Hopper-v5's sizes (11
observations, 3 actions, [64, 64] actor, a rollout of 2048 states):

- ``double backward``: the agent's product (its graph's construction timed apart);
- ``forward-over-reverse``: ``torch.func.jvp(torch.func.grad(kl))``, eager and compiled;
- ``Gauss-Newton``: ``Jᵀ M J v`` (``TRPO._gauss_newton_product``), eager, and compiled as
  ``TRPO(compile_update=True)`` computes it;

each checked against the agent's product; then whole TRPO iterations (rollout, products,
line search, critic epochs) on Hopper-v5 with and without ``compile_update``, and the share
of the products in them. Medians of ``--repeats`` timings (per product) and of
``--iterations`` iterations.

    python benchmarks/trpo_fvp.py --out results/speed/trpo_fvp
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import torch
from torch.func import functional_call, grad, jvp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import run_metadata, write_rows  # noqa: E402
from mdpo import TRPO  # noqa: E402
from mdpo.rl.networks import gaussian_kl  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=5, help="timed TRPO iterations")
    parser.add_argument("--out", default="results/speed/trpo_fvp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = run_metadata("python " + shlex.join(sys.argv))
    print(meta, flush=True)

    agent = TRPO("MlpPolicy", args.env, seed=0, device="cpu")  # sb3-contrib's defaults
    policy, batch = agent.policy, agent.n_steps * agent.n_envs
    obs = torch.randn(batch, policy.obs_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old_mean = policy.distribution_params(obs)
    old_log_std = policy.log_std.detach().clone()
    params = agent.actor_params.params
    vector = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1))
    damping = agent.cg_damping

    product = agent.fisher_vector_product(obs, old_mean, old_log_std)
    reference = product(vector)
    build = median_seconds(
        lambda: agent.fisher_vector_product(obs, old_mean, old_log_std), args.repeats
    )

    # the same parameters as one flat vector (the actor's order: MLP, action head, log-std)
    name_of = {id(p): name for name, p in policy.named_parameters()}
    names, shapes = [name_of[id(p)] for p in params], [p.shape for p in params]
    sizes = [p.numel() for p in params]
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def as_dict(flat: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
        chunks = torch.split(flat, sizes[:count])
        return {n: c.view(s) for n, c, s in zip(names[:count], chunks, shapes[:count])}

    def kl_of(flat: torch.Tensor) -> torch.Tensor:
        named = as_dict(flat, len(sizes))
        mean = functional_call(policy, named, (obs,), strict=False)
        return gaussian_kl(old_mean, old_log_std, mean, named["log_std"]).mean()

    def forward_over_reverse(v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(kl_of), (theta,), (v,))[1] + damping * v

    compiled_agent = TRPO("MlpPolicy", args.env, seed=0, device="cpu", compile_update=True)
    compiled_agent.policy.load_state_dict(policy.state_dict())
    variants = {
        "double backward (the agent's)": product,
        "forward-over-reverse, eager": forward_over_reverse,
        "forward-over-reverse, compiled": torch.compile(forward_over_reverse, dynamic=False),
        "Gauss-Newton, eager": lambda v: compiled_agent._gauss_newton_product(
            obs, old_mean, old_log_std, v
        ),
        "Gauss-Newton, compiled (compile_update)": compiled_agent.fisher_vector_product(
            obs, old_mean, old_log_std
        ),
    }
    rows = []
    for name, fn in variants.items():
        tic = time.perf_counter()
        error = float((fn(vector) - reference).abs().max())  # the first call compiles
        first = time.perf_counter() - tic
        seconds = median_seconds(lambda f=fn: f(vector), args.repeats)
        rows.append(
            {
                "variant": name,
                "ms_per_product": round(seconds * 1e3, 3),
                "first_call_s": round(first, 2),
                "max_abs_diff": f"{error:.1e}",
            }
        )
        print(
            f"{name:34s} {seconds * 1e3:7.2f} ms/product  first call {first:6.2f} s  "
            f"max |diff| {error:.1e} (of {float(reference.abs().max()):.2f})",
            flush=True,
        )

    # whole iterations of TRPO on the env (rollout, products, line search, critic epochs)
    iteration = {}
    for name, trained in (("eager", agent), ("compile_update", compiled_agent)):
        trained.learn(batch)  # warm-up (and compilation)
        times = []
        for _ in range(args.iterations):
            tic = time.perf_counter()
            trained.learn(batch, reset_num_timesteps=False)
            times.append(time.perf_counter() - tic)
        iteration[name] = statistics.median(times)
    products = (agent.cg_max_steps + 1) * rows[0]["ms_per_product"] / 1e3 + build
    print(
        f"TRPO iteration on {args.env}: {iteration['eager'] * 1e3:.0f} ms eager, "
        f"{iteration['compile_update'] * 1e3:.0f} ms with compile_update "
        f"({iteration['eager'] / iteration['compile_update']:.2f}x); the eager iteration's "
        f"{agent.cg_max_steps + 1} products and their graph: {products * 1e3:.0f} ms "
        f"({products / iteration['eager']:.0%})",
        flush=True,
    )
    for row in rows:
        row["graph_build_ms"] = round(build * 1e3, 3) if row is rows[0] else ""
        row["iteration_ms_eager"] = round(iteration["eager"] * 1e3, 1)
        row["iteration_ms_compile_update"] = round(iteration["compile_update"] * 1e3, 1)
    os.makedirs(args.out, exist_ok=True)
    write_rows(os.path.join(args.out, "fvp.csv"), rows)
    with open(os.path.join(args.out, "meta.txt"), "w") as handle:
        handle.writelines(f"{key}: {value}\n" for key, value in meta.items())
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
