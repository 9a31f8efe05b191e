"""Volt/VAR control: tap changers and capacitor banks chosen by power flow to keep every node inside a voltage band
while minimising losses or demand (conservation voltage reduction), within daily operation limits."""

from dms.voltvar.engine import (
    ControlKind,
    FlowFigures,
    Objective,
    VoltVarAction,
    VoltVarOptions,
    VoltVarProposal,
    optimise,
)
from dms.voltvar.errors import DailyLimitError, ExecutionError, StaleProposalError, VoltVarError
from dms.voltvar.limits import CounterEntry, DailyLimits, OperationCounter

__all__ = [
    "ControlKind",
    "CounterEntry",
    "DailyLimitError",
    "DailyLimits",
    "ExecutionError",
    "FlowFigures",
    "Objective",
    "OperationCounter",
    "StaleProposalError",
    "VoltVarAction",
    "VoltVarError",
    "VoltVarOptions",
    "VoltVarProposal",
    "optimise",
]
