"""Optimization backends for the multi-stage problems (TS-DDR, SDDP): problems are built as
:class:`~mdpo.rules.lp.LinearProgram` arrays and solved by a backend (HiGHS first)."""

from mdpo.rules.lp import LinearProgram, LPFormatError
from mdpo.rules.mof import read_mof
from mdpo.rules.nlp import NonlinearProgram

__all__ = ["LPFormatError", "LinearProgram", "NonlinearProgram", "read_mof"]
