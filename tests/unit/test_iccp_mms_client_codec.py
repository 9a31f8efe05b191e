"""Golden bytes of what the MMS client sends (the shared request encoders of iccp.mms.codec, checked here
independently of the server's tests) and of the client-side decoders of iccp.mms.client_codec, hand-checked against
the ASN.1 of ISO 9506-2 (MMS), ISO 8650 (ACSE) and ISO 8327 (session); and a bounded fuzz of the decoder."""

from __future__ import annotations

import random

import pytest
from open61850.data import BoolData, IntData

from iccp.errors import MmsDecodeError
from iccp.mms import client_codec as c
from iccp.mms import codec as enc
from iccp.mms.codec import DataAccessCode, NameScope, ObjectClass, ObjectName, VariableAccess, VariableSpec
from iccp.mms.server import DeleteResult, Identity, ListAttributes

V = ObjectName.vcc("V")
DS_AA = ObjectName.association("DS")
DS_DOM = ObjectName.in_domain("ICC1", "DS")


def variables(*specs: VariableSpec | ObjectName) -> VariableAccess:
    return VariableAccess(variables=tuple(s if isinstance(s, VariableSpec) else VariableSpec(s) for s in specs))


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(("encoded", "expected"), [
    # getNameList [1] { objectClass [0] { basic [0] 0 }, objectScope [1] { aaSpecific [2] NULL } }
    (enc.encode_name_list_request(ObjectClass.NAMED_VARIABLE, NameScope.ASSOCIATION), "a1 09 a0 03 800100 a1 02 8200"),
    # ... domainSpecific [1] "ICC1", continueAfter [2] "X"
    (enc.encode_name_list_request(ObjectClass.NAMED_VARIABLE, NameScope.DOMAIN, "ICC1", "X"),
     "a1 10 a0 03 800100 a1 06 8104 49434331 82 01 58"),
    (enc.encode_name_list_request(ObjectClass.DOMAIN, NameScope.VCC), "a1 09 a0 03 800109 a1 02 8000"),
    # read [4] { variableAccessSpecification [1] { listOfVariable [0] { SEQUENCE { name [0] domain-specific [1]
    #   { "ICC1", "Transfer_Set" }, alternateAccess [5] { selectAccess component [1] "Status" } } } } }
    (enc.encode_read_request(variables(VariableSpec(ObjectName.in_domain("ICC1", "Transfer_Set"), ("Status",)))),
     "a4 28 a1 26 a0 24 30 22 a0 16 a1 14 1a04 49434331 1a0c 5472616e736665725f536574 a5 08 8106 537461747573"),
    # a component path: selectAlternateAccess [0] { component [0] "mag", AlternateAccess { component [1] "f" } }
    (enc.encode_read_request(variables(VariableSpec(ObjectName.vcc("X"), ("mag", "f")))),
     "a4 19 a1 17 a0 15 30 13 a0 03 800158 a5 0c a0 0a 8003 6d6167 30 03 810166"),
    # read of a named variable list: variableListName [1] aa-specific [2] "DS"
    (enc.encode_read_request(VariableAccess(list_name=DS_AA)), "a4 08 a1 06 a1 04 8202 4453"),
    # write [5] { listOfVariable [0] { { name [0] vmd-specific "V" } }, listOfData [0] { boolean TRUE } }
    (enc.encode_write_request(variables(V), [BoolData(True)]), "a5 0e a0 07 30 05 a0 03 800156 a0 03 8301ff"),
    # getVariableAccessAttributes [6] { name [0] vmd-specific "V" }
    (enc.encode_variable_attributes_request(V), "a6 05 a0 03 800156"),
    # defineNamedVariableList [11] { aa-specific "DS", listOfVariable [0] { { name [0] "V" } } }
    (enc.encode_define_list_request(DS_AA, [VariableSpec(V)]), "ab 0d 8202 4453 a0 07 30 05 a0 03 800156"),
    # deleteNamedVariableList [13] { scopeOfDelete [0] specific, listOfVariableListName [1] { domain-specific } }
    (enc.encode_delete_list_request([DS_DOM]), "ad 11 800100 a1 0c a1 0a 1a04 49434331 1a02 4453"),
    # getNamedVariableListAttributes [12] ObjectName (explicit: the request type is a CHOICE)
    (enc.encode_list_attributes_request(DS_AA), "ac 04 8202 4453"),
    (enc.encode_identify_request(), "82 00"),
    # Session FINISH: Transport Disconnect (17) = released; User Data (193) = fully-encoded-data
    #   { PDV-list { context 1 (ACSE), single-ASN1-type [0] RLRQ [APPLICATION 2] { reason [0] normal } } }
    (c.finish_spdu(), "09 13 110101 c1 0e 61 0c 30 0a 020101 a0 05 62 03 800100"),
    # Session ABORT: released + user abort; ARU-PPDU normal-mode [0] { user data } with ABRT { source [0] user }
    (enc.encode_abort(1), "19 15 110103 c1 10 a0 0e 61 0c 30 0a 020101 a0 05 64 03 800100"),
])
def test_encoder_golden_bytes(encoded: bytes, expected: str) -> None:
    assert encoded.hex() == h(expected).hex()


