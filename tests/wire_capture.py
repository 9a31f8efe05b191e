"""Capture loopback traffic with tshark and let Wireshark's own dissectors judge it.

A test starts a ``WireCapture`` on the ports its traffic uses before any connection opens, runs the traffic, stops
the capture and decodes the file with ``tshark -r``: every frame's protocol layers as JSON, plus the malformed
packets, expert-info errors and warnings Wireshark found. The dissectors are an independent implementation of each
standard, so a frame our stack and the library on the other side both accept but Wireshark flags is still caught.

Readiness and completeness use a sentinel: a TCP listener of our own whose port is in the capture filter. The
capture counts as running once a sentinel connection shows up in the file, and as complete once a sentinel
connection made after the traffic does (the kernel hands packets over in order, dumpcap writes them in order).
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

TSHARK = "tshark"
LOOPBACK = "lo"
REQUIRED_ENV = "DSCADA_WIRE_REQUIRED"  # "1": a capture that cannot run fails the test instead of skipping it

# Messages of dumpcap/libpcap that mean "not allowed to capture here", as opposed to a broken capture.
_CANNOT_CAPTURE = ("permission", "not permitted", "capabilities")


class WireProtocol(enum.Enum):
    """A protocol as Wireshark's "decode as" table names the dissector to put on a TCP port."""

    IEC104 = "iec60870_104"
    DNP3 = "dnp3"
    MODBUS = "mbtcp"
    MMS = "tpkt"  # ISO transport on TCP (RFC 1006); COTP, session, presentation, ACSE and MMS follow from it


# Expert-info severities as tshark prints them in JSON (_ws.expert.severity).
_SEVERITY_ERROR = 0x00800000
_SEVERITY_WARNING = 0x00600000
_LINKTYPE_ETHERNET = 1  # what Linux's loopback interface gives
_RETRANSMISSION = ("tcp.analysis.retransmission || tcp.analysis.spurious_retransmission"
                   " || tcp.analysis.fast_retransmission")


class CaptureError(RuntimeError):
    """The capture or the decoding failed for a reason that is a real fault (not missing tshark or privileges)."""


class CaptureUnavailable(CaptureError):
    """tshark is missing or may not capture on the loopback interface: the test skips with this reason."""


def unavailable_reason() -> str | None:
    """Why a capture cannot run on this machine before trying, or None when tshark is there."""
    if shutil.which(TSHARK) is None:
        return ("tshark is not installed (Debian package 'tshark'; `make test` installs it with apt-get when run as "
                "root)")
    return None


# ------------------------------------------------------------------------------------------------ decoded frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame as Wireshark dissected it."""

    number: int
    time_epoch_s: float
    src_port: int
    dst_port: int
    protocols: tuple[str, ...]  # frame.protocols split on ":" (eth:ethertype:ip:tcp:...)
    layers: Mapping[str, Any]  # the JSON layers object (duplicate keys merged into lists)

    def values(self, name: str) -> list[str]:
        """Every value of the field ``name`` anywhere in the frame (a field may occur many times per frame)."""
        return list(_field_values(self.layers, name))

    def layer(self, name: str) -> list[Mapping[str, Any]]:
        """Each instance of the protocol layer ``name`` (a TCP segment may carry several PDUs of one protocol)."""
        found = self.layers.get(name)
        if isinstance(found, list):
            return [x for x in found if isinstance(x, dict)]
        return [found] if isinstance(found, dict) else []


class Severity(enum.Enum):
    ERROR = "error"  # malformed packets and expert errors
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """A malformed packet or an expert info of severity warning or error, with where it is."""

    frame: int
    layer: str  # the top-level layer it was found in ("iec60870_asdu", "mbtcp", "tcp", ...)
    severity: Severity
    text: str


