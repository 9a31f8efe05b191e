"""Encoders and decoders of the MMS stack that open61850 lacks, for both ends of an ICCP association.

open61850 (pinned) supplies the BER primitives (:mod:`open61850.ber`), the MMS ``Data`` values
(:mod:`open61850.data`) and type descriptions (:mod:`open61850.mms.types`). This module adds what a TASE.2
server needs on top: the three name scopes (VCC = vmd-specific, ICC = domain-specific, association =
aa-specific), alternate access (component selection), the full AARQ with the calling AP title and AE
qualifier, AARE rejection, session release (FINISH / DISCONNECT with RLRQ / RLRE), session abort (ABORT with
ARU-PPDU / ABRT), named variable list services and information reports in any scope.

Every decoder raises only :class:`iccp.errors.MmsDecodeError`, whatever the input (fuzz-tested).
ASN.1 references are ISO 9506-2 (MMS), ISO 8650-1 (ACSE), ISO 8823-1 (presentation), ISO 8327-1 (session),
ISO 8073 (COTP) and RFC 1006 (TPKT).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from open61850 import ber
from open61850.data import IECData, decode_data, decode_data_sequence, encode_data
from open61850.mms.types import MmsType, encode_type_description

from ..errors import MmsDecodeError

__all__ = [
    "NameScope", "ObjectName", "Component", "VariableSpec", "VariableAccess", "DataAccessCode", "AccessResult",
    "ObjectClass", "DeleteScope", "RejectReason", "RefusalDiagnostic", "SpduType",
    "TPKT_VERSION", "COTP_CR", "COTP_CC", "COTP_DT", "COTP_DR", "COTP_ER", "OID_ACSE", "OID_MMS", "OID_BER",
    "OID_MMS_CONTEXT", "PARAMETER_CBB", "SERVICES_SUPPORTED",
    "ReadRequest", "WriteRequest", "NameListRequest", "VariableAttributesRequest", "DefineListRequest",
    "DeleteListRequest", "ListAttributesRequest", "IdentifyRequest", "ServiceRequest",
    "ConfirmedRequestPdu", "ConcludeRequestPdu", "RejectPdu", "OtherPdu", "IncomingPdu",
    "SessionPdu", "PresentationContext", "AssociationRequest", "CotpPdu",
    "decode_cotp", "encode_cotp_cc", "encode_cotp_dt", "encode_tpkt", "cotp_tpdu_size",
    "decode_session", "decode_presentation_data", "decode_association_request", "decode_release_request",
    "decode_object_name", "decode_variable_access", "decode_mms_pdu", "decode_service_request",
    "encode_object_name", "encode_variable_access", "encode_access_results",
    "encode_data_spdu", "encode_association_accept", "encode_association_refusal", "encode_release_response",
    "encode_release_request", "encode_abort", "encode_association_request",
    "encode_confirmed_request", "encode_confirmed_response", "encode_confirmed_error", "encode_reject",
    "encode_conclude_request", "encode_conclude_response", "encode_information_report",
    "encode_read_request", "encode_write_request", "encode_name_list_request", "encode_define_list_request",
    "encode_delete_list_request", "encode_list_attributes_request", "encode_variable_attributes_request",
    "encode_identify_request",
    "encode_read_response", "encode_write_response", "encode_name_list_response", "encode_identify_response",
    "encode_variable_attributes_response", "encode_define_list_response", "encode_delete_list_response",
    "encode_list_attributes_response", "decode_data_value",
]

# ------------------------------------------------------------------------------------------------ constants

TPKT_VERSION = 3
COTP_CR, COTP_CC, COTP_DT, COTP_DR, COTP_ER = 0xE0, 0xD0, 0xF0, 0x80, 0x70
_COTP_EOT = 0x80
_COTP_TPDU_SIZE = 0xC0

OID_ACSE = (2, 2, 1, 0, 1)
OID_MMS = (1, 0, 9506, 2, 1)  # MMS abstract syntax
OID_BER = (2, 1, 1)
OID_MMS_CONTEXT = (1, 0, 9506, 2, 3)  # MMS application context name


def _bit_string(numbers: set[int], size_bits: int) -> bytes:
    """A BIT STRING content (unused-bits octet first) with the bits ``numbers`` set."""
    raw = bytearray((size_bits + 7) // 8)
    for n in numbers:
        raw[n // 8] |= 0x80 >> (n % 8)
    return bytes([len(raw) * 8 - size_bits]) + bytes(raw)


# ParameterSupportOptions: str1, str2, vnam, valt, vlis (ISO 9506-2 bits 0, 1, 2, 3, 7)
PARAMETER_CBB = _bit_string({0, 1, 2, 3, 7}, 11)
# ServiceSupportOptions of this server: getNameList 1, identify 2, read 4, write 5, getVariableAccessAttributes 6,
# defineNamedVariableList 11, getNamedVariableListAttributes 12, deleteNamedVariableList 13, informationReport 79,
# conclude 83.
SERVICES_SUPPORTED = _bit_string({1, 2, 4, 5, 6, 11, 12, 13, 79, 83}, 85)

_DATA_TAG = 0x01  # session GIVE-TOKENS and DATA TRANSFER share SI 1


class SpduType(enum.IntEnum):
    """Session SPDU identifiers (ISO 8327-1)."""

    DATA = 0x01
    FINISH = 0x09
    DISCONNECT = 0x0A
    REFUSE = 0x0C
    CONNECT = 0x0D
    ACCEPT = 0x0E
    ABORT = 0x19
    ABORT_ACCEPT = 0x1A


class NameScope(enum.Enum):
    """Where an MMS object lives: TASE.2 VCC scope (vmd-specific), ICC scope (domain-specific) or association."""

    VCC = "vcc"
    DOMAIN = "domain"
    ASSOCIATION = "association"


class ObjectClass(enum.IntEnum):
    """GetNameList basic object classes (ISO 9506-2)."""

    NAMED_VARIABLE = 0
    SCATTERED_ACCESS = 1
    NAMED_VARIABLE_LIST = 2
    NAMED_TYPE = 3
    SEMAPHORE = 4
    EVENT_CONDITION = 5
    EVENT_ACTION = 6
    EVENT_ENROLLMENT = 7
    JOURNAL = 8
    DOMAIN = 9
    PROGRAM_INVOCATION = 10
    OPERATOR_STATION = 11


class DeleteScope(enum.IntEnum):
    """DeleteNamedVariableList scopeOfDelete."""

    SPECIFIC = 0
    ASSOCIATION = 1
    DOMAIN = 2
    VCC = 3


class DataAccessCode(enum.IntEnum):
    """DataAccessError (ISO 9506-2): the failure of one variable in a read, write or report."""

    OBJECT_INVALIDATED = 0
    HARDWARE_FAULT = 1
    TEMPORARILY_UNAVAILABLE = 2
    OBJECT_ACCESS_DENIED = 3
    OBJECT_UNDEFINED = 4
    INVALID_ADDRESS = 5
    TYPE_UNSUPPORTED = 6
    TYPE_INCONSISTENT = 7
    OBJECT_ATTRIBUTE_INCONSISTENT = 8
    OBJECT_ACCESS_UNSUPPORTED = 9
    OBJECT_NON_EXISTENT = 10
    OBJECT_VALUE_INVALID = 11


class RejectReason(enum.Enum):
    """RejectPDU reasons as (rejectReason tag number, code) (ISO 9506-2)."""

    CONFIRMED_UNRECOGNIZED_SERVICE = (1, 1)
    CONFIRMED_INVALID_ARGUMENT = (1, 5)
    CONFIRMED_MAX_RECURSION_EXCEEDED = (1, 4)
    UNRECOGNIZED_PDU = (5, 0)  # pdu-error unknown-pdu-type
    INVALID_PDU = (5, 1)  # pdu-error invalid-pdu
    CONCLUDE_INVALID = (10, 0)  # conclude-requestPDU other


class RefusalDiagnostic(enum.IntEnum):
    """ACSE acse-service-user diagnostics of a rejected AARE (ISO 8650-1)."""

    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    AUTHENTICATION_MECHANISM_NOT_RECOGNIZED = 11
    AUTHENTICATION_REQUIRED = 14
    AUTHENTICATION_FAILURE = 13


# ------------------------------------------------------------------------------------------------ names


@dataclass(frozen=True, slots=True)
class ObjectName:
    """An MMS ObjectName: ``item`` in VCC scope, in ``domain`` (ICC scope), or in the association's scope."""

    scope: NameScope
    item: str
    domain: str | None = None

    def __post_init__(self) -> None:
        if (self.scope is NameScope.DOMAIN) != (self.domain is not None):
            raise ValueError(f"object name {self.item!r}: a domain is required in DOMAIN scope and only there")

    @classmethod
    def vcc(cls, item: str) -> ObjectName:
        return cls(NameScope.VCC, item)

    @classmethod
    def in_domain(cls, domain: str, item: str) -> ObjectName:
        return cls(NameScope.DOMAIN, item, domain)

    @classmethod
    def association(cls, item: str) -> ObjectName:
        return cls(NameScope.ASSOCIATION, item)

    def __str__(self) -> str:
        if self.scope is NameScope.DOMAIN:
            return f"{self.domain}/{self.item}"
        return self.item if self.scope is NameScope.VCC else f"@{self.item}"


