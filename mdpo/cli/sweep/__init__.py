"""Benchmark sweeps: YAML specs, local and Ray executors, resumable runs, reports.

``mdpo sweep run SPEC`` runs every (algorithm, env, hyperparameter variant, seed) of a spec,
each in its own folder; ``mdpo sweep report DIR`` turns the completed runs into tables with
confidence intervals and learning-curve plots.
"""

from mdpo.cli.sweep.spec import RunConfig, SweepSpec, SweepSpecError, load_spec

__all__ = ["RunConfig", "SweepSpec", "SweepSpecError", "load_spec"]
