"""Golden bytes and bounded fuzzing of iccp.mms.codec (the MMS encoders/decoders open61850 lacks).

Each golden value was written out by hand from the ASN.1 of ISO 9506-2 (MMS), ISO 8650-1 (ACSE), ISO 8823-1
(presentation) and ISO 8327-1 (session); the comments give the derivation. Association requests are encoded
by open61850 (an independent encoder) and decoded by ours, and our AARE by open61850's decoder.
"""

from __future__ import annotations

import random

import pytest
from open61850 import ber
from open61850.data import FloatData, IntData, StructureData
from open61850.mms.association import (
    AssociationError,
    AssociationParameters,
    association_request,
    decode_association_response,
)

from iccp.errors import MmsDecodeError
from iccp.mms import codec
from iccp.mms.codec import (
    DataAccessCode,
    DeleteScope,
    NameScope,
    ObjectClass,
    ObjectName,
    RefusalDiagnostic,
    RejectReason,
    VariableAccess,
    VariableSpec,
)

ICC1_DS1 = ObjectName.in_domain("ICC1", "DS1")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(("name", "golden"), [
    (ObjectName.vcc("A"), "80 01 41"),  # vmd-specific [0] IMPLICIT Identifier
    (ObjectName.association("B"), "82 01 42"),  # aa-specific [2] IMPLICIT Identifier
    (ObjectName.in_domain("ICC1", "X"), "a1 09 1a 04 49434331 1a 01 58"),  # domain-specific [1] SEQ {domain, item}
])
def test_object_name_golden_and_round_trip(name: ObjectName, golden: str) -> None:
    encoded = codec.encode_object_name(name)
    assert encoded == h(golden)
    assert codec.decode_object_name(ber.decode_tlv(encoded)) == name


def test_object_name_scope_rules() -> None:
    with pytest.raises(ValueError, match="domain"):
        ObjectName(NameScope.DOMAIN, "X")
    with pytest.raises(ValueError, match="domain"):
        ObjectName(NameScope.VCC, "X", "D")
    assert str(ICC1_DS1) == "ICC1/DS1" and str(ObjectName.association("L")) == "@L"


# ------------------------------------------------------------------------------------------------ requests


def test_read_request_with_component_golden() -> None:
    # Read [4] { variableAccessSpecification [1] { listOfVariable [0] { SEQ { name [0] {D/TS},
    #   alternateAccess [5] { selectAccess component [1] "Status" } } } } }
    spec = VariableSpec(ObjectName.in_domain("D", "TS"), ("Status",))
    encoded = codec.encode_read_request(VariableAccess(variables=(spec,)))
    assert encoded == h("a4 1b a1 19 a0 17 30 15 a0 09 a1 07 1a 01 44 1a 02 5453 a5 08 81 06 537461747573")
    pdu = codec.decode_mms_pdu(codec.encode_confirmed_request(9, encoded))
    assert isinstance(pdu, codec.ConfirmedRequestPdu) and pdu.invoke_id == 9 and pdu.service == 4
    request = codec.decode_service_request(pdu)
    assert request == codec.ReadRequest(VariableAccess(variables=(spec,)))
    assert str(spec) == "D/TS.Status"


def test_nested_component_and_index_golden() -> None:
    # selectAlternateAccess [0] { component [0] "A", alternateAccess SEQ { selectAccess index [2] 2 } }
    spec = VariableSpec(ObjectName.vcc("V"), ("A", 2))
    encoded = codec.encode_read_request(VariableAccess(variables=(spec,)))
    assert h("a5 0a a0 08 80 01 41 30 03 82 01 02") in encoded
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(1, encoded)))
    assert isinstance(request, codec.ReadRequest) and request.access.variables == (spec,)


def test_read_of_a_named_list_in_association_scope() -> None:
    encoded = codec.encode_read_request(VariableAccess(list_name=ObjectName.association("DS9")), with_result=True)
    # Read { specificationWithResult [0] TRUE, [1] { variableListName [1] { aa-specific [2] "DS9" } } }
    assert encoded == h("a4 0c 80 01 ff a1 07 a1 05 82 03 445339")
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(2, encoded)))
    assert request == codec.ReadRequest(VariableAccess(list_name=ObjectName.association("DS9")), True)


def test_name_list_request_golden_each_scope() -> None:
    # GetNameList [1] { objectClass [0] { basicObjectClass [0] 9 }, objectScope [1] { vmdSpecific [0] NULL } }
    assert codec.encode_name_list_request(ObjectClass.DOMAIN, NameScope.VCC) == h("a1 09 a0 03 80 01 09 a1 02 8000")
    for scope, domain, after in ((NameScope.DOMAIN, "ICC1", "B"), (NameScope.ASSOCIATION, None, None)):
        encoded = codec.encode_name_list_request(ObjectClass.NAMED_VARIABLE_LIST, scope, domain, after)
        request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(3, encoded)))
        assert request == codec.NameListRequest(ObjectClass.NAMED_VARIABLE_LIST, scope, domain, after)


