"""A reader of MathOptFormat (``.mof.json``) models: linear programs, and the non-linear ones of
the hydro case's AC and SOC stage problems.

Linear models (scalar affine objective and constraints, variable bounds) come back as a
:class:`~mdpo.rules.lp.LinearProgram`. Models with quadratic functions, non-linear expression
graphs (``ScalarNonlinearFunction``: ``+ - * / ^ sin cos exp log sqrt``) or second-order cones
(``SecondOrderCone``, ``RotatedSecondOrderCone`` of vector affine functions) come back as a
:class:`~mdpo.rules.nlp.NonlinearProgram` (the cones as :class:`~mdpo.rules.nlp.Cone`).

A file is data: sizes are bounded by the JSON limits, an expression graph deeper than
:data:`MAX_EXPRESSION_DEPTH` (or with a cycle) is refused, and every error names the file and
the constraint.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mdpo.core.limits import MAX_JSON_BYTES, BadFileError, load_json_file
from mdpo.rules.builder import ProgramBuilder
from mdpo.rules.lp import LinearProgram, LPFormatError, _brief, _number
from mdpo.rules.nlp import OPERATORS, Expr, NonlinearProgram, quadratic, var

#: the most bytes of a MathOptFormat file: the bound of every JSON file mdpo reads
MAX_MOF_BYTES = MAX_JSON_BYTES
#: the deepest expression graph read (a cycle of node references is refused by this bound)
MAX_EXPRESSION_DEPTH = 64
#: the most nodes one expression may expand to: node references can share a node many times
#: (``n_k = n_{k-1} + n_{k-1}`` doubles at each of 64 levels); the AC files' largest has 22
MAX_EXPRESSION_NODES = 10_000
#: the most nodes all the expressions of a file may expand to (Bolivia's AC file: about 3 500)
MAX_MODEL_NODES = 1_000_000


class _Model:
    """What is read so far, gathered in a :class:`ProgramBuilder`."""

    def __init__(self, path: str, names: list[str]):
        self.path = path
        self.index = {name: i for i, name in enumerate(names)}
        self.program = ProgramBuilder()
        self.nodes = 0  # expanded so far, all expressions of the file together
        for name in names:
            self.program.var(name, -np.inf, np.inf)

    def column(self, name: Any, where: str) -> int:
        if not isinstance(name, str) or name not in self.index:
            raise LPFormatError(f"{self.path}: {where} names an unknown variable {_brief(name)!r}")
        return self.index[name]

    def affine(self, function: dict, where: str) -> tuple[dict[int, float], float]:
        kind = function.get("type")
        if kind == "Variable":
            return {self.column(function.get("name"), where): 1.0}, 0.0
        if kind != "ScalarAffineFunction":
            raise LPFormatError(f"{self.path}: {where} has a {_brief(kind)} function here")
        terms: dict[int, float] = {}
        for term in function["terms"]:
            col = self.column(term["variable"], where)
            terms[col] = terms.get(col, 0.0) + _number(term["coefficient"], f"{self.path}: {where}")
        return terms, _number(function.get("constant", 0.0), f"{self.path}: {where} constant")

    def quadratic(self, function: dict, where: str) -> tuple[Expr, float]:
        """MOI's convention: a diagonal term ``(c, x, x)`` is ``½·c·x²``, an off-diagonal one
        ``(c, x, y)`` is ``c·x·y``."""
        at = f"{self.path}: {where}"
        terms = []
        for term in function["quadratic_terms"]:
            i = self.column(term["variable_1"], where)
            j = self.column(term["variable_2"], where)
            c = _number(term["coefficient"], at)
            terms.append((c / 2 if i == j else c, i, j))
        linear: dict[int, float] = {}
        for term in function.get("affine_terms", []):
            col = self.column(term["variable"], where)
            linear[col] = linear.get(col, 0.0) + _number(term["coefficient"], at)
        return quadratic(terms, linear), _number(function.get("constant", 0.0), at)

    def expression(self, function: dict, where: str) -> Expr:
        """A ``ScalarNonlinearFunction``'s graph as an expression tree."""
        nodes = function["node_list"]
        if not isinstance(nodes, list):
            raise LPFormatError(f"{self.path}: {where}: node_list must be a list")

        expanded = 0

        def convert(node: Any, depth: int) -> Expr:
            nonlocal expanded
            expanded += 1
            self.nodes += 1
            if expanded > MAX_EXPRESSION_NODES:
                raise LPFormatError(
                    f"{self.path}: {where}: the expression expands to more than "
                    f"{MAX_EXPRESSION_NODES} nodes"
                )
            if self.nodes > MAX_MODEL_NODES:
                raise LPFormatError(
                    f"{self.path}: {where}: the file's expressions expand to more than "
                    f"{MAX_MODEL_NODES} nodes in all"
                )
            if depth > MAX_EXPRESSION_DEPTH:
                raise LPFormatError(
                    f"{self.path}: {where}: the expression is deeper than "
                    f"{MAX_EXPRESSION_DEPTH} (or its nodes refer to each other in a cycle)"
                )
            if isinstance(node, str):
                return var(self.column(node, where))
            if isinstance(node, (int, float)) and not isinstance(node, bool):
                return _number(node, f"{self.path}: {where}")
            if not isinstance(node, dict):
                raise LPFormatError(f"{self.path}: {where}: an expression node is a {_brief(node)}")
            kind = node.get("type")
            if kind == "node":
                k = node.get("index")
                if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(nodes):
                    raise LPFormatError(
                        f"{self.path}: {where}: node index {_brief(k)} is out of range"
                    )
                return convert(nodes[k - 1], depth + 1)
            if kind == "variable":
                return var(self.column(node.get("name"), where))
            if kind == "real":
                return _number(node.get("value"), f"{self.path}: {where}")
            if kind not in OPERATORS:
                raise LPFormatError(
                    f"{self.path}: {where}: operator {_brief(kind)} is not one of "
                    f"{', '.join(OPERATORS)}"
                )
            args = node.get("args")
            arity = OPERATORS[kind]
            if not isinstance(args, list) or not args or (arity and len(args) != arity):
                raise LPFormatError(f"{self.path}: {where}: {kind} has the wrong arguments")
            if kind == "-" and len(args) > 2:
                raise LPFormatError(f"{self.path}: {where}: - takes one or two arguments")
            return (kind, *(convert(a, depth + 1) for a in args))

        return convert(function["root"], 0)

    def cone(self, function: dict, set_: dict, where: str) -> None:
        """A vector affine function in a (rotated) second-order cone."""
        at = f"{self.path}: {where}"
        constants = function["constants"]
        if not isinstance(constants, list) or len(constants) < 2:
            raise LPFormatError(f"{at}: a cone needs at least two components")
        parts: list[dict[int, float]] = [{} for _ in constants]
        for term in function["terms"]:
            k = term["output_index"]
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(parts):
                raise LPFormatError(f"{at}: output_index {_brief(k)} is out of range")
            scalar = term["scalar_term"]
            col = self.column(scalar["variable"], where)
            parts[k - 1][col] = parts[k - 1].get(col, 0.0) + _number(scalar["coefficient"], at)
        offsets = [_number(c, at) for c in constants]
        kind = "soc" if set_["type"] == "SecondOrderCone" else "rsoc"
        for k in range(1 if kind == "soc" else 2):
            if not parts[k] and offsets[k] < 0:
                raise LPFormatError(f"{at}: a cone's bound side is a negative constant")
        if kind == "rsoc" and len(parts) < 3:
            raise LPFormatError(f"{at}: a rotated cone needs at least three components")
        self.program.cone(kind, list(zip(parts, offsets)), where)


