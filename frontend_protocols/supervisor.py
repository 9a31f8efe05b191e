"""Runs each protocol adapter in its own process and keeps it alive.

A crash (process exit) or a hang (no heartbeat within the time-out) of the protocol library restarts only that
adapter, with exponential back-off; while it is down the sink is told, so the RTDB marks its points
communication-lost. Nothing of the adapter's protocol library is imported in the server process.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from frontend_protocols.channel import AdapterChannel, Heartbeat, Shutdown
from models.calculated_points import CALCULATED_FRONTEND
from models.config import StationConfig

log = logging.getLogger(__name__)

#: Entry points per protocol; the value is "module:function" matching channel.AdapterMain.
ADAPTER_ENTRIES = {
    "iec104": "frontend_protocols.iec104.master:run_adapter",
    "dnp3": "frontend_protocols.dnp3.master:run_adapter",
    "modbus": "frontend_protocols.modbus.master:run_adapter",
    "iec61850": "frontend_protocols.iec61850.master:run_adapter",
    "iccp": "iccp.adapter:run_adapter",  # TASE.2 client of the [[iccp.remotes]] centres
}


class AdapterSink(Protocol):
    def on_adapter_message(self, adapter: str, msg: Any) -> None: ...

    def on_adapter_state(self, adapter: str, running: bool, detail: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    name: str
    entry: str  # "module:function"
    rtus: tuple[str, ...]


def adapter_specs(config: StationConfig) -> tuple[AdapterSpec, ...]:
    """One adapter process per protocol, serving every RTU of that protocol; calculated sources have none (their
    points are written by the control centre's own applications)."""
    by_protocol: dict[str, list[str]] = {}
    for rtu in config.rtus:
        if rtu.protocol.value == CALCULATED_FRONTEND:
            continue
        by_protocol.setdefault(rtu.protocol.value, []).append(rtu.name)
    return tuple(AdapterSpec(f"{proto}", ADAPTER_ENTRIES[proto], tuple(rtus)) for proto, rtus in by_protocol.items())


def _child_main(conn: Connection, entry: str, config: StationConfig, name: str, rtus: tuple[str, ...]) -> None:
    # The parent owns Ctrl-C and shuts adapters down in order; a child dying on SIGINT would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s adapter[{name}] %(levelname)s %(message)s")
    module, func = entry.split(":")
    main = getattr(importlib.import_module(module), func)
    main(AdapterChannel(conn), config, name, rtus)


class AdapterSupervisor:
    """Starts, watches and restarts one adapter process; forwards its messages to the sink."""

    def __init__(
        self,
        spec: AdapterSpec,
        config: StationConfig,
        sink: AdapterSink,
        *,
        heartbeat_timeout_s: float | None = None,
        backoff_s: float | None = None,
        backoff_max_s: float | None = None,
    ) -> None:
        sv = config.supervision
        self.spec = spec
        self._config = config
        self._sink = sink
        self._hb_timeout_s = heartbeat_timeout_s or sv.adapter_heartbeat_timeout_s
        self._backoff_s = backoff_s or sv.adapter_restart_backoff_s
        self._backoff_max_s = backoff_max_s or sv.adapter_restart_backoff_max_s
        self._ctx = mp.get_context("spawn")  # never fork a process that runs protocol-library threads
        self._proc: Any = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.running = False
        self.last_heartbeat: Heartbeat | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"supervisor-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.send(Shutdown())
        if self._thread is not None:
            self._thread.join(timeout_s + 2)
        self._terminate(timeout_s)

    def send(self, msg: Any) -> bool:
        """Send a request to the adapter; False when it is not running (the caller answers ADAPTER_DOWN)."""
        conn = self._conn
        if conn is None or not self.running:
            return False
        try:
            with self._send_lock:
                conn.send(msg)
            return True
        except (OSError, EOFError, BrokenPipeError):
            return False

    def kill(self) -> None:
        """Kill the adapter process (tests use it to prove supervision)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ----------------------------------------------------------------------------------------------- internals
    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child_main,
            args=(child, self.spec.entry, self._config, self.spec.name, self.spec.rtus),
            name=f"dscada-adapter-{self.spec.name}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._last_beat = time.monotonic() + 10.0  # grace for interpreter start-up and imports
        self.running = True
        self._sink.on_adapter_state(self.spec.name, True, f"started pid {proc.pid}")

    def _terminate(self, timeout_s: float = 3.0) -> None:
        proc, conn = self._proc, self._conn
        self.running = False
        if proc is not None:
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        if conn is not None:
            conn.close()
        self._proc = self._conn = None

    def _watch(self) -> None:
        delay = self._backoff_s
        while not self._stop.is_set():
            self._spawn()
            started = time.monotonic()
            reason = self._pump()
            if self._stop.is_set():
                break
            self._terminate(0.5)
            self.restarts += 1
            log.warning("adapter %s down (%s); restart in %.1f s", self.spec.name, reason, delay)
            self._sink.on_adapter_state(self.spec.name, False, reason)
            if time.monotonic() - started > 60:
                delay = self._backoff_s  # it ran well for a while: start the back-off again
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._backoff_max_s)

    def _pump(self) -> str:
        """Forward messages until the adapter exits, hangs, or we are stopped; returns why it ended."""
        conn, proc = self._conn, self._proc
        assert conn is not None and proc is not None
        while not self._stop.is_set():
            try:
                if conn.poll(0.1):
                    msg = conn.recv()
                    self._last_beat = max(self._last_beat, time.monotonic())
                    if isinstance(msg, Heartbeat):
                        self.last_heartbeat = msg
                    else:
                        self._sink.on_adapter_message(self.spec.name, msg)
                    continue
            except (EOFError, OSError):
                proc.join(1.0)  # the pipe closes as the process dies; give it a moment to report its exit code
                return f"process exited with code {proc.exitcode}" if not proc.is_alive() else "pipe closed"
            if not proc.is_alive():
                return f"process exited with code {proc.exitcode}"
            if time.monotonic() - self._last_beat > self._hb_timeout_s:
                proc.kill()
                return f"no heartbeat for {self._hb_timeout_s:.1f} s (hung), killed"
        return "stopped"
