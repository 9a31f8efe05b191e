"""The simulator's TASE.2 server: ``iccp.tase2.server.Tase2Server`` over an ``InMemoryPointSource`` holding the
simulator's points, with ``CallbackDevices`` mapping ``CB_T<n>`` operations (0 open, 1 close) onto
``TransmissionSimulator.operate_breaker``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from iccp.errors import IccpError
from iccp.mms import MmsServerConfig
from iccp.sim.transmission import PointValue
from iccp.tase2.bilateral import BilateralDevice
from iccp.tase2.devices import CallbackDevices
from iccp.tase2.point_source import InMemoryPointSource
from iccp.tase2.server import Tase2Server
from models.iccp_config import IccpConfig

if TYPE_CHECKING:
    from iccp.sim.server import TransmissionSimulator

__all__ = ["SimTase2Server", "build_server"]


class SimTase2Server:
    """What ``TransmissionSimulator`` drives: ``start``/``stop``/``port`` and ``publish(changes)``."""

    def __init__(self, config: IccpConfig, sim: TransmissionSimulator, host: str, port: int) -> None:
        self.source = InMemoryPointSource(sim.point_defs, writable=False)
        self.source.update((v.name, v.value, int(v.quality), v.time_ms) for v in sim.snapshot())
        self._sim = sim
        self.devices = CallbackDevices(self._operate)
        self.server = Tase2Server(config, self.source, devices=self.devices,
                                  mms=MmsServerConfig(host=host, port=port))

    def _operate(self, device: BilateralDevice, value: float) -> str | None:
        if value not in (0, 1):
            return f"command {value!r} is neither 0 (open) nor 1 (close)"
        try:
            self._sim.operate_breaker(device.point, bool(value))
        except IccpError as exc:
            return str(exc)
        return None

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def publish(self, changes: Sequence[PointValue]) -> None:
        self.source.update((v.name, v.value, int(v.quality), v.time_ms) for v in changes)


def build_server(config: IccpConfig, sim: TransmissionSimulator, host: str, port: int) -> SimTase2Server:
    return SimTase2Server(config, sim, host, port)
