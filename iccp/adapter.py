"""The ICCP front end: the supervised adapter process (``frontend_protocols.supervisor``) importing the points of
every remote control centre of ``[[iccp.remotes]]`` (each an RTU of protocol ``iccp``).

One process serves all remote centres, one :class:`iccp.tase2.client.Tase2Client` (worker thread) each. Values,
link state and interrogation ends go up the one update path like any field adapter's: rows into the
``UpdateBuffer``, ``LinkEvent`` s and ``InterrogationDone`` behind the rows buffered before them. The RTDB marks a
remote's points COMM_LOST on its link-down event. The heartbeat comes from the main loop, which never blocks on the
network (the clients do that on their own threads).

Requests from the server: ``InterrogationRequest`` re-reads the remote's data sets; a ``ControlRequest`` is answered
UNKNOWN_ADDRESS (imported points carry no control); ``ClockSyncRequest`` is counted and ignored (TASE.2 has none).

Data recovery: the link-down and link-up ``LinkEvent`` s carry their times; the server recovers the gap from the
remote's DR snapshot files on its own historian (``iccp.gap_recovery.GapRecovery``): this process has no historian.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from frontend_protocols.batching import UpdateBuffer
from frontend_protocols.channel import HEARTBEAT_PERIOD_S, AdapterChannel, Heartbeat, Shutdown
from frontend_protocols.dispatch import RequestRouter
from frontend_protocols.errors import FrontendError
from iccp.tase2.client import ImportRow, Tase2Client
from models.commands import ClockSyncRequest, ControlRequest, ControlResult, ControlStatus, InterrogationRequest
from models.config import Protocol, StationConfig
from models.timebase import now_ms
from models.updates import InterrogationDone, LinkEvent

__all__ = ["IccpAdapter", "IccpAdapterError", "run_adapter"]

log = logging.getLogger(__name__)


class IccpAdapterError(FrontendError):
    """The ICCP adapter cannot be built from the configuration it was given."""


class _BufferSink:
    """Tase2Client output -> the adapter's UpdateBuffer (thread-safe: the buffer locks)."""

    def __init__(self, buf: UpdateBuffer, adapter: str) -> None:
        self._buf = buf
        self._adapter = adapter

    def on_rows(self, remote: str, rows: Sequence[ImportRow]) -> None:
        for r in rows:
            self._buf.add(r.point, r.value, r.quality, r.source_time_ms, r.cause)

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        self._buf.event(LinkEvent(self._adapter, remote, up, address=address, reason=reason, time_ms=time_ms))

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        self._buf.event(InterrogationDone(self._adapter, remote, time_ms))

    def count(self, name: str, n: float = 1.0) -> None:
        self._buf.count(name, n)


class IccpAdapter:
    def __init__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        if config.iccp is None:
            raise IccpAdapterError(f"{config.source_path}: ICCP adapter {adapter!r} started without an [iccp] section")
        self._channel = channel
        self._adapter = adapter
        self._buf = UpdateBuffer(channel, adapter)
        sink = _BufferSink(self._buf, adapter)
        self._clients: dict[str, Tase2Client] = {}
        for name in rtus:
            rtu = config.rtu(name)
            if rtu.protocol is not Protocol.ICCP:
                raise IccpAdapterError(f"RTU {name!r} speaks {rtu.protocol.value}, not iccp")
            remote = config.iccp.remote(name)
            self._clients[name] = Tase2Client(remote, config.iccp.identity, config.points_of_rtu(name), sink)
        self._requests = RequestRouter(
            f"ICCP adapter {adapter}", log, control=self._on_control, interrogation=self._on_interrogation,
            clock_sync=self._on_clock_sync, count=self._buf.count, answer=self._answer)

    def run(self) -> None:
        for c in self._clients.values():
            c.start()
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._channel.send(Heartbeat(self._adapter, now_ms(), self._buf.counters()))
                    next_beat = now + HEARTBEAT_PERIOD_S / 2
                self._buf.flush()
                msg = self._channel.recv(0.005 if self._buf.waiting else 0.02)
                if msg is None:
                    continue
                if isinstance(msg, Shutdown) or self._channel.closed:
                    break
                self._requests.handle(msg)
        finally:
            for c in self._clients.values():
                c.stop(2.0)
            self._buf.flush(force=True)

    def _answer(self, req: ControlRequest, status: ControlStatus, detail: str, started: float) -> None:
        self._buf.count(f"control_{status.value}")
        self._buf.event(ControlResult(req.request_id, status, detail, (time.monotonic() - started) * 1000.0))

    def _on_control(self, req: ControlRequest) -> None:
        self._answer(req, ControlStatus.UNKNOWN_ADDRESS,
                     f"point {req.point} of ICCP remote {req.rtu!r} is imported and cannot be commanded",
                     time.monotonic())

    def _on_interrogation(self, req: InterrogationRequest) -> None:
        targets = list(self._clients.values()) if not req.rtu else [c for n, c in self._clients.items()
                                                                     if n == req.rtu]
        if not targets:
            self._buf.count("unknown_rtu_requests")
        for c in targets:
            if c.up:
                c.interrogate()
            else:
                self._buf.count("interrogations_skipped_link_down")

    def _on_clock_sync(self, req: ClockSyncRequest) -> None:
        self._buf.count("clock_sync_ignored")


def run_adapter(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    """Adapter process entry point (``frontend_protocols.channel.AdapterMain``): runs until Shutdown."""
    IccpAdapter(channel, config, adapter, rtus).run()
