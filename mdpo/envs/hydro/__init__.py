"""Long-term hydrothermal dispatch: case data (Bolivia, case3), the stage and multi-stage LPs,
and the ``HydroDispatch-v0`` gymnasium environment (registered on import)."""

from mdpo.envs.hydro.case import CASES, Case, CaseDataError, load_case
from mdpo.envs.hydro.env import HydroDispatchEnv, register

register()

__all__ = ["CASES", "Case", "CaseDataError", "HydroDispatchEnv", "load_case"]
