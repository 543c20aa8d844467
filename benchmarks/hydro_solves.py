"""LP solves per second of the HiGHS backend on the hydro case: stage LPs and 96-stage
deterministic equivalents, warm (re-solve after changing the inflow bounds, HiGHS keeps its
basis) vs cold (the solver state cleared before every solve).

    python benchmarks/hydro_solves.py --case bolivia --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from common import run_metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rate(model, columns, scenarios, cold: bool) -> float:
    """Solves per second over ``scenarios`` (each an array of inflow bounds for ``columns``)."""
    start = time.perf_counter()
    for values in scenarios:
        model.set_col_bounds(columns, values, values)
        if cold:
            model.highs.clearSolver()
        model.solve()
    return len(scenarios) / (time.perf_counter() - start)


def main() -> None:
    import mdpo.envs.hydro  # noqa: F401
    from mdpo.envs.hydro import load_case
    from mdpo.envs.hydro.model import build_deterministic_equivalent, build_stage_problem
    from mdpo.rules.highs import HighsModel

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--case", default="bolivia")
    parser.add_argument("--stage-solves", type=int, default=500)
    parser.add_argument("--de-solves", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "hydro", "solves"))
    args = parser.parse_args()
    case = load_case(args.case)
    rng = np.random.default_rng(0)
    rows = case.inflows.shape[0]
    stage = build_stage_problem(case)
    stage_inflows = [
        case.inflows[rng.integers(rows), :, rng.integers(case.n_scenarios)]
        for _ in range(args.stage_solves)
    ]
    paths = [
        np.stack(
            [case.inflows[t % rows, :, rng.integers(case.n_scenarios)] for t in range(96)]
        ).ravel()
        for _ in range(args.de_solves)
    ]
    de = build_deterministic_equivalent(case, paths[0].reshape(96, -1))
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, model, cols, data in (
            ("stage", HighsModel(stage.program), stage.inflow, stage_inflows),
            ("96-stage", HighsModel(de.program), de.inflow.ravel(), paths),
        ):
            for cold in (False, True):
                key = f"{name} {'cold' if cold else 'warm'}"
                results.setdefault(key, []).append(rate(model, cols, data, cold))
    medians = {k: statistics.median(v) for k, v in results.items()}
    for key, value in medians.items():
        print(f"{args.case} {key}: {value:.1f} solves/s (median of {args.repeats})")
    os.makedirs(args.out, exist_ok=True)
    command = "python benchmarks/hydro_solves.py " + " ".join(sys.argv[1:])
    meta = {
        **run_metadata(command),
        "case": args.case,
        "solves_per_s": medians,
        "all": results,
        "stage_lp": [stage.program.n_variables, stage.program.n_rows],
        "deterministic_equivalent": [de.program.n_variables, de.program.n_rows],
    }
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(meta, handle, indent=1)
    print(f"wrote {args.out}/summary.json")


if __name__ == "__main__":
    main()