Component = str | int  # a structure component name or an array index


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """A variable of a read, write, list or report, with an optional component path (alternate access).

    ``component=("Status",)`` selects ``Transfer_Set.Status``; an int selects an array element.
    """

    name: ObjectName
    component: tuple[Component, ...] = ()

    def __str__(self) -> str:
        path = "".join(f"[{c}]" if isinstance(c, int) else f".{c}" for c in self.component)
        return f"{self.name}{path}"


@dataclass(frozen=True, slots=True)
class VariableAccess:
    """A VariableAccessSpecification: a list of variables, or the name of a named variable list."""

    variables: tuple[VariableSpec, ...] = ()
    list_name: ObjectName | None = None

    def __post_init__(self) -> None:
        if self.list_name is not None and self.variables:
            raise ValueError("a variable access names a list or lists variables, not both")


AccessResult = IECData | DataAccessCode

# ------------------------------------------------------------------------------------------------ decode helpers

_T = TypeVar("_T")
# What a decoder may run into with hostile input; all of it becomes MmsDecodeError.
_DECODE_FAILURES = (ber.BerError, ValueError, KeyError, IndexError, StopIteration, UnicodeDecodeError,
                    struct.error, OverflowError, RecursionError, TypeError, AttributeError)


def _decoding(what: str) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    def wrap(func: Callable[..., _T]) -> Callable[..., _T]:
        def run(*args: object, **kwargs: object) -> _T:
            try:
                return func(*args, **kwargs)
            except MmsDecodeError:
                raise
            except _DECODE_FAILURES as exc:
                raise MmsDecodeError(f"bad {what}: {type(exc).__name__}: {exc}"[:300]) from exc
        run.__name__ = func.__name__
        run.__doc__ = func.__doc__
        return run
    return wrap


def _tlvs(content: bytes) -> list[ber.Tlv]:
    return list(ber.iter_tlvs(content))


def _fields(content: bytes) -> dict[int, bytes]:
    return {t.tag: t.value for t in ber.iter_tlvs(content)}


def _identifier(raw: bytes) -> str:
    text = raw.decode("ascii")
    if not text or not text.isprintable():
        raise MmsDecodeError(f"bad MMS identifier {raw[:40]!r}")
    return text


def _one(content: bytes, what: str) -> ber.Tlv:
    tlv = ber.decode_tlv(content)
    if tlv.end != len(content):
        raise MmsDecodeError(f"{what}: {len(content) - tlv.end} trailing bytes")
    return tlv


# ------------------------------------------------------------------------------------------------ TPKT / COTP


def encode_tpkt(payload: bytes) -> bytes:
    if len(payload) + 4 > 0xFFFF:
        raise ValueError(f"TPKT payload of {len(payload)} bytes is too long")
    return struct.pack("!BBH", TPKT_VERSION, 0, len(payload) + 4) + payload


@dataclass(frozen=True, slots=True)
class CotpPdu:
    """One COTP TPDU: its code, and for DT the end-of-TSDU mark and data, for CR the raw TPDU."""

    code: int
    data: bytes = b""
    end_of_tsdu: bool = True
    raw: bytes = b""


@_decoding("COTP TPDU")
def decode_cotp(payload: bytes) -> CotpPdu:
    """A COTP TPDU from a TPKT payload (class 0 only: CR, DT, DR, ER)."""
    if len(payload) < 2:
        raise MmsDecodeError(f"COTP TPDU of {len(payload)} bytes")
    li = payload[0]
    if li + 1 > len(payload) or li < 1:
        raise MmsDecodeError(f"COTP length indicator {li} beyond {len(payload)} bytes")
    code = payload[1] & 0xF0
    if code == COTP_DT:
        if li != 2:
            raise MmsDecodeError(f"COTP DT with length indicator {li}")
        return CotpPdu(code, payload[3:], bool(payload[2] & _COTP_EOT))
    if code in (COTP_CR, COTP_DR, COTP_ER, COTP_CC):
        if code == COTP_CR and li < 6:
            raise MmsDecodeError(f"COTP CR with length indicator {li}")
        return CotpPdu(code, raw=payload[:li + 1])
    raise MmsDecodeError(f"unsupported COTP TPDU code 0x{code:02X}")


def cotp_tpdu_size(cr: CotpPdu, max_size_code: int = 0x0D) -> tuple[int, int]:
    """(size code, TPDU size in bytes) agreed from a CR: the smaller of the proposal and ``max_size_code``."""
    code = 0x07  # 128 bytes: the class 0 default when the CR proposes nothing
    offset = 7
    raw = cr.raw
    while offset + 2 <= len(raw):
        param, length = raw[offset], raw[offset + 1]
        if param == _COTP_TPDU_SIZE and length == 1 and offset + 2 < len(raw):
            code = raw[offset + 2]
        offset += 2 + length
    code = max(0x07, min(code, max_size_code))
    return code, 1 << code


