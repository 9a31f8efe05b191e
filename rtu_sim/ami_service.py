"""The AMI head-end as a service next to the station simulator: an ``AmiHeadEnd`` on the simulator's grid physics,
its EndDeviceEvents messages sent to the control centre over gRPC, and an HTTP endpoint for instantaneous meter reads.

Outbound: each message goes to ``dscada.oms.v1.OutageService.SubmitMeterEvents`` (``dms/api/protos/oms.proto``) with
an operator's bearer token, the way a head-end forwards meter events to an OMS. Messages wait in a bounded queue
(``queue_max``); while the centre is down (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) the head of the
queue is retried every ``retry_s`` and nothing is lost as long as the queue is not full; when it is, the oldest message
is dropped (newer ones carry the present state: a PRN matters more than an old PON), counted and logged. A message the
centre refuses (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED) is dropped, counted and logged: resending it
cannot help.

Inbound (IEC 61968-9 GetMeterReadings style, JSON over HTTP on 127.0.0.1)::

    POST /meter-readings   {"meters": ["170011030001", "nope"]}
    200 {"source": "AMI-HE", "readings": [{"meter": "170011030001", "energised": false, "voltage_v": 0.0,
          "time": "2026-11-27T05:10:00.000Z", "time_ms": 1795756200000, "power_on_count": 0}],
         "unknown": ["nope"]}
    400 {"error": "..."}  (bad JSON, no "meters" list, more than ``MAX_METERS_PER_READ`` meters)
    GET /health -> {"source": ..., "meters": N, "queued": Q, ...}

Command line: ``dscada rtu-sim --ami-grpc 127.0.0.1:50051 --ami-token operator-demo-token --ami-http 8470``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from models.network import NetworkModel
from rtu_sim.ami_headend import AmiError, AmiHeadEnd, AmiOptions, AmiStats, SupplyFn
from rtu_sim.physics import GridPhysics

__all__ = ["MAX_METERS_PER_READ", "AmiHeadEndService", "AmiServiceStats", "GrpcEventSender"]

log = logging.getLogger(__name__)

MAX_METERS_PER_READ = 1000
_RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN",
                        "CANCELLED"})


@dataclass(frozen=True, slots=True)
class AmiServiceStats:
    queued: int  # messages waiting for the centre
    sent: int  # messages the centre accepted
    events_sent: int
    retries: int  # failed attempts that were retried
    overflow: int  # messages dropped because the queue was full
    rejected: int  # messages the centre refused (not retried)
    meter_reads: int  # meters read through the HTTP endpoint
    headend: AmiStats


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GrpcEventSender:
    """Bounded queue of EndDeviceEvents messages and a thread that submits them to the centre; ``sink`` is the
    head-end's sink."""

    def __init__(self, address: str, token: str, *, queue_max: int = 1000, retry_s: float = 1.0,
                 rpc_timeout_s: float = 5.0) -> None:
        if not address:
            raise AmiError("AMI gRPC sender: the control centre address is empty")
        if not token:
            raise AmiError(f"AMI gRPC sender to {address}: an operator's bearer token is required")
        if queue_max < 1 or retry_s <= 0 or rpc_timeout_s <= 0:
            raise AmiError(f"AMI gRPC sender to {address}: queue_max must be >= 1 and retry_s, rpc_timeout_s > 0 "
                           f"(got {queue_max}, {retry_s}, {rpc_timeout_s})")
        self.address = address
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._queue_max = queue_max
        self._retry_s = retry_s
        self._timeout_s = rpc_timeout_s
        self._queue: deque[tuple[str, int]] = deque()  # (JSON text, event count)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts = {"sent": 0, "events": 0, "retries": 0, "overflow": 0, "rejected": 0}

    def sink(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        events = len(message.get("Payload", {}).get("EndDeviceEvents", {}).get("EndDeviceEvent", ()))
        with self._cond:
            if len(self._queue) >= self._queue_max:
                dropped, _ = self._queue.popleft()
                self._counts["overflow"] += 1
                log.error("AMI gRPC sender to %s: queue full (%d messages), dropped the oldest (%d bytes)",
                          self.address, self._queue_max, len(dropped))
            self._queue.append((text, events))
            self._cond.notify()

    def counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self._counts, queued=len(self._queue))

    def start(self) -> None:
        if self._thread is not None:
            raise AmiError(f"AMI gRPC sender to {self.address} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ami-grpc-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread.join(timeout_s)
        if thread.is_alive():
            raise AmiError(f"AMI gRPC sender to {self.address} did not stop within {timeout_s} s")

    def _run(self) -> None:
        import grpc

        from dms.api.protos import oms_pb2 as pb
        from dms.api.protos import oms_pb2_grpc as pb_grpc

        # Reconnect at most every retry_s: gRPC's default backoff grows to minutes while the centre is down.
        backoff_ms = max(100, int(self._retry_s * 1000))
        channel = grpc.insecure_channel(self.address, options=[("grpc.initial_reconnect_backoff_ms", backoff_ms),
                                                               ("grpc.min_reconnect_backoff_ms", backoff_ms),
                                                               ("grpc.max_reconnect_backoff_ms", backoff_ms)])
        stub = pb_grpc.OutageServiceStub(channel)
        failing = False
        try:
            while not self._stop.is_set():
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait(0.5)
                    if self._stop.is_set():
                        return
                    text, events = self._queue[0]
                try:
                    stub.SubmitMeterEvents(pb.SubmitMeterEventsRequest(end_device_events_json=text),
                                           metadata=self._metadata, timeout=self._timeout_s)
                except grpc.RpcError as exc:
                    code = exc.code().name if exc.code() is not None else "UNKNOWN"
                    if code in _RETRYABLE:
                        with self._cond:
                            self._counts["retries"] += 1
                        if not failing:
                            log.warning("AMI gRPC sender: control centre %s unreachable (%s: %s); retrying every "
                                        "%g s", self.address, code, exc.details(), self._retry_s)
                        failing = True
                        self._stop.wait(self._retry_s)
                        continue
                    with self._cond:
                        self._counts["rejected"] += 1
                        self._pop(text)
                    log.error("AMI gRPC sender: control centre %s refused a message of %d events (%s: %s); "
                              "dropped", self.address, events, code, exc.details())
                    continue
                if failing:
                    log.info("AMI gRPC sender: control centre %s reachable again", self.address)
                failing = False
                with self._cond:
                    self._counts["sent"] += 1
                    self._counts["events"] += events
                    self._pop(text)
        finally:
            channel.close()

    def _pop(self, text: str) -> None:
        # The head may have been dropped by an overflow while the call was in flight: pop it only if it is ours.
        if self._queue and self._queue[0][0] is text:
            self._queue.popleft()


class _ReadHandler(BaseHTTPRequestHandler):
    server: _ReadServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("AMI HTTP %s: " + format, self.client_address[0], *args)

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") != "/health":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no resource {self.path!r} (POST /meter-readings, "
                                                        f"GET /health)"})
            return
        self._reply(HTTPStatus.OK, self.server.health())

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") != "/meter-readings":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no resource {self.path!r} (POST /meter-readings)"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 1_000_000:
                raise ValueError(f"request of {length} bytes is too large")
            body = json.loads(self.rfile.read(length) or b"null")
            meters = body.get("meters") if isinstance(body, dict) else None
            if not isinstance(meters, list) or not all(isinstance(m, str) for m in meters):
                raise ValueError('expected {"meters": [meter number, ...]} (a list of strings)')
            if len(meters) > MAX_METERS_PER_READ:
                raise ValueError(f"{len(meters)} meters in one read; at most {MAX_METERS_PER_READ}")
        except ValueError as exc:  # JSONDecodeError is a ValueError
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"meter-readings: {exc}"})
            return
        self._reply(HTTPStatus.OK, self.server.read(meters))


