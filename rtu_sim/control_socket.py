"""Scripted events over TCP: one JSON object per line in, one JSON object per line out.

Requests: {"op":"trip","point":P} {"op":"set","point":P,"value":V,"quality":["invalid",...]} {"op":"release","point":P}
{"op":"fpi","point":P,"picked_up":true} {"op":"link_down","rtu":R,"address":"host:port"?} {"op":"link_up",...}
{"op":"block","point":P,"blocked":true} {"op":"local","rtu":R,"local":true} {"op":"value","point":P} {"op":"stats"}
{"op":"list"}
{"op":"load_start","changes_per_s":N,"status_share":0.1} {"op":"load_stop"}.
Answers: {"ok":true,...} or {"ok":false,"error":"..."} naming the point/RTU and the problem.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType
from typing import Any

from models.points import Quality
from rtu_sim.errors import SimulatorError
from rtu_sim.simulator import RtuSimulator

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024

_QUALITY_NAMES: dict[str, Quality] = {
    "invalid": Quality.INVALID,
    "blocked": Quality.BLOCKED,
    "substituted": Quality.SUBSTITUTED,
    "not_topical": Quality.NOT_TOPICAL,
    "nottopical": Quality.NOT_TOPICAL,
    "non_topical": Quality.NOT_TOPICAL,
    "overflow": Quality.OVERFLOW,
}


class RequestError(SimulatorError):
    """A control-socket request is malformed."""


def parse_quality(names: Any) -> Quality:
    """["invalid", "substituted"] -> Quality flags; an empty list or None is GOOD."""
    if names is None:
        return Quality.GOOD
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        raise RequestError(f"quality must be a list of flag names, got {names!r}")
    q = Quality.GOOD
    for n in names:
        flag = _QUALITY_NAMES.get(str(n).lower().replace("-", "_"))
        if flag is None:
            raise RequestError(f"unknown quality flag {n!r} (expected: invalid, blocked, substituted, not_topical, "
                               f"overflow)")
        q |= flag
    return q


def _field(req: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in req:
        if default is ...:
            raise RequestError(f"op {req.get('op')!r}: field {key!r} is required")
        return default
    v = req[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise RequestError(f"op {req.get('op')!r}: field {key!r} has the wrong type ({v!r})")
    return v


class ControlSocketServer:
    """Serves scripted events for ``sim`` on ``host:port`` (0: a free port, see ``.port``) until ``stop``.

    Listening starts in the constructor so ``.port`` is usable at once.
    """

    def __init__(self, sim: RtuSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "trip": self._trip, "set": self._set, "release": self._release, "fpi": self._fpi,
            "link_down": self._link_down, "link_up": self._link_up, "block": self._block, "local": self._local,
            "value": self._value,
            "stats": self._stats, "list": self._list, "load_start": self._load_start, "load_stop": self._load_stop,
            "fault": self._fault, "clear_fault": self._clear_fault, "reset_fpis": self._reset_fpis,
            "physics": self._physics,
        }
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer._serve_connection(self.connection, self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False

        self._server = Server((host, port), Handler)
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"rtu-sim-control:{self.port}", daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        """Stop listening and close every open control connection (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5.0)

    def __enter__(self) -> ControlSocketServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- protocol

    def _serve_connection(self, conn: socket.socket, rfile: Any, wfile: Any) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        try:
            while True:
                line = rfile.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_LINE_BYTES:
                    wfile.write(self._encode({"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"}))
                    return
                if not line.strip():
                    continue
                wfile.write(self._encode(self.handle_line(line)))
                wfile.flush()
        except OSError:
            return
        finally:
            with self._conns_lock:
                self._conns.discard(conn)

    @staticmethod
    def _encode(answer: dict[str, Any]) -> bytes:
        return (json.dumps(answer, separators=(",", ":")) + "\n").encode("utf-8")

    def handle_line(self, line: bytes | str) -> dict[str, Any]:
        """Answer one request line (also usable without a socket)."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        op = req.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r} (expected one of: {', '.join(sorted(self._ops))})"}
        try:
            answer = handler(req)
        except SimulatorError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # an answer, not a dropped connection, whatever went wrong
            log.exception("control socket: op %r failed", op)
            return {"ok": False, "error": f"op {op!r} failed: {type(exc).__name__}: {exc}"}
        return {"ok": True, **answer}

    # ------------------------------------------------------------------------------------------- operations

    def _trip(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        return {"point": point, "protection": list(self.sim.trip(point))}

    def _set(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        value = _field(req, "value", float)
        quality = parse_quality(req.get("quality"))
        self.sim.set_value(point, value, quality=quality)
        return {"point": point, "value": value, "quality": quality.names()}

    def _release(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        self.sim.release(point)
        return {"point": point}

    def _fpi(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        picked_up = _field(req, "picked_up", bool, True)
        self.sim.fpi(point, picked_up)
        return {"point": point, "picked_up": picked_up}

    def _link_down(self, req: dict[str, Any]) -> dict[str, Any]:
        rtu, address = _field(req, "rtu", str), _field(req, "address", str, None)
        self.sim.link_down(rtu, address)
        return {"rtu": rtu, "links_up": list(self.sim.outstation(rtu).stats().links_up)}

    def _link_up(self, req: dict[str, Any]) -> dict[str, Any]:
        rtu, address = _field(req, "rtu", str), _field(req, "address", str, None)
        self.sim.link_up(rtu, address)
        return {"rtu": rtu, "links_up": list(self.sim.outstation(rtu).stats().links_up)}

    def _block(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        blocked = _field(req, "blocked", bool, True)
        self.sim.block(point, blocked)
        return {"point": point, "blocked": blocked}

    def _local(self, req: dict[str, Any]) -> dict[str, Any]:
        rtu = _field(req, "rtu", str)
        local = _field(req, "local", bool, True)
        self.sim.outstation(rtu).set_local(local)
        return {"rtu": rtu, "local": local}

    def _value(self, req: dict[str, Any]) -> dict[str, Any]:
        point = _field(req, "point", str)
        return {"point": point, "value": self.sim.value(point), "quality": self.sim.quality(point).names()}

    def _stats(self, req: dict[str, Any]) -> dict[str, Any]:
        st = self.sim.stats()
        return {"stats": {
            "rtus": {name: asdict(r) for name, r in st.rtus.items()},
            "commands_executed": st.commands_executed, "commands_refused": st.commands_refused,
            "changes_generated": st.changes_generated, "load_changes_per_s": st.load_changes_per_s,
            "total_sent": st.total_sent,
        }}

    def _list(self, req: dict[str, Any]) -> dict[str, Any]:
        rtus = {}
        for name in self.sim.rtu_names:
            o = self.sim.outstation(name)
            rtus[name] = {"common_address": o.rtu.common_address, "addresses": list(o.rtu.addresses),
                          "points": list(o.point_names)}
        return {"rtus": rtus}

    def _load_start(self, req: dict[str, Any]) -> dict[str, Any]:
        rate = _field(req, "changes_per_s", float)
        share = _field(req, "status_share", float, 0.1)
        self.sim.start_change_load(rate, status_share=share)
        return {"changes_per_s": rate, "status_share": share}

    def _load_stop(self, req: dict[str, Any]) -> dict[str, Any]:
        self.sim.stop_change_load()
        return {}

    def _fault(self, req: dict[str, Any]) -> dict[str, Any]:
        line = _field(req, "line", str)
        result = self.sim.place_fault(line, _field(req, "kind", str, "three_phase"))
        return {"line": result.line_name, "kind": result.kind.value, "tripped": list(result.tripped),
                "fpis": list(result.fpis), "time_ms": result.time_ms}

    def _clear_fault(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"cleared": list(self.sim.clear_fault(_field(req, "line", str, None)))}

    def _reset_fpis(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"reset": list(self.sim.reset_fpis(_field(req, "switch", str, None)))}

    def _physics(self, req: dict[str, Any]) -> dict[str, Any]:
        physics = self.sim.physics
        if physics is None:
            raise RequestError("this simulator has no grid physics (no [network] model or no bound points)")
        last = physics.last
        return {"faults": {k: v.value for k, v in physics.faults().items()}, "fpis": list(physics.fpi_picked_up()),
                "last_solve": None if last is None else {"epoch_s": last.epoch_s, "converged": last.converged,
                                                         "solve_s": last.solve_s,
                                                         "dead_buses": int((last.bus_v_ln_kv <= 0).sum())}}


def send_request(host: str, port: int, request: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a ControlSocketServer and return its answer (a small client for demos and tests)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall((json.dumps(request) + "\n").encode("utf-8"))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise SimulatorError(f"control socket {host}:{port} closed the connection without an answer")
            buf += chunk
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise SimulatorError(f"control socket {host}:{port} answered {answer!r}, not an object")
    return answer