def encode_cotp_cc(cr: CotpPdu, size_code: int, local_ref: int = 1) -> bytes:
    """The CC answering ``cr``: its source reference echoed, the TPDU size and TSAPs it proposed."""
    raw = cr.raw
    tsaps = b""
    offset = 7
    while offset + 2 <= len(raw):
        param, length = raw[offset], raw[offset + 1]
        if param in (0xC1, 0xC2):
            tsaps += raw[offset:offset + 2 + length]
        offset += 2 + length
    body = bytes([COTP_CC]) + raw[4:6] + local_ref.to_bytes(2, "big") + b"\x00" + bytes([_COTP_TPDU_SIZE, 1,
                                                                                           size_code]) + tsaps
    return encode_tpkt(bytes([len(body)]) + body)


def encode_cotp_dt(tsdu: bytes, tpdu_size: int) -> bytes:
    """A TSDU as TPKT-framed DT TPDUs of at most ``tpdu_size`` bytes each."""
    room = max(1, tpdu_size - 3)
    out = bytearray()
    for start in range(0, max(1, len(tsdu)), room):
        last = start + room >= len(tsdu)
        out += encode_tpkt(bytes([2, COTP_DT, _COTP_EOT if last else 0]) + tsdu[start:start + room])
    return bytes(out)


# ------------------------------------------------------------------------------------------------ session


@dataclass(frozen=True, slots=True)
class SessionPdu:
    """A session SPDU: its type, parameters by code (PGI contents flattened) and the user data it carries."""

    spdu: int
    parameters: dict[int, bytes] = field(default_factory=dict)
    user_data: bytes = b""


def _session_length(length: int) -> bytes:
    return bytes([length]) if length < 255 else b"\xff" + length.to_bytes(2, "big")


def _session_item(code: int, value: bytes) -> bytes:
    return bytes([code]) + _session_length(len(value)) + value


def _spdu(si: int, parameters: bytes) -> bytes:
    return bytes([si]) + _session_length(len(parameters)) + parameters


def _read_session_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise MmsDecodeError("truncated session length")
    length = data[offset]
    if length != 0xFF:
        return length, offset + 1
    if offset + 3 > len(data):
        raise MmsDecodeError("truncated session extended length")
    return int.from_bytes(data[offset + 1:offset + 3], "big"), offset + 3


def _session_parameters(data: bytes, out: dict[int, bytes]) -> None:
    offset = 0
    while offset < len(data):
        code = data[offset]
        length, offset = _read_session_length(data, offset + 1)
        if offset + length > len(data):
            raise MmsDecodeError(f"session parameter {code} truncated")
        value = data[offset:offset + length]
        if code in (1, 5):  # PGIs holding PIs: connection identifier, connect/accept item
            _session_parameters(value, out)
        out[code] = value
        offset += length


_USER_DATA, _EXTENDED_USER_DATA = 193, 194


@_decoding("session SPDU")
def decode_session(tsdu: bytes) -> SessionPdu:
    """The SPDU of a TSDU. A data transfer (GIVE-TOKENS + DATA TRANSFER) yields DATA with the user information."""
    if not tsdu:
        raise MmsDecodeError("empty TSDU")
    si = tsdu[0]
    length, offset = _read_session_length(tsdu, 1)
    end = offset + length
    if end > len(tsdu):
        raise MmsDecodeError(f"session SPDU 0x{si:02X} truncated ({length} bytes announced)")
    parameters: dict[int, bytes] = {}
    _session_parameters(tsdu[offset:end], parameters)
    if si == _DATA_TAG:
        # GIVE-TOKENS (SI 1) then DATA TRANSFER (SI 1); the user information follows the second header
        if end < len(tsdu) and tsdu[end] == _DATA_TAG:
            length, offset = _read_session_length(tsdu, end + 1)
            if offset + length > len(tsdu):
                raise MmsDecodeError("DATA TRANSFER SPDU truncated")
            _session_parameters(tsdu[offset:offset + length], parameters)
            end = offset + length
        return SessionPdu(SpduType.DATA, parameters, tsdu[end:])
    if si not in tuple(SpduType):
        raise MmsDecodeError(f"unsupported session SPDU 0x{si:02X}")
    if end != len(tsdu):
        raise MmsDecodeError(f"session SPDU 0x{si:02X} followed by {len(tsdu) - end} stray bytes")
    user = parameters.get(_USER_DATA, parameters.get(_EXTENDED_USER_DATA, b""))
    return SessionPdu(SpduType(si), parameters, user)


_SESSION_DATA = b"\x01\x00\x01\x00"


def _fully_encoded(context: int, payload: bytes) -> bytes:
    pdv = ber.encode_tlv(0x02, ber.encode_integer(context)) + ber.encode_tlv(0xA0, payload)
    return ber.encode_tlv(0x61, ber.encode_tlv(0x30, pdv))


def encode_data_spdu(mms_pdu: bytes, mms_context: int) -> bytes:
    """An MMS PDU in presentation fully-encoded-data behind session GIVE-TOKENS + DATA TRANSFER."""
    return _SESSION_DATA + _fully_encoded(mms_context, mms_pdu)


@_decoding("presentation user data")
def decode_presentation_data(user_data: bytes) -> tuple[int, bytes]:
    """(presentation context id, single-ASN1-type payload) of fully-encoded-data (first PDV)."""
    outer = _one(user_data, "presentation user data")
    if outer.tag != 0x61:
        raise MmsDecodeError(f"expected fully-encoded-data [APPLICATION 1], got tag 0x{outer.tag:X}")
    return _pdv_list(outer.value)


def _pdv_list(content: bytes) -> tuple[int, bytes]:
    pdv = ber.decode_tlv(content)
    if pdv.tag != 0x30:
        raise MmsDecodeError(f"expected PDV-list, got tag 0x{pdv.tag:X}")
    context: int | None = None
    for item in ber.iter_tlvs(pdv.value):
        if item.tag == 0x02:
            context = ber.decode_integer(item.value)
        elif item.tag in (0xA0, 0x81, 0xA1):  # single-ASN1-type, octet-aligned, arbitrary
            if context is None:
                raise MmsDecodeError("PDV without presentation-context-identifier")
            return context, item.value
    raise MmsDecodeError("PDV-list without presentation data values")


# ------------------------------------------------------------------------------------------------ association


@dataclass(frozen=True, slots=True)
class PresentationContext:
    identifier: int
    abstract_syntax: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AssociationRequest:
    """What a calling peer sent: session CONNECT / CP-type / AARQ / initiate-RequestPDU, decoded."""

    calling_ap_title: tuple[int, ...] | None
    calling_ae_qualifier: int | None
    called_ap_title: tuple[int, ...] | None
    called_ae_qualifier: int | None
    application_context: tuple[int, ...] | None
    authentication_mechanism: tuple[int, ...] | None
    authentication_value: bytes | None  # the password of a "password" (charstring) authentication
    calling_session_selector: bytes
    called_session_selector: bytes
    calling_presentation_selector: bytes
    called_presentation_selector: bytes
    contexts: tuple[PresentationContext, ...]
    acse_context: int
    mms_context: int
    max_pdu_size: int | None
    max_outstanding_calling: int
    max_outstanding_called: int
    nesting_level: int | None
    version: int
    parameter_cbb: bytes
    services_supported: bytes