def _interval(set_: dict, at: str) -> tuple[float, float]:
    kind = set_.get("type")
    if kind == "EqualTo":
        return _number(set_["value"], at), _number(set_["value"], at)
    if kind == "GreaterThan":
        return _number(set_["lower"], at, True), np.inf
    if kind == "LessThan":
        return -np.inf, _number(set_["upper"], at, True)
    if kind == "Interval":
        return _number(set_["lower"], at, True), _number(set_["upper"], at, True)
    raise LPFormatError(f"{at} has a {_brief(kind)} set, which this reader does not know")


def read_mof(path: str) -> LinearProgram | NonlinearProgram:
    """Read a MathOptFormat model: a :class:`LinearProgram` when every function is affine,
    else a :class:`NonlinearProgram` (quadratic, non-linear and second-order-cone constraints).

    Raises:
        LPFormatError: naming the file and the constraint it cannot read (integer variables,
            other cones, non-linear objectives...).
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
    m = _Model(path, names)
    program = m.program
    try:
        objective = model["objective"]
        constant = 0.0
        maximize = objective.get("sense") == "max"
        if objective.get("sense") in ("min", "max"):
            terms, constant = m.affine(objective["function"], "the objective")
            for col, coef in terms.items():
                program.cost[col] = coef
        for k, constraint in enumerate(model["constraints"]):
            name = constraint.get("name")
            name = name if isinstance(name, str) and name else f"c{k}"
            where = f"constraint {_brief(name)}"
            at = f"{path}: {where}"
            function, set_ = constraint["function"], constraint["set"]
            kind = function.get("type")
            if kind == "VectorAffineFunction":
                if set_.get("type") not in ("SecondOrderCone", "RotatedSecondOrderCone"):
                    raise LPFormatError(f"{at} has a {_brief(set_.get('type'))} set (cones only)")
                m.cone(function, set_, name)
                continue
            lo, hi = _interval(set_, at)
            if kind == "Variable":  # a bound
                col = m.column(function.get("name"), where)
                program.lower[col] = max(program.lower[col], lo)
                program.upper[col] = min(program.upper[col], hi)
            elif kind == "ScalarAffineFunction":
                terms, const = m.affine(function, where)
                program.row(name, terms, lo - const, hi - const)
            elif kind == "ScalarQuadraticFunction":
                expr, const = m.quadratic(function, where)
                program.nonlinear(name, expr, lo - const, hi - const)
            elif kind == "ScalarNonlinearFunction":
                program.nonlinear(name, m.expression(function, where), lo, hi)
            else:
                raise LPFormatError(f"{at} has a {_brief(kind)} function this reader does not know")
    except KeyError as err:
        missing = _brief(err.args[0]) if err.args else "?"
        raise LPFormatError(f"{path}: missing field {missing!r}") from None
    except (TypeError, AttributeError, IndexError) as err:  # a list where an object belongs
        reason = str(err).splitlines()[0][:120]
        raise LPFormatError(f"{path} is not a MathOptFormat model: {reason}") from None
    return program.build(os.path.basename(path), constant, maximize)
