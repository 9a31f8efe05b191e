"""MMS client-side decoders (ISO 9506-2): what a client receives, which neither open61850 nor the server codec read.

The value types (ObjectName in VCC, domain or association scope, VariableSpec with a component path,
DataAccessCode, ObjectClass) and the request encoders are shared with the server in :mod:`iccp.mms.codec`, so a
TASE.2 name means the same thing on both sides. This module adds the decoders of confirmed responses, errors,
rejects, information reports (any list-name scope, component access) and conclude PDUs, and the session FINISH
with its Transport Disconnect parameter. Anything malformed raises :class:`MmsCodecError` (an MmsDecodeError).

The ASN.1 of each element is quoted next to its decoder; tags are context-specific unless noted.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from open61850 import ber
from open61850.data import decode_data
from open61850.mms.association import ACSE_CONTEXT

from iccp.errors import MmsDecodeError
from iccp.mms.codec import (
    AccessResult,
    DataAccessCode,
    ObjectName,
    VariableSpec,
    decode_variable_access,
)
from iccp.mms.server import DeleteResult, Identity, ListAttributes

__all__ = [
    "MmsCodecError",
    "ConfirmedResponse",
    "ConfirmedError",
    "RejectPdu",
    "InformationReport",
    "ConcludeResponse",
    "ConcludeRequest",
    "IncomingPdu",
    "decode_incoming",
    "decode_read_response",
    "decode_write_response",
    "decode_get_name_list_response",
    "decode_identify_response",
    "decode_named_variable_list_attributes_response",
    "decode_delete_named_variable_list_response",
    "finish_spdu",
    "SPDU_FINISH",
    "SPDU_DISCONNECT",
    "SPDU_ABORT",
]

# Session SPDU identifiers (ISO 8327-1); a data TSDU starts with GIVE TOKENS (0x01) then DATA TRANSFER (0x01).
SPDU_FINISH = 0x09
SPDU_DISCONNECT = 0x0A
SPDU_ABORT = 0x19
_PI_TRANSPORT_DISCONNECT = 0x11
_PGI_USER_DATA = 0xC1


class MmsCodecError(MmsDecodeError):
    """A PDU that does not follow the MMS / ACSE / session ASN.1 (names the element)."""


@dataclass(frozen=True, slots=True)
class ConfirmedResponse:
    invoke_id: int
    service: int
    content: bytes


@dataclass(frozen=True, slots=True)
class ConfirmedError:
    invoke_id: int
    error_class: int
    code: int


@dataclass(frozen=True, slots=True)
class RejectPdu:
    invoke_id: int | None
    reason_tag: int  # RejectReason CHOICE number: 1 confirmed-requestPDU, 2 confirmed-responsePDU, ...
    code: int


@dataclass(frozen=True, slots=True)
class InformationReport:
    """An unconfirmed InformationReport: on a named variable list (any scope) or on a list of variables."""

    list_name: ObjectName | None
    variables: tuple[VariableSpec, ...]
    results: tuple[AccessResult, ...]


@dataclass(frozen=True, slots=True)
class ConcludeResponse:
    accepted: bool = True  # False for a conclude-ErrorPDU


@dataclass(frozen=True, slots=True)
class ConcludeRequest:
    pass


IncomingPdu = ConfirmedResponse | ConfirmedError | RejectPdu | InformationReport | ConcludeResponse | ConcludeRequest


# --- responses -------------------------------------------------------------------------------------------------------


def _access_results(content: bytes) -> tuple[AccessResult, ...]:
    """AccessResult ::= CHOICE { failure [0] IMPLICIT DataAccessError, success Data }."""
    results: list[AccessResult] = []
    for tlv in ber.iter_tlvs(content):
        if tlv.tag == 0x80:
            results.append(DataAccessCode(ber.decode_integer(tlv.value)))
        else:
            results.append(decode_data(tlv.tag, tlv.value))
    return tuple(results)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guard(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn any low-level decoding failure of ``what`` into MmsCodecError, the one error decoders raise."""

    def wrap(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except MmsDecodeError:
                raise
            except (ber.BerError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error,
                    RecursionError) as exc:
                raise MmsCodecError(f"malformed {what}: {exc}") from exc

        return inner

    return wrap


@_guard("Read-Response")
def decode_read_response(content: bytes) -> tuple[AccessResult, ...]:
    """Read-Response ::= SEQUENCE { variableAccessSpecification [0] OPTIONAL, listOfAccessResult [1] IMPLICIT ... }."""
    for tlv in ber.iter_tlvs(content):
        if tlv.tag == 0xA1:
            return _access_results(tlv.value)
    raise MmsCodecError("Read-Response without listOfAccessResult")


@_guard("Write-Response")
def decode_write_response(content: bytes) -> tuple[DataAccessCode | None, ...]:
    """Write-Response ::= SEQUENCE OF CHOICE { failure [0] IMPLICIT DataAccessError, success [1] IMPLICIT NULL }."""
    out: list[DataAccessCode | None] = []
    for tlv in ber.iter_tlvs(content):
        if tlv.tag == 0x80:
            out.append(DataAccessCode(ber.decode_integer(tlv.value)))
        elif tlv.tag == 0x81:
            out.append(None)
        else:
            raise MmsCodecError(f"Write-Response item with tag 0x{tlv.tag:X}")
    return tuple(out)


@_guard("GetNameList-Response")
def decode_get_name_list_response(content: bytes) -> tuple[tuple[str, ...], bool]:
    """GetNameList-Response ::= SEQUENCE { listOfIdentifier [0] IMPLICIT SEQUENCE OF Identifier,
    moreFollows [1] IMPLICIT BOOLEAN DEFAULT TRUE }."""
    names: tuple[str, ...] = ()
    more_follows = True
    seen_list = False
    for tlv in ber.iter_tlvs(content):
        if tlv.tag == 0xA0:
            names = tuple(n.value.decode("ascii") for n in ber.iter_tlvs(tlv.value))
            seen_list = True
        elif tlv.tag == 0x81:
            more_follows = ber.decode_boolean(tlv.value)
    if not seen_list:
        raise MmsCodecError("GetNameList-Response without listOfIdentifier")
    return names, more_follows


@_guard("Identify-Response")
def decode_identify_response(content: bytes) -> Identity:
    """Identify-Response ::= SEQUENCE { vendorName [0], modelName [1], revision [2] IMPLICIT VisibleString, ... }."""
    fields = {t.tag: t.value for t in ber.iter_tlvs(content)}
    return Identity(*(fields[tag].decode("ascii", errors="replace") for tag in (0x80, 0x81, 0x82)))


@_guard("GetNamedVariableListAttributes-Response")
def decode_named_variable_list_attributes_response(content: bytes) -> ListAttributes:
    """SEQUENCE { mmsDeletable [0] IMPLICIT BOOLEAN, listOfVariable [1] IMPLICIT SEQUENCE OF SEQUENCE {...} }."""
    fields = {t.tag: t.value for t in ber.iter_tlvs(content)}
    if 0xA1 not in fields:
        raise MmsCodecError("GetNamedVariableListAttributes-Response without listOfVariable")
    deletable = ber.decode_boolean(fields[0x80]) if 0x80 in fields else False
    variables = decode_variable_access(ber.Tlv(0xA0, fields[0xA1], 0)).variables  # same SEQUENCE OF as a request
    return ListAttributes(variables, deletable)


@_guard("DeleteNamedVariableList-Response")
def decode_delete_named_variable_list_response(content: bytes) -> DeleteResult:
    """SEQUENCE { numberMatched [0] IMPLICIT Unsigned32, numberDeleted [1] IMPLICIT Unsigned32 }."""
    fields = {t.tag: t.value for t in ber.iter_tlvs(content)}
    return DeleteResult(ber.decode_unsigned(fields[0x80]), ber.decode_unsigned(fields[0x81]))


def _information_report(content: bytes) -> InformationReport:
    """InformationReport ::= SEQUENCE { variableAccessSpecification, listOfAccessResult [0] IMPLICIT SEQUENCE OF }."""
    parts = list(ber.iter_tlvs(content))
    if len(parts) < 2 or parts[1].tag != 0xA0:
        raise MmsCodecError("InformationReport is not { variableAccessSpecification, listOfAccessResult }")
    access = decode_variable_access(parts[0])  # variableListName [1] ObjectName, or listOfVariable [0]
    return InformationReport(access.list_name, access.variables, _access_results(parts[1].value))


@_guard("MMS PDU")
def decode_incoming(mms_pdu: bytes) -> IncomingPdu:
    """Decode a PDU a client receives: confirmed response / error, reject, information report, conclude."""
    outer = ber.decode_tlv(mms_pdu)
    if outer.tag == 0xA1:  # confirmed-ResponsePDU: invokeID Unsigned32, ConfirmedServiceResponse
        parts = list(ber.iter_tlvs(outer.value))
        if len(parts) < 2 or parts[0].tag != 0x02:
            raise MmsCodecError("confirmed-ResponsePDU without invokeID and service response")
        return ConfirmedResponse(ber.decode_unsigned(parts[0].value), ber.tag_number(parts[1].tag), parts[1].value)
    if outer.tag == 0xA2:  # confirmed-ErrorPDU: invokeID [0], modifierPosition [1] OPT, serviceError [2]
        fields = {t.tag: t.value for t in ber.iter_tlvs(outer.value)}
        error = {t.tag: t.value for t in ber.iter_tlvs(fields[0xA2])}
        klass = ber.decode_tlv(error[0xA0])  # errorClass [0] CHOICE { vmd-state [0] INTEGER, ... }
        return ConfirmedError(ber.decode_unsigned(fields[0x80]), ber.tag_number(klass.tag),
                              ber.decode_integer(klass.value))
    if outer.tag == 0xA4:  # rejectPDU: originalInvokeID [0] OPTIONAL, rejectReason CHOICE
        invoke_id: int | None = None
        reason_tag, code = -1, -1
        for t in ber.iter_tlvs(outer.value):
            if t.tag == 0x80:
                invoke_id = ber.decode_unsigned(t.value)
            else:
                reason_tag, code = ber.tag_number(t.tag), ber.decode_integer(t.value)
        return RejectPdu(invoke_id, reason_tag, code)
    if outer.tag == 0xA3:  # unconfirmed-PDU: informationReport [0]
        service = ber.decode_tlv(outer.value)
        if service.tag != 0xA0:
            raise MmsCodecError(f"unsupported unconfirmed service 0x{service.tag:X}")
        return _information_report(service.value)
    if outer.tag == 0x8C:
        return ConcludeResponse()
    if outer.tag == 0xAD:  # conclude-ErrorPDU [13] IMPLICIT ServiceError
        return ConcludeResponse(accepted=False)
    if outer.tag == 0x8B:
        return ConcludeRequest()
    raise MmsCodecError(f"unsupported MMS PDU tag 0x{outer.tag:X}")


# --- session release and abort ---------------------------------------------------------------------------------------


def _session_spdu(si: int, parameters: bytes) -> bytes:
    length = len(parameters)
    return bytes([si]) + (bytes([length]) if length < 255 else b"\xff" + length.to_bytes(2, "big")) + parameters


def _session_parameter(code: int, value: bytes) -> bytes:
    length = len(value)
    return bytes([code]) + (bytes([length]) if length < 255 else b"\xff" + length.to_bytes(2, "big")) + value


def _fully_encoded(context: int, apdu: bytes) -> bytes:
    """Presentation User-data fully-encoded-data [APPLICATION 1] { PDV-list { context id, single-ASN1-type [0] } }."""
    pdv = ber.encode_tlv(0x02, ber.encode_integer(context)) + ber.encode_tlv(0xA0, apdu)
    return ber.encode_tlv(0x61, ber.encode_tlv(0x30, pdv))


def finish_spdu(acse_context: int = ACSE_CONTEXT) -> bytes:
    """Session FINISH (Transport Disconnect: transport connection released) carrying ACSE RLRQ { reason [0] normal }.

    iccp.mms.codec.encode_release_request leaves the Transport Disconnect parameter out (kept); a client releases
    the transport, which libiec61850 and Wireshark read as an ordinary Release-Request."""
    rlrq = ber.encode_tlv(0x62, ber.encode_tlv(0x80, b"\x00"))
    return _session_spdu(SPDU_FINISH, _session_parameter(_PI_TRANSPORT_DISCONNECT, b"\x01")
                         + _session_parameter(_PGI_USER_DATA, _fully_encoded(acse_context, rlrq)))
