"""Error root of the ``rtu_sim`` package."""


class SimulatorError(Exception):
    """Base of every error raised by ``rtu_sim``; the message names the point or RTU and the problem."""


class UnknownPointError(SimulatorError):
    """The point is not in the configuration or not hosted by this simulator."""


class UnknownRtuError(SimulatorError):
    """The RTU (or one of its addresses) is not hosted by this simulator."""