def test_define_delete_list_attributes_requests() -> None:
    variables = (VariableSpec(ObjectName.in_domain("ICC1", "FREQ")), VariableSpec(ObjectName.vcc("V"), ("x",)))
    define = codec.encode_define_list_request(ICC1_DS1, variables)
    # DefineNamedVariableList [11] { variableListName, listOfVariable [0] {...} }
    assert define[:1] == b"\xab"
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(4, define)))
    assert request == codec.DefineListRequest(ICC1_DS1, variables)
    delete = codec.encode_delete_list_request([ICC1_DS1])
    # DeleteNamedVariableList [13] { scopeOfDelete [0] 0, listOfVariableListName [1] { domain-specific } }
    assert delete == h("ad 12 80 01 00 a1 0d a1 0b 1a 04 49434331 1a 03 445331")
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(5, delete)))
    assert request == codec.DeleteListRequest(DeleteScope.SPECIFIC, (ICC1_DS1,))
    attributes = codec.encode_list_attributes_request(ICC1_DS1)
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(6, attributes)))
    assert request == codec.ListAttributesRequest(ICC1_DS1)


def test_write_request_round_trip_and_identify() -> None:
    spec = VariableSpec(ObjectName.in_domain("ICC1", "TS"), ("Status",))
    write = codec.encode_write_request(VariableAccess(variables=(spec,)), [IntData(1)])
    # Write [5] { listOfVariable [0] {...}, listOfData [0] { integer [5] 1 } }
    assert write.endswith(h("a0 03 85 01 01"))
    request = codec.decode_service_request(codec.decode_mms_pdu(codec.encode_confirmed_request(7, write)))
    assert request == codec.WriteRequest(VariableAccess(variables=(spec,)), (IntData(1),))
    identify = codec.decode_mms_pdu(codec.encode_confirmed_request(8, codec.encode_identify_request()))
    assert codec.decode_service_request(identify) == codec.IdentifyRequest()
    unknown = codec.decode_mms_pdu(h("a0 05 02 01 01 93 00"))  # service [19]
    assert isinstance(unknown, codec.ConfirmedRequestPdu) and codec.decode_service_request(unknown) is None


# ------------------------------------------------------------------------------------------------ responses


def test_information_report_golden_domain_and_association_scope() -> None:
    # unconfirmed-PDU [3] { informationReport [0] { variableListName [1] { domain-specific ICC1/DS1 },
    #   listOfAccessResult [0] { floating-point [7] 08 3f800000 } } }
    report = codec.encode_information_report(VariableAccess(list_name=ICC1_DS1), [FloatData(1.0)])
    assert report == h("a3 1a a0 18 a1 0d a1 0b 1a 04 49434331 1a 03 445331 a0 07 87 05 08 3f800000")
    # aa-specific list name, one failure: DataAccessError [0] object-non-existent (10)
    report = codec.encode_information_report(VariableAccess(list_name=ObjectName.association("DS2")),
                                             [DataAccessCode.OBJECT_NON_EXISTENT])
    assert report == h("a3 0e a0 0c a1 05 82 03 445332 a0 03 80 01 0a")
    with pytest.raises(ValueError, match="2 variables with 1 results"):
        codec.encode_information_report(VariableAccess(variables=(VariableSpec(ICC1_DS1),) * 2), [IntData(1)])


def test_confirmed_error_reject_conclude_golden() -> None:
    # confirmed-ErrorPDU [2] { invokeID [0] 7, serviceError [2] { errorClass [0] { definition [2] 1 } } }
    assert codec.encode_confirmed_error(7, 2, 1) == h("a2 0a 80 01 07 a2 05 a0 03 82 01 01")
    # rejectPDU [4] { originalInvokeID [0] 5, confirmed-requestPDU [1] unrecognized-service (1) }
    assert codec.encode_reject(5, RejectReason.CONFIRMED_UNRECOGNIZED_SERVICE) == h("a4 06 80 01 05 81 01 01")
    # rejectPDU [4] { pdu-error [5] invalid-pdu (1) }
    assert codec.encode_reject(None, RejectReason.INVALID_PDU) == h("a4 03 85 01 01")
    assert codec.encode_conclude_response() == h("8c 00")
    assert isinstance(codec.decode_mms_pdu(h("8b 00")), codec.ConcludeRequestPdu)


