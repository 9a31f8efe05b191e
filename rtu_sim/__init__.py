"""RTU simulator: IEC 104, DNP3, Modbus TCP and IEC 61850 outstations built from the station configuration,
driven by load curves or by a power flow of the network model.

Public face: ``RtuSimulator`` (host of simulated RTUs), ``SimStats``/``RtuStats`` (its counters),
``ControlSocketServer`` (scripted events as JSON lines) and the error tree rooted at ``SimulatorError``.
"""

from rtu_sim.errors import SimulatorError, UnknownPointError, UnknownRtuError
from rtu_sim.outstation import RtuStats
from rtu_sim.simulator import RtuSimulator, SimStats

__all__ = ["RtuSimulator", "RtuStats", "SimStats", "SimulatorError", "UnknownPointError", "UnknownRtuError"]
