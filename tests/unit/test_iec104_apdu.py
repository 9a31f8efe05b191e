import struct

from frontend_protocols.iec104.apdu import parse_command_answer


def frame(type_id: int, cot: int, ca: int, ioa: int, element: bytes, *, negative: bool = False) -> bytes:
    asdu = bytes([type_id, 1, cot | (0x40 if negative else 0), 0]) + struct.pack("<H", ca)
    asdu += ioa.to_bytes(3, "little") + element
    return bytes([0x68, 4 + len(asdu), 0x02, 0x00, 0x04, 0x00]) + asdu


def test_positive_and_negative_double_command_confirmations() -> None:
    sel = parse_command_answer(frame(46, 7, 11, 601, bytes([0x80 | 2])))
    assert sel is not None and sel.select and not sel.negative and sel.refusal == ""
    assert (sel.common_address, sel.ioa, sel.type_id) == (11, 601, 46)
    exe = parse_command_answer(frame(46, 7, 11, 601, bytes([2]), negative=True))
    assert exe is not None and not exe.select and exe.refusal == "negative confirmation of the execute"
    term = parse_command_answer(frame(46, 10, 11, 601, bytes([2])))
    assert term is not None and term.cot == 10


def test_setpoint_and_unknown_address_answers() -> None:
    sp = parse_command_answer(frame(50, 7, 1, 6021, struct.pack("<f", 11.2) + bytes([0])))
    assert sp is not None and sp.type_id == 50 and not sp.select and sp.ioa == 6021
    unknown = parse_command_answer(frame(45, 47, 1, 9999, bytes([1]), negative=True))
    assert unknown is not None and "unknown information object address" in unknown.refusal


def test_other_frames_are_ignored() -> None:
    assert parse_command_answer(frame(31, 3, 1, 1001, bytes(8))) is None  # spontaneous M_DP_TB_1
    assert parse_command_answer(frame(46, 6, 1, 601, bytes([2]))) is None  # our own activation echoed
    assert parse_command_answer(bytes([0x68, 4, 0x01, 0x00, 0x00, 0x00])) is None  # S-frame
    assert parse_command_answer(bytes([0x68, 4, 0x43, 0x00, 0x00, 0x00])) is None  # U-frame TESTFR
    assert parse_command_answer(frame(46, 7, 1, 601, b"")[:-1]) is None  # truncated
    assert parse_command_answer(b"") is None and parse_command_answer(b"\x00" * 20) is None


def test_interrogation_termination() -> None:
    term = parse_command_answer(frame(100, 10, 12, 0, bytes([20])))
    assert term is not None and term.type_id == 100 and term.cot == 10 and not term.select
    ci = parse_command_answer(frame(101, 7, 12, 0, bytes([0x45])))  # QCC with a freeze bit: not a select
    assert ci is not None and not ci.select and ci.refusal == ""
