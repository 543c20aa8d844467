"""Linear programs as plain arrays.

The problem builders produce :class:`LinearProgram` objects and never import a solver; a
backend (:mod:`mdpo.rules.highs`) turns one into a solver model. MathOptFormat files are read
by :mod:`mdpo.rules.mof`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdpo.core.limits import BadFileError


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
