"""Errors of the FLISR application (all derive from :class:`dms.errors.DmsError`)."""

from __future__ import annotations

from dms.errors import DmsError

__all__ = ["FaultLocationError", "FlisrError"]


class FlisrError(DmsError):
    """Root of FLISR errors; the message names the element or switch and the problem."""


class FaultLocationError(FlisrError):
    """The fault cannot be located: the tripped switch is not upstream of anything, the faulted element is not
    energised, or no breaker/recloser/switch feeds it."""
