"""IEC 60870-5-104 RTU simulator: outstations built from the station configuration, driven by load curves.

Public face: ``RtuSimulator`` (host of simulated RTUs), ``SimStats``/``RtuStats`` (its counters),
``ControlSocketServer`` (scripted events as JSON lines) and the error tree rooted at ``SimulatorError``.
"""

from rtu_sim.errors import SimulatorError, UnknownPointError, UnknownRtuError
from rtu_sim.outstation104 import RtuStats
from rtu_sim.simulator import RtuSimulator, SimStats

__all__ = ["RtuSimulator", "RtuStats", "SimStats", "SimulatorError", "UnknownPointError", "UnknownRtuError"]
