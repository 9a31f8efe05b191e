"""The tshark harness's own logic that needs no capture: decode-as options, the sentinel counter over a growing
pcapng file, and where malformed packets and expert infos are found in tshark's JSON."""

from __future__ import annotations

import struct
from pathlib import Path

from wire_capture import Severity, WireProtocol, _experts_in, count_syns, decode_as_args


def test_decode_as_args_put_modbus_on_its_port_preference() -> None:
    args = decode_as_args({4000: WireProtocol.IEC104, 4001: WireProtocol.MODBUS, 4002: WireProtocol.MMS,
                           4003: WireProtocol.MODBUS, 4004: WireProtocol.DNP3})
    assert args == ["-o", "mbtcp.tcp.port:4001,4003", "-d", "tcp.port==4000,iec60870_104",
                    "-d", "tcp.port==4002,tpkt", "-d", "tcp.port==4004,dnp3"]


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _tcp_packet(dst_port: int, flags: int) -> bytes:
    eth = b"\0" * 12 + b"\x08\x00"
    ip = bytes([0x45, 0]) + (40).to_bytes(2, "big") + b"\0" * 5 + bytes([6]) + b"\0" * 2 + bytes([127, 0, 0, 1]) * 2
    tcp = (40000).to_bytes(2, "big") + dst_port.to_bytes(2, "big") + b"\0" * 8 + bytes([0x50, flags]) + b"\0" * 6
    return eth + ip + tcp


def _epb(packet: bytes) -> bytes:
    return _block(6, struct.pack("<IIIII", 0, 0, 0, len(packet), len(packet)) + packet)


def test_count_syns_reads_a_growing_pcapng(tmp_path: Path) -> None:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 0))  # Ethernet, as Linux's loopback
    pcap = tmp_path / "growing.pcapng"
    syn, syn_ack, other = _epb(_tcp_packet(5555, 0x02)), _epb(_tcp_packet(5555, 0x12)), _epb(_tcp_packet(6666, 0x02))
    pcap.write_bytes(shb + idb + syn + syn_ack + other + syn[:20])  # the last block is still being written
    assert count_syns(pcap, 5555) == 1
    assert count_syns(pcap, 6666) == 1
    pcap.write_bytes(shb + idb + syn + syn_ack + other + syn)
    assert count_syns(pcap, 5555) == 2
    assert count_syns(tmp_path / "missing.pcapng", 5555) == 0


def test_experts_are_found_with_their_layer() -> None:
    warning = {"_ws.expert.message": "Cannot classify", "_ws.expert.severity": str(0x00600000)}
    note = {"_ws.expert.message": "retransmission", "_ws.expert.severity": str(0x00400000)}
    layers = {
        "frame": {},
        "tcp": {"tcp.analysis": {"_ws.expert": note}},
        "mbtcp": [{"_ws.expert": warning}, {"mbtcp.unit_id": "5"}],
        "modbus": {"modbus.func_code": "3"},
        "_ws.malformed": {"_ws.expert": {"_ws.expert.severity": str(0x00800000)}, "_ws.malformed": "Malformed"},
    }
    found = list(_experts_in(layers, 7))
    assert [(p.frame, p.layer, p.severity) for p in found] == [(7, "mbtcp", Severity.WARNING),
                                                                (7, "modbus", Severity.ERROR)]
    assert "Cannot classify" in found[0].text and "malformed" in found[1].text
