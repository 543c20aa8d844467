"""Long-term hydrothermal dispatch: case data (Bolivia, case3) and, later, its models."""

from envs.hydro.case import CASES, Case, CaseDataError, load_case

__all__ = ["CASES", "Case", "CaseDataError", "load_case"]
