"""Build a linear or non-linear program a row at a time: what the hydro stage problems and the
MathOptFormat reader both do."""

from __future__ import annotations

import numpy as np

from mdpo.rules.lp import LinearProgram
from mdpo.rules.nlp import Affine, Cone, Expr, NonlinearProgram


class ProgramBuilder:
    """Columns, a linear objective, linear rows, non-linear rows and cones, gathered one at a
    time; :meth:`build` gives a :class:`LinearProgram` when everything is linear, else a
    :class:`NonlinearProgram`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.start: dict[int, float] = {}
        self.rows: list[str] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.starts = [0]
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.nl: list[Expr] = []
        self.nl_names: list[str] = []
        self.nl_lower: list[float] = []
        self.nl_upper: list[float] = []
        self.cones: list[Cone] = []

    def var(
        self,
        name: str,
        lower: float = 0.0,
        upper: float = np.inf,
        cost: float = 0.0,
        start: float | None = None,
    ) -> int:
        """A new column; ``start``: where a local solver starts it (voltages at 1 p.u.)."""
        self.names.append(name)
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        if start is not None:
            self.start[len(self.names) - 1] = start
        return len(self.names) - 1

    def row(self, name: str, terms: dict[int, float], lower: float, upper: float) -> int:
        """``lower <= Σ terms[col]·x[col] <= upper``; returns its index among linear rows."""
        for col in sorted(terms):
            self.cols.append(col)
            self.vals.append(terms[col])
        self.starts.append(len(self.cols))
        self.rows.append(name)
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        return len(self.rows) - 1

    def nonlinear(self, name: str, expr: Expr, lower: float, upper: float) -> None:
        """``lower <= expr(x) <= upper``."""
        self.nl.append(expr)
        self.nl_names.append(name)
        self.nl_lower.append(lower)
        self.nl_upper.append(upper)

    def cone(self, kind: str, components: list[Affine], name: str) -> None:
        """A second-order cone of affine functions (see :class:`Cone`)."""
        self.cones.append(Cone(kind, components, name))

    def build(
        self, name: str, objective_constant: float = 0.0, maximize: bool = False
    ) -> LinearProgram | NonlinearProgram:
        """The program gathered so far."""
        lp = LinearProgram(
            name=name,
            variables=self.names,
            col_lower=np.asarray(self.lower, dtype=np.float64),
            col_upper=np.asarray(self.upper, dtype=np.float64),
            objective=np.asarray(self.cost, dtype=np.float64),
            objective_constant=objective_constant,
            maximize=maximize,
            rows=self.rows,
            row_lower=np.asarray(self.row_lower, dtype=np.float64),
            row_upper=np.asarray(self.row_upper, dtype=np.float64),
            row_start=np.asarray(self.starts, dtype=np.int64),
            columns=np.asarray(self.cols, dtype=np.int64),
            values=np.asarray(self.vals, dtype=np.float64),
        )
        if not self.nl and not self.cones:
            return lp
        start = np.zeros(len(self.names))
        for col, value in self.start.items():
            start[col] = value
        return NonlinearProgram(
            linear=lp,
            constraints=self.nl,
            names=self.nl_names,
            lower=np.asarray(self.nl_lower, dtype=np.float64),
            upper=np.asarray(self.nl_upper, dtype=np.float64),
            start=start,
            cones=self.cones,
        )
