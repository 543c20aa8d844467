"""Optimization backends for the multi-stage problems (TS-DDR, SDDP): problems are built as
:class:`~mdpo.rules.lp.LinearProgram` arrays and solved by a backend (HiGHS first)."""

from mdpo.rules.lp import LinearProgram, LPFormatError, read_mof

__all__ = ["LPFormatError", "LinearProgram", "read_mof"]
