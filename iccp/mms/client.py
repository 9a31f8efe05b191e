"""MMS client association: the base the TASE.2 client sits on.

:meth:`MmsAssociation.connect` tries each address of :class:`MmsClientConfig` in order (primary, then backups),
each with its own time-out, optionally over TLS, and associates with the configured calling/called AP titles and
AE qualifiers (TASE.2 peers check them against their bilateral tables). One receive thread per association matches
confirmed responses to requests by invokeID (several requests may be outstanding, from several threads, up to what
the server accepted) and hands information reports to listeners. Listeners and the close callback run on that
thread: keep them short or queue the work.

Every failure raises a subclass of :class:`iccp.errors.MmsError` whose message names the peer address and the
service; per-variable failures of a read or write are values (:class:`DataAccessCode`), not exceptions.

Framing, the AARQ and the MMS data codec come from open61850; names, variable specifications and request
encoders are shared with the server (:mod:`iccp.mms.codec`); response and report decoders are in
:mod:`iccp.mms.client_codec`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from open61850 import ber
from open61850.data import IECData
from open61850.mms import pdu as o61850_pdu
from open61850.mms.association import (
    ACSE_CONTEXT,
    Association,
    AssociationError,
    AssociationParameters,
    association_request,
    decode_association_response,
)
from open61850.mms.errors import MmsProtocolError
from open61850.mms.transport import (
    DEFAULT_TPDU_SIZE_CODE,
    IsoConnection,
    TransportError,
    connection_request,
    recv_tpkt,
    send_tpkt,
)
from open61850.mms.types import MmsType, get_variable_access_attributes_response

from iccp.errors import (
    AssociationRefused,
    MmsConnectionError,
    MmsDecodeError,
    MmsError,
    MmsServiceError,
    MmsTimeoutError,
)
from iccp.mms import client_codec as rx
from iccp.mms import codec
from iccp.mms.client_codec import InformationReport
from iccp.mms.codec import (
    AccessResult,
    DataAccessCode,
    NameScope,
    ObjectClass,
    ObjectName,
    VariableAccess,
    VariableSpec,
)
from iccp.mms.server import DeleteResult, Identity, ListAttributes

__all__ = [
    "AeTitle",
    "MmsEndpoint",
    "MmsClientConfig",
    "CloseReason",
    "ReleaseResult",
    "ConnectAttempt",
    "MmsAssociation",
    "InformationReportListener",
    "CloseListener",
    "MmsConnectFailed",
    "MmsAssociationRefused",
    "MmsConnectionLost",
    "MmsRequestTimeout",
    "MmsServiceFailed",
    "MmsRequestRejected",
    "MmsResponseInvalid",
    "MmsDataAccessFailed",
]

_log = logging.getLogger(__name__)

_CC = 0xD0
_INVOKE_ID_MODULO = 1 << 31
_MAX_NAME_LIST_PAGES = 100_000


# --- configuration ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AeTitle:
    """An application entity: AP title (an OBJECT IDENTIFIER) and optional AE qualifier."""

    ap_title: tuple[int, ...]
    ae_qualifier: int | None = None

    def __post_init__(self) -> None:
        try:
            ber.encode_oid(self.ap_title)
        except ValueError as exc:
            raise ValueError(f"AP title {self.ap_title}: {exc}") from exc

    def __str__(self) -> str:
        title = ".".join(map(str, self.ap_title))
        return title if self.ae_qualifier is None else f"{title}/{self.ae_qualifier}"


@dataclass(frozen=True, slots=True)
class MmsEndpoint:
    host: str
    port: int = 102

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise ValueError(f"MMS endpoint {self.host!r}:{self.port} is not a host and TCP port")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MmsClientConfig:
    """Where and how to associate. ``endpoints`` are tried in order: primary first, then backups."""

    endpoints: tuple[MmsEndpoint, ...]
    calling: AeTitle | None = None  # our AP title / AE qualifier, sent in the AARQ
    called: AeTitle | None = None  # the peer's, as our bilateral agreement names it
    connect_timeout_s: float = 5.0  # per endpoint: TCP, TLS, COTP and the association
    request_timeout_s: float = 10.0
    release_timeout_s: float = 3.0  # of silence: reports still arriving ahead of the Conclude-Response extend it
    release_drain_max_s: float = 30.0  # ... up to this long in all
    ssl_context: ssl.SSLContext | None = None
    tls_server_hostname: str | None = None  # defaults to the endpoint host
    max_pdu_size: int = 65000
    max_outstanding: int = 5
    nesting_level: int = 10
    calling_tsap: bytes = b"\x00\x01"
    called_tsap: bytes = b"\x00\x01"

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("MmsClientConfig needs at least one endpoint")
        for name in ("connect_timeout_s", "request_timeout_s", "release_timeout_s", "release_drain_max_s"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise ValueError(f"MmsClientConfig.{name} must be in (0, 3600] s, got {value}")
        if self.max_outstanding < 1 or self.max_pdu_size < 256:
            raise ValueError("MmsClientConfig: max_outstanding >= 1 and max_pdu_size >= 256 are required")

    def association_parameters(self) -> AssociationParameters:
        return AssociationParameters(
            max_pdu_size=self.max_pdu_size,
            max_outstanding=self.max_outstanding,
            nesting_level=self.nesting_level,
            calling_ap_title=self.calling.ap_title if self.calling else None,
            calling_ae_qualifier=self.calling.ae_qualifier if self.calling else None,
            called_ap_title=self.called.ap_title if self.called else None,
            called_ae_qualifier=self.called.ae_qualifier if self.called else None,
        )


class CloseReason(enum.Enum):
    RELEASED = "released"  # Conclude (and session FINISH/DISCONNECT) done by us
    ABORTED = "aborted"  # we aborted
    ABORTED_BY_PEER = "aborted by peer"  # session ABORT received
    RELEASED_BY_PEER = "released by peer"  # peer sent Conclude or FINISH
    LOST = "lost"  # TCP closed, transport or framing error


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """How far the orderly release got: the peer may close TCP right after its Conclude response."""

    concluded: bool  # Conclude-Response received
    session_disconnected: bool  # session DISCONNECT received in answer to our FINISH


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    endpoint: MmsEndpoint
    error: str


InformationReportListener = Callable[[InformationReport], None]
CloseListener = Callable[[CloseReason, "MmsConnectionError | None"], None]


# --- errors ----------------------------------------------------------------------------------------------------------


class MmsConnectFailed(MmsConnectionError):
    """No endpoint could be associated; ``attempts`` says why for each one, in order."""

    def __init__(self, attempts: Sequence[ConnectAttempt]) -> None:
        self.attempts = tuple(attempts)
        detail = "; ".join(f"{a.endpoint}: {a.error}" for a in self.attempts)
        super().__init__(f"MMS associate failed with every endpoint ({detail})")


class MmsAssociationRefused(AssociationRefused):
    """The peer refused the association (ACSE AARE rejection, MMS initiate error, session or presentation refusal)."""

    def __init__(self, peer: str, detail: str, diagnostic: int = -1) -> None:
        self.peer = peer
        super().__init__(diagnostic, f"MMS peer {peer} refused the association: {detail}")


class MmsConnectionLost(MmsConnectionError):
    """The association ended while a request was outstanding or one was attempted after it ended."""

    def __init__(self, peer: str, service: str, detail: str) -> None:
        self.peer, self.service = peer, service
        super().__init__(f"MMS peer {peer}, {service}: association not available ({detail})")


class MmsRequestTimeout(MmsTimeoutError):
    def __init__(self, peer: str, service: str, timeout_s: float) -> None:
        self.peer, self.service, self.timeout_s = peer, service, timeout_s
        super().__init__(f"MMS peer {peer}, {service}: no response within {timeout_s:g} s")


class MmsServiceFailed(MmsServiceError):
    """The peer answered with a confirmed-ErrorPDU (ISO 9506-2 error class and code)."""

    _CLASSES = {0: "vmd-state", 1: "application-reference", 2: "definition", 3: "resource", 4: "service",
                5: "service-preempt", 6: "time-resolution", 7: "access", 8: "initiate", 9: "conclude",
                10: "cancel", 11: "file", 12: "others"}

    def __init__(self, peer: str, service: str, error_class: int, code: int) -> None:
        self.peer, self.service = peer, service
        klass = self._CLASSES.get(error_class, "unknown")
        super().__init__(error_class, code,
                         f"MMS peer {peer}, {service}: service error class {error_class} ({klass}) code {code}")


class MmsRequestRejected(MmsError):
    """The peer answered with a RejectPDU (``reason_tag``: 1 confirmed-requestPDU, ...; ``code`` within it)."""

    def __init__(self, peer: str, service: str, reason_tag: int, code: int) -> None:
        self.peer, self.service, self.reason_tag, self.code = peer, service, reason_tag, code
        super().__init__(f"MMS peer {peer}, {service}: request rejected (reason [{reason_tag}] code {code})")


class MmsResponseInvalid(MmsDecodeError):
    """The peer's response does not decode or does not match the request."""

    def __init__(self, peer: str, service: str, detail: str) -> None:
        self.peer, self.service = peer, service
        super().__init__(f"MMS peer {peer}, {service}: invalid response ({detail})")


