"""Errors of switching order management; every one derives from :class:`dms.errors.DmsError`."""

from __future__ import annotations

from dms.errors import DmsError

__all__ = ["OrderNotFoundError", "OrderStateError", "PlanFormatError", "StepRefusedError", "SwitchingError"]


class SwitchingError(DmsError):
    """A switching order request cannot be done as asked (the message names the order, step and cause)."""


class OrderNotFoundError(SwitchingError, LookupError):
    """No switching order with that id (gRPC NOT_FOUND)."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class OrderStateError(SwitchingError):
    """The order is not in a state that allows the request (approve a draft, execute an unapproved order...)."""


class StepRefusedError(SwitchingError):
    """A step cannot be executed or recorded now (not the next step, interlocked, target unknown...)."""


class PlanFormatError(SwitchingError):
    """An imported switching plan document is malformed; the message names the field."""