class _ReadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], headend: AmiHeadEnd, health: Callable[[], dict[str, Any]]) -> None:
        super().__init__(address, _ReadHandler)
        self.headend = headend
        self.health = health
        self.reads = 0
        self._lock = threading.Lock()

    def read(self, meters: list[str]) -> dict[str, Any]:
        readings, unknown = [], []
        for meter in meters:
            try:
                r = self.headend.read(meter)
            except AmiError:
                unknown.append(meter)
                continue
            readings.append({"meter": r.meter, "energised": r.energised, "voltage_v": round(r.voltage_v, 2),
                             "time": _iso(r.time_ms), "time_ms": r.time_ms, "power_on_count": r.power_on_count})
        with self._lock:
            self.reads += len(readings)
        return {"source": self.headend.options.source, "readings": readings, "unknown": unknown}


class AmiHeadEndService:
    """Head-end + gRPC sender + HTTP read endpoint. ``grpc_address`` None: messages go to ``sink`` instead (tests,
    or no centre); ``http_port`` None: no endpoint (0: a free port, see ``http_port`` after ``start``)."""

    def __init__(self, model: NetworkModel, supply: GridPhysics | SupplyFn, *, grpc_address: str | None = None,
                 token: str = "", http_port: int | None = None, http_host: str = "127.0.0.1", seed: int = 0,
                 options: AmiOptions | None = None, queue_max: int = 1000, retry_s: float = 1.0,
                 sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        if grpc_address is None and sink is None:
            raise AmiError("AMI head-end service: give a control centre gRPC address or a sink for its messages")
        self.sender = GrpcEventSender(grpc_address, token, queue_max=queue_max, retry_s=retry_s) \
            if grpc_address is not None else None
        out = self.sender.sink if self.sender is not None else sink
        assert out is not None
        self.headend = AmiHeadEnd(model, supply, out, seed=seed, options=options or AmiOptions())
        self._http_host = http_host
        self._http_port = http_port
        self._http: _ReadServer | None = None
        self._http_thread: threading.Thread | None = None

    @property
    def http_port(self) -> int | None:
        return self._http.server_address[1] if self._http is not None else None

    @property
    def read_url(self) -> str:
        """The meter-read endpoint (after ``start``)."""
        if self._http is None:
            raise AmiError("AMI head-end service: no HTTP endpoint (not started, or no http_port)")
        return f"http://{self._http_host}:{self.http_port}/meter-readings"

    def start(self) -> None:
        if self._http_port is not None:
            try:
                self._http = _ReadServer((self._http_host, self._http_port), self.headend, self._health)
            except OSError as exc:
                raise AmiError(f"AMI head-end HTTP endpoint on {self._http_host}:{self._http_port}: {exc}") from exc
            self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                                 name="ami-http", daemon=True)
            self._http_thread.start()
        if self.sender is not None:
            self.sender.start()
        self.headend.start()

    def stop(self) -> None:
        """Stop the head-end, the sender (queued messages are dropped) and the endpoint; joins every thread."""
        self.headend.stop()
        if self.sender is not None:
            self.sender.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(10)
            self._http, self._http_thread = None, None

    def stats(self) -> AmiServiceStats:
        c = self.sender.counts() if self.sender is not None else {}
        return AmiServiceStats(c.get("queued", 0), c.get("sent", 0), c.get("events", 0), c.get("retries", 0),
                               c.get("overflow", 0), c.get("rejected", 0),
                               self._http.reads if self._http is not None else 0, self.headend.stats())

    def _health(self) -> dict[str, Any]:
        s = self.stats()
        out = asdict(s)
        out["source"] = self.headend.options.source
        out["meters"] = s.headend.meters
        return out
