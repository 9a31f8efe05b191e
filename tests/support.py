"""Helpers shared by the tests: free loopback ports and the sample station re-addressed onto them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import StationConfig, load_station_config
from models.samples import free_tcp_port, relocate_station_text, sample_network_station_path, sample_station_path

free_port = free_tcp_port


def sample_config_on_free_ports(tmp_path: Path, *, extra: str = "", replace: dict[str, str] | None = None
                                ) -> tuple[StationConfig, Path]:
    """The embedded sample station with every port moved to a free one, written to tmp_path."""
    text = relocate_station_text(sample_station_path().read_text(encoding="utf-8"), tmp_path / "data")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "station.toml"
    path.write_text(text + extra, encoding="utf-8")
    return load_station_config(path), path


def sample_network_config(folder: Path) -> StationConfig:
    """The embedded CIM sample-network station on free ports, its stores under ``folder``/data."""
    source = sample_network_station_path()
    path = folder / "station.toml"
    path.write_text(relocate_station_text(source.read_text(encoding="utf-8"), folder / "data", source.parent),
                    encoding="utf-8")
    return load_station_config(path)


@contextlib.contextmanager
def sample_centre(folder: Path, attach: Callable[[Any], tuple[Sequence[Any], Callable[[Any], list[str]]]]
                  ) -> Iterator[tuple[Any, Any]]:
    """A control centre on the sample network (no field adapters, gRPC on a free port) with application services:
    ``attach(center)`` builds them and returns (services, gRPC registrar). Each service is started after the centre
    (when it has ``start``) and stopped, or closed, before it, newest first. Yields (centre, gRPC channel)."""
    import grpc

    from scada.server import ControlCenter

    center = ControlCenter(sample_network_config(folder), grpc_address="127.0.0.1:0", start_adapters=False)
    services, registrar = attach(center)
    center.add_grpc_registrar(registrar)
    center.start()
    started: list[Any] = []
    channel = None
    try:
        for svc in services:
            if hasattr(svc, "start"):
                svc.start()
            started.append(svc)
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield center, channel
    finally:
        if channel is not None:
            channel.close()
        for svc in reversed(services):
            (svc.stop if hasattr(svc, "stop") else svc.close)()
        center.stop()


@dataclass
class OmsCentre:
    center: Any
    store: Any  # the OutageRecordStore
    oms: Any  # the OmsService
    stub: Any  # an OutageService stub on the centre's channel


@contextlib.contextmanager
def oms_centre(folder: Path, *, with_commands: bool = False, **oms_options: Any) -> Iterator[OmsCentre]:
    """The sample centre with the live OMS and its OutageService (``oms_options`` go to OmsService)."""
    from dms.api.protos import oms_pb2_grpc
    from oms import api_servicer
    from oms.outage_records import OutageRecordStore
    from oms.service import OmsService

    made: dict[str, Any] = {}

    def attach(center: Any) -> tuple[list[Any], Callable[[Any], list[str]]]:
        store = OutageRecordStore(center.data_dir / "outages.sqlite")
        oms = OmsService(center.config, center.rtdb, center.topology, center.data_dir, store=store,
                         commands=center.commands if with_commands else None, **oms_options)
        made.update(store=store, oms=oms)
        return [store, oms], lambda server: api_servicer.register(server, center.services, oms)

    with sample_centre(folder, attach) as (center, channel):
        yield OmsCentre(center, made["store"], made["oms"], oms_pb2_grpc.OutageServiceStub(channel))


def wait_for(pred: Callable[[], object], timeout_s: float, what: str, period_s: float = 0.05) -> object:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(period_s)


class FreezableRelay:
    """A TCP relay on 127.0.0.1 that can go silent without closing anything: a cut cable or a dead GPRS modem,
    which only link supervision timers (IEC 104 t3/t1) can detect."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self._target = target_port
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        """Resume; connections that lived through the silence are closed (both ends gave up on them)."""
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks.clear()
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self.thaw()
        self._listener.close()
        self._thread.join(2)

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._frozen.is_set():
                with self._lock:
                    self._socks.append(client)  # accepted into silence
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst) -> None:  # type: ignore[no-untyped-def]
        import select

        try:
            while not self._stop.is_set():
                if self._frozen.is_set():
                    time.sleep(0.05)  # read nothing, forward nothing, close nothing
                    continue
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data or self._frozen.is_set():
                    if not data:
                        break
                    continue
                dst.sendall(data)
        except (OSError, ValueError):  # thaw() closed the socket under us
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


#: Reference data shared by the project (read-only); CI places shared/ beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIM_DIR = SHARED_DATA / "cim"
IEEE123 = CIM_DIR / "IEEE123.xml"
IEEE13 = CIM_DIR / "IEEE13.xml"


def requires_reference_feeders():  # type: ignore[no-untyped-def]
    """Skip marker for tests that read the IEEE feeders from shared/ (present in CI; missing only elsewhere)."""
    import pytest

    return pytest.mark.skipif(
        not (IEEE123.is_file() and IEEE13.is_file()),
        reason=f"reference CIM models not found in {CIM_DIR} (the shared/ folder must sit beside the repository)",
    )