def test_service_responses_golden() -> None:
    # confirmed-ResponsePDU { invokeID 3, defineNamedVariableList [11] IMPLICIT NULL }
    assert codec.encode_confirmed_response(3, codec.encode_define_list_response()) == h("a1 05 02 01 03 8b 00")
    # deleteNamedVariableList [13] { numberMatched [0] 1, numberDeleted [1] 1 }
    assert codec.encode_delete_list_response(1, 1) == h("ad 06 80 01 01 81 01 01")
    # getNameList [1] { listOfIdentifier [0] { "A", "B" }, moreFollows [1] FALSE }
    assert codec.encode_name_list_response(["A", "B"], False) == h("a1 0b a0 06 1a 01 41 1a 01 42 81 01 00")
    # write [5] { success [1] NULL, failure [0] object-access-denied (3) }
    assert codec.encode_write_response([None, DataAccessCode.OBJECT_ACCESS_DENIED]) == h("a5 05 81 00 80 01 03")
    # read [4] { listOfAccessResult [1] { structure [2] { integer 1 } } }
    assert codec.encode_read_response([StructureData([IntData(1)])]) == h("a4 07 a1 05 a2 03 85 01 01")


# ------------------------------------------------------------------------------------------------ session, ACSE


def test_data_spdu_golden_and_presentation_decode() -> None:
    # GIVE-TOKENS, DATA TRANSFER, fully-encoded-data [APPLICATION 1] { PDV-list { ctx 3, single-ASN1-type [0] } }
    tsdu = codec.encode_data_spdu(h("8b 00"), 3)
    assert tsdu == h("01 00 01 00 61 09 30 07 02 01 03 a0 02 8b 00")
    spdu = codec.decode_session(tsdu)
    assert spdu.spdu == codec.SpduType.DATA
    assert codec.decode_presentation_data(spdu.user_data) == (3, h("8b 00"))


def test_release_and_abort_golden() -> None:
    # DISCONNECT (10) { user data (193) { fully-encoded-data { ctx 1, RLRE [APPLICATION 3] { reason [0] normal } } } }
    assert codec.encode_release_response(1) == h("0a 10 c1 0e 61 0c 30 0a 02 01 01 a0 05 63 03 80 01 00")
    # ABORT (25) { transport disconnect (17) 03, user data (193) { ARU-PPDU normal [0] { fully-encoded-data
    #   { ctx 1, ABRT [APPLICATION 4] { abort-source [0] acse-service-user } } } } }
    assert codec.encode_abort(1) == h("19 15 11 01 03 c1 10 a0 0e 61 0c 30 0a 02 01 01 a0 05 64 03 80 01 00")
    finish = codec.decode_session(codec.encode_release_request(1))
    assert finish.spdu == codec.SpduType.FINISH and codec.decode_release_request(finish) == 0
    assert codec.decode_session(codec.encode_abort(1)).spdu == codec.SpduType.ABORT


def test_association_request_from_open61850_gives_calling_and_called_titles() -> None:
    params = AssociationParameters(calling_ap_title=(1, 3, 9999, 7), calling_ae_qualifier=33,
                                   called_ap_title=(1, 3, 9999, 1), called_ae_qualifier=12, max_pdu_size=32000)
    request = codec.decode_association_request(codec.decode_session(association_request(params)))
    assert (request.calling_ap_title, request.calling_ae_qualifier) == ((1, 3, 9999, 7), 33)
    assert (request.called_ap_title, request.called_ae_qualifier) == ((1, 3, 9999, 1), 12)
    assert (request.acse_context, request.mms_context, request.max_pdu_size) == (1, 3, 32000)
    assert request.calling_session_selector == b"\x00\x01" and request.application_context == codec.OID_MMS_CONTEXT
    ours = codec.decode_association_request(codec.decode_session(codec.encode_association_request(
        calling_ap_title=(1, 2, 3), calling_ae_qualifier=None, called_ap_title=None, called_ae_qualifier=7)))
    assert (ours.calling_ap_title, ours.calling_ae_qualifier, ours.called_ae_qualifier) == ((1, 2, 3), None, 7)


def test_accept_and_refusal_decode_with_open61850() -> None:
    request = codec.decode_association_request(codec.decode_session(association_request(AssociationParameters())))
    accept, pdu_size = codec.encode_association_accept(request, max_pdu_size=16000, max_outstanding=4,
                                                       nesting_level=8, responding_ap_title=(1, 3, 9999, 1),
                                                       responding_ae_qualifier=12)
    association = decode_association_response(accept)
    assert pdu_size == 16000 and association.max_pdu_size == 16000 and association.max_outstanding_calling == 4
    for service in (1, 2, 4, 5, 6, 11, 12, 13, 79, 83):
        assert association.supports(service), service
    refusal = codec.encode_association_refusal(request, RefusalDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED)
    with pytest.raises(AssociationError, match=r"rejected \(permanent\), diagnostic 3"):
        decode_association_response(refusal)