@dataclass(frozen=True, slots=True)
class Dissection:
    """The decoded capture: frames carrying application data, and what Wireshark found wrong."""

    pcap: Path
    frames: tuple[Frame, ...]
    problems: tuple[Problem, ...]  # malformed packets and expert errors: a test asserts there are none
    warnings: tuple[Problem, ...]  # expert warnings (TCP's include resets and lost segments)
    tcp_frames: int  # every captured frame on the ports, pure ACKs and handshakes included
    retransmissions: int  # segments sent again, left out of ``frames``

    def counts(self) -> str:
        return (f"{len(self.frames)} frames with payload of {self.tcp_frames} TCP frames, "
                f"{self.retransmissions} retransmitted")

    def report(self) -> str:
        """The problems, each with the warnings of its frame (they often name the cause), for assertion messages."""
        lines = [f"{len(self.problems)} problem(s) in {self.pcap}:"]
        for p in self.problems:
            lines.append(f"frame {p.frame} [{p.layer}] {p.text}")
            lines += [f"    frame {w.frame} [{w.layer}] {w.text}" for w in self.warnings if w.frame == p.frame]
        return "\n".join(lines)

    def warnings_in(self, *layers: str) -> list[Problem]:
        """The expert warnings raised by the dissectors of ``layers``."""
        return [w for w in self.warnings if w.layer in layers]

    def of(self, protocol: str) -> list[Frame]:
        """The frames that contain the protocol layer ``protocol`` (e.g. "iec60870_asdu", "dnp3", "mms")."""
        return [f for f in self.frames if protocol in f.protocols]

    def layers(self, name: str) -> list[tuple[Frame, Mapping[str, Any]]]:
        """Every instance of protocol layer ``name`` with its frame, in capture order."""
        return [(f, x) for f in self.frames for x in f.layer(name)]

    def values(self, name: str) -> list[str]:
        """All values of field ``name`` in capture order."""
        return [v for f in self.frames for v in f.values(name)]

    def ints(self, name: str) -> list[int]:
        """All values of an integer field ``name`` in capture order (hex or decimal as tshark prints them)."""
        return [int(v, 0) for v in self.values(name)]

    def summary(self, limit: int = 60) -> str:
        """A short listing for assertion messages: frame number, ports and protocol stack."""
        lines = [f"{f.number}: {f.src_port}->{f.dst_port} {':'.join(f.protocols[3:])}" for f in self.frames[:limit]]
        more = len(self.frames) - limit
        return "\n".join(lines + ([f"... {more} more"] if more > 0 else []))


def values_in(node: Any, name: str) -> list[str]:
    """Every value of field ``name`` in a decoded subtree (a layer from ``Frame.layer``), in order."""
    return list(_field_values(node, name))


def _field_values(node: Any, name: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == name:
                if isinstance(value, list):
                    yield from (v for v in value if isinstance(v, str))
                elif isinstance(value, str):
                    yield value
            # tshark names a subtree "<field>_tree" or after its label; recurse into everything
            if isinstance(value, dict | list):
                yield from _field_values(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _field_values(item, name)


def _experts_in(layers: Mapping[str, Any], frame: int) -> Iterator[Problem]:
    """Malformed-packet markers and expert infos of severity warning or above, per top-level layer."""
    layer = ""
    for key, value in layers.items():
        if key == "_ws.malformed":  # follows the layer whose dissector threw
            yield Problem(frame, layer, Severity.ERROR, f"malformed packet: {_text(value)}")
            continue
        layer = key
        yield from _experts_under(value, frame, layer)


def _experts_under(node: Any, frame: int, layer: str) -> Iterator[Problem]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_ws.malformed":
                yield Problem(frame, layer, Severity.ERROR, f"malformed packet: {_text(value)}")
            elif key == "_ws.expert":
                for expert in value if isinstance(value, list) else [value]:
                    if not isinstance(expert, dict):
                        continue
                    severity = _severity(expert)
                    if severity >= _SEVERITY_ERROR:
                        yield Problem(frame, layer, Severity.ERROR, f"expert error: {_text(expert)}")
                    elif severity >= _SEVERITY_WARNING:
                        yield Problem(frame, layer, Severity.WARNING, f"expert warning: {_text(expert)}")
            elif isinstance(value, dict | list):
                yield from _experts_under(value, frame, layer)
    elif isinstance(node, list):
        for item in node:
            yield from _experts_under(item, frame, layer)


def _severity(expert: Mapping[str, Any]) -> int:
    raw = expert.get("_ws.expert.severity", "0")
    values = raw if isinstance(raw, list) else [raw]
    return max(int(str(v), 0) for v in values)


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))[:400]


# ------------------------------------------------------------------------------------------------ capture


