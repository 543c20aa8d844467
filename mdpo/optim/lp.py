"""Linear programs as plain arrays, and a reader of MathOptFormat files.

The problem builders produce :class:`LinearProgram` objects and never import a solver; a
backend (:mod:`mdpo.optim.highs`) turns one into a solver model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

MAX_MOF_BYTES = 256 << 20


class LPFormatError(ValueError):
    """A model file that is not a linear program this reader understands."""


@dataclass
class LinearProgram:
    """``min/max c·x + c0`` s.t. ``row_lower <= A x <= row_upper``, ``col_lower <= x <= col_upper``.

    ``A`` is stored row-wise (CSR): the entries of row ``i`` are
    ``values[row_start[i]:row_start[i+1]]`` at columns ``columns[...]``.
    """

    name: str
    variables: list[str]
    col_lower: np.ndarray
    col_upper: np.ndarray
    objective: np.ndarray
    objective_constant: float
    maximize: bool
    rows: list[str]
    row_lower: np.ndarray
    row_upper: np.ndarray
    row_start: np.ndarray
    columns: np.ndarray
    values: np.ndarray

    @property
    def n_variables(self) -> int:
        return len(self.variables)

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> int:
        """Index of the variable ``name``."""
        try:
            return self._column_index[name]
        except AttributeError:
            self._column_index = {v: i for i, v in enumerate(self.variables)}
            return self._column_index[name]


def read_mof(path: str) -> LinearProgram:
    """Read a MathOptFormat (``.mof.json``) linear program.

    Supports scalar affine objectives and constraints with ``EqualTo``, ``GreaterThan``,
    ``LessThan`` and ``Interval`` sets, and variable bounds written as single-variable
    constraints. Anything else (quadratic, conic, integer) raises :class:`LPFormatError`.
    """
    if os.path.getsize(path) > MAX_MOF_BYTES:
        raise LPFormatError(f"{path} is over {MAX_MOF_BYTES} bytes")
    try:
        with open(path) as handle:
            model = json.load(handle)
        names = [v["name"] for v in model["variables"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise LPFormatError(f"{path} is not a MathOptFormat model: {err}") from None
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)

    def affine(function: dict, where: str) -> tuple[dict[int, float], float]:
        kind = function.get("type")
        if kind == "Variable":
            return {index[function["name"]]: 1.0}, 0.0
        if kind != "ScalarAffineFunction":
            raise LPFormatError(f"{path}: {where} has a {kind} function (linear only)")
        terms: dict[int, float] = {}
        for term in function["terms"]:
            col = index[term["variable"]]
            terms[col] = terms.get(col, 0.0) + float(term["coefficient"])
        return terms, float(function.get("constant", 0.0))

    def interval(set_: dict, where: str) -> tuple[float, float]:
        kind = set_.get("type")
        if kind == "EqualTo":
            return float(set_["value"]), float(set_["value"])
        if kind == "GreaterThan":
            return float(set_["lower"]), np.inf
        if kind == "LessThan":
            return -np.inf, float(set_["upper"])
        if kind == "Interval":
            return float(set_["lower"]), float(set_["upper"])
        raise LPFormatError(f"{path}: {where} has a {kind} set (linear sets only)")

    try:
        objective = model["objective"]
        c = np.zeros(n)
        constant = 0.0
        maximize = objective.get("sense") == "max"
        if objective.get("sense") in ("min", "max"):
            terms, constant = affine(objective["function"], "the objective")
            for col, coef in terms.items():
                c[col] = coef
        rows, row_lo, row_hi, starts, cols, vals = [], [], [], [0], [], []
        for k, constraint in enumerate(model["constraints"]):
            where = f"constraint {constraint.get('name') or k}"
            lo, hi = interval(constraint["set"], where)
            function = constraint["function"]
            if function.get("type") == "Variable":  # a bound
                col = index[function["name"]]
                lower[col], upper[col] = max(lower[col], lo), min(upper[col], hi)
                continue
            terms, const = affine(function, where)
            rows.append(constraint.get("name") or f"c{k}")
            row_lo.append(lo - const)
            row_hi.append(hi - const)
            for col in sorted(terms):
                cols.append(col)
                vals.append(terms[col])
            starts.append(len(cols))
    except KeyError as err:
        raise LPFormatError(f"{path}: unknown variable or missing field {err}") from None
    return LinearProgram(
        name=os.path.basename(path),
        variables=names,
        col_lower=lower,
        col_upper=upper,
        objective=c,
        objective_constant=constant,
        maximize=maximize,
        rows=rows,
        row_lower=np.asarray(row_lo, dtype=np.float64),
        row_upper=np.asarray(row_hi, dtype=np.float64),
        row_start=np.asarray(starts, dtype=np.int64),
        columns=np.asarray(cols, dtype=np.int64),
        values=np.asarray(vals, dtype=np.float64),
    )