@pytest.mark.parametrize(("pdu", "expected"), [
    # confirmed-ErrorPDU { invokeID [0] 5, serviceError [2] { errorClass [0] { definition [2] 1 } } }
    ("a2 0a 800105 a2 05 a0 03 820101", c.ConfirmedError(5, 2, 1)),
    # rejectPDU { originalInvokeID [0] 7, confirmed-requestPDU [1] unrecognized-service (1) }
    ("a4 06 800107 810101", c.RejectPdu(7, 1, 1)),
    # confirmed-ResponsePDU { invokeID 3, identify [2] { vendor [0] "v", model [1] "m", revision [2] "1" } }
    ("a1 0e 020103 a2 09 800176 81016d 820131", c.ConfirmedResponse(3, 2, h("800176 81016d 820131"))),
    # informationReport on an aa-specific list with one INTEGER 5
    ("a3 0d a0 0b a1 04 8202 4453 a0 03 850105", c.InformationReport(DS_AA, (), (IntData(5),))),
    # informationReport on a domain-specific list with a DataAccessError object-non-existent (10)
    ("a3 13 a0 11 a1 0a a1 08 1a02 4943 1a02 4453 a0 03 80010a",
     c.InformationReport(ObjectName.in_domain("IC", "DS"), (), (DataAccessCode.OBJECT_NON_EXISTENT,))),
    # informationReport on a list of variables, one with component access (selectAccess component "OK")
    ("a3 16 a0 14 a0 0d 30 0b a0 03 800156 a5 04 8102 4f4b a0 03 8301ff",
     c.InformationReport(None, (VariableSpec(V, ("OK",)),), (BoolData(True),))),
    ("8c 00", c.ConcludeResponse()),
    ("ad 05 a0 03 890101", c.ConcludeResponse(accepted=False)),  # conclude-ErrorPDU
    ("8b 00", c.ConcludeRequest()),
])
def test_decode_incoming_golden(pdu: str, expected: c.IncomingPdu) -> None:
    assert c.decode_incoming(h(pdu)) == expected


def test_response_decoders_golden() -> None:
    assert c.decode_get_name_list_response(h("a0 06 1a0141 1a0142 810100")) == (("A", "B"), False)
    assert c.decode_get_name_list_response(h("a0 00")) == ((), True)  # moreFollows DEFAULT TRUE
    assert c.decode_identify_response(h("800176 81016d 820131")) == Identity("v", "m", "1")
    attrs = c.decode_named_variable_list_attributes_response(h("8001ff a1 0c 30 0a a0 03 800156 a5 03 810161"))
    assert attrs == ListAttributes((VariableSpec(V, ("a",)),), deletable=True)
    assert c.decode_delete_named_variable_list_response(h("800101 810100")) == DeleteResult(1, 0)
    assert c.decode_write_response(h("8100 800103")) == (None, DataAccessCode.OBJECT_ACCESS_DENIED)
    assert c.decode_read_response(h("a1 06 850101 80010a")) == (IntData(1), DataAccessCode.OBJECT_NON_EXISTENT)
    with pytest.raises(c.MmsCodecError, match="Read-Response"):
        c.decode_read_response(h("a1 03 800163"))  # DataAccessError 99 is outside ISO 9506-2


@pytest.mark.parametrize("bad", [
    "", "a1", "a1 05 0201", "a3 02 a100", "a3 05 a0 03 820100", "ff 00", "a2 03 800105",
    "a3 0a a0 08 a1 02 8100 a0 02 0000",  # an ObjectName with an unknown tag
    "a3 0b a0 09 a1 04 a1 02 1a00 a0 01 00",  # a domain-specific name without itemId
])
def test_malformed_pdus_raise_the_decode_error(bad: str) -> None:
    with pytest.raises(MmsDecodeError):
        c.decode_incoming(h(bad))


def test_fuzzed_pdus_never_raise_anything_else() -> None:
    """Bounded fuzz (fixed seed): truncations, bit flips and random bytes decode or raise MmsDecodeError only."""
    seeds = [h(x) for x in (
        "a3 16 a0 14 a0 0d 30 0b a0 03 800156 a5 04 8102 4f4b a0 03 8301ff",
        "a3 13 a0 11 a1 0a a1 08 1a02 4943 1a02 4453 a0 03 80010a",
        "a2 0a 800105 a2 05 a0 03 820101", "a4 06 800107 810101", "a1 0e 020103 a2 09 800176 81016d 820131",
    )]
    rng = random.Random(20261127)
    decoded = 0
    for i in range(5000):
        data = bytearray(rng.choice(seeds))
        mode = i % 4
        if mode == 0:
            data = data[: rng.randrange(len(data) + 1)]
        elif mode == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif mode == 2:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 6))
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 40)))
        try:
            c.decode_incoming(bytes(data))
            decoded += 1
        except MmsDecodeError:
            pass
    assert 0 < decoded < 5000  # some mutations still decode, most do not
