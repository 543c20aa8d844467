"""Linear programs as plain arrays, and a reader of MathOptFormat files.

The problem builders produce :class:`LinearProgram` objects and never import a solver; a
backend (:mod:`mdpo.rules.highs`) turns one into a solver model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdpo.core.limits import MAX_JSON_BYTES, BadFileError, load_json_file

#: the most bytes of a MathOptFormat file: the bound of every JSON file mdpo reads
MAX_MOF_BYTES = MAX_JSON_BYTES


class LPFormatError(BadFileError):
    """A model file that is not a linear program this reader understands."""


def _brief(value: Any) -> str:
    """A value read from a file, for a one-line message (a structure by its kind)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 60:
        return value
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "int"
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__


def _number(value: Any, where: str, allow_infinite: bool = False) -> float:
    """``value`` as a float: a JSON number, never NaN (infinite only for bounds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LPFormatError(f"{where} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or (not allow_infinite and not math.isfinite(number)):
        raise LPFormatError(f"{where} must be a finite number, not {number}")
    return number


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
    try:
        model = load_json_file(path, max_bytes=MAX_MOF_BYTES)
    except BadFileError as err:
        raise LPFormatError(f"{err} (not a MathOptFormat model)") from None
    try:
        names = [v["name"] for v in model["variables"]]
        if not all(isinstance(name, str) for name in names):
            raise TypeError("variable names must be strings")
    except (KeyError, TypeError) as err:
        raise LPFormatError(f"{path} is not a MathOptFormat model: {err}") from None
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)

    def affine(function: dict, where: str) -> tuple[dict[int, float], float]:
        kind = function.get("type")
        if kind == "Variable":
            return {index[function["name"]]: 1.0}, 0.0
        if kind != "ScalarAffineFunction":
            raise LPFormatError(f"{path}: {where} has a {_brief(kind)} function (linear only)")
        terms: dict[int, float] = {}
        for term in function["terms"]:
            col = index[term["variable"]]
            terms[col] = terms.get(col, 0.0) + _number(term["coefficient"], f"{path}: {where}")
        return terms, _number(function.get("constant", 0.0), f"{path}: {where} constant")

    def interval(set_: dict, where: str) -> tuple[float, float]:
        kind = set_.get("type")
        at = f"{path}: {where}"
        if kind == "EqualTo":
            return _number(set_["value"], at), _number(set_["value"], at)
        if kind == "GreaterThan":
            return _number(set_["lower"], at, True), np.inf
        if kind == "LessThan":
            return -np.inf, _number(set_["upper"], at, True)
        if kind == "Interval":
            return _number(set_["lower"], at, True), _number(set_["upper"], at, True)
        raise LPFormatError(f"{path}: {where} has a {_brief(kind)} set (linear sets only)")

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
            where = f"constraint {_brief(constraint.get('name') or k)}"
            lo, hi = interval(constraint["set"], where)
            function = constraint["function"]
            if function.get("type") == "Variable":  # a bound
                col = index[function["name"]]
                lower[col], upper[col] = max(lower[col], lo), min(upper[col], hi)
                continue
            terms, const = affine(function, where)
            name = constraint.get("name") or f"c{k}"
            rows.append(name if isinstance(name, str) else f"c{k}")
            row_lo.append(lo - const)
            row_hi.append(hi - const)
            for col in sorted(terms):
                cols.append(col)
                vals.append(terms[col])
            starts.append(len(cols))
    except KeyError as err:
        missing = _brief(err.args[0]) if err.args else "?"
        raise LPFormatError(f"{path}: unknown variable or missing field {missing!r}") from None
    except (TypeError, AttributeError, IndexError) as err:  # a list where an object belongs
        reason = str(err).splitlines()[0][:120]
        raise LPFormatError(f"{path} is not a MathOptFormat model: {reason}") from None
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