class MmsDataAccessFailed(MmsError):
    """A single-variable read or write failed (the many-variable forms return the failure as a value)."""

    def __init__(self, peer: str, service: str, variable: str, failure: DataAccessCode) -> None:
        self.peer, self.service, self.variable, self.failure = peer, service, variable, failure
        reason = failure.name.lower().replace("_", "-")
        super().__init__(f"MMS peer {peer}, {service} of {variable}: data access error {int(failure)} ({reason})")


# --- the association -------------------------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("done", "response", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: rx.IncomingPdu | None = None
        self.error: MmsConnectionError | None = None


def _open_transport(endpoint: MmsEndpoint, config: MmsClientConfig) -> tuple[IsoConnection, socket.socket]:
    """TCP (+ TLS), then the COTP CR/CC exchange; the socket keeps ``connect_timeout_s`` until associated."""
    sock: socket.socket = socket.create_connection((endpoint.host, endpoint.port), timeout=config.connect_timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if config.ssl_context is not None:
            sock = config.ssl_context.wrap_socket(sock, server_hostname=config.tls_server_hostname or endpoint.host)
        send_tpkt(sock, connection_request(calling_tsap=config.calling_tsap, called_tsap=config.called_tsap))
        cc = recv_tpkt(sock)
        if cc is None:
            raise TransportError("connection closed while waiting for COTP CC")
        if len(cc) < 7 or cc[1] & 0xF0 != _CC:
            raise TransportError(f"expected COTP CC, got {cc[:8].hex()}")
        tpdu_size = 1 << DEFAULT_TPDU_SIZE_CODE
        offset = 7  # LI, code, dst-ref(2), src-ref(2), class
        while offset + 2 <= len(cc):
            code, length = cc[offset], cc[offset + 1]
            if code == 0xC0 and length == 1 and offset + 2 < len(cc) and 7 <= cc[offset + 2] <= 13:
                tpdu_size = 1 << cc[offset + 2]
            offset += 2 + length
        return IsoConnection(sock, tpdu_size=tpdu_size), sock
    except BaseException:
        sock.close()
        raise


class MmsAssociation:
    """One associated MMS peer. Create with :meth:`connect`; end with :meth:`release` (or :meth:`abort`)."""

    def __init__(self, iso: IsoConnection, endpoint: MmsEndpoint, negotiated: Association, config: MmsClientConfig,
                 *, on_information_report: InformationReportListener | None = None,
                 on_closed: CloseListener | None = None) -> None:
        self._iso = iso
        self._endpoint = endpoint
        self._peer = str(endpoint)
        self._negotiated = negotiated
        self._config = config
        self._on_closed = on_closed
        self._listeners: list[InformationReportListener] = [on_information_report] if on_information_report else []
        outstanding = max(1, min(config.max_outstanding, negotiated.max_outstanding_calling or 1))
        self._slots = threading.BoundedSemaphore(outstanding)
        self._invoke_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._ended = False  # set once, under the lock, when the association ends
        self._closed = threading.Event()  # set after the close listener ran: what wait_closed waits for
        self._close_reason: CloseReason | None = None
        self._close_error: MmsConnectionError | None = None
        self._releasing = False
        self._aborting = False
        self._concluded = threading.Event()
        self._conclude_accepted = False
        self._disconnected = threading.Event()
        self._last_rx_mono = time.monotonic()  # when the receive thread last got a TSDU (release progress)
        self._receiver = threading.Thread(target=self._receive_loop, name=f"mms-client-rx-{endpoint}", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    @classmethod
    def connect(cls, config: MmsClientConfig, *, on_information_report: InformationReportListener | None = None,
                on_closed: CloseListener | None = None) -> MmsAssociation:
        """Associate with the first endpoint that accepts; raise MmsConnectFailed (or MmsAssociationRefused when
        every endpoint that answered refused) otherwise."""
        attempts: list[ConnectAttempt] = []
        refusals: list[MmsAssociationRefused] = []
        for endpoint in config.endpoints:
            try:
                iso, negotiated = cls._associate(endpoint, config)
            except MmsAssociationRefused as exc:
                refusals.append(exc)
                attempts.append(ConnectAttempt(endpoint, str(exc)))
                _log.warning("%s", exc)
                continue
            except (OSError, TransportError, MmsProtocolError, ber.BerError, MmsTimeoutError) as exc:
                attempts.append(ConnectAttempt(endpoint, f"{type(exc).__name__}: {exc}"))
                _log.warning("MMS associate with %s failed: %s", endpoint, exc)
                continue
            association = cls(iso, endpoint, negotiated, config, on_information_report=on_information_report,
                              on_closed=on_closed)
            association._receiver.start()
            return association
        if refusals and len(refusals) == len(attempts):
            raise refusals[-1]
        raise MmsConnectFailed(attempts)

    @staticmethod
    def _associate(endpoint: MmsEndpoint, config: MmsClientConfig) -> tuple[IsoConnection, Association]:
        iso, sock = _open_transport(endpoint, config)
        try:
            iso.send(association_request(config.association_parameters()))
            try:
                response = iso.recv()
            except TimeoutError as exc:
                raise MmsTimeoutError(
                    f"MMS peer {endpoint}: no association response within {config.connect_timeout_s:g} s") from exc
            if response is None:
                raise TransportError("connection closed during the association")
            try:
                negotiated = decode_association_response(response)
            except AssociationError as exc:
                raise MmsAssociationRefused(str(endpoint), str(exc), _aare_diagnostic(response)) from exc
            sock.settimeout(None)  # the receive thread blocks; requests have their own time-outs
            return iso, negotiated
        except BaseException:
            iso.close()
            raise

    @property
    def endpoint(self) -> MmsEndpoint:
        return self._endpoint

    @property
    def negotiated(self) -> Association:
        """What the peer accepted: PDU size, outstanding requests, nesting level, services supported."""
        return self._negotiated

    @property
    def is_open(self) -> bool:
        return not self._ended

    @property
    def close_reason(self) -> CloseReason | None:
        return self._close_reason

    def wait_closed(self, timeout_s: float | None = None) -> CloseReason | None:
        """Block until the association ends (or the time-out); return why it ended, None while open."""
        self._closed.wait(timeout_s)
        return self._close_reason

    def add_report_listener(self, listener: InformationReportListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_report_listener(self, listener: InformationReportListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def release(self, timeout_s: float | None = None) -> ReleaseResult:
        """Orderly release: Conclude, then session FINISH (ACSE RLRQ) and wait for DISCONNECT, then close TCP.

        Outstanding requests fail with MmsConnectionLost. A peer that refuses the Conclude is aborted. The time-out
        (``timeout_s``, default ``release_timeout_s``) is one of silence: the Conclude-Response comes after the
        information reports the peer queued before it, and while those still arrive (each handed to the listeners)
        the wait goes on, up to ``release_drain_max_s`` in all.
        """
        limit = self._config.release_timeout_s if timeout_s is None else timeout_s
        if self._ended:
            return ReleaseResult(False, False)
        self._releasing = True
        concluded = disconnected = False
        try:
            self._iso.send(o61850_pdu.wrap(o61850_pdu.conclude_request()))
            if self._await_conclude(limit) and self._conclude_accepted:
                concluded = True
                self._iso.send(rx.finish_spdu())
                # The receive thread ends the association on DISCONNECT or on the peer closing TCP.
                self._closed.wait(limit)
                disconnected = self._disconnected.is_set()
        except OSError:
            pass  # the peer closed TCP right after its Conclude response: that is a release too
        if not concluded:
            _log.warning("MMS peer %s did not accept the Conclude (%g s without traffic, %g s at most): aborting",
                         self._peer, limit, max(limit, self._config.release_drain_max_s))
            self.abort()
            return ReleaseResult(False, False)
        self._finish(CloseReason.RELEASED, None)
        return ReleaseResult(True, disconnected)

    def _await_conclude(self, limit_s: float) -> bool:
        """Wait for the Conclude-Response while the peer is silent less than ``limit_s`` (bounded in all)."""
        sent = time.monotonic()
        hard = sent + max(limit_s, self._config.release_drain_max_s)
        while not self._concluded.wait(0.05):
            now = time.monotonic()
            if self._ended or now >= hard or now - max(sent, self._last_rx_mono) >= limit_s:
                return self._concluded.is_set()
        return True

    def abort(self) -> None:
        """Abort at once (session ABORT with ACSE ABRT), then close TCP; outstanding requests fail."""
        if self._ended:
            return
        self._aborting = True  # the peer may drop TCP on our ABORT before _finish runs: that is still our abort
        try:
            self._iso.send(codec.encode_abort(ACSE_CONTEXT))
        except OSError:
            pass
        self._finish(CloseReason.ABORTED, None)

    def close(self) -> None:
        """Release, aborting when the peer does not cooperate. Safe to call more than once."""
        if self.is_open:
            self.release()
        self._join()

    def __enter__(self) -> MmsAssociation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _join(self) -> None:
        if self._receiver.is_alive() and self._receiver is not threading.current_thread():
            self._receiver.join(timeout=5)

    def _finish(self, reason: CloseReason, error: MmsConnectionError | None) -> None:
        """Mark the association closed once, fail the outstanding requests, close TCP, tell the close listener."""
        with self._lock:
            if self._ended:
                return
            self._close_reason, self._close_error = reason, error
            self._ended = True
            pending, self._pending = self._pending, {}
        failure = error or MmsConnectionLost(self._peer, "request", f"association {reason.value}")
        for waiter in pending.values():
            waiter.error = failure
            waiter.done.set()
        self._iso.close()
        if self._on_closed is not None:
            try:
                self._on_closed(reason, error)
            except Exception:  # a listener bug must not break the close path
                _log.exception("MMS close listener for %s failed", self._peer)
        self._closed.set()
        if threading.current_thread() is not self._receiver:
            self._join()

    # --- receive side ----------------------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        reason, error = CloseReason.LOST, None
        try:
            while not self._ended:
                tsdu = self._iso.recv()
                self._last_rx_mono = time.monotonic()
                if tsdu is None:
                    error = None if self._releasing else MmsConnectionLost(self._peer, "receive", "TCP closed by peer")
                    reason = CloseReason.RELEASED if self._releasing else CloseReason.LOST
                    break
                if tsdu.startswith(o61850_pdu.SESSION_DATA):
                    self._dispatch(rx.decode_incoming(o61850_pdu.unwrap(tsdu)))
                    continue
                si = tsdu[0] if tsdu else -1
                if si == rx.SPDU_DISCONNECT:
                    self._disconnected.set()
                    reason = CloseReason.RELEASED if self._releasing else CloseReason.RELEASED_BY_PEER
                    break
                if si == rx.SPDU_ABORT:
                    reason, error = CloseReason.ABORTED_BY_PEER, MmsConnectionLost(
                        self._peer, "receive", "session aborted by peer")
                    break
                if si == rx.SPDU_FINISH:
                    reason, error = CloseReason.RELEASED_BY_PEER, MmsConnectionLost(
                        self._peer, "receive", "session released by peer")
                    break
                raise MmsProtocolError(f"unexpected session SPDU 0x{si:02x}")
        except (OSError, TransportError, MmsProtocolError, MmsDecodeError) as exc:
            if not self._ended and not self._aborting:
                _log.warning("MMS peer %s: association lost: %s", self._peer, exc)
                reason, error = CloseReason.LOST, MmsConnectionLost(self._peer, "receive", str(exc))
        if self._aborting:
            reason, error = CloseReason.ABORTED, None
        self._finish(reason, error)

    def _dispatch(self, incoming: rx.IncomingPdu) -> None:
        if isinstance(incoming, InformationReport):
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(incoming)
                except Exception:  # one faulty listener must not stop reception for the others
                    _log.exception("MMS information report listener for %s failed", self._peer)
            return
        if isinstance(incoming, rx.ConcludeResponse):
            self._conclude_accepted = incoming.accepted
            self._concluded.set()
            return
        if isinstance(incoming, rx.ConcludeRequest):
            # The peer wants to end the association: accept, it will then release the session.
            self._releasing = True
            self._iso.send(o61850_pdu.wrap(ber.encode_tlv(0x8C)))
            return
        invoke_id = incoming.invoke_id
        if invoke_id is None:
            _log.warning("MMS peer %s rejected a PDU without invokeID: reason [%d] code %d",
                         self._peer, incoming.reason_tag, incoming.code)  # type: ignore[union-attr]
            return
        with self._lock:
            waiter = self._pending.pop(invoke_id, None)
        if waiter is None:
            _log.warning("MMS peer %s answered unknown or timed-out invokeID %d", self._peer, invoke_id)
            return
        waiter.response = incoming
        waiter.done.set()

    # --- requests --------------------------------------------------------------------------------------------------

    def _request(self, service_name: str, request: bytes, expected_service: int) -> bytes:
        """Send one confirmed request and return the content of its response."""
        limit = self._config.request_timeout_s
        if not self._slots.acquire(timeout=limit):
            raise MmsRequestTimeout(self._peer, f"{service_name} (waiting for a free request slot)", limit)
        try:
            waiter = _Pending()
            with self._lock:
                if self._ended:
                    raise MmsConnectionLost(self._peer, service_name, f"association {self._close_reason.value}"
                                            if self._close_reason else "closed")
                invoke_id = next(self._invoke_ids) % _INVOKE_ID_MODULO
                self._pending[invoke_id] = waiter
            try:
                self._iso.send(o61850_pdu.wrap(o61850_pdu.confirmed_request(invoke_id, request)))
            except OSError as exc:
                with self._lock:
                    self._pending.pop(invoke_id, None)
                raise MmsConnectionLost(self._peer, service_name, f"send failed: {exc}") from exc
            if not waiter.done.wait(limit):
                with self._lock:
                    self._pending.pop(invoke_id, None)
                raise MmsRequestTimeout(self._peer, service_name, limit)
        finally:
            self._slots.release()
        if waiter.error is not None:
            raise MmsConnectionLost(self._peer, service_name, str(waiter.error)) from waiter.error
        response = waiter.response
        if isinstance(response, rx.ConfirmedError):
            raise MmsServiceFailed(self._peer, service_name, response.error_class, response.code)
        if isinstance(response, rx.RejectPdu):
            raise MmsRequestRejected(self._peer, service_name, response.reason_tag, response.code)
        assert isinstance(response, rx.ConfirmedResponse)
        if response.service != expected_service:
            raise MmsResponseInvalid(self._peer, service_name,
                                     f"response to service [{response.service}], expected [{expected_service}]")
        return response.content

    def _decode(self, service_name: str, decoder: Callable[[bytes], object], content: bytes) -> object:
        try:
            return decoder(content)
        except (MmsDecodeError, MmsProtocolError, ber.BerError, ValueError) as exc:
            raise MmsResponseInvalid(self._peer, service_name, str(exc)) from exc

    def read(self, variables: Sequence[VariableSpec | ObjectName]) -> tuple[AccessResult, ...]:
        """Read several variables (each optionally narrowed to a component) in one request.

        Returns one result per variable, in order: an IECData value or a DataAccessCode.
        """
        content = self._request("read", codec.encode_read_request(_access(variables)), codec.SERVICE_READ)
        results = self._decode("read", rx.decode_read_response, content)
        assert isinstance(results, tuple)
        if len(results) != len(variables):
            raise MmsResponseInvalid(self._peer, "read", f"{len(variables)} variables, {len(results)} results")
        return results

    def read_one(self, variable: VariableSpec | ObjectName) -> IECData:
        """Read one variable; raise MmsDataAccessFailed when the server refuses it."""
        (result,) = self.read([variable])
        if isinstance(result, DataAccessCode):
            raise MmsDataAccessFailed(self._peer, "read", str(variable), result)
        return result

    def read_list(self, list_name: ObjectName) -> tuple[AccessResult, ...]:
        """Read a named variable list (data set) by its name: one result per member."""
        request = codec.encode_read_request(VariableAccess(list_name=list_name))
        content = self._request(f"read of list {list_name}", request, codec.SERVICE_READ)
        results = self._decode(f"read of list {list_name}", rx.decode_read_response, content)
        assert isinstance(results, tuple)
        return results

    def write(self, variables: Sequence[VariableSpec | ObjectName],
              values: Sequence[IECData]) -> tuple[DataAccessCode | None, ...]:
        """Write several variables in one request: None per success, a DataAccessCode per refusal."""
        request = codec.encode_write_request(_access(variables), _values(variables, values))
        content = self._request("write", request, codec.SERVICE_WRITE)
        results = self._decode("write", rx.decode_write_response, content)
        assert isinstance(results, tuple)
        if len(results) != len(variables):
            raise MmsResponseInvalid(self._peer, "write", f"{len(variables)} variables, {len(results)} results")
        return results

    def write_one(self, variable: VariableSpec | ObjectName, value: IECData) -> None:
        (failure,) = self.write([variable], [value])
        if failure is not None:
            raise MmsDataAccessFailed(self._peer, "write", str(variable), failure)

    def get_name_list(self, object_class: ObjectClass, scope: NameScope = NameScope.VCC,
                      domain: str | None = None) -> tuple[str, ...]:
        """Every name of a class in a scope, following continueAfter pages until the server says no more."""
        service_name = f"get name list ({object_class.name.lower()}, {scope.value}{' ' + domain if domain else ''})"
        names: list[str] = []
        continue_after: str | None = None
        for _ in range(_MAX_NAME_LIST_PAGES):
            request = codec.encode_name_list_request(object_class, scope, domain, continue_after)
            content = self._request(service_name, request, codec.SERVICE_GET_NAME_LIST)
            decoded = self._decode(service_name, rx.decode_get_name_list_response, content)
            page, more_follows = decoded  # type: ignore[misc]
            names.extend(page)
            if not more_follows:
                return tuple(names)
            if not page or page[-1] == continue_after:
                raise MmsResponseInvalid(self._peer, service_name, "moreFollows without progress")
            continue_after = page[-1]
        raise MmsResponseInvalid(self._peer, service_name, f"more than {_MAX_NAME_LIST_PAGES} pages")

    def get_variable_access_attributes(self, name: ObjectName) -> MmsType:
        """The type description of a named variable (open61850 MmsType)."""
        service_name = f"get variable access attributes of {name}"
        content = self._request(service_name, codec.encode_variable_attributes_request(name),
                                codec.SERVICE_GET_VARIABLE_ACCESS_ATTRIBUTES)
        return self._decode(service_name, get_variable_access_attributes_response, content)  # type: ignore[return-value]

    def define_named_variable_list(self, list_name: ObjectName,
                                   variables: Sequence[VariableSpec | ObjectName]) -> None:
        """Define a data set (named variable list) in VCC, domain or association scope."""
        self._request(f"define named variable list {list_name}",
                      codec.encode_define_list_request(list_name, _access(variables).variables),
                      codec.SERVICE_DEFINE_NVL)

    def delete_named_variable_lists(self, list_names: Sequence[ObjectName]) -> DeleteResult:
        """Delete data sets by name; the result says how many matched and how many were deleted."""
        service_name = f"delete named variable list {', '.join(map(str, list_names))}"
        content = self._request(service_name, codec.encode_delete_list_request(_nonempty(list_names, "delete")),
                                codec.SERVICE_DELETE_NVL)
        return self._decode(service_name, rx.decode_delete_named_variable_list_response, content)  # type: ignore[return-value]

    def delete_named_variable_list(self, list_name: ObjectName) -> bool:
        """Delete one data set; True when the server deleted it."""
        return self.delete_named_variable_lists([list_name]).deleted == 1

    def get_named_variable_list_attributes(self, list_name: ObjectName) -> ListAttributes:
        """The members of a data set and whether it may be deleted."""
        service_name = f"get named variable list attributes of {list_name}"
        content = self._request(service_name, codec.encode_list_attributes_request(list_name),
                                codec.SERVICE_GET_NVL_ATTRIBUTES)
        return self._decode(service_name, rx.decode_named_variable_list_attributes_response, content)  # type: ignore[return-value]

    def identify(self) -> Identity:
        content = self._request("identify", codec.encode_identify_request(), codec.SERVICE_IDENTIFY)
        return self._decode("identify", rx.decode_identify_response, content)  # type: ignore[return-value]


def _access(variables: Sequence[VariableSpec | ObjectName]) -> VariableAccess:
    """A listOfVariable access; a bare ObjectName is the whole variable."""
    if not variables:
        raise ValueError("an MMS variable access needs at least one variable")
    return VariableAccess(variables=tuple(v if isinstance(v, VariableSpec) else VariableSpec(v) for v in variables))


def _values(variables: Sequence[object], values: Sequence[IECData]) -> Sequence[IECData]:
    if len(values) != len(variables):
        raise ValueError(f"an MMS write needs one value per variable ({len(variables)} variables, "
                         f"{len(values)} values)")
    return values


def _nonempty(names: Sequence[ObjectName], service: str) -> Sequence[ObjectName]:
    if not names:
        raise ValueError(f"MMS {service} needs at least one named variable list")
    return names


def _aare_diagnostic(user_data: bytes) -> int:
    """Best effort: the ACSE result-source-diagnostic code of a refused association, -1 when absent."""
    try:
        pos = user_data.find(b"\x61")  # the AARE is the only [APPLICATION 1] constructed with a result [2]
        while pos >= 0:
            try:
                tlv = ber.decode_tlv(user_data, pos)
                fields = {t.tag: t.value for t in ber.iter_tlvs(tlv.value)}
                if 0xA2 in fields and 0xA3 in fields:
                    source = ber.decode_tlv(fields[0xA3])
                    return ber.decode_integer(ber.decode_tlv(source.value).value)
            except (ber.BerError, ValueError):
                pass
            pos = user_data.find(b"\x61", pos + 1)
    except (ber.BerError, ValueError):
        pass
    return -1
