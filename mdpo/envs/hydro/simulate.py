"""What a policy does stage by stage on fixed inflow scenarios: records, files and plots.

Every method of the case study (SDDP, the perfect-foresight bound, RL agents on
``HydroDispatch-v0``, TS-DDR) is judged on the same scenarios and reported the same way: the
operating cost of each scenario (no target-slack penalty), and per stage the mean stored volume
and the mean thermal generation, which the reference study plots (``reference_results/``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mdpo.core.limits import BadFileError, dumps_json
from mdpo.envs.hydro.case import DATA_DIR, Case
from mdpo.rules.lp import LinearProgram
from mdpo.rules.nlp import NonlinearProgram

#: the case study's stages last one hour (K = 0.0036 hm³ per m³/s, as the reference runs)
STAGE_HOURS = 1.0
#: load shed below this (MW) counts as none: an interior-point solver's zeros are not exact
SHED_TOLERANCE_MW = 1e-3


@dataclass
class StageRecords:
    """End-of-stage quantities of a policy on ``scenarios`` paths of ``stages`` stages."""

    cost: np.ndarray  # [scenarios, stages]: operating cost (generation + deficit)
    volume: np.ndarray  # [scenarios, stages, plants]: stored volume, hm³
    thermal: np.ndarray  # [scenarios, stages]: thermal generation, MW
    hydro: np.ndarray  # [scenarios, stages]: hydro generation, MW
    deficit: np.ndarray  # [scenarios, stages]: load shed, MW

    @classmethod
    def empty(cls, scenarios: int, stages: int, plants: int) -> StageRecords:
        """Zero-filled records, filled in by :meth:`store`."""
        zeros = np.zeros((scenarios, stages))
        return cls(
            zeros.copy(),
            np.zeros((scenarios, stages, plants)),
            zeros.copy(),
            zeros.copy(),
            zeros.copy(),
        )

    def store(self, scenario: int, stage: int, record: dict[str, np.ndarray | float]) -> None:
        """Put one :func:`stage_record` at ``(scenario, stage)``."""
        for key in ("cost", "volume", "thermal", "hydro", "deficit"):
            getattr(self, key)[scenario, stage] = record[key]

    @property
    def total_cost(self) -> np.ndarray:
        """``[scenarios]``: the cost of each scenario over all stages."""
        return self.cost.sum(axis=1)

    def summary(self) -> dict[str, float | list[float] | int]:
        """Mean scenario cost with a 95% normal confidence interval, and the load the stage
        problems could not serve: the share of (scenario, stage) pairs without shedding and
        the mean shed energy per scenario (MWh: MW × the stages' :data:`STAGE_HOURS`)."""
        costs = self.total_cost
        half = 1.96 * costs.std(ddof=1) / np.sqrt(len(costs)) if len(costs) > 1 else np.nan
        return {
            "scenarios": len(costs),
            "stages": self.cost.shape[1],
            "mean_cost": float(costs.mean()),
            "ci95": [float(costs.mean() - half), float(costs.mean() + half)],
            "no_shedding_share": float((self.deficit <= SHED_TOLERANCE_MW).mean()),
            # an interior-point solver's zeros can be a hair below zero
            "shed_mwh": float(np.clip(self.deficit, 0.0, None).sum(axis=1).mean() * STAGE_HOURS),
        }

    def stage_means(self) -> dict[str, np.ndarray]:
        """Per stage, the means over the scenarios (total volume summed over reservoirs)."""
        return {
            "cost": self.cost.mean(0),
            "total_volume": self.volume.sum(2).mean(0),
            "thermal_mw": self.thermal.mean(0),
            "hydro_mw": self.hydro.mean(0),
            "deficit_mw": self.deficit.mean(0),
        }

    def write(self, out: str, case: Case, label: str, prefix: str = "") -> dict:
        """Write ``{prefix}costs.csv`` (per scenario), ``{prefix}stages.csv`` (per-stage means,
        also of each reservoir), ``{prefix}stages.png`` (against the reference study's series
        where the case has them) into ``out``; returns :meth:`summary`."""
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{prefix}costs.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["scenario", "cost"])
            writer.writerows([i, c] for i, c in enumerate(self.total_cost))
        means = self.stage_means()
        plant_means = self.volume.mean(0)
        with open(os.path.join(out, f"{prefix}stages.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["stage", *means, *[f"volume[{p.name}]" for p in case.plants]])
            for t in range(self.cost.shape[1]):
                writer.writerow([t + 1, *[m[t] for m in means.values()], *plant_means[t]])
        plot_stages(os.path.join(out, f"{prefix}stages.png"), case, {label: means})
        return self.summary()


def stage_record(
    case: Case,
    program: LinearProgram | NonlinearProgram,
    primal: np.ndarray,
    generation: np.ndarray,
    deficit: np.ndarray,
    volume_out: np.ndarray,
) -> dict[str, np.ndarray | float]:
    """One stage's quantities from a solution: the cost is that of the stage's generation and
    deficit columns (so neither SDDP's θ nor a target-slack penalty nor other stages count).

    Args:
        case: the case.
        program: the solved problem (for its objective coefficients).
        primal: the solution's column values.
        generation, deficit, volume_out: the stage's columns (case order).
    """
    thermal = np.array([not g.hydro for g in case.generators])
    pg = primal[generation]
    shed = primal[deficit]
    cost = float(program.objective[generation] @ pg + program.objective[deficit] @ shed)
    base = case.base_mva
    return {
        "cost": cost,
        "volume": primal[volume_out],
        "thermal": base * pg[thermal].sum(),
        "hydro": base * pg[~thermal].sum(),
        "deficit": base * shed.sum(),
    }


def reference_series(case: Case, model: str = "DCPPowerModel") -> dict[str, dict] | None:
    """The reference study's per-stage means (``{method: {"total_volume", "thermal_mw"}}``)
    when the case ships them, else ``None``."""
    folder = os.path.join(DATA_DIR, case.name, "reference_results", model)
    if not os.path.isdir(folder):
        return None
    series: dict[str, dict] = {}
    for key, name in (("total_volume", "MeanVolume.csv"), ("thermal_mw", "MeanGeneration.csv")):
        with open(os.path.join(folder, name)) as handle:
            rows = list(csv.reader(handle))
        for j, method in enumerate(rows[0]):
            series.setdefault(method, {})[key] = np.array([float(r[j]) for r in rows[1:]])
    return series


def plot_stages(path: str, case: Case, runs: dict[str, dict[str, np.ndarray]]) -> None:
    """Mean total volume and mean thermal generation per stage of each run (``{label:
    stage_means}``), with the reference study's series (dashed) where the case has them."""
    import matplotlib  # matplotlib is slow to import: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib is slow to import: only when plotting

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    reference = reference_series(case) or {}
    capacity = sum(p.max_volume for p in case.plants)
    for key, axis in (("total_volume", axes[0]), ("thermal_mw", axes[1])):
        for i, (label, means) in enumerate(runs.items()):
            # the same color for a run in both panels; gray (C7) is the reference study's
            color = [f"C{k}" for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)][i % 9]
            axis.plot(np.arange(1, len(means[key]) + 1), means[key], color=color, label=label)
        axis.set_xlabel("stage")
        axis.grid(alpha=0.3)
    axes[0].set_title(f"stored volume, all reservoirs (capacity {capacity:.4g} hm³)")
    axes[0].set_ylabel("hm³")
    axes[1].set_title("thermal generation")
    axes[1].set_ylabel("MW")
    # the reference volume series exceed the data's total capacity (their unit is not stated):
    # drawn on their own axis, for their shape only; the generation series are in MW
    volume_axis = axes[0].twinx() if reference else None
    styles = iter([":", "--", "-.", (0, (1, 4))])
    for method, series in reference.items():  # gray, one dash style each: apart from ours
        style = next(styles, "--")
        for key, axis in (("total_volume", volume_axis), ("thermal_mw", axes[1])):
            axis.plot(
                np.arange(1, len(series[key]) + 1),
                series[key],
                linestyle=style,
                color="0.45",
                lw=1.2,
                label=f"reference {method}",
            )
    if volume_axis is not None:
        volume_axis.set_ylabel("reference MeanVolume.csv (unit not stated)", fontsize=8)
    # one legend below the panels, off the data: our runs, then the reference study's series
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(f"{case.name}: mean over the evaluation scenarios")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_stage_means(path: str) -> dict[str, np.ndarray]:
    """The per-stage means of a ``stages.csv`` written by :meth:`StageRecords.write`.

    Raises:
        BadFileError: not such a file (a missing column, a value that is not a number).
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "total_volume" not in rows[0] or "thermal_mw" not in rows[0]:
            raise BadFileError(f"{path} is not a stages.csv written by mdpo hydro")
        means = {
            key: np.array([float(r[key]) for r in rows]) for key in ("total_volume", "thermal_mw")
        }
    except BadFileError:
        raise
    except (csv.Error, ValueError, TypeError) as err:  # UnicodeDecodeError too
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise BadFileError(f"{path} is not a stages.csv written by mdpo hydro: {reason}") from None
    return means


def write_summary(path: str, summary: dict) -> None:
    """Write a summary dictionary as indented, strict JSON (an undefined interval, of one
    scenario, as ``null``): what :func:`mdpo.core.limits.loads_json` reads back."""
    with open(path, "w") as handle:
        handle.write(dumps_json(summary, indent=1))


def simulate_env_policy(
    env, act, paths: np.ndarray, progress: bool = False, desc: str = "simulate"
) -> StageRecords:
    """Run a policy on ``HydroDispatchEnv`` along fixed inflow paths, stage by stage (so it is
    non-anticipative: each stage's LP sees only the actual volumes, that stage's inflow and the
    policy's target); the recorded cost leaves out the target-slack penalty.

    Args:
        env: a :class:`mdpo.envs.hydro.env.HydroDispatchEnv` (its horizon is the number of stages).
        act: ``observation -> action`` (target volumes scaled to [-1, 1]).
        paths: ``[scenarios, env.horizon]`` inflow column indices.
        progress: show a progress bar over the scenarios.
        desc: the progress bar's label.
    """

    paths = np.asarray(paths)
    records = StageRecords.empty(len(paths), env.horizon, len(env.case.plants))
    for i, path in enumerate(tqdm(paths, desc=desc, unit="scenario", disable=not progress)):
        obs, _ = env.reset(options={"scenario": path})
        for t in range(env.horizon):
            obs, _, _, _, info = env.step(act(obs))
            records.store(i, t, info["record"])
    return records