def test_cotp_cc_answers_the_cr() -> None:
    # CR: LI 17, CR, dst-ref 0, src-ref 0x0001, class 0, tpdu-size 0x0a, called TSAP, calling TSAP
    cr = codec.decode_cotp(h("11 e0 0000 0001 00 c0 01 0a c2 02 0001 c1 02 0001"))
    assert codec.cotp_tpdu_size(cr) == (0x0A, 1024)
    # CC: LI 17, CC, dst-ref = the CR's src-ref, src-ref 0x0001, class 0, tpdu-size, TSAPs echoed
    assert codec.encode_cotp_cc(cr, 0x0A) == h("03 00 0016 11 d0 0001 0001 00 c0 01 0a c2 02 0001 c1 02 0001")
    chunks = codec.encode_cotp_dt(b"x" * 300, 128)  # 125 data bytes per DT TPDU: 3 TPDUs, EOT on the last
    assert chunks.count(h("02 f0 00")) == 2 and chunks.count(h("02 f0 80")) == 1


# ------------------------------------------------------------------------------------------------ fuzzing


def _seeds() -> list[bytes]:
    spec = VariableSpec(ObjectName.in_domain("ICC1", "TS"), ("Status", 1))
    access = VariableAccess(variables=(spec, VariableSpec(ObjectName.association("L"))))
    services = [
        codec.encode_read_request(access), codec.encode_write_request(access, [IntData(1), FloatData(2.0)]),
        codec.encode_name_list_request(ObjectClass.NAMED_VARIABLE, NameScope.DOMAIN, "ICC1", "A"),
        codec.encode_define_list_request(ICC1_DS1, access.variables), codec.encode_delete_list_request([ICC1_DS1]),
        codec.encode_list_attributes_request(ICC1_DS1), codec.encode_variable_attributes_request(ICC1_DS1),
        codec.encode_identify_request(),
    ]
    pdus = [codec.encode_confirmed_request(i, s) for i, s in enumerate(services)]
    pdus += [h("8b 00"), codec.encode_reject(1, RejectReason.INVALID_PDU)]
    return pdus


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice < 0.6 and out:
            del out[rng.randrange(len(out)):][: rng.randint(1, 8)]
        elif choice < 0.8:
            pos = rng.randrange(len(out) + 1)
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif out:
            out = out[: rng.randrange(len(out))]
    return bytes(out)


def _decode_all_mms(data: bytes) -> None:
    pdu = codec.decode_mms_pdu(data)
    if isinstance(pdu, codec.ConfirmedRequestPdu):
        codec.decode_service_request(pdu)


def test_fuzz_mms_decoders_raise_only_mms_decode_error() -> None:
    rng = random.Random(20261127)
    seeds = _seeds()
    decoded = failed = 0
    for i in range(4000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        data = _mutate(rng, rng.choice(seeds)) if i % 4 else noise
        try:
            _decode_all_mms(data)
            decoded += 1
        except MmsDecodeError:
            failed += 1
    assert decoded > 100 and failed > 1000, (decoded, failed)  # both paths exercised


def test_fuzz_session_presentation_association_decoders() -> None:
    rng = random.Random(7)
    seeds = [association_request(AssociationParameters()), codec.encode_release_request(1), codec.encode_abort(1),
             codec.encode_data_spdu(_seeds()[0], 3)]
    failed = 0
    for _ in range(3000):
        data = _mutate(rng, rng.choice(seeds))
        try:
            spdu = codec.decode_session(data)
            if spdu.spdu == codec.SpduType.CONNECT:
                codec.decode_association_request(spdu)
            elif spdu.spdu == codec.SpduType.FINISH:
                codec.decode_release_request(spdu)
            elif spdu.spdu == codec.SpduType.DATA:
                codec.decode_presentation_data(spdu.user_data)
        except MmsDecodeError:
            failed += 1
    assert failed > 300


def test_deeply_nested_data_is_a_decode_error_not_a_crash() -> None:
    nested = h("85 01 01")
    for _ in range(3000):  # structure in structure: recursion far beyond Python's limit
        nested = ber.encode_tlv(0xA2, nested)
    variables = h("a0 07 30 05 a0 03 80 01 41")  # listOfVariable { { name [0] { vmd-specific "A" } } }
    write = codec.encode_confirmed_request(1, ber.encode_tlv(0xA5, variables + ber.encode_tlv(0xA0, nested)))
    with pytest.raises(MmsDecodeError):
        _decode_all_mms(write)