def _ap_title(content: bytes) -> tuple[int, ...] | None:
    inner = _one(content, "AP title")
    if inner.tag == 0x06:  # ap-title-form2: OBJECT IDENTIFIER
        return ber.decode_oid(inner.value)
    return None  # form1 (directory name) is not used by ICCP peers: not matched, not an error


def _ae_qualifier(content: bytes) -> int | None:
    inner = _one(content, "AE qualifier")
    return ber.decode_integer(inner.value) if inner.tag == 0x02 else None


@_decoding("association request")
def decode_association_request(connect: SessionPdu) -> AssociationRequest:
    """The association a session CONNECT SPDU asks for."""
    if connect.spdu != SpduType.CONNECT:
        raise MmsDecodeError(f"expected session CONNECT, got SPDU 0x{connect.spdu:02X}")
    cp = _one(connect.user_data, "CP-type")
    if cp.tag != 0x31:
        raise MmsDecodeError(f"expected CP-type SET, got tag 0x{cp.tag:X}")
    cp_fields = _fields(cp.value)
    mode = _fields(cp_fields.get(0xA0, b"")).get(0x80)
    if mode != b"\x01":
        raise MmsDecodeError("presentation CP-type not in normal mode")
    normal = _fields(cp_fields[0xA2])
    contexts: list[PresentationContext] = []
    for definition in ber.iter_tlvs(normal.get(0xA4, b"")):
        items = _fields(definition.value)
        contexts.append(PresentationContext(ber.decode_integer(items[0x02]), ber.decode_oid(items[0x06])))
    acse_context = next((c.identifier for c in contexts if c.abstract_syntax == OID_ACSE), None)
    mms_context = next((c.identifier for c in contexts if c.abstract_syntax == OID_MMS), None)
    if acse_context is None or mms_context is None:
        raise MmsDecodeError("presentation contexts lack ACSE or MMS abstract syntax")
    context, aarq_bytes = _pdv_list(normal[0x61])
    if context != acse_context:
        raise MmsDecodeError(f"AARQ sent in presentation context {context}, ACSE is {acse_context}")
    aarq = _one(aarq_bytes, "AARQ")
    if aarq.tag != 0x60:
        raise MmsDecodeError(f"expected AARQ [APPLICATION 0], got tag 0x{aarq.tag:X}")
    acse = _fields(aarq.value)
    app_context = ber.decode_oid(_one(acse[0xA1], "application context").value) if 0xA1 in acse else None
    mechanism = ber.decode_oid(acse[0x8B]) if 0x8B in acse else None
    auth_value = None
    if 0xAC in acse:
        auth_value = _one(acse[0xAC], "authentication value").value
    external = _one(acse[0xBE], "user-information")
    if external.tag != 0x28:
        raise MmsDecodeError(f"AARQ user-information is not EXTERNAL (tag 0x{external.tag:X})")
    single = next(t for t in ber.iter_tlvs(external.value) if t.tag == 0xA0)
    initiate = _one(single.value, "initiate-RequestPDU")
    if initiate.tag != 0xA8:
        raise MmsDecodeError(f"expected initiate-RequestPDU [8], got tag 0x{initiate.tag:X}")
    f = _fields(initiate.value)
    detail = _fields(f[0xA4])
    return AssociationRequest(
        calling_ap_title=_ap_title(acse[0xA6]) if 0xA6 in acse else None,
        calling_ae_qualifier=_ae_qualifier(acse[0xA7]) if 0xA7 in acse else None,
        called_ap_title=_ap_title(acse[0xA2]) if 0xA2 in acse else None,
        called_ae_qualifier=_ae_qualifier(acse[0xA3]) if 0xA3 in acse else None,
        application_context=app_context, authentication_mechanism=mechanism, authentication_value=auth_value,
        calling_session_selector=connect.parameters.get(51, b""),
        called_session_selector=connect.parameters.get(52, b""),
        calling_presentation_selector=normal.get(0x81, b""), called_presentation_selector=normal.get(0x82, b""),
        contexts=tuple(contexts), acse_context=acse_context, mms_context=mms_context,
        max_pdu_size=ber.decode_integer(f[0x80]) if 0x80 in f else None,
        max_outstanding_calling=ber.decode_integer(f[0x81]), max_outstanding_called=ber.decode_integer(f[0x82]),
        nesting_level=ber.decode_integer(f[0x83]) if 0x83 in f else None,
        version=ber.decode_integer(detail[0x80]), parameter_cbb=detail.get(0x81, b"\x00"),
        services_supported=detail.get(0x82, b"\x00"),
    )


def _oid_tlv(tag: int, oid: tuple[int, ...]) -> bytes:
    return ber.encode_tlv(tag, ber.encode_tlv(0x06, ber.encode_oid(oid)))


def _int_tlv(tag: int, value: int) -> bytes:
    return ber.encode_tlv(tag, ber.encode_integer(value))


def _aare(result: int, diagnostic: int, responding_ap_title: tuple[int, ...] | None,
          responding_ae_qualifier: int | None, user_information: bytes) -> bytes:
    body = (ber.encode_tlv(0x80, b"\x07\x80")  # protocol-version: version1
            + _oid_tlv(0xA1, OID_MMS_CONTEXT)
            + ber.encode_tlv(0xA2, _int_tlv(0x02, result))
            + ber.encode_tlv(0xA3, ber.encode_tlv(0xA1, _int_tlv(0x02, diagnostic))))  # acse-service-user
    if responding_ap_title is not None:
        body += _oid_tlv(0xA4, responding_ap_title)
    if responding_ae_qualifier is not None:
        body += ber.encode_tlv(0xA5, _int_tlv(0x02, responding_ae_qualifier))
    return ber.encode_tlv(0x61, body + user_information)


def _cpa(request: AssociationRequest, aare: bytes) -> bytes:
    transfer = ber.encode_tlv(0x81, ber.encode_oid(OID_BER))
    results = b"".join(ber.encode_tlv(0x30, ber.encode_tlv(0x80, b"\x00") + transfer) for _ in request.contexts)
    normal = (ber.encode_tlv(0x83, request.called_presentation_selector)
              + ber.encode_tlv(0xA5, results)
              + _fully_encoded(request.acse_context, aare))
    return ber.encode_tlv(0x31, ber.encode_tlv(0xA0, ber.encode_tlv(0x80, b"\x01")) + ber.encode_tlv(0xA2, normal))


def _accept_spdu(user_data: bytes) -> bytes:
    item = _session_item(19, b"\x00") + _session_item(22, b"\x02")  # protocol options, version 2
    return _spdu(SpduType.ACCEPT, _session_item(5, item) + _session_item(20, b"\x00\x02")
                 + _session_item(_USER_DATA, user_data))


