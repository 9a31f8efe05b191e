"""Errors of Volt/VAR control."""

from __future__ import annotations

from dms.errors import DmsError


class VoltVarError(DmsError):
    """Base class of Volt/VAR errors; the message names the network, control or proposal and the problem."""


class DailyLimitError(VoltVarError):
    """An action would exceed a tap changer's or capacitor's daily operation limit."""


class StaleProposalError(VoltVarError):
    """The network moved since the proposal was made (a control is no longer where the proposal started from)."""


class ExecutionError(VoltVarError):
    """A proposal cannot be executed (not verified, unknown, no command point for a control)."""
