"""The transmission side's import from the distribution centre: the other direction of the bilateral agreement.

A transmission SCADA does not only serve its values; it also imports the distribution centre's (the 33 kV
incomers, the substation bus voltages and transformer flows: what the DSO publishes under its bilateral table).
:class:`DistributionImport` is that client inside the simulator: our own TASE.2 client (``iccp.tase2.client``)
with the simulator's identity as the calling AP title, associating with the station's ``[iccp] listen`` address,
importing every point of the station's bilateral table for that identity, and keeping the latest value of each so
the simulator (and the demo) can show what the transmission side sees.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from iccp.sim.server import SimulatorError
from iccp.tase2.client import ImportRow, Tase2Client
from models.config import StationConfig
from models.iccp_config import RemoteCentre
from models.points import PointDef, PointSource, Quality

__all__ = ["DSO_NAME", "DistributionImport", "ImportedValue"]

DSO_NAME = "DSO"  # how the simulator names the distribution centre it imports from
_FRONTEND = "tase2-sim-import"


@dataclass(frozen=True, slots=True)
class ImportedValue:
    """The latest value of one distribution point as the transmission side received it."""

    name: str  # TASE.2 name in the distribution centre's ICC domain
    point: str  # the distribution centre's RTDB point name
    value: float
    quality: Quality
    time_ms: int


class DistributionImport:
    """The simulator's TASE.2 client of the distribution centre; ``start``/``stop``, ``values()``, ``link_up``."""

    def __init__(self, station: StationConfig, remote: RemoteCentre, *, interval_s: int = 2,
                 integrity_s: int = 60) -> None:
        iccp = station.iccp
        if iccp is None or iccp.listen is None:
            raise SimulatorError(f"{station.source_path}: the station's [iccp] has no listen address to import from")
        table = iccp.peer(remote.identity)
        if table is None or not table.points:
            raise SimulatorError(f"{station.source_path}: no [[iccp.peers]] entry with the AP title "
                                 f"{remote.identity} of {remote.name!r} publishes points to it")
        host, _, port = iccp.listen.rpartition(":")
        if host in ("0.0.0.0", "::", ""):  # a wildcard listen address is reached on loopback
            host = "127.0.0.1"
        centre = RemoteCentre(name=DSO_NAME, addresses=(f"{host}:{port}",), identity=iccp.identity,
                              domain=table.domain, bilateral_table_id=table.table_id, interval_s=interval_s,
                              integrity_s=integrity_s, flags_layout=table.flags_layout,
                              state_encoding=table.state_encoding, reconnect_backoff_max_s=5.0)
        defs: list[PointDef] = []
        for j, bp in enumerate(table.points):
            own = station.point(bp.point)
            defs.append(PointDef(j, bp.name, own.kind, PointSource(_FRONTEND, DSO_NAME, 0, j, bp.type.value, bp.name),
                                 units=own.units, description=own.description))
        self._rtdb_name = {bp.name: bp.point for bp in table.points}
        self._defs = {d.id: d for d in defs}
        self._lock = threading.Lock()
        self._values: dict[str, ImportedValue] = {}
        self._link = threading.Event()
        self.client = Tase2Client(centre, remote.identity, defs, self)

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.client.start()

    def stop(self) -> None:
        self.client.stop()
        self._link.clear()

    @property
    def link_up(self) -> bool:
        return self._link.is_set()

    def values(self) -> Mapping[str, ImportedValue]:
        """TASE.2 name -> latest value (a copy)."""
        with self._lock:
            return dict(self._values)

    # ------------------------------------------------------------------------- Tase2ClientSink (client threads)
    def on_rows(self, remote: str, rows: Sequence[ImportRow]) -> None:
        with self._lock:
            for r in rows:
                d = self._defs[r.point]
                self._values[d.name] = ImportedValue(d.name, self._rtdb_name[d.name], r.value, Quality(r.quality),
                                                     r.source_time_ms)

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        if up:
            self._link.set()
        else:
            self._link.clear()

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        pass

    def count(self, name: str, n: float = 1.0) -> None:
        pass
