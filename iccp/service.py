"""The distribution centre's own ICCP services inside ``dscada serve``: the TASE.2 server our peers associate with
(values from the RTDB, device control through the SCADA command service) and the historian backfill of remote-centre
link outages from their DR snapshot files.

The TASE.2 *client* is not here: it runs as a supervised front-end adapter (``iccp.adapter``), like the other
protocols. Compose after ``ControlCenter(...)`` and before ``center.start()`` (the link listener of the gap recovery
must see the first link events); :meth:`IccpServices.start` after ``center.start()`` (the point source subscribes
to the running RTDB); :meth:`IccpServices.stop` before ``center.stop()`` (the historian closes there)::

    center = ControlCenter(config)
    iccp = IccpServices.for_center(center)   # None: the station has nothing for it to run
    center.start(); iccp.start()
    ...
    iccp.stop(); center.stop()
"""

from __future__ import annotations

import logging
from typing import Any

from iccp.errors import IccpError
from iccp.gap_recovery import GapRecovery
from iccp.mms.server import MmsServerConfig
from iccp.tase2.devices import CommandServiceDevices
from iccp.tase2.peer_writes import RtdbPeerWrites
from iccp.tase2.point_source import RtdbPointSource
from iccp.tase2.server import Tase2Server
from models.iccp_config import IccpConfig
from models.points import Priority

__all__ = ["IccpServices", "listen_address"]

log = logging.getLogger(__name__)


def listen_address(listen: str) -> tuple[str, int]:
    """``"host:port"`` of ``[iccp] listen`` -> (host, port); the config has checked the form."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise IccpError(f"[iccp] listen: {listen!r} is not host:port")
    return host, int(port)


class IccpServices:
    """The TASE.2 server (when ``[iccp]`` has ``listen`` and peers) and the gap recovery (when remotes have
    ``dr_directory``) of one control centre (``scada.server.ControlCenter``). ``recovery_retry_s`` overrides every
    remote's ``recovery_retry_s`` (None: each remote's own)."""

    def __init__(self, center: Any, iccp: IccpConfig, *, recovery_retry_s: float | None = None) -> None:
        self.center = center
        self.config = iccp
        self.source: RtdbPointSource | None = None
        self.devices: CommandServiceDevices | None = None
        self.server: Tase2Server | None = None
        self.recovery: GapRecovery | None = None
        if iccp.listen is not None and iccp.peers:
            published = [bp.point for t in iccp.peers for bp in t.points]
            published += [d.point for t in iccp.peers for d in t.devices]
            # One command path for device control and set-point writes (a write selects nothing); a selection
            # lasts the peer's own select_timeout_s.
            commanding = CommandServiceDevices(center.commands, center.config.points, center.config.operators,
                                               tags=center.tags, audit=center.audit)
            if any(t.devices for t in iccp.peers):
                self.devices = commanding
            writes = (RtdbPeerWrites(center.rtdb, commanding, center.config.operators, audit=center.audit)
                      if any(bp.writable for t in iccp.peers for bp in t.points) else None)
            self.source = RtdbPointSource(center.rtdb, published, name="iccp-server", writes=writes)
            host, port = listen_address(iccp.listen)
            self.server = Tase2Server(iccp, self.source, devices=self.devices,
                                      mms=MmsServerConfig(host=host, port=port), on_alarm=self._on_alarm)
        directories = {r.name: r.dr_directory for r in iccp.remotes if r.dr_directory is not None}
        if directories:
            retry_s = {r.name: r.recovery_retry_s if recovery_retry_s is None else recovery_retry_s
                       for r in iccp.remotes if r.name in directories}
            self.recovery = GapRecovery(center.config, center.historian, directories, retry_s=retry_s)
            # Registered now, before the centre starts: the adapter's first link events must not be missed.
            center.rtdb.add_link_listener(self.recovery.on_link)
        self._started = False

    @classmethod
    def for_center(cls, center: Any, **options: Any) -> IccpServices | None:
        """The services ``center``'s station asks for; None when its ``[iccp]`` needs neither."""
        iccp = center.config.iccp
        if iccp is None:
            return None
        services = cls(center, iccp, **options)
        return services if services.server is not None or services.recovery is not None else None

    @property
    def port(self) -> int:
        """The TASE.2 server's port (0: no server)."""
        return self.server.port if self.server is not None else 0

    def start(self) -> None:
        if self._started:
            return
        if self.recovery is not None:
            self.recovery.start()
        if self.source is not None and self.server is not None:
            self.source.start()
            try:
                self.server.start()
            except BaseException:
                self.source.stop()
                if self.recovery is not None:
                    self.recovery.stop()
                raise
        self._started = True

    def stop(self) -> None:
        """Peers first (no association outlives the values it reads), then the RTDB subscription, then recovery."""
        if not self._started:
            return
        self._started = False
        if self.server is not None:
            self.server.stop()
        if self.source is not None:
            self.source.stop()
        if self.recovery is not None:
            self.recovery.stop()

    def __enter__(self) -> IccpServices:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _on_alarm(self, peer: str, transfer_set: str, text: str) -> None:
        """A transfer set's trouble (a critical report never acknowledged) is an operator's alarm, not a log line."""
        log.warning("ICCP peer %s, transfer set %s: %s", peer, transfer_set, text)
        self.center.alarms.raise_system(f"iccp:{peer}:{transfer_set}",
                                        f"ICCP peer {peer}, transfer set {transfer_set}: {text}", Priority.HIGH)
