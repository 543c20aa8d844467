"""Decision rules and their optimization backends (TS-DDR, SDDP): problems are built as
:class:`~mdpo.rules.lp.LinearProgram` or :class:`~mdpo.rules.nlp.NonlinearProgram` data and
solved by a backend (:mod:`mdpo.rules.backend`: HiGHS, Clarabel, Ipopt; worker processes or
Ray actors)."""

from mdpo.rules.lp import LinearProgram, LPFormatError
from mdpo.rules.mof import read_mof
from mdpo.rules.nlp import NonlinearProgram

__all__ = ["LPFormatError", "LinearProgram", "NonlinearProgram", "read_mof"]