def encode_association_accept(request: AssociationRequest, *, max_pdu_size: int, max_outstanding: int,
                              nesting_level: int, responding_ap_title: tuple[int, ...] | None,
                              responding_ae_qualifier: int | None) -> tuple[bytes, int]:
    """The session ACCEPT / CPA / AARE (accepted) / initiate-ResponsePDU, and the PDU size agreed."""
    pdu_size = min(max_pdu_size, request.max_pdu_size or max_pdu_size)
    detail = _int_tlv(0x80, 1) + ber.encode_tlv(0x81, PARAMETER_CBB) + ber.encode_tlv(0x82, SERVICES_SUPPORTED)
    initiate = ber.encode_tlv(0xA9, (
        _int_tlv(0x80, pdu_size)
        + _int_tlv(0x81, max(1, min(max_outstanding, request.max_outstanding_calling)))
        + _int_tlv(0x82, max(1, min(max_outstanding, request.max_outstanding_called)))
        + _int_tlv(0x83, min(nesting_level, request.nesting_level or nesting_level))
        + ber.encode_tlv(0xA4, detail)))
    external = ber.encode_tlv(0x28, _int_tlv(0x02, request.mms_context) + ber.encode_tlv(0xA0, initiate))
    aare = _aare(0, 0, responding_ap_title, responding_ae_qualifier, ber.encode_tlv(0xBE, external))
    return _accept_spdu(_cpa(request, aare)), pdu_size


def encode_association_refusal(request: AssociationRequest, diagnostic: RefusalDiagnostic | int, *,
                               responding_ap_title: tuple[int, ...] | None = None,
                               responding_ae_qualifier: int | None = None) -> bytes:
    """A session ACCEPT / CPA carrying an AARE with result rejected-permanent and the ACSE user diagnostic.

    The presentation connection is accepted and the ACSE association refused, as ISO 8650 lays it out; the
    calling side then disconnects the transport.
    """
    aare = _aare(1, int(diagnostic), responding_ap_title, responding_ae_qualifier, b"")
    return _accept_spdu(_cpa(request, aare))


def encode_association_request(*, calling_ap_title: tuple[int, ...] | None, calling_ae_qualifier: int | None,
                               called_ap_title: tuple[int, ...] | None, called_ae_qualifier: int | None,
                               max_pdu_size: int = 65000, max_outstanding: int = 5, nesting_level: int = 10,
                               services_supported: bytes = SERVICES_SUPPORTED) -> bytes:
    """A session CONNECT carrying CP-type / AARQ / initiate-RequestPDU (ACSE context 1, MMS context 3)."""
    detail = _int_tlv(0x80, 1) + ber.encode_tlv(0x81, PARAMETER_CBB) + ber.encode_tlv(0x82, services_supported)
    initiate = ber.encode_tlv(0xA8, _int_tlv(0x80, max_pdu_size) + _int_tlv(0x81, max_outstanding)
                              + _int_tlv(0x82, max_outstanding) + _int_tlv(0x83, nesting_level)
                              + ber.encode_tlv(0xA4, detail))
    body = _oid_tlv(0xA1, OID_MMS_CONTEXT)
    if called_ap_title is not None:
        body += _oid_tlv(0xA2, called_ap_title)
    if called_ae_qualifier is not None:
        body += ber.encode_tlv(0xA3, _int_tlv(0x02, called_ae_qualifier))
    if calling_ap_title is not None:
        body += _oid_tlv(0xA6, calling_ap_title)
    if calling_ae_qualifier is not None:
        body += ber.encode_tlv(0xA7, _int_tlv(0x02, calling_ae_qualifier))
    body += ber.encode_tlv(0xBE, ber.encode_tlv(0x28, _int_tlv(0x02, 3) + ber.encode_tlv(0xA0, initiate)))
    aarq = ber.encode_tlv(0x60, body)

    def context(identifier: int, syntax: tuple[int, ...]) -> bytes:
        return ber.encode_tlv(0x30, _int_tlv(0x02, identifier) + ber.encode_tlv(0x06, ber.encode_oid(syntax))
                              + ber.encode_tlv(0x30, ber.encode_tlv(0x06, ber.encode_oid(OID_BER))))

    normal = (ber.encode_tlv(0x81, b"\x00\x00\x00\x01") + ber.encode_tlv(0x82, b"\x00\x00\x00\x01")
              + ber.encode_tlv(0xA4, context(1, OID_ACSE) + context(3, OID_MMS)) + _fully_encoded(1, aarq))
    cp = ber.encode_tlv(0x31, ber.encode_tlv(0xA0, ber.encode_tlv(0x80, b"\x01")) + ber.encode_tlv(0xA2, normal))
    item = _session_item(19, b"\x00") + _session_item(22, b"\x02")
    return _spdu(SpduType.CONNECT, _session_item(5, item) + _session_item(20, b"\x00\x02")
                 + _session_item(51, b"\x00\x01") + _session_item(52, b"\x00\x01") + _session_item(_USER_DATA, cp))


@_decoding("release request")
def decode_release_request(finish: SessionPdu) -> int | None:
    """The RLRQ reason of a session FINISH (None when the FINISH carries no RLRQ)."""
    if finish.spdu != SpduType.FINISH:
        raise MmsDecodeError(f"expected session FINISH, got SPDU 0x{finish.spdu:02X}")
    if not finish.user_data:
        return None
    _, apdu = decode_presentation_data(finish.user_data)
    rlrq = _one(apdu, "RLRQ")
    if rlrq.tag != 0x62:
        raise MmsDecodeError(f"expected RLRQ [APPLICATION 2], got tag 0x{rlrq.tag:X}")
    reason = _fields(rlrq.value).get(0x80)
    return ber.decode_integer(reason) if reason else None


def encode_release_request(acse_context: int = 1) -> bytes:
    """Session FINISH carrying an RLRQ (reason normal)."""
    rlrq = ber.encode_tlv(0x62, _int_tlv(0x80, 0))
    return _spdu(SpduType.FINISH, _session_item(_USER_DATA, _fully_encoded(acse_context, rlrq)))


def encode_release_response(acse_context: int) -> bytes:
    """Session DISCONNECT carrying an RLRE (reason normal): the answer to FINISH / RLRQ."""
    rlre = ber.encode_tlv(0x63, _int_tlv(0x80, 0))
    return _spdu(SpduType.DISCONNECT, _session_item(_USER_DATA, _fully_encoded(acse_context, rlre)))


def encode_abort(acse_context: int, *, provider: bool = False) -> bytes:
    """Session ABORT (transport disconnect) with ARU-PPDU / ABRT (source: service user, or provider)."""
    abrt = ber.encode_tlv(0x64, _int_tlv(0x80, 1 if provider else 0))
    aru = ber.encode_tlv(0xA0, _fully_encoded(acse_context, abrt))
    return _spdu(SpduType.ABORT, _session_item(17, b"\x03") + _session_item(_USER_DATA, aru))


# ------------------------------------------------------------------------------------------------ names and access


