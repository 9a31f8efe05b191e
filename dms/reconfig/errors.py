"""Errors of feeder reconfiguration; every one derives from :class:`dms.errors.DmsError`."""

from __future__ import annotations

from dms.errors import DmsError

__all__ = ["InfeasibleReconfigurationError", "MeshedNetworkError", "NetworkFileError", "ReconfigError"]


class ReconfigError(DmsError):
    """Feeder reconfiguration cannot be set up or solved; the message names the network and the cause."""


class NetworkFileError(ReconfigError):
    """A network file cannot be read as CIM or as a pandapower JSON network."""


class InfeasibleReconfigurationError(ReconfigError):
    """No radial configuration supplies every load within the limits (the message says which limit binds)."""


class MeshedNetworkError(ReconfigError):
    """Branches that cannot be opened already form a loop (or join two sources): no configuration is radial."""
