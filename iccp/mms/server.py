"""An MMS server on asyncio: many associations on one event-loop thread, dispatching to an :class:`MmsHandler`.

Layers per connection: TPKT/COTP accept, session CONNECT / presentation CP / ACSE AARQ / MMS initiate
(calling and called AP titles and AE qualifiers handed to :meth:`MmsHandler.associate`, which may refuse with
:class:`~iccp.errors.AssociationRefused`: the peer gets an AARE rejected-permanent with the diagnostic), then
confirmed requests in order. Release: Conclude-Request -> Conclude-Response, then session FINISH (RLRQ) ->
DISCONNECT (RLRE); the calling side closes the transport. Abort both ways (session ABORT with ABRT).

Robustness: an MMS PDU that does not decode gets a RejectPDU and one log line, the association goes on; broken
framing (TPKT, COTP, session, presentation) aborts that association only. Handler exceptions become
confirmed-ErrorPDUs. Handlers run on the event-loop thread, one request at a time per association: they must
not block. Information reports may be sent from any thread.

Deferred responses: a handler's ``read``/``read_list``/``write`` may return a :class:`Deferred` (or directly an
awaitable or a ``concurrent.futures.Future``) instead of its results, e.g. for a device operation that waits for
the field on a worker thread. The loop goes on serving every association, this one included (MMS allows several
outstanding requests); the confirmed response, with the request's invoke id, is sent when the result resolves (an
exception resolves like a raised one: MmsServiceError -> that error, anything else -> class OTHERS). A Conclude
while responses are pending is answered after they are sent (waiting at most ``release_timeout_s``; the rest are
dropped); an abort or lost transport drops them (the handler's work still finishes, its result is discarded).
At most ``max_outstanding`` deferred responses per association: beyond that, resource/capability-unavailable.

Release under report load: a Conclude-Request is answered in order after the reports already queued (the client
reads them first), and no information report is queued after the Conclude-Response (ISO 9506: nothing follows it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import inspect
import itertools
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from open61850.data import IECData
from open61850.mms.types import MmsType

from ..errors import AssociationRefused, MmsConnectionError, MmsDecodeError, MmsServiceError
from . import codec
from .codec import (
    AccessResult,
    DataAccessCode,
    DefineListRequest,
    DeleteListRequest,
    IdentifyRequest,
    ListAttributesRequest,
    NameListRequest,
    ObjectName,
    ReadRequest,
    RefusalDiagnostic,
    RejectReason,
    SpduType,
    VariableAccess,
    VariableAttributesRequest,
    VariableSpec,
    WriteRequest,
)

__all__ = [
    "ErrorClass", "AssociationInfo", "AssociationHandle", "Identity", "VariableAttributes", "ListAttributes",
    "DeleteResult", "MmsHandler", "MmsServerConfig", "MmsServer", "EndReason", "Deferred",
]

log = logging.getLogger("iccp.mms.server")


class ErrorClass(enum.IntEnum):
    """MMS ServiceError classes (ISO 9506-2) for :class:`~iccp.errors.MmsServiceError`."""

    VMD_STATE = 0
    APPLICATION_REFERENCE = 1
    DEFINITION = 2  # codes: 1 object-undefined, 3 type-unsupported, 5 object-exists, 6 object-attribute-inconsistent
    RESOURCE = 3  # codes: 1 memory-unavailable, 3 capability-unavailable
    SERVICE = 4  # codes: 3 object-constraint-conflict, 5 pdu-size
    ACCESS = 7  # codes: 1 object-access-unsupported, 2 object-non-existent, 3 object-access-denied
    OTHERS = 12


class EndReason(enum.Enum):
    """How an association ended (given to :meth:`MmsHandler.aborted`)."""

    PEER_ABORT = "peer abort"  # session ABORT or COTP DR from the peer
    CONNECTION_LOST = "connection lost"  # transport closed without release
    PROTOCOL_ERROR = "protocol error"  # broken framing: we aborted
    LOCAL_ABORT = "local abort"  # AssociationHandle.abort() or server stop


@dataclass(frozen=True, slots=True)
class Identity:
    vendor: str
    model: str
    revision: str


@dataclass(frozen=True, slots=True)
class VariableAttributes:
    mms_type: MmsType
    deletable: bool = False


@dataclass(frozen=True, slots=True)
class ListAttributes:
    variables: tuple[VariableSpec, ...]
    deletable: bool


@dataclass(frozen=True, slots=True)
class DeleteResult:
    matched: int
    deleted: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """A handler result that comes later: ``result`` resolves (on any thread) to what the method would return."""

    result: Awaitable[Any] | concurrent.futures.Future[Any]


def _deferred(value: Any) -> Awaitable[Any] | None:
    """The awaitable of a deferred handler result, None for an immediate one (must run on the server loop)."""
    if isinstance(value, Deferred):
        value = value.result
    if isinstance(value, concurrent.futures.Future):
        return asyncio.wrap_future(value)
    if inspect.isawaitable(value):
        return value
    return None


@dataclass(frozen=True, slots=True)
class _Later:
    """A confirmed response to send when ``result`` resolves, encoded by ``finish(result)``."""

    result: Awaitable[Any]
    finish: Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """Who is associating: transport peer and the ACSE names of the AARQ (None when the peer left them out)."""

    association_id: int
    peer_host: str
    peer_port: int
    tls: bool
    calling_ap_title: tuple[int, ...] | None
    calling_ae_qualifier: int | None
    called_ap_title: tuple[int, ...] | None
    called_ae_qualifier: int | None
    authentication_value: bytes | None
    max_pdu_size_bytes: int  # negotiated
    handle: AssociationHandle


class MmsHandler(Protocol):
    """What the server asks the application. All methods run on the server's event-loop thread.

    ``ctx`` is whatever :meth:`associate` returned for the association. A method raises
    :class:`~iccp.errors.MmsServiceError` to answer with a confirmed-ErrorPDU of that class and code; any other
    exception is logged and answered with class OTHERS.
    """

    def associate(self, info: AssociationInfo) -> Any:
        """Accept (return the per-association context) or raise AssociationRefused(diagnostic)."""
        ...

    def read(self, ctx: Any, variables: Sequence[VariableSpec]) -> Sequence[AccessResult] | Deferred:
        """One result per variable, in order: a Data value or a DataAccessCode (or a Deferred of that)."""
        ...

    def read_list(self, ctx: Any, list_name: ObjectName) -> Sequence[AccessResult] | Deferred:
        """The values of the members of a named variable list (raise MmsServiceError if it does not exist)."""
        ...

    def write(self, ctx: Any, variables: Sequence[VariableSpec],
              values: Sequence[IECData]) -> Sequence[DataAccessCode | None] | Deferred:
        """One outcome per variable: None = written, or the DataAccessCode of the failure (or a Deferred)."""
        ...

    def get_name_list(self, ctx: Any, request: NameListRequest) -> Sequence[str]:
        """Every name of ``request.object_class`` in the scope; the server sorts, applies continue_after, pages."""
        ...

    def get_variable_access_attributes(self, ctx: Any, name: ObjectName) -> VariableAttributes:
        ...

    def define_named_variable_list(self, ctx: Any, name: ObjectName, variables: Sequence[VariableSpec]) -> None:
        ...

    def delete_named_variable_list(self, ctx: Any, request: DeleteListRequest) -> DeleteResult:
        ...

    def get_named_variable_list_attributes(self, ctx: Any, name: ObjectName) -> ListAttributes:
        ...

    def identify(self, ctx: Any) -> Identity:
        ...

    def released(self, ctx: Any) -> None:
        """The association ended by an orderly release."""
        ...

    def aborted(self, ctx: Any, reason: EndReason) -> None:
        """The association ended any other way."""
        ...


@dataclass(frozen=True, slots=True)
class MmsServerConfig:
    host: str = "127.0.0.1"
    port: int = 102  # 0: any free port (see MmsServer.port)
    ssl_context: ssl.SSLContext | None = None
    local_ap_title: tuple[int, ...] | None = None  # responding AP title; None echoes the called one
    local_ae_qualifier: int | None = None
    max_pdu_size_bytes: int = 65000
    max_outstanding: int = 10
    nesting_level: int = 10
    max_associations: int = 64
    max_tpdu_size_code: int = 0x0D  # 8192-byte COTP TPDUs at most
    association_timeout_s: float = 10.0  # TCP accept -> association request received
    release_timeout_s: float = 5.0  # after DISCONNECT or a refusal: wait this long for the peer to close
    max_write_buffer_bytes: int = 8 * 1024 * 1024  # a peer that does not read beyond this is aborted
    name_list_page_bytes: int = 0  # 0: page by the negotiated PDU size

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"MMS server port {self.port} out of range")
        if self.max_pdu_size_bytes < 256:
            raise ValueError(f"max_pdu_size_bytes {self.max_pdu_size_bytes} below 256")
        if not 0x07 <= self.max_tpdu_size_code <= 0x0D:
            raise ValueError(f"max_tpdu_size_code {self.max_tpdu_size_code} not in 7..13")


class _Framing(Exception):
    """The byte stream cannot be followed any more: abort the association."""


class _Closed(Exception):
    """The transport ended (EOF, COTP DR)."""

    def __init__(self, disconnect_request: bool) -> None:
        super().__init__("disconnect request" if disconnect_request else "end of stream")
        self.disconnect_request = disconnect_request


_MAX_TSDU_BYTES = 4 * 1024 * 1024


class AssociationHandle:
    """One connection/association, as the application sees it. Thread-safe methods."""

    def __init__(self, server: MmsServer, association_id: int, peer: tuple[str, int], tls: bool) -> None:
        self._server = server
        self.association_id = association_id
        self.peer_host, self.peer_port = peer
        self.tls = tls
        self.info: AssociationInfo | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tpdu_size = 128
        self._mms_context = 3
        self._acse_context = 1
        self._open = False
        self._cotp_open = False
        self._concluded = False
        self._later: set[asyncio.Task[None]] = set()  # deferred responses not sent yet
        self._done = asyncio.Event()
        self.end_reason: EndReason | None = None
        self.released = False

    def __repr__(self) -> str:
        return f"<MMS association {self.association_id} {self.peer_host}:{self.peer_port}>"

    @property
    def is_open(self) -> bool:
        return self._open

    def send_information_report(self, access: VariableAccess | ObjectName | Sequence[VariableSpec | ObjectName],
                                results: Sequence[AccessResult]) -> None:
        """Send an informationReport: on a named variable list (ObjectName in any scope) or on variables.

        Callable from any thread; raises MmsConnectionError when the association is not open.
        """
        if isinstance(access, ObjectName):
            access = VariableAccess(list_name=access)
        elif not isinstance(access, VariableAccess):
            access = VariableAccess(variables=tuple(v if isinstance(v, VariableSpec) else VariableSpec(v)
                                                    for v in access))
        pdu = codec.encode_information_report(access, results)
        if not self._open:
            raise MmsConnectionError(f"{self}: not associated, information report not sent")
        self._server._call_in_loop(self._send_report, pdu)

    def abort(self) -> None:
        """Abort the association (session ABORT, then close). Callable from any thread."""
        self._server._call_in_loop(self._abort, EndReason.LOCAL_ABORT, False)

    # --- loop-thread side ---------------------------------------------------------------------------------

    def _write_tsdu(self, tsdu: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        writer.write(codec.encode_cotp_dt(tsdu, self._tpdu_size))
        if writer.transport.get_write_buffer_size() > self._server.config.max_write_buffer_bytes:
            log.warning("%s: peer does not read (%d bytes queued): aborting", self,
                        writer.transport.get_write_buffer_size())
            self._abort(EndReason.PROTOCOL_ERROR, True)

    def _send_mms(self, pdu: bytes) -> None:
        if self._open:
            self._write_tsdu(codec.encode_data_spdu(pdu, self._mms_context))

    def _send_report(self, pdu: bytes) -> None:
        if not self._concluded:  # nothing may follow the Conclude-Response
            self._send_mms(pdu)

    def _abort(self, reason: EndReason, provider: bool) -> None:
        if self._writer is None or self._done.is_set():
            return
        if self._open or (reason is EndReason.PROTOCOL_ERROR and self._cotp_open):
            with contextlib.suppress(Exception):
                self._write_tsdu(codec.encode_abort(self._acse_context, provider=provider))
        self._finish(reason)

    def _finish(self, reason: EndReason | None) -> None:
        """Mark the association ended (reason None: released) and close the transport after queued bytes go."""
        if self._done.is_set():
            return
        was_open, self._open = self._open, False
        self.end_reason = reason
        self._done.set()
        self._drop_later()
        if self._writer is not None:
            self._writer.close()
        self._server._ended(self, reason, was_open)

    def _drop_later(self) -> None:
        if self._later:
            log.info("%s: %d deferred responses dropped (association ended)", self, len(self._later))
        for task in list(self._later):
            task.cancel()
        self._later.clear()


class MmsServer:
    """The server. ``start()`` runs its event loop in a thread; ``stop()`` aborts associations and joins it.

    Example::

        with MmsServer(handler, MmsServerConfig(port=0)) as server:
            print(server.port)
    """

    def __init__(self, handler: MmsHandler, config: MmsServerConfig = MmsServerConfig()) -> None:
        self.handler = handler
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._associations: dict[int, AssociationHandle] = {}
        self._contexts: dict[int, Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._port = 0
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.malformed_pdus = 0  # PDUs answered with a reject or causing an abort (for tests and monitoring)

    # --- lifecycle ----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port listened on (the one chosen when the config says 0)."""
        return self._port

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the handler runs on: schedule timers that touch handler state here
        (``server.loop.call_soon_threadsafe(...)``) to keep that state single-threaded."""
        if self._loop is None:
            raise MmsConnectionError("MMS server is not started")
        return self._loop

    def __enter__(self) -> MmsServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("MMS server already started")
        self._thread = threading.Thread(target=self._run, name="iccp-mms-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise MmsConnectionError(f"MMS server on {self.config.host}:{self.config.port} did not start in "
                                     f"{timeout_s} s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise MmsConnectionError(f"MMS server cannot listen on {self.config.host}:{self.config.port}: "
                                     f"{self._start_error}") from self._start_error

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
        thread.join(timeout_s)
        self._thread = None

    def associations(self) -> list[AssociationHandle]:
        """The open associations (a snapshot)."""
        with self._lock:
            return [a for a in self._associations.values() if a.is_open]

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port,
                                                  ssl=self.config.ssl_context, limit=1 << 17)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("MMS server listening on %s:%d%s", self.config.host, self._port,
                 " (TLS)" if self.config.ssl_context else "")

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        with self._lock:
            handles = list(self._associations.values())
        for handle in handles:
            handle._abort(EndReason.LOCAL_ABORT, False)
        for handle in handles:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(handle._done.wait(), 2.0)
        await asyncio.sleep(0.05)  # let the transports flush their ABORTs and close
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    def _call_in_loop(self, func: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise MmsConnectionError("MMS server is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            func(*args)
            return
        try:
            loop.call_soon_threadsafe(func, *args)
        except RuntimeError as exc:  # the loop closed in between
            raise MmsConnectionError("MMS server is not running") from exc

    def _ended(self, handle: AssociationHandle, reason: EndReason | None, was_open: bool) -> None:
        with self._lock:
            self._associations.pop(handle.association_id, None)
            ctx = self._contexts.pop(handle.association_id, None)
        if not was_open:
            return
        try:
            if reason is None:
                self.handler.released(ctx)
            else:
                self.handler.aborted(ctx, reason)
        except Exception as exc:  # noqa: BLE001 - a faulty handler must not stop the server
            log.warning("%s: handler %s failed: %s", handle, "released" if reason is None else "aborted", exc)

    # --- one connection -----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        handle = AssociationHandle(self, next(self._ids), (str(peer[0]), int(peer[1])),
                                   writer.get_extra_info("ssl_object") is not None)
        handle._writer = writer
        with self._lock:
            full = len(self._associations) >= self.config.max_associations
            if not full:
                self._associations[handle.association_id] = handle
        if full:
            log.warning("%s: refused, %d associations already", handle, self.config.max_associations)
            writer.close()
            return
        try:
            await asyncio.wait_for(self._associate(handle, reader), self.config.association_timeout_s)
            while handle.is_open:
                await self._receive(handle, reader)
        except TimeoutError:
            log.warning("%s: no association within %.1f s: closing", handle, self.config.association_timeout_s)
            handle._finish(EndReason.PROTOCOL_ERROR)
        except _Framing as exc:
            self.malformed_pdus += 1
            log.warning("%s: %s: aborting the association", handle, exc)
            handle._abort(EndReason.PROTOCOL_ERROR, True)
        except _Closed as exc:
            if handle._concluded and not exc.disconnect_request:
                handle.released = True  # Conclude answered, then the transport closed: orderly enough
                handle._finish(None)
            else:
                handle._finish(EndReason.PEER_ABORT if exc.disconnect_request else EndReason.CONNECTION_LOST)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.info("%s: transport error: %s", handle, exc)
            handle._finish(EndReason.CONNECTION_LOST)
        except asyncio.CancelledError:
            handle._finish(EndReason.LOCAL_ABORT)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here ends this association, never the server
            log.error("%s: unexpected %s: %s: aborting the association", handle, type(exc).__name__, exc)
            handle._abort(EndReason.PROTOCOL_ERROR, True)
        finally:
            if not handle._done.is_set():
                handle._finish(EndReason.CONNECTION_LOST)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _read_tpdu(self, reader: asyncio.StreamReader) -> codec.CotpPdu:
        try:
            header = await reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            raise _Closed(False) from exc
        if header[0] != codec.TPKT_VERSION or header[1] != 0:
            raise _Framing(f"bad TPKT header {header.hex()}")
        length = int.from_bytes(header[2:4], "big")
        if length < 7:
            raise _Framing(f"TPKT length {length} too short for COTP")
        try:
            payload = await reader.readexactly(length - 4)
        except asyncio.IncompleteReadError as exc:
            raise _Closed(False) from exc
        try:
            return codec.decode_cotp(payload)
        except MmsDecodeError as exc:
            raise _Framing(str(exc)) from exc

    async def _read_tsdu(self, handle: AssociationHandle, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            tpdu = await self._read_tpdu(reader)
            if tpdu.code == codec.COTP_DR:
                raise _Closed(True)
            if tpdu.code != codec.COTP_DT:
                raise _Framing(f"unexpected COTP TPDU 0x{tpdu.code:02X} on an open connection")
            parts.append(tpdu.data)
            size += len(tpdu.data)
            if size > _MAX_TSDU_BYTES:
                raise _Framing(f"TSDU longer than {_MAX_TSDU_BYTES} bytes")
            if tpdu.end_of_tsdu:
                return b"".join(parts)

    async def _associate(self, handle: AssociationHandle, reader: asyncio.StreamReader) -> None:
        cr = await self._read_tpdu(reader)
        if cr.code != codec.COTP_CR:
            raise _Framing(f"expected COTP CR, got TPDU 0x{cr.code:02X}")
        size_code, handle._tpdu_size = codec.cotp_tpdu_size(cr, self.config.max_tpdu_size_code)
        assert handle._writer is not None
        handle._writer.write(codec.encode_cotp_cc(cr, size_code))
        handle._cotp_open = True
        tsdu = await self._read_tsdu(handle, reader)
        try:
            request = codec.decode_association_request(codec.decode_session(tsdu))
        except MmsDecodeError as exc:
            raise _Framing(f"bad association request: {exc}") from exc
        handle._mms_context, handle._acse_context = request.mms_context, request.acse_context
        pdu_size = min(self.config.max_pdu_size_bytes, request.max_pdu_size or self.config.max_pdu_size_bytes)
        info = AssociationInfo(handle.association_id, handle.peer_host, handle.peer_port, handle.tls,
                               request.calling_ap_title, request.calling_ae_qualifier, request.called_ap_title,
                               request.called_ae_qualifier, request.authentication_value, pdu_size, handle)
        handle.info = info
        responding_title = self.config.local_ap_title or request.called_ap_title
        responding_qualifier = (self.config.local_ae_qualifier if self.config.local_ap_title
                                else request.called_ae_qualifier)
        try:
            ctx = self.handler.associate(info)
        except AssociationRefused as exc:
            log.info("%s: association refused (calling AP title %s, AE qualifier %s): %s", handle,
                     _oid_text(request.calling_ap_title), request.calling_ae_qualifier, exc)
            await self._refuse(handle, reader, request, exc.diagnostic, responding_title, responding_qualifier)
            return
        except Exception as exc:  # noqa: BLE001 - a faulty handler refuses, it does not stop the server
            log.warning("%s: handler associate failed: %s: refusing", handle, exc)
            await self._refuse(handle, reader, request, RefusalDiagnostic.NO_REASON_GIVEN, responding_title,
                               responding_qualifier)
            return
        accept, _ = codec.encode_association_accept(
            request, max_pdu_size=self.config.max_pdu_size_bytes, max_outstanding=self.config.max_outstanding,
            nesting_level=self.config.nesting_level, responding_ap_title=responding_title,
            responding_ae_qualifier=responding_qualifier)
        with self._lock:
            self._contexts[handle.association_id] = ctx
        handle._open = True
        handle._write_tsdu(accept)
        log.info("%s: associated (calling AP title %s, AE qualifier %s%s)", handle,
                 _oid_text(request.calling_ap_title), request.calling_ae_qualifier, ", TLS" if handle.tls else "")

    async def _refuse(self, handle: AssociationHandle, reader: asyncio.StreamReader,
                      request: codec.AssociationRequest, diagnostic: int, title: tuple[int, ...] | None,
                      qualifier: int | None) -> None:
        handle._write_tsdu(codec.encode_association_refusal(request, diagnostic, responding_ap_title=title,
                                                            responding_ae_qualifier=qualifier))
        await self._await_peer_close(reader)
        handle._finish(EndReason.LOCAL_ABORT)

    async def _await_peer_close(self, reader: asyncio.StreamReader) -> None:
        """The calling side disconnects the transport after a release or refusal; wait for that, bounded."""
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(self.config.release_timeout_s):
                while await reader.read(4096):
                    pass

    async def _receive(self, handle: AssociationHandle, reader: asyncio.StreamReader) -> None:
        tsdu = await self._read_tsdu(handle, reader)
        try:
            spdu = codec.decode_session(tsdu)
        except MmsDecodeError as exc:
            raise _Framing(str(exc)) from exc
        if spdu.spdu == SpduType.DATA:
            try:
                context, mms_pdu = codec.decode_presentation_data(spdu.user_data)
            except MmsDecodeError as exc:
                raise _Framing(str(exc)) from exc
            if context != handle._mms_context:
                raise _Framing(f"data in presentation context {context}, MMS is {handle._mms_context}")
            self._dispatch(handle, mms_pdu)
        elif spdu.spdu == SpduType.FINISH:
            try:
                codec.decode_release_request(spdu)
            except MmsDecodeError as exc:
                raise _Framing(f"bad release request: {exc}") from exc
            handle._write_tsdu(codec.encode_release_response(handle._acse_context))
            handle.released = True
            log.info("%s: released", handle)
            handle._open = False  # no more reports; the peer closes the transport
            self._ended(handle, None, True)
            handle._done.set()
            handle._drop_later()
            await self._await_peer_close(reader)
            if handle._writer is not None:
                handle._writer.close()
        elif spdu.spdu == SpduType.ABORT:
            log.info("%s: aborted by the peer", handle)
            handle._finish(EndReason.PEER_ABORT)
        else:
            raise _Framing(f"unexpected session SPDU 0x{spdu.spdu:02X}")

    # --- MMS dispatch -------------------------------------------------------------------------------------

    def _dispatch(self, handle: AssociationHandle, mms_pdu: bytes) -> None:
        try:
            pdu = codec.decode_mms_pdu(mms_pdu)
        except MmsDecodeError as exc:
            self.malformed_pdus += 1
            log.warning("%s: undecodable MMS PDU (%s): rejected", handle, exc)
            handle._send_mms(codec.encode_reject(None, RejectReason.INVALID_PDU))
            return
        if isinstance(pdu, codec.ConcludeRequestPdu):
            if handle._later:
                self._track(handle, self._conclude_after_pending(handle))
            else:
                handle._send_mms(codec.encode_conclude_response())
                handle._concluded = True
            return
        if isinstance(pdu, codec.RejectPdu):
            log.warning("%s: peer rejected our PDU (invoke id %s, reason [%d] code %d)", handle, pdu.invoke_id,
                        pdu.reason_tag, pdu.code)
            return
        if isinstance(pdu, codec.OtherPdu):
            self.malformed_pdus += 1
            log.warning("%s: unexpected MMS PDU tag 0x%X: rejected", handle, pdu.tag)
            handle._send_mms(codec.encode_reject(pdu.invoke_id, RejectReason.UNRECOGNIZED_PDU))
            return
        try:
            request = codec.decode_service_request(pdu)
        except MmsDecodeError as exc:
            self.malformed_pdus += 1
            log.warning("%s: invoke id %d: bad service %d request (%s): rejected", handle, pdu.invoke_id,
                        pdu.service, exc)
            handle._send_mms(codec.encode_reject(pdu.invoke_id, RejectReason.CONFIRMED_INVALID_ARGUMENT))
            return
        if request is None:
            log.info("%s: invoke id %d: service %d not supported: rejected", handle, pdu.invoke_id, pdu.service)
            handle._send_mms(codec.encode_reject(pdu.invoke_id, RejectReason.CONFIRMED_UNRECOGNIZED_SERVICE))
            return
        ctx = self._contexts.get(handle.association_id)
        try:
            response = self._service(handle, ctx, request)
        except Exception as exc:  # noqa: BLE001 - a faulty handler answers an error, the server goes on
            handle._send_mms(self._error_response(handle, pdu.invoke_id, request, exc))
            return
        if isinstance(response, _Later):
            if len(handle._later) >= self.config.max_outstanding:
                log.warning("%s: invoke id %d: %d deferred responses pending already: refused", handle,
                            pdu.invoke_id, len(handle._later))
                _close_awaitable(response.result)
                handle._send_mms(codec.encode_confirmed_error(pdu.invoke_id, ErrorClass.RESOURCE, 3))
                return
            self._track(handle, self._answer_later(handle, pdu.invoke_id, request, response))
            return
        handle._send_mms(self._response(handle, pdu.invoke_id, response))

    def _response(self, handle: AssociationHandle, invoke_id: int, response: bytes) -> bytes:
        encoded = codec.encode_confirmed_response(invoke_id, response)
        if handle.info is not None and len(encoded) > handle.info.max_pdu_size_bytes:
            log.warning("%s: invoke id %d: response of %d bytes exceeds the PDU size %d", handle, invoke_id,
                        len(encoded), handle.info.max_pdu_size_bytes)
            encoded = codec.encode_confirmed_error(invoke_id, ErrorClass.SERVICE, 5)  # pdu-size
        return encoded

    @staticmethod
    def _error_response(handle: AssociationHandle, invoke_id: int, request: object, exc: Exception) -> bytes:
        if isinstance(exc, MmsServiceError):
            return codec.encode_confirmed_error(invoke_id, exc.error_class, exc.code)
        log.warning("%s: invoke id %d: handler failed on %s: %s: %s", handle, invoke_id, type(request).__name__,
                    type(exc).__name__, exc)
        return codec.encode_confirmed_error(invoke_id, ErrorClass.OTHERS, 0)

    def _track(self, handle: AssociationHandle, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        handle._later.add(task)
        task.add_done_callback(handle._later.discard)

    async def _answer_later(self, handle: AssociationHandle, invoke_id: int, request: object, later: _Later) -> None:
        try:
            encoded = self._response(handle, invoke_id, later.finish(await later.result))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - as for an immediate answer
            encoded = self._error_response(handle, invoke_id, request, exc)
        if handle._open and not handle._concluded:
            handle._send_mms(encoded)
        else:
            log.info("%s: invoke id %d: association ending, deferred response dropped", handle, invoke_id)

    async def _conclude_after_pending(self, handle: AssociationHandle) -> None:
        """Answer a Conclude once the pending deferred responses went out (bounded): nothing follows the answer."""
        current = asyncio.current_task()
        pending = [t for t in handle._later if t is not current]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.config.release_timeout_s)
            for task in late:
                log.warning("%s: deferred response still pending at the Conclude after %.1f s: dropped", handle,
                            self.config.release_timeout_s)
                task.cancel()
        if handle._open and not handle._concluded:
            handle._send_mms(codec.encode_conclude_response())
            handle._concluded = True

    def _service(self, handle: AssociationHandle, ctx: Any, request: codec.ServiceRequest) -> bytes | _Later:
        h = self.handler
        if isinstance(request, ReadRequest):
            access = request.access

            def read_response(got: Any) -> bytes:
                results = list(got)
                if access.list_name is None and len(results) != len(access.variables):
                    raise RuntimeError(f"handler read gave {len(results)} results for {len(access.variables)}")
                return codec.encode_read_response(results, access if request.with_result else None)

            got = h.read_list(ctx, access.list_name) if access.list_name is not None else h.read(ctx, access.variables)
            later = _deferred(got)
            return _Later(later, read_response) if later is not None else read_response(got)
        if isinstance(request, WriteRequest):
            if request.access.list_name is not None:
                raise MmsServiceError(ErrorClass.ACCESS, 1, "write to a named variable list is not supported")

            def write_response(got: Any) -> bytes:
                outcomes = list(got)
                if len(outcomes) != len(request.values):
                    raise RuntimeError(f"handler write gave {len(outcomes)} outcomes for {len(request.values)}")
                return codec.encode_write_response(outcomes)

            got = h.write(ctx, request.access.variables, request.values)
            later = _deferred(got)
            return _Later(later, write_response) if later is not None else write_response(got)
        if isinstance(request, NameListRequest):
            return self._name_list(handle, ctx, request)
        if isinstance(request, IdentifyRequest):
            ident = h.identify(ctx)
            return codec.encode_identify_response(ident.vendor, ident.model, ident.revision)
        if isinstance(request, VariableAttributesRequest):
            attributes = h.get_variable_access_attributes(ctx, request.name)
            return codec.encode_variable_attributes_response(attributes.mms_type, deletable=attributes.deletable)
        if isinstance(request, DefineListRequest):
            h.define_named_variable_list(ctx, request.name, request.variables)
            return codec.encode_define_list_response()
        if isinstance(request, DeleteListRequest):
            result = h.delete_named_variable_list(ctx, request)
            return codec.encode_delete_list_response(result.matched, result.deleted)
        if isinstance(request, ListAttributesRequest):
            attrs = h.get_named_variable_list_attributes(ctx, request.name)
            return codec.encode_list_attributes_response(attrs.variables, deletable=attrs.deletable)
        raise RuntimeError(f"no dispatch for {type(request).__name__}")

    def _name_list(self, handle: AssociationHandle, ctx: Any, request: NameListRequest) -> bytes:
        names = sorted(set(self.handler.get_name_list(ctx, request)))
        if request.continue_after is not None:
            names = [n for n in names if n > request.continue_after]
        budget = self.config.name_list_page_bytes or ((handle.info.max_pdu_size_bytes if handle.info else 1024) - 64)
        page: list[str] = []
        used = 0
        for name in names:
            cost = len(name) + 4
            if page and used + cost > budget:
                break
            page.append(name)
            used += cost
        return codec.encode_name_list_response(page, len(page) < len(names))


def _close_awaitable(result: Awaitable[Any]) -> None:
    """Dispose of a deferred result that will not be awaited (no 'never awaited' warning, cancel a future)."""
    if inspect.iscoroutine(result):
        result.close()
    elif isinstance(result, asyncio.Future):
        result.cancel()


def _oid_text(oid: tuple[int, ...] | None) -> str:
    return "none" if oid is None else ".".join(map(str, oid))