def encode_object_name(name: ObjectName) -> bytes:
    if name.scope is NameScope.VCC:
        return ber.encode_tlv(0x80, name.item.encode("ascii"))
    if name.scope is NameScope.ASSOCIATION:
        return ber.encode_tlv(0x82, name.item.encode("ascii"))
    assert name.domain is not None
    return ber.encode_tlv(0xA1, ber.encode_tlv(0x1A, name.domain.encode("ascii"))
                          + ber.encode_tlv(0x1A, name.item.encode("ascii")))


@_decoding("ObjectName")
def decode_object_name(tlv: ber.Tlv) -> ObjectName:
    if tlv.tag == 0x80:
        return ObjectName.vcc(_identifier(tlv.value))
    if tlv.tag == 0x82:
        return ObjectName.association(_identifier(tlv.value))
    if tlv.tag == 0xA1:
        parts = _tlvs(tlv.value)
        if len(parts) != 2 or any(p.tag != 0x1A for p in parts):
            raise MmsDecodeError("domain-specific name is not two identifiers")
        return ObjectName.in_domain(_identifier(parts[0].value), _identifier(parts[1].value))
    raise MmsDecodeError(f"unsupported ObjectName tag 0x{tlv.tag:X}")


def _encode_alternate_access(path: tuple[Component, ...]) -> bytes:
    """AlternateAccess content for a component path: selectAccess at the leaf, selectAlternateAccess above."""
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(head, int):
            return ber.encode_tlv(0x82, ber.encode_unsigned(head))
        return ber.encode_tlv(0x81, head.encode("ascii"))
    selection = (ber.encode_tlv(0x81, ber.encode_unsigned(head)) if isinstance(head, int)
                 else ber.encode_tlv(0x80, head.encode("ascii")))
    return ber.encode_tlv(0xA0, selection + ber.encode_tlv(0x30, _encode_alternate_access(rest)))


def _decode_alternate_access(content: bytes, depth: int = 0) -> tuple[Component, ...]:
    if depth > 16:
        raise MmsDecodeError("alternate access nested deeper than 16 levels")
    items = _tlvs(content)
    if len(items) != 1:
        raise MmsDecodeError(f"alternate access with {len(items)} selections (one path is supported)")
    sel = items[0]
    if sel.tag == 0x81:
        return (_identifier(sel.value),)
    if sel.tag == 0x82:
        return (ber.decode_unsigned(sel.value),)
    if sel.tag == 0xA0:
        parts = _tlvs(sel.value)
        if len(parts) != 2 or parts[1].tag != 0x30:
            raise MmsDecodeError("selectAlternateAccess is not a selection and an alternate access")
        if parts[0].tag == 0x80:
            head: Component = _identifier(parts[0].value)
        elif parts[0].tag == 0x81:
            head = ber.decode_unsigned(parts[0].value)
        else:
            raise MmsDecodeError(f"unsupported accessSelection tag 0x{parts[0].tag:X}")
        return (head, *_decode_alternate_access(parts[1].value, depth + 1))
    raise MmsDecodeError(f"unsupported alternate access selection tag 0x{sel.tag:X}")


def _encode_variable_list(variables: Sequence[VariableSpec]) -> bytes:
    out = bytearray()
    for spec in variables:
        body = ber.encode_tlv(0xA0, encode_object_name(spec.name))
        if spec.component:
            body += ber.encode_tlv(0xA5, _encode_alternate_access(spec.component))
        out += ber.encode_tlv(0x30, body)
    return bytes(out)


def _decode_variable_list(content: bytes) -> tuple[VariableSpec, ...]:
    out: list[VariableSpec] = []
    for entry in ber.iter_tlvs(content):
        if entry.tag != 0x30:
            raise MmsDecodeError(f"list of variables entry with tag 0x{entry.tag:X}")
        parts = _tlvs(entry.value)
        if not parts or parts[0].tag != 0xA0:
            raise MmsDecodeError("variableSpecification is not a name [0]")
        name = decode_object_name(_one(parts[0].value, "variable name"))
        component: tuple[Component, ...] = ()
        for extra in parts[1:]:
            if extra.tag != 0xA5:
                raise MmsDecodeError(f"unexpected tag 0x{extra.tag:X} after a variableSpecification")
            component = _decode_alternate_access(extra.value)
        out.append(VariableSpec(name, component))
    return tuple(out)


def encode_variable_access(access: VariableAccess) -> bytes:
    """VariableAccessSpecification (listOfVariable [0] or variableListName [1])."""
    if access.list_name is not None:
        return ber.encode_tlv(0xA1, encode_object_name(access.list_name))
    return ber.encode_tlv(0xA0, _encode_variable_list(access.variables))


@_decoding("VariableAccessSpecification")
def decode_variable_access(tlv: ber.Tlv) -> VariableAccess:
    if tlv.tag == 0xA0:
        return VariableAccess(variables=_decode_variable_list(tlv.value))
    if tlv.tag == 0xA1:
        return VariableAccess(list_name=decode_object_name(_one(tlv.value, "variable list name")))
    raise MmsDecodeError(f"unsupported VariableAccessSpecification tag 0x{tlv.tag:X}")


# ------------------------------------------------------------------------------------------------ MMS PDUs


@dataclass(frozen=True, slots=True)
class ReadRequest:
    access: VariableAccess
    with_result: bool = False


@dataclass(frozen=True, slots=True)
class WriteRequest:
    access: VariableAccess
    values: tuple[IECData, ...]


@dataclass(frozen=True, slots=True)
class NameListRequest:
    object_class: ObjectClass
    scope: NameScope
    domain: str | None = None
    continue_after: str | None = None


@dataclass(frozen=True, slots=True)
class VariableAttributesRequest:
    name: ObjectName


@dataclass(frozen=True, slots=True)
class DefineListRequest:
    name: ObjectName
    variables: tuple[VariableSpec, ...]


@dataclass(frozen=True, slots=True)
class DeleteListRequest:
    scope: DeleteScope
    names: tuple[ObjectName, ...] = ()
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class ListAttributesRequest:
    name: ObjectName


@dataclass(frozen=True, slots=True)
class IdentifyRequest:
    pass


ServiceRequest = (ReadRequest | WriteRequest | NameListRequest | VariableAttributesRequest | DefineListRequest
                  | DeleteListRequest | ListAttributesRequest | IdentifyRequest)

SERVICE_GET_NAME_LIST, SERVICE_IDENTIFY, SERVICE_READ, SERVICE_WRITE = 1, 2, 4, 5
SERVICE_GET_VARIABLE_ACCESS_ATTRIBUTES, SERVICE_DEFINE_NVL = 6, 11
SERVICE_GET_NVL_ATTRIBUTES, SERVICE_DELETE_NVL = 12, 13


@dataclass(frozen=True, slots=True)
class ConfirmedRequestPdu:
    """A confirmed-RequestPDU: its invoke id, the service number and the undecoded service body."""

    invoke_id: int
    service: int
    body: bytes
    constructed: bool = True


@dataclass(frozen=True, slots=True)
class ConcludeRequestPdu:
    pass


@dataclass(frozen=True, slots=True)
class RejectPdu:
    invoke_id: int | None
    reason_tag: int
    code: int


