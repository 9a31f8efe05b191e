"""iccp.mms.client against real MMS servers on 127.0.0.1: open61850's MmsServer (in process) and libiec61850's
IedServer (pyiec61850-ng, in a subprocess because of its teardown hazards)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from open61850 import ber
from open61850.data import BoolData, FloatData, IntData, StructureData, VisibleStringData
from open61850.mms.pdu import ObjectName as O61850Name
from open61850.mms.types import PrimitiveType, StructureType
from open61850.server.model import IedModel, Node
from open61850.server.server import MmsServer
from support import free_port, wait_for
from wire_capture import WireCapture, WireProtocol, start_or_skip, values_in

from iccp.errors import AssociationRefused, MmsServiceError
from iccp.mms.client import (
    AeTitle,
    CloseReason,
    MmsAssociation,
    MmsAssociationRefused,
    MmsClientConfig,
    MmsConnectFailed,
    MmsConnectionLost,
    MmsDataAccessFailed,
    MmsEndpoint,
    MmsRequestRejected,
    MmsRequestTimeout,
    MmsServiceFailed,
    ReleaseResult,
)
from iccp.mms.client_codec import InformationReport
from iccp.mms.codec import (
    DataAccessCode,
    DeleteListRequest,
    NameListRequest,
    NameScope,
    ObjectClass,
    ObjectName,
    VariableSpec,
)
from iccp.mms.server import AssociationInfo, DeleteResult, Identity, ListAttributes, MmsServerConfig, VariableAttributes
from iccp.mms.server import MmsServer as IccpMmsServer

DOMAIN = "ICC1"
N_POINTS = 60  # enough names to need several GetNameList pages with a 512-byte PDU

_REAL = PrimitiveType("float", 32)
_INT = PrimitiveType("integer", 16)
_BOOL = PrimitiveType("boolean")


def _leaf(parent: Node, name: str, mms_type: PrimitiveType, value: object) -> Node:
    node = Node(name, mms_type, parent)
    node.value = value  # type: ignore[assignment]
    parent.children[name] = node
    return node


def _tase2_shaped_model() -> IedModel:
    """A domain with N_POINTS real points and one structured transfer-set-like variable, plus a data set."""
    model = IedModel("ICC")
    lns: dict[str, Node] = {}
    for i in range(N_POINTS):
        name = f"Tie_Line_Flow_MW_{i:03d}"
        node = Node(name, _REAL, fc="SP" if i % 2 else None)  # odd points writable, even ones read-only
        node.value = FloatData(float(i) + 0.5)
        lns[name] = node
    ts_type = StructureType([("Interval", _INT), ("RBE", _BOOL), ("Status", _BOOL)])
    ts = Node("DSTransferSet01", ts_type)
    _leaf(ts, "Interval", _INT, IntData(10))
    _leaf(ts, "RBE", _BOOL, BoolData(False))
    _leaf(ts, "Status", _BOOL, BoolData(False))
    lns["DSTransferSet01"] = ts
    model.logical_devices[DOMAIN] = lns
    model.data_sets[O61850Name("DS_Flows", DOMAIN)] = [O61850Name(f"Tie_Line_Flow_MW_{i:03d}", DOMAIN) for i in (1, 2)]
    return model


@pytest.fixture
def server() -> Iterator[MmsServer]:
    srv = MmsServer(_tase2_shaped_model(), host="127.0.0.1", port=0, vendor="dscada-test", model_name="icc",
                    revision="1", reports=False, controls=False, setting_groups=False)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _config(*ports: int, **kwargs: object) -> MmsClientConfig:
    base: dict[str, object] = {
        "calling": AeTitle((1, 3, 9999, 1), 7), "called": AeTitle((1, 3, 9999, 2), 8),
        "connect_timeout_s": 3.0, "request_timeout_s": 5.0, "release_timeout_s": 3.0,
    }
    base.update(kwargs)
    return MmsClientConfig(tuple(MmsEndpoint("127.0.0.1", p) for p in ports), **base)  # type: ignore[arg-type]


def _dead_port() -> int:
    """A loopback port nobody listens on (connection refused at once)."""
    return free_port()


def test_open61850_services_backup_endpoint_and_release(server: MmsServer) -> None:
    closes: list[tuple[CloseReason, object]] = []
    dead = _dead_port()
    assoc = MmsAssociation.connect(_config(dead, server.port, max_pdu_size=512),
                                   on_closed=lambda reason, err: closes.append((reason, err)))
    try:
        assert assoc.endpoint == MmsEndpoint("127.0.0.1", server.port)  # primary refused, backup used
        assert assoc.negotiated.max_pdu_size == 512
        ident = assoc.identify()
        assert (ident.vendor, ident.model, ident.revision) == ("dscada-test", "icc", "1")

        assert assoc.get_name_list(ObjectClass.DOMAIN) == (DOMAIN,)
        names = assoc.get_name_list(ObjectClass.NAMED_VARIABLE, NameScope.DOMAIN, DOMAIN)
        assert list(names) == server.model.names(DOMAIN)  # every page followed, nothing repeated
        assert len(names) == N_POINTS + 4
        assert assoc.get_name_list(ObjectClass.NAMED_VARIABLE_LIST, NameScope.DOMAIN, DOMAIN) == ("DS_Flows",)

        flows = [ObjectName.in_domain(DOMAIN, f"Tie_Line_Flow_MW_{i:03d}") for i in (0, 7)]
        missing = ObjectName.in_domain(DOMAIN, "No_Such_Point")
        results = assoc.read([*flows, missing])
        assert results[:2] == (FloatData(0.5), FloatData(7.5))
        assert isinstance(results[2], DataAccessCode)
        with pytest.raises(MmsDataAccessFailed, match=rf"127\.0\.0\.1:{server.port}, read of ICC1/No_Such_Point"):
            assoc.read_one(missing)

        assert assoc.write(flows, [FloatData(1.0), FloatData(42.25)]) == (DataAccessCode.OBJECT_ACCESS_DENIED, None)
        assert assoc.read_one(flows[1]) == FloatData(42.25)
        ts = assoc.read_one(ObjectName.in_domain(DOMAIN, "DSTransferSet01"))
        assert ts == StructureData([IntData(10), BoolData(False), BoolData(False)])

        ts_type = assoc.get_variable_access_attributes(ObjectName.in_domain(DOMAIN, "DSTransferSet01"))
        assert isinstance(ts_type, StructureType)
        assert [n for n, _ in ts_type.components] == ["Interval", "RBE", "Status"]

        attrs = assoc.get_named_variable_list_attributes(ObjectName.in_domain(DOMAIN, "DS_Flows"))
        assert [str(v) for v in attrs.variables] == ["ICC1/Tie_Line_Flow_MW_001", "ICC1/Tie_Line_Flow_MW_002"]
        assert assoc.read_list(ObjectName.in_domain(DOMAIN, "DS_Flows")) == (FloatData(1.5), FloatData(2.5))
        with pytest.raises(MmsServiceFailed, match="get named variable list attributes of ICC1/Nope"):
            assoc.get_named_variable_list_attributes(ObjectName.in_domain(DOMAIN, "Nope"))

        # open61850's server has no DefineNamedVariableList: it rejects the service, the error names it.
        with pytest.raises(MmsRequestRejected, match=r"define named variable list ICC1/DS_New: request rejected"):
            assoc.define_named_variable_list(ObjectName.in_domain(DOMAIN, "DS_New"), flows)
        assert assoc.identify().vendor == "dscada-test"  # still associated after the reject

        result = assoc.release()
    finally:
        assoc.close()
    assert result.concluded  # open61850 closes TCP after its Conclude response: no session DISCONNECT
    assert not assoc.is_open and assoc.close_reason is CloseReason.RELEASED
    assert closes == [(CloseReason.RELEASED, None)]
    with pytest.raises(MmsConnectionLost, match=rf"127\.0\.0\.1:{server.port}, identify"):
        assoc.identify()


def _report_pdu(spec: bytes, values: bytes) -> bytes:
    """unconfirmed-PDU { informationReport [0] { variableAccessSpecification, listOfAccessResult [0] } }."""
    return ber.encode_tlv(0xA3, ber.encode_tlv(0xA0, spec + ber.encode_tlv(0xA0, values)))


def test_information_reports_in_every_scope(server: MmsServer) -> None:
    got: list[InformationReport] = []
    assoc = MmsAssociation.connect(_config(server.port), on_information_report=got.append)
    try:
        wait_for(lambda: server.connections, 5, "the server to register the association")
        value = ber.encode_tlv(0x87, bytes.fromhex("0842280000"))  # float32 42.0
        name_vcc = ber.encode_tlv(0x80, b"DS_VCC")
        name_dom = ber.encode_tlv(0xA1, ber.encode_tlv(0x1A, b"ICC1") + ber.encode_tlv(0x1A, b"DS_Dom"))
        name_aa = ber.encode_tlv(0x82, b"DS_Assoc")
        for name in (name_vcc, name_dom, name_aa):
            server.broadcast(_report_pdu(ber.encode_tlv(0xA1, name), value))
        component = ber.encode_tlv(0xA5, ber.encode_tlv(0x81, b"Status"))  # alternateAccess selectAccess component
        var = ber.encode_tlv(0x30, ber.encode_tlv(0xA0, name_dom) + component)
        server.broadcast(_report_pdu(ber.encode_tlv(0xA0, var), ber.encode_tlv(0x83, b"\xff")))
        wait_for(lambda: len(got) == 4, 10, "four information reports")
        assert [r.list_name for r in got[:3]] == [ObjectName.vcc("DS_VCC"), ObjectName.in_domain("ICC1", "DS_Dom"),
                                                   ObjectName.association("DS_Assoc")]
        assert all(r.results == (FloatData(42.0),) for r in got[:3])
        assert got[3].list_name is None
        assert got[3].variables == (VariableSpec(ObjectName.in_domain("ICC1", "DS_Dom"), ("Status",)),)
        assert got[3].results == (BoolData(True),)
        assert assoc.identify().vendor == "dscada-test"  # reports interleave with confirmed traffic
    finally:
        assoc.close()


_AARE_ACCEPTED = bytes.fromhex("a203020100" "a305a103020100")  # result accepted, acse-service-user null
_AARE_REJECTED = bytes.fromhex("a203020101" "a305a103020103")  # rejected-permanent, calling-AP-title-not-recognized


class _RefusingPeer:
    """Accepts TCP and COTP, reads the AARQ, and answers with an AARE that refuses (as a TASE.2 server does for an
    AP title outside its bilateral tables). Built from open61850's own server-side PDU functions."""

    def __init__(self) -> None:
        from open61850.server import protocol

        self._protocol = protocol
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.calls = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            self.calls += 1
            try:
                iso = self._protocol.accept_cotp(raw)
                request = self._protocol.decode_association_request(iso.recv() or b"")
                accept, _ = self._protocol.association_accept(request, max_pdu_size=65000, max_outstanding=5,
                                                              nesting_level=10)
                assert accept.count(_AARE_ACCEPTED) == 1
                iso.send(accept.replace(_AARE_ACCEPTED, _AARE_REJECTED))
                iso.recv()  # until the client closes
            except OSError:
                pass
            finally:
                raw.close()

    def close(self) -> None:
        self._listener.close()


