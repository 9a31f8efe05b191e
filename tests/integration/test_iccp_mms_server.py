"""The MMS server core (iccp.mms.server) against independent clients over 127.0.0.1.

A tiny example handler (a few named variables in domain ICC1, TASE2_Version in VCC scope, named variable lists
in the three scopes) is read by (a) open61850's MmsClient, (b) libiec61850's MmsConnection (pyiec61850-ng, in a
subprocess: LIBRARY_FACTS GIL/teardown hazards) and (c) raw PDUs for release, abort, association-scope reports,
malformed input and TLS. A wire oracle checks that Wireshark decodes every frame as MMS without malformed packets.

Run as a script (``python test_iccp_mms_server.py PORT``) it is the libiec61850 client of test (b).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from open61850.data import FloatData, IntData, StructureData
from open61850.mms import (
    OBJECT_CLASS_DOMAIN,
    OBJECT_CLASS_NAMED_VARIABLE,
    AssociationError,
    AssociationParameters,
    MmsClient,
)
from open61850.mms import ObjectName as LibName
from open61850.mms.association import association_request, decode_association_response
from open61850.mms.pdu import InformationReport
from open61850.mms.transport import IsoConnection, connection_request, recv_tpkt, send_tpkt
from open61850.mms.types import PrimitiveType, StructureType
from support import wait_for
from wire_capture import WireCapture, WireProtocol, start_or_skip

from iccp.errors import AssociationRefused, MmsConnectionError, MmsServiceError
from iccp.mms import (
    AssociationInfo,
    DataAccessCode,
    DeleteListRequest,
    DeleteResult,
    DeleteScope,
    EndReason,
    ErrorClass,
    Identity,
    ListAttributes,
    MmsServer,
    MmsServerConfig,
    NameListRequest,
    NameScope,
    ObjectClass,
    ObjectName,
    RefusalDiagnostic,
    VariableAccess,
    VariableAttributes,
    VariableSpec,
    codec,
)

REPO = Path(__file__).resolve().parents[2]

LIB_CALLING_AP_TITLE = "1.3.9999.7"
LIB_CALLING_AE_QUALIFIER = 33


def _libiec61850_client(port: int, calling_ap_title: str = LIB_CALLING_AP_TITLE) -> dict[str, Any]:
    """Association, name lists, reads (whole and component), define/delete a list, conclude: libiec61850's raw API."""
    import pyiec61850.pyiec61850 as lib

    def strings(linked: Any) -> list[str]:
        out: list[str] = []
        element = lib.LinkedList_getNext(linked) if linked else None
        while element:
            data = lib.LinkedList_getData(element)
            if data:
                out.append(lib.toCharP(data))
            element = lib.LinkedList_getNext(element)
        if linked:
            lib.LinkedList_destroy(linked)  # frees the strings too
        return out

    con = lib.MmsConnection_create()
    lib.MmsConnection_setRequestTimeout(con, 5000)
    params = lib.MmsConnection_getIsoConnectionParameters(con)
    lib.IsoConnectionParameters_setLocalApTitle(params, calling_ap_title, LIB_CALLING_AE_QUALIFIER)
    lib.IsoConnectionParameters_setRemoteApTitle(params, "1.3.9999.1", 12)
    err = lib.MmsError_create()
    out: dict[str, Any] = {"connect": bool(lib.MmsConnection_connect(con, err, "127.0.0.1", port)),
                           "connect_error": lib.MmsError_getValue(err)}
    if not out["connect"]:
        return out
    out["domains"] = strings(lib.MmsConnection_getDomainNames(con, err))
    out["variables"] = strings(lib.MmsConnection_getDomainVariableNames(con, err, "ICC1"))
    value = lib.MmsConnection_readVariable(con, err, "ICC1", "FREQ")
    out["freq"] = [lib.MmsValue_toFloat(value) if value else None, lib.MmsError_getValue(err)]
    value = lib.MmsConnection_readVariableComponent(con, err, "ICC1", "TS", "Status")
    out["status"] = [lib.MmsValue_toInt32(value) if value else None, lib.MmsError_getValue(err)]
    specs = lib.LinkedList_create()
    lib.LinkedList_add(specs, lib.MmsVariableAccessSpecification_create("ICC1", "FREQ"))
    lib.LinkedList_add(specs, lib.MmsVariableAccessSpecification_create("ICC1", "TS"))
    lib.MmsConnection_defineNamedVariableList(con, err, "ICC1", "DS_LIB", specs)
    out["define_error"] = lib.MmsError_getValue(err)
    out["lists_after_define"] = strings(lib.MmsConnection_getDomainVariableListNames(con, err, "ICC1"))
    values = lib.MmsConnection_readNamedVariableListValues(con, err, "ICC1", "DS_LIB", False)
    out["list_values"] = [lib.MmsValue_getArraySize(values) if values else None, lib.MmsError_getValue(err)]
    lib.MmsConnection_deleteNamedVariableList(con, err, "ICC1", "DS_LIB")
    out["delete_error"] = lib.MmsError_getValue(err)
    out["lists_after_delete"] = strings(lib.MmsConnection_getDomainVariableListNames(con, err, "ICC1"))
    lib.MmsConnection_conclude(con, err)
    out["conclude_error"] = lib.MmsError_getValue(err)
    return out