@dataclass(frozen=True, slots=True)
class OtherPdu:
    """An MMS PDU a server does not expect (a response, cancel, initiate...): it is rejected."""

    tag: int
    invoke_id: int | None = None


IncomingPdu = ConfirmedRequestPdu | ConcludeRequestPdu | RejectPdu | OtherPdu


@_decoding("MMS PDU")
def decode_mms_pdu(mms_pdu: bytes) -> IncomingPdu:
    outer = _one(mms_pdu, "MMS PDU")
    if outer.tag == 0xA0:
        parts = _tlvs(outer.value)
        if len(parts) < 2 or parts[0].tag != 0x02:
            raise MmsDecodeError("confirmed-RequestPDU without invokeID and service")
        invoke_id = ber.decode_integer(parts[0].value)
        if not 0 <= invoke_id <= 0xFFFFFFFF:
            raise MmsDecodeError(f"invokeID {invoke_id} out of Unsigned32")
        service = parts[-1]  # listOfModifier, when present, comes between (and is not supported)
        if len(parts) != 2:
            raise MmsDecodeError(f"confirmed-RequestPDU {invoke_id} with modifiers")
        return ConfirmedRequestPdu(invoke_id, ber.tag_number(service.tag), service.value,
                                   ber.is_constructed(service.tag))
    if outer.tag == 0x8B:
        return ConcludeRequestPdu()
    if outer.tag == 0xA4:
        invoke: int | None = None
        reason_tag, code = -1, -1
        for t in ber.iter_tlvs(outer.value):
            if t.tag == 0x80:
                invoke = ber.decode_unsigned(t.value)
            else:
                reason_tag, code = ber.tag_number(t.tag), ber.decode_integer(t.value)
        return RejectPdu(invoke, reason_tag, code)
    invoke_of_other = None
    if outer.tag in (0xA1, 0xA2) and ber.is_constructed(outer.tag):
        first = ber.decode_tlv(outer.value) if outer.value else None
        if first is not None and first.tag in (0x02, 0x80):
            invoke_of_other = ber.decode_unsigned(first.value)
    return OtherPdu(outer.tag, invoke_of_other)


def _decode_read(body: bytes) -> ReadRequest:
    with_result = False
    access: VariableAccess | None = None
    for t in ber.iter_tlvs(body):
        if t.tag == 0x80:
            with_result = ber.decode_boolean(t.value)
        elif t.tag == 0xA1:
            access = decode_variable_access(_one(t.value, "variableAccessSpecification"))
        else:
            raise MmsDecodeError(f"unexpected tag 0x{t.tag:X} in Read-Request")
    if access is None:
        raise MmsDecodeError("Read-Request without variableAccessSpecification")
    return ReadRequest(access, with_result)


def _decode_write(body: bytes) -> WriteRequest:
    parts = _tlvs(body)
    if len(parts) != 2 or parts[1].tag != 0xA0:
        raise MmsDecodeError("Write-Request is not an access specification and a listOfData")
    access = decode_variable_access(parts[0])
    values = tuple(decode_data_sequence(parts[1].value))
    if access.list_name is None and len(values) != len(access.variables):
        raise MmsDecodeError(f"Write-Request of {len(access.variables)} variables with {len(values)} values")
    return WriteRequest(access, values)


def _decode_name_list(body: bytes) -> NameListRequest:
    f = _fields(body)
    klass = _one(f[0xA0], "objectClass")
    if klass.tag != 0x80:
        raise MmsDecodeError(f"objectClass tag 0x{klass.tag:X} (only basicObjectClass)")
    object_class = ObjectClass(ber.decode_integer(klass.value))
    scope_tlv = _one(f[0xA1], "objectScope")
    domain = None
    if scope_tlv.tag == 0x80:
        scope = NameScope.VCC
    elif scope_tlv.tag == 0x81:
        scope, domain = NameScope.DOMAIN, _identifier(scope_tlv.value)
    elif scope_tlv.tag == 0x82:
        scope = NameScope.ASSOCIATION
    else:
        raise MmsDecodeError(f"objectScope tag 0x{scope_tlv.tag:X}")
    after = _identifier(f[0x82]) if 0x82 in f else None
    return NameListRequest(object_class, scope, domain, after)


def _decode_define_list(body: bytes) -> DefineListRequest:
    parts = _tlvs(body)
    if len(parts) != 2 or parts[1].tag != 0xA0:
        raise MmsDecodeError("DefineNamedVariableList-Request is not a name and a list of variables")
    variables = _decode_variable_list(parts[1].value)
    if not variables:
        raise MmsDecodeError("DefineNamedVariableList-Request with an empty list")
    return DefineListRequest(decode_object_name(parts[0]), variables)


def _decode_delete_list(body: bytes) -> DeleteListRequest:
    f = _fields(body)
    scope = DeleteScope(ber.decode_integer(f[0x80])) if 0x80 in f else DeleteScope.SPECIFIC
    names = tuple(decode_object_name(t) for t in ber.iter_tlvs(f.get(0xA1, b"")))
    domain = _identifier(f[0x82]) if 0x82 in f else None
    return DeleteListRequest(scope, names, domain)


@_decoding("confirmed service request")
def decode_service_request(request: ConfirmedRequestPdu) -> ServiceRequest | None:
    """The typed request of a confirmed-RequestPDU; None for a service this layer does not implement."""
    body, service = request.body, request.service
    if service == SERVICE_READ:
        return _decode_read(body)
    if service == SERVICE_WRITE:
        return _decode_write(body)
    if service == SERVICE_GET_NAME_LIST:
        return _decode_name_list(body)
    if service == SERVICE_IDENTIFY:
        if request.constructed or body:
            raise MmsDecodeError("Identify-Request is not an empty NULL")
        return IdentifyRequest()
    if service == SERVICE_GET_VARIABLE_ACCESS_ATTRIBUTES:
        choice = _one(body, "GetVariableAccessAttributes-Request")
        if choice.tag != 0xA0:
            raise MmsDecodeError("GetVariableAccessAttributes by address is not supported")
        return VariableAttributesRequest(decode_object_name(_one(choice.value, "variable name")))
    if service == SERVICE_DEFINE_NVL:
        return _decode_define_list(body)
    if service == SERVICE_GET_NVL_ATTRIBUTES:
        return ListAttributesRequest(decode_object_name(_one(body, "variable list name")))
    if service == SERVICE_DELETE_NVL:
        return _decode_delete_list(body)
    return None


# ------------------------------------------------------------------------------------------------ PDU encoders


def encode_confirmed_request(invoke_id: int, service_tlv: bytes) -> bytes:
    return ber.encode_tlv(0xA0, _int_tlv(0x02, invoke_id) + service_tlv)


def encode_confirmed_response(invoke_id: int, service_tlv: bytes) -> bytes:
    """confirmed-ResponsePDU; ``service_tlv`` is the whole ConfirmedServiceResponse TLV (from encode_*_response)."""
    return ber.encode_tlv(0xA1, _int_tlv(0x02, invoke_id) + service_tlv)