def test_refused_association_names_peer_and_diagnostic_then_backup_is_tried(server: MmsServer) -> None:
    refusing = _RefusingPeer()
    try:
        with pytest.raises(MmsAssociationRefused) as info:
            MmsAssociation.connect(_config(refusing.port))
        assert info.value.diagnostic == 3 and info.value.peer == f"127.0.0.1:{refusing.port}"
        assert f"MMS peer 127.0.0.1:{refusing.port} refused the association" in str(info.value)
        # A refusal by the primary does not stop the backup from being tried.
        assoc = MmsAssociation.connect(_config(refusing.port, server.port))
        try:
            assert assoc.endpoint.port == server.port and refusing.calls == 2
        finally:
            assoc.close()
    finally:
        refusing.close()


def test_connect_failure_names_every_endpoint() -> None:
    a, b = _dead_port(), _dead_port()
    with pytest.raises(MmsConnectFailed) as info:
        MmsAssociation.connect(_config(a, b, connect_timeout_s=1.0))
    assert [x.endpoint.port for x in info.value.attempts] == [a, b]
    assert f"127.0.0.1:{a}" in str(info.value) and f"127.0.0.1:{b}" in str(info.value)


def test_request_timeout_then_peer_loss(server: MmsServer) -> None:
    release = threading.Event()

    def slow_read(_conn: object, name: O61850Name) -> None:
        if name.item == "Tie_Line_Flow_MW_005":
            release.wait(5)
        return None

    server.read_hooks.append(slow_read)
    closes: list[CloseReason] = []
    assoc = MmsAssociation.connect(_config(server.port, request_timeout_s=0.5),
                                   on_closed=lambda reason, _err: closes.append(reason))
    try:
        slow = ObjectName.in_domain(DOMAIN, "Tie_Line_Flow_MW_005")
        t0 = time.monotonic()
        with pytest.raises(MmsRequestTimeout, match=rf"127\.0\.0\.1:{server.port}, read: no response within 0.5 s"):
            assoc.read([slow])
        assert time.monotonic() - t0 < 3
        release.set()
        # The late response is dropped; the association keeps working.
        wait_for(lambda: assoc.read([ObjectName.in_domain(DOMAIN, "Tie_Line_Flow_MW_001")]) == (FloatData(1.5),),
                 5, "a read after the late response")
        for conn in list(server.connections):
            conn.close()  # the peer drops TCP
        assert assoc.wait_closed(5) is CloseReason.LOST
        assert closes == [CloseReason.LOST]
        with pytest.raises(MmsConnectionLost):
            assoc.identify()
    finally:
        assoc.close()