@dataclass
class WireCapture:
    """A tshark capture on the loopback interface of the TCP ports ``ports`` (context manager).

    ``decode_as`` puts a protocol's dissector on a port that is not its standard one.
    """

    ports: Sequence[int]
    workdir: Path
    decode_as: Mapping[int, WireProtocol] = field(default_factory=dict)
    name: str = "wire"
    start_timeout_s: float = 20.0
    _proc: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    _sentinel: socket.socket | None = field(default=None, init=False, repr=False)
    _sentinel_port: int = field(default=0, init=False, repr=False)
    _stderr_path: Path | None = field(default=None, init=False, repr=False)

    @property
    def pcap(self) -> Path:
        return self.workdir / f"{self.name}.pcapng"

    def __enter__(self) -> WireCapture:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start tshark and return once it provably captures (a sentinel connection is in the file)."""
        reason = unavailable_reason()
        if reason:
            raise CaptureUnavailable(reason)
        if not self.ports:
            raise CaptureError(f"capture {self.name!r}: no port to capture")
        self._sentinel = socket.create_server(("127.0.0.1", 0))
        self._sentinel.settimeout(1.0)
        self._sentinel_port = self._sentinel.getsockname()[1]
        ports = [*self.ports, self._sentinel_port]
        bpf = " or ".join(f"tcp port {p}" for p in ports)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stderr_path = self.workdir / f"{self.name}.tshark.log"
        stderr = self._stderr_path.open("w")
        try:
            # -q: no packet count on stderr; -n: no name resolution; a pcapng written by dumpcap as packets arrive
            self._proc = subprocess.Popen([TSHARK, "-q", "-n", "-i", LOOPBACK, "-f", bpf, "-w", str(self.pcap)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                          text=True, start_new_session=True)
        finally:
            stderr.close()
        try:
            self._wait_for_sentinel(self.start_timeout_s, "start")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Make sure everything sent so far is in the file, then stop tshark with SIGINT (it closes the file)."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                self._proc = proc
                try:
                    self._wait_for_sentinel(10.0, "stop")
                finally:
                    self._proc = None
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
        finally:
            if self._sentinel is not None:
                self._sentinel.close()
                self._sentinel = None

    def _log(self) -> str:
        return self._stderr_path.read_text(errors="replace").strip() if self._stderr_path else ""

    def _wait_for_sentinel(self, timeout_s: float, why: str) -> None:
        """Open sentinel connections until one of them is in the capture file."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is None or self._proc.poll() is not None:
                log = self._log()
                said = [line.strip() for line in log.splitlines() if any(m in line.lower() for m in _CANNOT_CAPTURE)]
                if said:
                    raise CaptureUnavailable(f"tshark may not capture on '{LOOPBACK}' here: {' '.join(said[:2])}")
                raise CaptureError(f"capture {self.name!r}: tshark exited ({why}): {log[-500:]}")
            before = self._count_sentinel()
            self._poke_sentinel()
            probe_deadline = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < probe_deadline:
                if self._count_sentinel() > before:
                    return
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                raise CaptureError(f"capture {self.name!r}: no sentinel packet in {self.pcap} after {timeout_s} s "
                                   f"({why}); tshark says: {self._log()[-300:]}")

    def _poke_sentinel(self) -> None:
        assert self._sentinel is not None
        with socket.create_connection(("127.0.0.1", self._sentinel_port), timeout=2.0):
            conn, _ = self._sentinel.accept()
            conn.close()

    def _count_sentinel(self) -> int:
        """Sentinel SYNs written so far (dumpcap flushes the growing file every few hundred ms)."""
        return count_syns(self.pcap, self._sentinel_port)

    # -------------------------------------------------------------------------------------------- decode

    def decode(self) -> Dissection:
        """Dissect the capture file: frames with a payload on the traffic ports, and every problem found."""
        if self._proc is not None:
            raise CaptureError(f"capture {self.name!r}: stop() the capture before decoding it")
        if not self.pcap.exists():
            raise CaptureError(f"capture {self.name!r}: no capture file {self.pcap}")
        args = [TSHARK, "-n", "-r", str(self.pcap), *decode_as_args(self.decode_as)]
        ports = " || ".join(f"tcp.port == {p}" for p in self.ports)
        all_frames = subprocess.run([*args, "-Y", f"({ports})", "-T", "fields", "-e", "frame.number"],
                                    capture_output=True, text=True, timeout=120, check=False)
        if all_frames.returncode != 0:
            raise CaptureError(f"capture {self.name!r}: tshark -r failed: {all_frames.stderr.strip()[-500:]}")
        # Retransmitted segments repeat data the dissectors saw already (on loopback: Linux's tail loss probe when
        # the peer delays its ACK); Wireshark does not dissect them again, so they are counted, not listed.
        resent = subprocess.run([*args, "-Y", f"({ports}) && tcp.len > 0 && {_RETRANSMISSION}", "-T", "fields",
                                 "-e", "frame.number"], capture_output=True, text=True, timeout=120, check=False)
        run = subprocess.run([*args, "-Y", f"({ports}) && tcp.len > 0 && !({_RETRANSMISSION})", "-T", "json",
                              "--no-duplicate-keys"],
                             capture_output=True, text=True, timeout=300, check=False)
        if run.returncode != 0:
            raise CaptureError(f"capture {self.name!r}: tshark -r -T json failed: {run.stderr.strip()[-500:]}")
        try:
            packets = json.loads(run.stdout or "[]")
        except json.JSONDecodeError as exc:
            raise CaptureError(f"capture {self.name!r}: tshark JSON unreadable: {exc}") from exc
        frames: list[Frame] = []
        experts: list[Problem] = []
        for packet in packets:
            layers = packet["_source"]["layers"]
            frame = layers["frame"]
            number = int(frame["frame.number"])
            protocols = frame["frame.protocols"]
            tcp = layers.get("tcp", {})
            frames.append(Frame(number, float(frame["frame.time_epoch"]), int(tcp.get("tcp.srcport", 0)),
                                int(tcp.get("tcp.dstport", 0)), tuple(protocols.split(":")), layers))
            experts.extend(_experts_in(layers, number))
        return Dissection(self.pcap, tuple(frames), tuple(p for p in experts if p.severity is Severity.ERROR),
                          tuple(p for p in experts if p.severity is Severity.WARNING), len(all_frames.stdout.split()),
                          len(resent.stdout.split()))


