"""FLISR: fault location, isolation and service restoration.

``locate_fault`` / ``locate_section`` find the faulted section, ``plan_restoration`` computes the switching plan
(checked by three-phase power flow), the result types live in ``dms.flisr.plan``.
"""

from dms.flisr.errors import FaultLocationError, FlisrError
from dms.flisr.locate import fpi_switches, locate_fault, locate_section, tripping_device
from dms.flisr.plan import (
    FaultLocation,
    FlisrMode,
    FlisrPlan,
    RestorationOption,
    StepPurpose,
    SwitchAction,
    SwitchingStep,
)
from dms.flisr.planner import DEFAULT_PRIORITY_KINDS, FlisrOptions, plan_restoration

__all__ = [
    "DEFAULT_PRIORITY_KINDS",
    "FaultLocation",
    "FaultLocationError",
    "FlisrError",
    "FlisrMode",
    "FlisrOptions",
    "FlisrPlan",
    "RestorationOption",
    "StepPurpose",
    "SwitchAction",
    "SwitchingStep",
    "fpi_switches",
    "locate_fault",
    "locate_section",
    "plan_restoration",
    "tripping_device",
]