def test_abort_closes_at_once(server: MmsServer) -> None:
    assoc = MmsAssociation.connect(_config(server.port))
    assoc.abort()
    assert assoc.close_reason is CloseReason.ABORTED
    wait_for(lambda: not server.connections, 5, "the server to drop the aborted association")


def _openssl() -> str | None:
    return shutil.which("openssl")


class _TlsTerminator:
    """A TLS front for a plain MMS server: what a TLS-capable TASE.2 peer looks like on the wire."""

    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._context, self._target = context, target_port
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            raw, _ = self._listener.accept()
        except OSError:
            return
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        plain = socket.create_connection(("127.0.0.1", self._target))
        self._socks += [tls, plain]
        threading.Thread(target=self._pump, args=(tls, plain), daemon=True).start()
        threading.Thread(target=self._pump, args=(plain, tls), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()
        for s in self._socks:
            s.close()


@pytest.mark.skipif(_openssl() is None, reason="openssl CLI not installed")
def test_tls_association(server: MmsServer, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([_openssl(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    front = _TlsTerminator(server_ctx, server.port)
    try:
        assoc = MmsAssociation.connect(_config(front.port, ssl_context=client_ctx))
        try:
            assert assoc.read_one(ObjectName.in_domain(DOMAIN, "Tie_Line_Flow_MW_003")) == FloatData(3.5)
            assert assoc.release().concluded
        finally:
            assoc.close()
    finally:
        front.close()


# --- libiec61850 (pyiec61850-ng) IedServer in a subprocess ----------------------------------------------------------

_IEC_SERVER = r'''
import sys, time
import pyiec61850.pyiec61850 as iec

port = int(sys.argv[1])
model = iec.IedModel_create("TEST")
ld = iec.LogicalDevice_create("LD0", model)
lln0 = iec.LogicalNode_create("LLN0", ld)
iec.CDC_ENS_create("Mod", iec.toModelNode(lln0), 0)
iec.CDC_ENS_create("Beh", iec.toModelNode(lln0), 0)
mmxu = iec.LogicalNode_create("MMXU1", ld)
totw = iec.CDC_MV_create("TotW", iec.toModelNode(mmxu), 0, False)
hz = iec.CDC_MV_create("Hz", iec.toModelNode(mmxu), 0, False)
ds = iec.DataSet_create("Flows", lln0)
iec.DataSetEntry_create(ds, "MMXU1$MX$TotW$mag$f", -1, None)
iec.DataSetEntry_create(ds, "MMXU1$MX$Hz$mag$f", -1, None)
iec.ReportControlBlock_create("urcb01", lln0, "rpt1", False, "Flows", 1, iec.TRG_OPT_DATA_CHANGED, 0xFF, 0, 0)
server = iec.IedServer_create(model)
iec.IedServer_start(server, port)
if not iec.IedServer_isRunning(server):
    print("FAILED", flush=True)
    sys.exit(1)
totw_f = iec.toDataAttribute(iec.IedModel_getModelNodeByObjectReference(model, "TESTLD0/MMXU1.TotW.mag.f"))
print("READY", flush=True)
value = 100.0
while sys.stdin.readline():  # one line = one value change (reports on data change)
    value += 1.0
    iec.IedServer_lockDataModel(server)
    iec.IedServer_updateFloatAttributeValue(server, totw_f, value)
    iec.IedServer_unlockDataModel(server)
    print("CHANGED", value, flush=True)
iec.IedServer_stop(server)
os_exit = getattr(__import__("os"), "_exit")
os_exit(0)  # skip libiec61850 teardown (segfault hazard)
'''


def _pyiec61850_available() -> bool:
    try:
        import pyiec61850.pyiec61850  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def iec_server() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _IEC_SERVER, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "READY":
            proc.kill()
            pytest.fail(f"libiec61850 server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        yield port, proc
    finally:
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.skipif(not _pyiec61850_available(), reason="pyiec61850-ng not installed")
def test_libiec61850_names_reads_data_sets_reports_release(iec_server: tuple[int, subprocess.Popen[str]]) -> None:
    port, proc = iec_server
    reports: list[InformationReport] = []
    assoc = MmsAssociation.connect(_config(port), on_information_report=reports.append)
    try:
        assert assoc.get_name_list(ObjectClass.DOMAIN) == ("TESTLD0",)
        names = assoc.get_name_list(ObjectClass.NAMED_VARIABLE, NameScope.DOMAIN, "TESTLD0")
        assert "MMXU1$MX$TotW$mag$f" in names and "LLN0$RP$urcb01$RptEna" in names
        assert assoc.get_name_list(ObjectClass.NAMED_VARIABLE_LIST, NameScope.DOMAIN, "TESTLD0") == ("LLN0$Flows",)
        totw = ObjectName.in_domain("TESTLD0", "MMXU1$MX$TotW$mag$f")
        assert assoc.read_one(totw) == FloatData(0.0)
        members = assoc.get_named_variable_list_attributes(ObjectName.in_domain("TESTLD0", "LLN0$Flows"))
        assert [v.name.item for v in members.variables] == ["MMXU1$MX$TotW$mag$f", "MMXU1$MX$Hz$mag$f"]
        assert not members.deletable

        # Data sets defined by the client in domain and association scope, then deleted.
        dom_ds = ObjectName.in_domain("TESTLD0", "LLN0$TASE2DS")
        aa_ds = ObjectName.association("TASE2AA")
        hz = ObjectName.in_domain("TESTLD0", "MMXU1$MX$Hz$mag$f")
        for ds in (dom_ds, aa_ds):
            assoc.define_named_variable_list(ds, [totw, hz])
            got = assoc.get_named_variable_list_attributes(ds)
            assert [v.name for v in got.variables] == [totw, hz] and got.deletable
            assert assoc.read_list(ds) == (FloatData(0.0), FloatData(0.0))
        assert "TASE2AA" in assoc.get_name_list(ObjectClass.NAMED_VARIABLE_LIST, NameScope.ASSOCIATION)
        for ds in (dom_ds, aa_ds):
            assert assoc.delete_named_variable_list(ds)
        with pytest.raises(MmsServiceFailed, match="get named variable list attributes of @TASE2AA"):
            assoc.get_named_variable_list_attributes(aa_ds)
        # A data set naming an unknown variable is refused.
        with pytest.raises((MmsServiceFailed, MmsRequestRejected), match="define named variable list"):
            assoc.define_named_variable_list(ObjectName.in_domain("TESTLD0", "LLN0$Bad"),
                                             [ObjectName.in_domain("TESTLD0", "MMXU1$MX$Nope")])
        # Writing a measured value is refused as a value, not an exception.
        (failure,) = assoc.write([totw], [FloatData(1.0)])
        assert isinstance(failure, DataAccessCode)
        assert failure in (DataAccessCode.OBJECT_ACCESS_DENIED, DataAccessCode.TYPE_INCONSISTENT,
                                DataAccessCode.OBJECT_ACCESS_UNSUPPORTED)

        # Enable the unbuffered report on data change, then change the value in the server.
        enable = ObjectName.in_domain("TESTLD0", "LLN0$RP$urcb01$RptEna")
        assert assoc.write([enable], [BoolData(True)]) == (None,)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("CHANGED")
        wait_for(lambda: reports, 10, "an information report from libiec61850")
        report = reports[0]
        assert report.list_name == ObjectName.vcc("RPT")
        assert VisibleStringData("rpt1") == report.results[0]
        assert FloatData(101.0) in report.results

        result = assoc.release()
    finally:
        assoc.close()
    assert result.concluded and result.session_disconnected  # libiec61850 answers FINISH with DISCONNECT
    assert assoc.close_reason is CloseReason.RELEASED


_STACK = ("tpkt", "cotp", "ses", "pres", "acse", "mms")
# ConfirmedServiceRequest choice numbers as Wireshark prints them
_GET_NAME_LIST, _IDENTIFY, _READ, _DEFINE_NVL, _GET_NVL_ATTRIBUTES, _DELETE_NVL = 1, 2, 4, 11, 12, 13


@pytest.mark.skipif(not _pyiec61850_available(), reason="pyiec61850-ng not installed")
@pytest.mark.timeout(90)
def test_wire_decodes_cleanly(iec_server: tuple[int, subprocess.Popen[str]], tmp_path: Path) -> None:
    """Everything the client sends, captured and decoded by Wireshark: AP titles in the AARQ, component access,
    data sets in domain and association scope, Conclude and the session FINISH / DISCONNECT release."""
    port, _proc = iec_server
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.MMS}, name="mms_client"))
    try:
        assoc = MmsAssociation.connect(_config(port))
        try:
            assoc.identify()
            assoc.get_name_list(ObjectClass.NAMED_VARIABLE_LIST, NameScope.ASSOCIATION)
            totw = ObjectName.in_domain("TESTLD0", "MMXU1$MX$TotW")
            assoc.read([VariableSpec(totw, ("mag", "f")), VariableSpec(totw, ("q",))])  # the answer is the server's
            for ds in (ObjectName.in_domain("TESTLD0", "LLN0$WireDS"), ObjectName.association("WireAA")):
                assoc.define_named_variable_list(ds, [ObjectName.in_domain("TESTLD0", "MMXU1$MX$Hz$mag$f")])
                assoc.get_named_variable_list_attributes(ds)
                assert assoc.delete_named_variable_list(ds)
            assert assoc.release().session_disconnected
        finally:
            assoc.close()
    finally:
        capture.stop()
    d = capture.decode()
    assert not d.problems, d.report()
    assert not d.warnings_in(*_STACK), d.warnings_in(*_STACK)
    requests: list[int] = []
    kinds: set[str] = set()
    for _frame, layer in d.layers("mms"):
        for key in layer:
            if key.endswith("PDU_element"):
                kinds.add(key.removeprefix("mms.").removesuffix("_element"))
                requests += [int(v) for v in values_in(layer[key], "mms.confirmedServiceRequest")]
    assert {_GET_NAME_LIST, _IDENTIFY, _READ, _DEFINE_NVL, _GET_NVL_ATTRIBUTES, _DELETE_NVL} <= set(requests), requests
    assert {"initiate_RequestPDU", "initiate_ResponsePDU", "conclude_RequestPDU", "conclude_ResponsePDU"} <= kinds
    # AARQ field order: called AP title [2], called AE qualifier [3], then calling [6], [7]
    assert d.values("acse.ap_title_form2") == ["1.3.9999.2", "1.3.9999.1"]
    assert d.values("acse.aso_qualifier_form2") == ["8", "7"]
    assert "WireAA" in d.values("mms.aa_specific")
    assert d.values("mms.component") == ["mag", "f", "q"], d.values("mms.component")
    session_types = [int(v, 0) for v in d.values("ses.type")]
    assert 9 in session_types and 10 in session_types, session_types  # FINISH, then DISCONNECT


# --- our own server (iccp.mms.server) -----------------------------------------------------------------------------

_GOOD_TITLE = (1, 3, 9999, 1)
_TS = ObjectName.in_domain("ICC1", "DSTransferSet01")
_FLOW = ObjectName.in_domain("ICC1", "Flow")


class _Tase2ShapedHandler:
    """A tiny MmsHandler: one point, one transfer-set-like structure, data sets in any scope, AP-title check."""

    def __init__(self) -> None:
        self.lists: dict[ObjectName, tuple[VariableSpec, ...]] = {}
        self.reads: list[tuple[VariableSpec, ...]] = []
        self.ended: list[str] = []

    def associate(self, info: AssociationInfo) -> AssociationInfo:
        if info.calling_ap_title != _GOOD_TITLE:
            raise AssociationRefused(3)  # calling-AP-title-not-recognized
        return info

    def read(self, ctx: object, variables: Sequence[VariableSpec]) -> list[object]:
        self.reads.append(tuple(variables))
        out: list[object] = []
        for v in variables:
            if v.name == _FLOW:
                out.append(FloatData(12.5))
            elif v.name == _TS:
                whole = StructureData([IntData(10), BoolData(True)])
                out.append(BoolData(True) if v.component == ("Status",) else whole)
            else:
                out.append(DataAccessCode.OBJECT_NON_EXISTENT)
        return out

    def read_list(self, ctx: object, name: ObjectName) -> list[object]:
        if name not in self.lists:
            raise MmsServiceError(2, 1)
        return [FloatData(12.5)] * len(self.lists[name])

    def write(self, ctx: object, variables: Sequence[VariableSpec], values: Sequence[object]) -> list[object]:
        return [None if v.name == _TS else DataAccessCode.OBJECT_ACCESS_DENIED for v in variables]

    def get_name_list(self, ctx: object, request: NameListRequest) -> list[str]:
        if request.object_class == ObjectClass.DOMAIN:
            return ["ICC1"]
        if request.object_class == ObjectClass.NAMED_VARIABLE_LIST:
            return [n.item for n in self.lists if n.scope is request.scope]
        return [f"Point_{i:04d}" for i in range(500)] + ["Flow", "DSTransferSet01"]

    def get_variable_access_attributes(self, ctx: object, name: ObjectName) -> VariableAttributes:
        return VariableAttributes(StructureType([("Interval", _INT), ("Status", _BOOL)]))

    def define_named_variable_list(self, ctx: object, name: ObjectName, variables: Sequence[VariableSpec]) -> None:
        self.lists[name] = tuple(variables)

    def delete_named_variable_list(self, ctx: object, request: DeleteListRequest) -> DeleteResult:
        deleted = sum(1 for n in request.names if self.lists.pop(n, None) is not None)
        return DeleteResult(len(request.names), deleted)

    def get_named_variable_list_attributes(self, ctx: object, name: ObjectName) -> ListAttributes:
        if name not in self.lists:
            raise MmsServiceError(2, 1)
        return ListAttributes(self.lists[name], True)

    def identify(self, ctx: object) -> Identity:
        return Identity("dscada", "iccp", "0")

    def released(self, ctx: object) -> None:
        self.ended.append("released")

    def aborted(self, ctx: object, reason: object) -> None:
        self.ended.append("aborted")


def test_our_server_every_service_refusal_reports_release_abort() -> None:
    handler = _Tase2ShapedHandler()
    srv = IccpMmsServer(handler, MmsServerConfig(port=0, max_pdu_size_bytes=1024))
    srv.start()
    try:
        with pytest.raises(MmsAssociationRefused) as info:
            MmsAssociation.connect(_config(srv.port, calling=AeTitle((1, 3, 9999, 9), 1)))
        assert info.value.diagnostic == 3

        reports: list[InformationReport] = []
        assoc = MmsAssociation.connect(_config(srv.port, calling=AeTitle(_GOOD_TITLE, 1), max_pdu_size=1024),
                                       on_information_report=reports.append)
        try:
            assert assoc.identify() == Identity("dscada", "iccp", "0")
            names = assoc.get_name_list(ObjectClass.NAMED_VARIABLE, NameScope.DOMAIN, "ICC1")
            assert len(names) == 502 and names == tuple(sorted(names))  # paged by the 1024-byte PDU
            results = assoc.read([_FLOW, VariableSpec(_TS, ("Status",)), _TS, ObjectName.vcc("X")])
            assert results == (FloatData(12.5), BoolData(True), StructureData([IntData(10), BoolData(True)]),
                               DataAccessCode.OBJECT_NON_EXISTENT)
            assert handler.reads[-1][1] == VariableSpec(_TS, ("Status",))  # component access reached the handler
            assert assoc.write([_TS, _FLOW], [StructureData([IntData(5), BoolData(True)]), FloatData(1.0)]) == (
                None, DataAccessCode.OBJECT_ACCESS_DENIED)
            assert isinstance(assoc.get_variable_access_attributes(_TS), StructureType)
            scoped = (ObjectName.in_domain("ICC1", "DS1"), ObjectName.association("DS2"), ObjectName.vcc("DS3"))
            for ds in scoped:
                assoc.define_named_variable_list(ds, [_FLOW, VariableSpec(_TS, ("Status",))])
                assert assoc.get_named_variable_list_attributes(ds).variables == (
                    VariableSpec(_FLOW), VariableSpec(_TS, ("Status",)))
                assert assoc.read_list(ds) == (FloatData(12.5), FloatData(12.5))
            assert assoc.get_name_list(ObjectClass.NAMED_VARIABLE_LIST, NameScope.ASSOCIATION) == ("DS2",)
            assert assoc.delete_named_variable_lists([scoped[1], ObjectName.vcc("Nope")]) == DeleteResult(2, 1)
            with pytest.raises(MmsServiceFailed, match="get named variable list attributes of @DS2"):
                assoc.get_named_variable_list_attributes(scoped[1])

            (handle,) = srv.associations()
            for access in (*scoped, [VariableSpec(_TS, ("Status",))]):
                handle.send_information_report(access, [FloatData(1.0)])
            wait_for(lambda: len(reports) == 4, 10, "four information reports from our server")
            assert [r.list_name for r in reports] == [*scoped, None]
            assert reports[3].variables == (VariableSpec(_TS, ("Status",)),)
            assert assoc.release() == ReleaseResult(concluded=True, session_disconnected=True)
        finally:
            assoc.close()
        wait_for(lambda: handler.ended == ["released"], 5, "the server to see an orderly release")
        other = MmsAssociation.connect(_config(srv.port, calling=AeTitle(_GOOD_TITLE, 1)))
        other.abort()
        wait_for(lambda: handler.ended == ["released", "aborted"], 5, "the server to see the abort")
    finally:
        srv.stop()