def encode_confirmed_error(invoke_id: int, error_class: int, code: int) -> bytes:
    error = ber.encode_tlv(0xA0, _int_tlv(ber.make_tag(error_class), code))
    return ber.encode_tlv(0xA2, _int_tlv(0x80, invoke_id) + ber.encode_tlv(0xA2, error))


def encode_reject(invoke_id: int | None, reason: RejectReason) -> bytes:
    tag_number, code = reason.value
    body = b"" if invoke_id is None else _int_tlv(0x80, invoke_id)
    return ber.encode_tlv(0xA4, body + _int_tlv(ber.make_tag(tag_number), code))


def encode_conclude_request() -> bytes:
    return ber.encode_tlv(0x8B)


def encode_conclude_response() -> bytes:
    return ber.encode_tlv(0x8C)


def encode_access_results(results: Sequence[AccessResult]) -> bytes:
    out = bytearray()
    for r in results:
        out += _int_tlv(0x80, int(r)) if isinstance(r, int) else encode_data(r)
    return bytes(out)


def encode_information_report(access: VariableAccess, results: Sequence[AccessResult]) -> bytes:
    """unconfirmed-PDU / informationReport on a named list (any scope) or on a list of variables."""
    if access.list_name is None and len(access.variables) != len(results):
        raise ValueError(f"information report of {len(access.variables)} variables with {len(results)} results")
    report = encode_variable_access(access) + ber.encode_tlv(0xA0, encode_access_results(results))
    return ber.encode_tlv(0xA3, ber.encode_tlv(0xA0, report))


def _service(number: int, content: bytes) -> bytes:
    return ber.encode_tlv(ber.make_tag(number, constructed=True), content)


# requests (what a client sends; used by tests and by the fuzzing seeds)

def encode_read_request(access: VariableAccess, *, with_result: bool = False) -> bytes:
    head = ber.encode_tlv(0x80, ber.encode_boolean(True)) if with_result else b""
    return _service(SERVICE_READ, head + ber.encode_tlv(0xA1, encode_variable_access(access)))


def encode_write_request(access: VariableAccess, values: Sequence[IECData]) -> bytes:
    data = ber.encode_tlv(0xA0, b"".join(encode_data(v) for v in values))
    return _service(SERVICE_WRITE, encode_variable_access(access) + data)


def encode_name_list_request(object_class: ObjectClass, scope: NameScope, domain: str | None = None,
                             continue_after: str | None = None) -> bytes:
    content = ber.encode_tlv(0xA0, _int_tlv(0x80, int(object_class)))
    if scope is NameScope.DOMAIN:
        if domain is None:
            raise ValueError("a domain-scope name list needs a domain")
        chosen = ber.encode_tlv(0x81, domain.encode("ascii"))
    else:
        chosen = ber.encode_tlv(0x80 if scope is NameScope.VCC else 0x82)
    content += ber.encode_tlv(0xA1, chosen)
    if continue_after is not None:
        content += ber.encode_tlv(0x82, continue_after.encode("ascii"))
    return _service(SERVICE_GET_NAME_LIST, content)


def encode_identify_request() -> bytes:
    return ber.encode_tlv(0x82)


def encode_variable_attributes_request(name: ObjectName) -> bytes:
    return _service(SERVICE_GET_VARIABLE_ACCESS_ATTRIBUTES, ber.encode_tlv(0xA0, encode_object_name(name)))


def encode_define_list_request(name: ObjectName, variables: Sequence[VariableSpec]) -> bytes:
    return _service(SERVICE_DEFINE_NVL, encode_object_name(name) + ber.encode_tlv(0xA0,
                                                                                  _encode_variable_list(variables)))


def encode_delete_list_request(names: Sequence[ObjectName], scope: DeleteScope = DeleteScope.SPECIFIC,
                               domain: str | None = None) -> bytes:
    content = _int_tlv(0x80, int(scope))
    if names:
        content += ber.encode_tlv(0xA1, b"".join(encode_object_name(n) for n in names))
    if domain is not None:
        content += ber.encode_tlv(0x82, domain.encode("ascii"))
    return _service(SERVICE_DELETE_NVL, content)


def encode_list_attributes_request(name: ObjectName) -> bytes:
    return _service(SERVICE_GET_NVL_ATTRIBUTES, encode_object_name(name))


# responses (ConfirmedServiceResponse TLVs, for encode_confirmed_response)

def encode_read_response(results: Sequence[AccessResult], access: VariableAccess | None = None) -> bytes:
    head = ber.encode_tlv(0xA0, encode_variable_access(access)) if access is not None else b""
    return _service(SERVICE_READ, head + ber.encode_tlv(0xA1, encode_access_results(results)))


def encode_write_response(errors: Sequence[DataAccessCode | None]) -> bytes:
    return _service(SERVICE_WRITE, b"".join(ber.encode_tlv(0x81) if e is None else _int_tlv(0x80, int(e))
                                            for e in errors))


def encode_name_list_response(names: Sequence[str], more_follows: bool) -> bytes:
    listed = b"".join(ber.encode_tlv(0x1A, n.encode("ascii")) for n in names)
    return _service(SERVICE_GET_NAME_LIST, ber.encode_tlv(0xA0, listed)
                    + ber.encode_tlv(0x81, ber.encode_boolean(more_follows)))


def encode_identify_response(vendor: str, model: str, revision: str) -> bytes:
    return _service(SERVICE_IDENTIFY, ber.encode_tlv(0x80, vendor.encode("ascii"))
                    + ber.encode_tlv(0x81, model.encode("ascii")) + ber.encode_tlv(0x82, revision.encode("ascii")))


def encode_variable_attributes_response(mms_type: MmsType, *, deletable: bool = False) -> bytes:
    return _service(SERVICE_GET_VARIABLE_ACCESS_ATTRIBUTES, ber.encode_tlv(0x80, ber.encode_boolean(deletable))
                    + ber.encode_tlv(0xA2, encode_type_description(mms_type)))


def encode_define_list_response() -> bytes:
    return ber.encode_tlv(ber.make_tag(SERVICE_DEFINE_NVL))  # [11] IMPLICIT NULL


def encode_delete_list_response(matched: int, deleted: int) -> bytes:
    return _service(SERVICE_DELETE_NVL, _int_tlv(0x80, matched) + _int_tlv(0x81, deleted))


def encode_list_attributes_response(variables: Sequence[VariableSpec], *, deletable: bool) -> bytes:
    return _service(SERVICE_GET_NVL_ATTRIBUTES, ber.encode_tlv(0x80, ber.encode_boolean(deletable))
                    + ber.encode_tlv(0xA1, _encode_variable_list(variables)))


def decode_data_value(tlv_bytes: bytes) -> IECData:
    """One MMS Data value from its TLV (tests and the client use it); MmsDecodeError when malformed."""
    try:
        tlv = _one(tlv_bytes, "Data")
        return decode_data(tlv.tag, tlv.value)
    except MmsDecodeError:
        raise
    except _DECODE_FAILURES as exc:
        raise MmsDecodeError(f"bad Data value: {exc}") from exc