def decode_as_args(decode_as: Mapping[int, WireProtocol]) -> list[str]:
    """tshark options that put each protocol's dissector on its port.

    Modbus/TCP is set through its port preference rather than "decode as": the dissector tells a request from a
    response by comparing the ports with that preference, and without it decodes no PDU body (only "cannot
    classify"). The others follow their "decode as" entry; MMS rides on TPKT, the rest of its stack is found by
    the COTP/session/presentation dissectors.
    """
    args: list[str] = []
    modbus = sorted(port for port, proto in decode_as.items() if proto is WireProtocol.MODBUS)
    if modbus:
        args += ["-o", "mbtcp.tcp.port:" + ",".join(map(str, modbus))]
    for port, proto in sorted(decode_as.items()):
        if proto is not WireProtocol.MODBUS:
            args += ["-d", f"tcp.port=={port},{proto.value}"]
    return args


def count_syns(pcap: Path, dst_port: int) -> int:
    """Connection attempts (SYN without ACK) to ``dst_port`` in a pcapng file that may still be growing.

    A few lines of pcapng instead of one tshark run per poll: the poll runs every 50 ms on a 2-core machine.
    """
    try:
        data = pcap.read_bytes()
    except FileNotFoundError:
        return 0
    count, pos, linktypes = 0, 0, []
    order = "<"
    while pos + 12 <= len(data):
        btype = int.from_bytes(data[pos:pos + 4], "little" if order == "<" else "big")
        if btype == 0x0A0D0D0A:  # section header: its byte-order magic decides the rest
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        (blen,) = struct.unpack_from(order + "I", data, pos + 4)
        if blen < 12 or pos + blen > len(data):
            break  # a block dumpcap has not finished writing
        if btype == 1:  # interface description: link type
            linktypes.append(struct.unpack_from(order + "H", data, pos + 8)[0])
        elif btype == 6:  # enhanced packet
            iface, _, _, caplen = struct.unpack_from(order + "IIII", data, pos + 8)
            packet = data[pos + 28:pos + 28 + caplen]
            if iface < len(linktypes) and linktypes[iface] == _LINKTYPE_ETHERNET and _is_syn_to(packet, dst_port):
                count += 1
        pos += blen
    return count


def _is_syn_to(packet: bytes, dst_port: int) -> bool:
    if len(packet) < 34 or packet[12:14] != b"\x08\x00" or packet[23] != 6:  # IPv4 carrying TCP
        return False
    tcp = 14 + (packet[14] & 0x0F) * 4
    if len(packet) < tcp + 14:
        return False
    flags = packet[tcp + 13]
    return int.from_bytes(packet[tcp + 2:tcp + 4], "big") == dst_port and flags & 0x12 == 0x02


def required() -> bool:
    """CI sets DSCADA_WIRE_REQUIRED=1: there a capture that cannot run is a failure, not a skip."""
    return os.environ.get(REQUIRED_ENV, "") == "1"


def start_or_skip(capture: WireCapture) -> WireCapture:
    """Start ``capture``; skip the calling test with the reason when tshark is missing or may not capture."""
    import pytest

    try:
        capture.start()
    except CaptureUnavailable as exc:
        if required():
            pytest.fail(f"{REQUIRED_ENV}=1 but the wire capture cannot run: {exc}")
        pytest.skip(f"wire capture unavailable: {exc}")
    return capture
