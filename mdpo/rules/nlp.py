"""Non-linear programs as plain data: a :class:`LinearProgram` (columns, bounds, a linear
objective, linear rows) plus non-linear rows written as small expression trees, and
second-order cones of affine functions (:class:`Cone`).

An expression is a float (a constant), ``("x", j)`` (column ``j``), or ``(op, *arguments)``
with ``op`` one of :data:`OPERATORS`. The problem builders (the AC and SOC stage problems of
the hydro case) and the MathOptFormat reader produce them; a backend
(:mod:`mdpo.rules.ipopt`) turns them into its own graph; a conic solver
(:mod:`mdpo.rules.clarabel`) takes a program whose only non-linear parts are cones. Nothing
here imports a solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mdpo.rules.lp import LinearProgram

#: an expression tree: a float, ``("x", column)`` or ``(op, *arguments)``
Expr = float | tuple

#: operator → number of arguments (None: one or more)
OPERATORS: dict[str, int | None] = {
    "+": None,
    "*": None,
    "-": None,  # one argument: negation; two: a difference
    "/": 2,
    "^": 2,
    "sin": 1,
    "cos": 1,
    "exp": 1,
    "log": 1,
    "sqrt": 1,
}


def var(column: int) -> tuple:
    """The expression of column ``column``."""
    return ("x", int(column))


def quadratic(terms: list[tuple[float, int, int]], linear: dict[int, float] | None = None) -> Expr:
    """``Σ c·x_i·x_j + Σ a·x_k`` as an expression (``terms``: ``(c, i, j)``)."""
    parts: list[Expr] = [("*", float(c), var(i), var(j)) for c, i, j in terms]
    parts += [("*", float(a), var(k)) for k, a in (linear or {}).items()]
    return ("+", *parts) if parts else 0.0


def evaluate(expr: Expr, x: np.ndarray) -> float:
    """The value of ``expr`` at the point ``x`` (plain Python: for tests and checks)."""
    if isinstance(expr, (int, float)):
        return float(expr)
    op, *args = expr
    if op == "x":
        return float(x[args[0]])
    values = [evaluate(a, x) for a in args]
    if op == "+":
        return math.fsum(values)
    if op == "*":
        return math.prod(values)
    if op == "-":
        return -values[0] if len(values) == 1 else values[0] - values[1]
    if op == "/":
        return values[0] / values[1]
    if op == "^":
        return values[0] ** values[1]
    return getattr(math, op)(values[0])


def columns_of(expr: Expr, into: set[int] | None = None) -> set[int]:
    """The columns ``expr`` reads."""
    found = set() if into is None else into
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            if node[0] == "x":
                found.add(node[1])
            else:
                stack.extend(node[1:])
    return found


#: an affine function of the columns: ``({column: coefficient}, constant)``
Affine = tuple[dict[int, float], float]


@dataclass
class Cone:
    """A second-order cone of affine functions ``components`` (``c``):
    ``"soc"``: ``‖(c₁, ..., c_k)‖ <= c₀``; ``"rsoc"`` (rotated):
    ``c₂² + ... + c_k² <= 2·c₀·c₁`` with ``c₀, c₁ >= 0``."""

    kind: str
    components: list[Affine]
    name: str = ""

    def __post_init__(self) -> None:
        least = 2 if self.kind == "soc" else 3
        if self.kind not in ("soc", "rsoc") or len(self.components) < least:
            raise ValueError(f"cone {self.name!r}: {self.kind} with {len(self.components)} parts")
        for terms, constant in self.components[: self.leading()]:
            if not terms and constant < 0:  # no point can meet it
                raise ValueError(f"cone {self.name!r}: its bound side is a negative constant")

    def leading(self) -> int:
        """How many components are the (non-negative) bound side: 1 (soc) or 2 (rsoc)."""
        return 1 if self.kind == "soc" else 2

    def expression(self) -> Expr:
        """The cone as one smooth row ``<= 0`` (with the leading components >= 0):
        ``Σ c_k² − c₀²`` or ``Σ c_k² − 2·c₀·c₁``."""

        def affine(part: Affine) -> Expr:
            terms, constant = part
            pieces: list[Expr] = [("*", c, var(j)) for j, c in terms.items()]
            return ("+", *pieces, constant) if pieces else constant

        squares = [("^", affine(part), 2.0) for part in self.components[self.leading() :]]
        if self.kind == "soc":
            bound: Expr = ("-", ("^", affine(self.components[0]), 2.0))
        else:
            bound = ("*", -2.0, affine(self.components[0]), affine(self.components[1]))
        return ("+", *squares, bound)


@dataclass
class NonlinearProgram:
    """``min c·x + c0`` s.t. the linear program's rows and bounds,
    ``lower[k] <= constraints[k](x) <= upper[k]`` and every cone.

    Rows are numbered linear rows first, then the non-linear ones, then one per cone: a
    solution's row duals follow that order. ``start`` is a starting point for local solvers
    (default: zero, moved into the bounds); builders set a better one (voltages at 1 p.u.).
    """

    linear: LinearProgram
    constraints: list[Expr]
    names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    start: np.ndarray | None = None
    cones: list[Cone] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.linear.name

    @property
    def variables(self) -> list[str]:
        return self.linear.variables

    @property
    def n_variables(self) -> int:
        return self.linear.n_variables

    @property
    def n_rows(self) -> int:
        return self.linear.n_rows + len(self.constraints) + len(self.cones)

    @property
    def rows(self) -> list[str]:
        return [*self.linear.rows, *self.names, *(cone.name for cone in self.cones)]

    @property
    def row_lower(self) -> np.ndarray:
        cones = np.full(len(self.cones), -np.inf)
        return np.concatenate([self.linear.row_lower, self.lower, cones])

    @property
    def row_upper(self) -> np.ndarray:
        return np.concatenate([self.linear.row_upper, self.upper, np.zeros(len(self.cones))])

    @property
    def objective(self) -> np.ndarray:
        return self.linear.objective

    @property
    def col_lower(self) -> np.ndarray:
        return self.linear.col_lower

    @property
    def col_upper(self) -> np.ndarray:
        return self.linear.col_upper

    def column(self, name: str) -> int:
        """Index of the variable ``name``."""
        return self.linear.column(name)

    def starting_point(self) -> np.ndarray:
        """``start`` (or zero) moved into the column bounds."""
        x0 = np.zeros(self.n_variables) if self.start is None else np.array(self.start, float)
        return np.clip(x0, self.col_lower, self.col_upper)