ALLOWED_CALLING = {(1, 1, 1, 999), (1, 3, 9999, 7)}  # open61850's default calling title, the libiec61850 one
FLOAT32 = PrimitiveType("float", 32)
INT32 = PrimitiveType("integer", 32)
TS_TYPE = StructureType([("Status", INT32), ("Interval", INT32)])


class ExampleHandler:
    """Domain ICC1: FREQ (read-only float), TS {Status, Interval} (writable), P000..P119; VCC: TASE2_Version."""

    def __init__(self) -> None:
        self.domain: dict[str, Any] = {"FREQ": FloatData(50.02), "TS": StructureData([IntData(1), IntData(30)])}
        self.domain.update({f"P{i:03d}": FloatData(float(i)) for i in range(120)})
        self.vcc: dict[str, Any] = {"TASE2_Version": StructureData([IntData(2000), IntData(8)])}
        self.lists: dict[ObjectName, tuple[VariableSpec, ...]] = {}  # VCC and domain scope
        self.events: list[tuple[Any, ...]] = []
        self.contexts: list[dict[str, Any]] = []
        self.read_specs: list[VariableSpec] = []
        self._lock = threading.Lock()

    def _event(self, *event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def associate(self, info: AssociationInfo) -> dict[str, Any]:
        self._event("associate", info.calling_ap_title, info.calling_ae_qualifier, info.called_ap_title,
                    info.called_ae_qualifier, info.tls)
        if info.calling_ap_title not in ALLOWED_CALLING:
            raise AssociationRefused(RefusalDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED,
                                     f"calling AP title {info.calling_ap_title} has no bilateral table")
        ctx = {"info": info, "lists": {}}
        self.contexts.append(ctx)
        return ctx

    def _value(self, spec: VariableSpec) -> Any:
        store = self.vcc if spec.name.scope is NameScope.VCC else self.domain
        value = store.get(spec.name.item) if spec.name.scope is not NameScope.DOMAIN or spec.name.domain == "ICC1" \
            else None
        if value is None:
            return DataAccessCode.OBJECT_NON_EXISTENT
        for part in spec.component:
            if spec.name.item != "TS" or part not in ("Status", "Interval"):
                return DataAccessCode.OBJECT_NON_EXISTENT
            value = value.members[0 if part == "Status" else 1]
        return value

    def read(self, ctx: Any, variables: Sequence[VariableSpec]) -> list[Any]:
        if any(v.name.item == "BOOM" for v in variables):
            raise RuntimeError("handler bug")
        self.read_specs.extend(variables)
        return [self._value(v) for v in variables]

    def _list(self, ctx: Any, name: ObjectName) -> tuple[VariableSpec, ...]:
        lists = ctx["lists"] if name.scope is NameScope.ASSOCIATION else self.lists
        if name not in lists:
            raise MmsServiceError(ErrorClass.ACCESS, 2, f"no named variable list {name}")
        return lists[name]

    def read_list(self, ctx: Any, list_name: ObjectName) -> list[Any]:
        return self.read(ctx, self._list(ctx, list_name))

    def write(self, ctx: Any, variables: Sequence[VariableSpec], values: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for spec, value in zip(variables, values, strict=True):
            if spec.name.item == "TS" and spec.component == ("Interval",) and isinstance(value, IntData):
                self.domain["TS"].members[1] = value
                out.append(None)
            else:
                out.append(DataAccessCode.OBJECT_ACCESS_DENIED)
        return out

    def get_name_list(self, ctx: Any, request: NameListRequest) -> list[str]:
        if request.object_class is ObjectClass.DOMAIN:
            return ["ICC1"]
        if request.object_class is ObjectClass.NAMED_VARIABLE:
            if request.scope is NameScope.VCC:
                return list(self.vcc)
            return list(self.domain) if request.domain == "ICC1" else []
        if request.object_class is ObjectClass.NAMED_VARIABLE_LIST:
            if request.scope is NameScope.ASSOCIATION:
                return [n.item for n in ctx["lists"]]
            return [n.item for n in self.lists if n.domain == request.domain and n.scope is request.scope]
        raise MmsServiceError(ErrorClass.ACCESS, 1, f"object class {request.object_class.name} not served")

    def get_variable_access_attributes(self, ctx: Any, name: ObjectName) -> VariableAttributes:
        if name.item == "TS":
            return VariableAttributes(TS_TYPE)
        if name.item == "TASE2_Version":
            return VariableAttributes(StructureType([("Major", INT32), ("Minor", INT32)]))
        if name.item in self.domain:
            return VariableAttributes(FLOAT32)
        raise MmsServiceError(ErrorClass.DEFINITION, 1, f"no variable {name}")

    def define_named_variable_list(self, ctx: Any, name: ObjectName, variables: Sequence[VariableSpec]) -> None:
        lists = ctx["lists"] if name.scope is NameScope.ASSOCIATION else self.lists
        if name in lists:
            raise MmsServiceError(ErrorClass.DEFINITION, 5, f"{name} exists")  # object-exists
        lists[name] = tuple(variables)

    def delete_named_variable_list(self, ctx: Any, request: DeleteListRequest) -> DeleteResult:
        matched = deleted = 0
        for name in request.names:
            lists = ctx["lists"] if name.scope is NameScope.ASSOCIATION else self.lists
            if name in lists:
                matched += 1
                deleted += 1
                del lists[name]
        return DeleteResult(matched, deleted)

    def get_named_variable_list_attributes(self, ctx: Any, name: ObjectName) -> ListAttributes:
        return ListAttributes(self._list(ctx, name), deletable=True)

    def identify(self, ctx: Any) -> Identity:
        return Identity("dscada", "iccp-mms-test", "1")

    def released(self, ctx: Any) -> None:
        self._event("released", ctx["info"].association_id)

    def aborted(self, ctx: Any, reason: EndReason) -> None:
        self._event("aborted", ctx["info"].association_id, reason)

    def ends(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e for e in self.events if e[0] in ("released", "aborted")]


@pytest.fixture()
def handler() -> ExampleHandler:
    return ExampleHandler()


@pytest.fixture()
def server(handler: ExampleHandler) -> Iterator[MmsServer]:
    with MmsServer(handler, MmsServerConfig(port=0, local_ap_title=(1, 3, 9999, 1), local_ae_qualifier=12,
                                            name_list_page_bytes=200, release_timeout_s=3.0)) as srv:
        yield srv


# ------------------------------------------------------------------------------------------------ raw peer


class RawPeer:
    """A minimal MMS caller built from open61850's transport and association encoders plus our codec."""

    def __init__(self, port: int, params: AssociationParameters | None = None, *,
                 tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        send_tpkt(sock, connection_request())
        cc = recv_tpkt(sock)
        assert cc is not None and cc[1] & 0xF0 == 0xD0, cc
        self.iso = IsoConnection(sock)
        self.iso.send(association_request(params or AssociationParameters()))
        answer = self.iso.recv()
        assert answer is not None
        self.association = decode_association_response(answer)
        self.invoke = 0

    def send_mms(self, pdu: bytes) -> None:
        self.iso.send(codec.encode_data_spdu(pdu, 3))

    def recv_mms(self) -> bytes:
        tsdu = self.iso.recv()
        assert tsdu is not None, "connection closed"
        spdu = codec.decode_session(tsdu)
        assert spdu.spdu == codec.SpduType.DATA, spdu
        return codec.decode_presentation_data(spdu.user_data)[1]

    def request(self, service: bytes) -> bytes:
        self.invoke += 1
        self.send_mms(codec.encode_confirmed_request(self.invoke, service))
        return self.recv_mms()

    def release(self) -> codec.SessionPdu:
        self.send_mms(codec.encode_conclude_request())
        assert self.recv_mms() == codec.encode_conclude_response()
        self.iso.send(codec.encode_release_request(1))
        tsdu = self.iso.recv()
        assert tsdu is not None
        self.close()
        return codec.decode_session(tsdu)

    def close(self) -> None:
        self.iso.close()


# ------------------------------------------------------------------------------------------------ (a) open61850


def test_open61850_client_name_lists_reads_types_and_reports(server: MmsServer, handler: ExampleHandler) -> None:
    reports: list[InformationReport] = []
    with MmsClient.connect("127.0.0.1", server.port, timeout=10, on_information_report=reports.append) as client:
        assert client.get_name_list(OBJECT_CLASS_DOMAIN) == ["ICC1"]
        names = client.get_name_list(OBJECT_CLASS_NAMED_VARIABLE, "ICC1")  # 122 names in pages of 200 bytes
        assert names == sorted(handler.domain) and len(names) == 122
        assert client.get_name_list(OBJECT_CLASS_NAMED_VARIABLE) == ["TASE2_Version"]
        results = client.read_many([LibName("FREQ", "ICC1"), LibName("NOPE", "ICC1"), LibName("TASE2_Version")])
        assert results[0] == FloatData(50.02) and results[1].code == 10
        assert results[2] == StructureData([IntData(2000), IntData(8)])
        assert client.get_type(LibName("TS", "ICC1")) == TS_TYPE
        assert client.association is not None and client.association.supports(11)  # defineNamedVariableList

        # data sets through the client's raw request: define (domain scope), attributes, read by list name
        ds = ObjectName.in_domain("ICC1", "DS1")
        members = (VariableSpec(ObjectName.in_domain("ICC1", "FREQ")),
                   VariableSpec(ObjectName.in_domain("ICC1", "TS"), ("Status",)))
        client.request(codec.encode_define_list_request(ds, members))
        assert client.get_data_set_members(LibName("DS1", "ICC1")) == [LibName("FREQ", "ICC1"), LibName("TS", "ICC1")]
        read = client.request(codec.encode_read_request(VariableAccess(list_name=ds)))
        assert read.content == codec.encode_read_response([FloatData(50.02), IntData(1)])[2:]
        assert handler.read_specs[-1] == members[1]  # the component reached the handler

        # reports: domain-scope list, VCC-scope list, list of variables; sent from another thread
        handle = server.associations()[0]
        sender = threading.Thread(target=lambda: (
            handle.send_information_report(ds, [FloatData(49.9), IntData(2)]),
            handle.send_information_report(ObjectName.vcc("DS_VCC"), [IntData(7)]),
            handle.send_information_report([ObjectName.in_domain("ICC1", "FREQ")], [FloatData(49.8)])))
        sender.start()
        sender.join(10)
        wait_for(lambda: len(reports) == 3, 10, "three information reports")
        assert reports[0].list_name == LibName("DS1", "ICC1") and reports[0].results == [FloatData(49.9), IntData(2)]
        assert reports[1].list_name == LibName("DS_VCC") and reports[1].results == [IntData(7)]
        assert reports[2].list_name is None and reports[2].variables == [LibName("FREQ", "ICC1")]
    associate = handler.events[0]
    assert associate[1:5] == ((1, 1, 1, 999), 12, (1, 1, 1, 999, 1), 12)
    # open61850's client closes TCP without a release: that is an abort as far as the server is concerned
    wait_for(lambda: handler.ends(), 10, "the end of the association")
    assert handler.ends()[0][2] is EndReason.CONNECTION_LOST


def test_unknown_calling_ap_title_is_refused_with_an_aare_rejection(server: MmsServer,
                                                                     handler: ExampleHandler) -> None:
    params = AssociationParameters(calling_ap_title=(1, 9, 9, 9), calling_ae_qualifier=5)
    with pytest.raises(AssociationError, match=r"rejected \(permanent\), diagnostic 3"):
        MmsClient.connect("127.0.0.1", server.port, timeout=10, association=params)
    assert handler.events[0][1:3] == ((1, 9, 9, 9), 5)
    # the server goes on serving, and a refused association never reaches released/aborted
    with MmsClient.connect("127.0.0.1", server.port, timeout=10) as client:
        assert client.get_name_list(OBJECT_CLASS_DOMAIN) == ["ICC1"]
    assert all(e[1] != 1 for e in handler.ends())


# ------------------------------------------------------------------------------------------------ (b) libiec61850


def _run_libiec61850_client(port: int, calling_ap_title: str = LIB_CALLING_AP_TITLE) -> dict[str, Any]:
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, __file__, str(port), calling_ap_title], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_libiec61850_client_association_lists_reads_data_set_and_release(server: MmsServer,
                                                                         handler: ExampleHandler) -> None:
    out = _run_libiec61850_client(server.port)
    assert out["connect"] and out["connect_error"] == 0, out
    assert out["domains"] == ["ICC1"] and out["variables"] == sorted(handler.domain)
    assert out["freq"][1] == 0 and abs(out["freq"][0] - 50.02) < 1e-5
    assert out["status"] == [1, 0]  # component access: TS.Status
    assert out["define_error"] == 0 and out["lists_after_define"] == ["DS_LIB"]
    assert out["list_values"] == [2, 0]
    assert out["delete_error"] == 0 and out["lists_after_delete"] == []
    assert out["conclude_error"] == 0
    assert handler.events[0][1:3] == ((1, 3, 9999, 7), 33)
    wait_for(lambda: handler.ends(), 10, "the release")
    assert handler.ends() == [("released", handler.contexts[0]["info"].association_id)]
    refused = _run_libiec61850_client(server.port, "1.9.9.9")  # no bilateral table: AARE rejection
    assert refused == {"connect": False, "connect_error": 1}
    assert handler.events[-1][1] == (1, 9, 9, 9) and len(handler.ends()) == 1


# ------------------------------------------------------------------------------------------------ (c) raw peer


def test_release_is_conclude_then_finish_disconnect(server: MmsServer, handler: ExampleHandler) -> None:
    peer = RawPeer(server.port)
    answer = peer.release()
    assert answer.spdu == codec.SpduType.DISCONNECT
    _, rlre = codec.decode_presentation_data(answer.user_data)
    assert rlre == bytes.fromhex("63 03 80 01 00")  # RLRE, reason normal
    wait_for(lambda: handler.ends(), 10, "the release")
    assert handler.ends()[0][0] == "released"
    # a peer that concludes and then closes the transport without FINISH is released too
    peer = RawPeer(server.port)
    peer.send_mms(codec.encode_conclude_request())
    assert peer.recv_mms() == codec.encode_conclude_response()
    peer.close()
    wait_for(lambda: len(handler.ends()) == 2, 10, "the second release")
    assert handler.ends()[1][0] == "released"


def test_association_scope_lists_reports_and_write(server: MmsServer, handler: ExampleHandler) -> None:
    peer = RawPeer(server.port)
    try:
        aa = ObjectName.association("DS_AA")
        define = peer.request(codec.encode_define_list_request(aa, (VariableSpec(ObjectName.in_domain("ICC1",
                                                                                                       "FREQ")),)))
        assert define == codec.encode_confirmed_response(1, codec.encode_define_list_response())
        again = peer.request(codec.encode_define_list_request(aa, (VariableSpec(ObjectName.vcc("TASE2_Version")),)))
        assert again == codec.encode_confirmed_error(2, ErrorClass.DEFINITION, 5)
        names = peer.request(codec.encode_name_list_request(ObjectClass.NAMED_VARIABLE_LIST, NameScope.ASSOCIATION))
        assert names == codec.encode_confirmed_response(3, codec.encode_name_list_response(["DS_AA"], False))
        attrs = peer.request(codec.encode_list_attributes_request(aa))
        assert attrs == codec.encode_confirmed_response(4, codec.encode_list_attributes_response(
            (VariableSpec(ObjectName.in_domain("ICC1", "FREQ")),), deletable=True))
        server.associations()[0].send_information_report(aa, [FloatData(50.1)])
        assert peer.recv_mms() == codec.encode_information_report(VariableAccess(list_name=aa), [FloatData(50.1)])
        interval = VariableSpec(ObjectName.in_domain("ICC1", "TS"), ("Interval",))
        freq = VariableSpec(ObjectName.in_domain("ICC1", "FREQ"))
        write = peer.request(codec.encode_write_request(VariableAccess(variables=(interval, freq)),
                                                        [IntData(60), FloatData(1.0)]))
        assert write == codec.encode_confirmed_response(5, codec.encode_write_response(
            [None, DataAccessCode.OBJECT_ACCESS_DENIED]))
        assert handler.domain["TS"].members[1] == IntData(60)
        deleted = peer.request(codec.encode_delete_list_request([aa], DeleteScope.SPECIFIC))
        assert deleted == codec.encode_confirmed_response(6, codec.encode_delete_list_response(1, 1))
        ident = peer.request(codec.encode_identify_request())
        assert ident == codec.encode_confirmed_response(7, codec.encode_identify_response("dscada", "iccp-mms-test",
                                                                                          "1"))
    finally:
        peer.release()


def test_abort_both_ways(server: MmsServer, handler: ExampleHandler) -> None:
    peer = RawPeer(server.port)
    wait_for(lambda: server.associations(), 10, "the association")
    peer.iso.send(codec.encode_abort(1))
    wait_for(lambda: handler.ends(), 10, "the peer abort")
    assert handler.ends()[0][2] is EndReason.PEER_ABORT
    peer.close()

    peer = RawPeer(server.port)
    wait_for(lambda: server.associations(), 10, "the second association")
    server.associations()[0].abort()
    tsdu = peer.iso.recv()
    assert tsdu is not None and codec.decode_session(tsdu).spdu == codec.SpduType.ABORT
    assert peer.iso.recv() is None  # then the server closes the transport
    peer.close()
    wait_for(lambda: len(handler.ends()) == 2, 10, "the local abort")
    assert handler.ends()[1][2] is EndReason.LOCAL_ABORT


def test_malformed_pdus_get_rejects_broken_framing_aborts_others_keep_going(server: MmsServer,
                                                                           handler: ExampleHandler) -> None:
    bystander = RawPeer(server.port)
    peer = RawPeer(server.port)
    peer.send_mms(b"\xa0\x03\x02\x01")  # truncated confirmed-RequestPDU
    assert peer.recv_mms() == codec.encode_reject(None, codec.RejectReason.INVALID_PDU)
    peer.send_mms(codec.encode_confirmed_request(4, bytes.fromhex("a4 03 a1 01 ff")))  # broken Read
    assert peer.recv_mms() == codec.encode_reject(4, codec.RejectReason.CONFIRMED_INVALID_ARGUMENT)
    peer.send_mms(codec.encode_confirmed_request(5, bytes.fromhex("bf 48 00")))  # a service this layer lacks
    assert peer.recv_mms() == codec.encode_reject(5, codec.RejectReason.CONFIRMED_UNRECOGNIZED_SERVICE)

    rng = random.Random(11)  # bounded fuzzing over the wire: every PDU is answered, nothing kills the association
    seeds = [codec.encode_confirmed_request(9, codec.encode_read_request(VariableAccess(variables=(
        VariableSpec(ObjectName.in_domain("ICC1", "TS"), ("Status",)),)))),
        codec.encode_confirmed_request(9, codec.encode_define_list_request(ObjectName.association("X"), (
            VariableSpec(ObjectName.vcc("TASE2_Version")),)))]
    for _ in range(150):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        peer.send_mms(bytes(data))
        assert peer.recv_mms()[:1] in (b"\xa1", b"\xa2", b"\xa4"), "a response, an error or a reject"
    assert server.malformed_pdus >= 3
    boom = VariableSpec(ObjectName.in_domain("ICC1", "BOOM"))  # a handler that raises: confirmed error, no crash
    peer.send_mms(codec.encode_confirmed_request(10, codec.encode_read_request(VariableAccess(variables=(boom,)))))
    assert peer.recv_mms() == codec.encode_confirmed_error(10, ErrorClass.OTHERS, 0)

    peer.iso.send(b"\x77\x00\x00")  # not a session SPDU: framing broken -> ABORT and close
    tsdu = peer.iso.recv()
    assert tsdu is not None and codec.decode_session(tsdu).spdu == codec.SpduType.ABORT
    peer.close()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.sendall(b"\x09\x09\x09\x09 not TPKT")  # broken TPKT: closed without ceremony
    assert raw.recv(100) == b""
    raw.close()
    name = VariableSpec(ObjectName.in_domain("ICC1", "FREQ"))
    read = bystander.request(codec.encode_read_request(VariableAccess(variables=(name,))))
    assert read == codec.encode_confirmed_response(1, codec.encode_read_response([FloatData(50.02)]))
    bystander.release()


def test_concurrent_associations_on_one_thread(server: MmsServer) -> None:
    before = {t.ident for t in threading.enumerate()}
    peers = [RawPeer(server.port) for _ in range(20)]
    # no thread per connection (threads of earlier tests may end meanwhile: compare what is new, not the count)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []
    name = VariableSpec(ObjectName.in_domain("ICC1", "P007"))
    for peer in peers:
        peer.send_mms(codec.encode_confirmed_request(1, codec.encode_read_request(VariableAccess(variables=(name,)))))
    for peer in peers:
        assert peer.recv_mms() == codec.encode_confirmed_response(1, codec.encode_read_response([FloatData(7.0)]))
    for peer in peers:
        peer.release()


def test_silent_connections_time_out_and_the_association_limit_holds(handler: ExampleHandler) -> None:
    config = MmsServerConfig(port=0, association_timeout_s=0.5, max_associations=2)
    with MmsServer(handler, config) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert silent.recv(10) == b""  # closed after the association time-out
        silent.close()
        peers = [RawPeer(server.port), RawPeer(server.port)]
        with pytest.raises((AssertionError, OSError)):  # the third is closed at once
            RawPeer(server.port)
        handle = server.associations()[0]
        peers[0].release()
        wait_for(lambda: not handle.is_open, 10, "the release")
        with pytest.raises(MmsConnectionError, match="not associated"):
            handle.send_information_report(ObjectName.vcc("DS"), [IntData(1)])
        peers[1].release()


# ------------------------------------------------------------------------------------------------ TLS


def test_tls_association(tmp_path: Path, handler: ExampleHandler) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    with MmsServer(handler, MmsServerConfig(port=0, ssl_context=server_ctx)) as server:
        peer = RawPeer(server.port, tls=client_ctx)
        assert handler.events[0][5] is True  # AssociationInfo.tls
        domains = peer.request(codec.encode_name_list_request(ObjectClass.DOMAIN, NameScope.VCC))
        assert domains == codec.encode_confirmed_response(1, codec.encode_name_list_response(["ICC1"], False))
        assert peer.release().spdu == codec.SpduType.DISCONNECT
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:  # plain TCP gets no CC
            send_tpkt(plain, connection_request())
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer[:1] != b"\x03", answer  # nothing, or a TLS alert: never a TPKT
    assert handler.ends()[0][0] == "released"


# ------------------------------------------------------------------------------------------------ wire oracle


def test_wire_oracle_every_frame_is_mms_without_malformed_packets(tmp_path: Path, handler: ExampleHandler) -> None:
    config = MmsServerConfig(port=0, local_ap_title=(1, 3, 9999, 1), local_ae_qualifier=12)
    with MmsServer(handler, config) as server:
        capture = start_or_skip(WireCapture([server.port], tmp_path, {server.port: WireProtocol.MMS},
                                            name="iccp_mms"))
        try:
            out = _run_libiec61850_client(server.port)
            assert out["conclude_error"] == 0
            peer = RawPeer(server.port)
            aa = ObjectName.association("DS_AA")
            peer.request(codec.encode_define_list_request(aa, (VariableSpec(ObjectName.in_domain("ICC1", "FREQ")),
                                                               VariableSpec(ObjectName.in_domain("ICC1", "TS"),
                                                                            ("Status",)))))
            handle = server.associations()[0]
            handle.send_information_report(ObjectName.in_domain("ICC1", "DS_ICC"), [FloatData(1.0), IntData(2)])
            handle.send_information_report(aa, [FloatData(1.0), DataAccessCode.OBJECT_ACCESS_DENIED])
            peer.recv_mms()
            peer.recv_mms()
            peer.release()
            aborted = RawPeer(server.port)
            wait_for(lambda: server.associations(), 10, "the association to abort")
            server.associations()[0].abort()
            assert aborted.iso.recv() is not None
            aborted.close()
            with pytest.raises(AssociationError):
                MmsClient.connect("127.0.0.1", server.port, timeout=10,
                                  association=AssociationParameters(calling_ap_title=(1, 9)))
        finally:
            capture.stop()
    dissection = capture.decode()
    assert not dissection.problems, dissection.report()
    not_mms = [f for f in dissection.frames if "mms" not in f.protocols and "pres" not in f.protocols
               and "ses" not in f.protocols and "cotp" not in f.protocols]
    assert not not_mms, dissection.summary()
    mms_frames = dissection.of("mms")
    assert len(mms_frames) >= 20, dissection.summary()
    text = json.dumps([f.layers for f in mms_frames])
    for expected in ("DS_LIB", "DS_AA", "DS_ICC", "Status", "ICC1"):
        assert expected in text, expected
    assert "1.3.9999.7" in dissection.values("acse.ap_title_form2")  # calling title of libiec61850's AARQ
    assert "1.3.9999.1" in dissection.values("acse.ap_title_form2")  # our responding title
    assert dissection.values("acse.result").count("1") == 1  # the refused association
    assert "3" in dissection.values("acse.service_user")  # calling-AP-title-not-recognized
    assert len([f for f in dissection.frames if f.values("acse.reason")]) == 4  # RLRQ + RLRE, two releases


if __name__ == "__main__":
    print(json.dumps(_libiec61850_client(int(sys.argv[1]), sys.argv[2])), flush=True)
