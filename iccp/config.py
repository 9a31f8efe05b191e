"""The ``[iccp]`` table of the station TOML: our identity, the server's listen address, the bilateral table of each
peer allowed to connect, and the remote control centres our client connects to.

Called by ``models.config.parse_station_config`` in two steps (the remote centres are RTUs the point list refers
to; the bilateral tables refer to points): :func:`parse_iccp` before the points are read, then
:meth:`PendingIccp.finish` with the complete point list. Every error names file, line and field.

::

    [iccp]
    ap_title = "1.3.9999.10"           # ours: called AP title of our server, calling one of our client
    ae_qualifier = 10
    listen = "0.0.0.0:102"             # omit for no server

    [[iccp.peers]]                     # a control centre allowed to connect to our server
    name = "TSO"
    ap_title = "1.3.9999.20"
    ae_qualifier = 20
    bilateral_table_id = "BLT_DSO1_TSO_1"
    domain = "DSO1"                    # ICC domain this peer sees
    operator = "iccp-tso"              # SCADA operator its commands are audited as (needed with devices)
    read = ["SS1-T1-P", { point = "F1-CB", name = "F1_CB", type = "Data_StateQTimeTag" }]
    write = [{ point = "SS1-T1-TAP-SP", name = "T1_TAP_SP" }]
    devices = [{ point = "F1-CB", name = "F1_CB_CTL", sbo = true, tag = true }]
    limits = { max_transfer_sets = 8, min_interval_s = 1 }
    flags_layout = "msb_first"         # or "lsb_first"
    state_encoding = "in_flags"        # or "separate_value"

    [[iccp.remotes]]                   # a control centre our client connects to; its points are RTDB points
    name = "TSO-ICCP"                  # becomes an RTU of protocol "iccp"; [[points]] refer to it
    addresses = ["10.1.1.1:102", "10.1.1.2:102"]   # primary, backup
    ap_title = "1.3.9999.20"
    ae_qualifier = 20
    domain = "DSO1"                    # the ICC domain the remote shows us
    bilateral_table_id = "BLT_DSO1_TSO_1"
    interval_s = 10                    # transfer-set settings requested from the remote
    integrity_s = 300
    buffer_time_s = 1
    dr_directory = "dr/tso"            # optional: the remote's DR snapshot files, to backfill link outages
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iccp.errors import IccpError
from iccp.tase2.bilateral import (
    ApTitle,
    BilateralDevice,
    BilateralPoint,
    BilateralTable,
    PeerIdentity,
    TransferSetLimits,
)
from iccp.tase2.mapping import value_fits
from iccp.tase2.model import (
    IDENTIFIER_RE,
    ControlKind,
    DeviceDef,
    FlagsLayout,
    PointType,
    Scope,
    StateEncoding,
    Tase2Error,
)
from models.config import Protocol, RtuConfig
from models.points import ControlType, PointDef, PointKind
from models.protocols.iccp import DEFAULT_TYPES

__all__ = ["IccpConfig", "PendingIccp", "RemoteCentre", "parse_iccp"]

DEFAULT_AE_QUALIFIER = 1
_ADDRESS_RE = re.compile(r"([A-Za-z0-9_.\-]+):(\d{1,5})")


@dataclass(frozen=True, slots=True)
class RemoteCentre:
    """A control centre our TASE.2 client associates with; its imported points are the RTDB points of RTU
    ``name`` (``reference`` = TASE.2 name in ``domain``, ``type`` = TASE.2 type)."""

    name: str
    addresses: tuple[str, ...]  # primary, then backup
    identity: PeerIdentity  # the remote's (called) AP title and AE qualifier
    domain: str
    bilateral_table_id: str
    interval_s: int = 10
    integrity_s: int = 300
    buffer_time_s: int = 1
    rbe: bool = True
    all_changes_reported: bool = False
    critical: bool = False
    max_data_set_size: int = 500  # the imported points are split into data sets of at most this many members
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    reconnect_backoff_s: float = 1.0
    reconnect_backoff_max_s: float = 30.0
    flags_layout: FlagsLayout = FlagsLayout.MSB_FIRST
    state_encoding: StateEncoding = StateEncoding.IN_FLAGS
    dr_directory: str | None = None  # the remote's DR snapshot files (absolute; None: no gap recovery)


@dataclass(frozen=True, slots=True)
class IccpConfig:
    identity: PeerIdentity  # ours
    listen: str | None = None  # "host:port" of our server; None: no server
    peers: tuple[BilateralTable, ...] = ()
    remotes: tuple[RemoteCentre, ...] = ()

    def peer(self, identity: PeerIdentity) -> BilateralTable | None:
        """The bilateral table of the peer presenting ``identity`` (None: refuse the association)."""
        return next((t for t in self.peers if t.identity == identity), None)

    def remote(self, name: str) -> RemoteCentre:
        for r in self.remotes:
            if r.name == name:
                return r
        raise IccpError(f"no ICCP remote centre named {name!r}")


def _identity(r: Any, key: str = "ap_title") -> PeerIdentity:
    text = r.get(key, str, required=True)
    try:
        title = ApTitle.parse(text)
    except IccpError as exc:
        raise r.fail(key, str(exc)) from None
    ae = r.get("ae_qualifier", int, DEFAULT_AE_QUALIFIER)
    if not 0 <= ae <= 2**31 - 1:
        raise r.fail("ae_qualifier", f"must be 0..2147483647, got {ae}")
    return PeerIdentity(title, ae)


def _identifier(r: Any, key: str, value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise r.fail(key, f"{value!r} is not an MMS identifier (letter or _, then letters, digits, _ or $; at most "
                          "32 characters)")
    return value


def _table_id(r: Any) -> str:
    table_id = r.get("bilateral_table_id", str, required=True)
    if not 1 <= len(table_id) <= 32 or not table_id.isascii():
        raise r.fail("bilateral_table_id", f"{table_id!r} must be 1..32 ASCII characters")
    return table_id


def _address(r: Any, key: str, value: Any, *, allow_port_zero: bool = False) -> str:
    m = _ADDRESS_RE.fullmatch(value) if isinstance(value, str) else None
    if not m or not (0 if allow_port_zero else 1) <= int(m.group(2)) < 65536:
        raise r.fail(key, f"{value!r} is not host:port")
    return value


def _whole_s(r: Any, key: str, default: int, lo: int = 0) -> int:
    v = r.get(key, int, default)
    if not lo <= v <= 2**31 - 1:
        raise r.fail(key, f"must be a whole number of seconds >= {lo}, got {v}")
    return v


def _directory(r: Any, key: str) -> str | None:
    """An optional folder, relative to the configuration file's folder like the other paths of the station."""
    text = r.get(key, str, None)
    if text is None:
        return None
    if not text.strip():
        raise r.fail(key, "must not be empty")
    path = Path(text)
    return str(path if path.is_absolute() else Path(r.path).resolve().parent / path)


def tase2_name_of(point_name: str) -> str:
    """The default TASE.2 name of an RTDB point: characters outside the MMS identifier set become ``_``."""
    name = re.sub(r"[^A-Za-z0-9_$]", "_", point_name)
    return name if name[:1].isalpha() or name[:1] == "_" else f"_{name}"


@dataclass(frozen=True, slots=True)
class _Entry:
    """A read/write/device entry as written, checked against the points in :meth:`PendingIccp.finish`."""

    where: str  # field path for errors, e.g. "read[3]"
    point: str
    name: str
    type: str = ""
    scope: Scope = Scope.ICC
    sbo: bool | None = None
    tag: bool = True


@dataclass(slots=True)
class _PendingPeer:
    reader: Any
    peer: str
    table_id: str
    identity: PeerIdentity
    domain: str
    operator: str
    limits: TransferSetLimits
    layout: FlagsLayout
    state: StateEncoding
    read: list[_Entry] = field(default_factory=list)
    write: list[_Entry] = field(default_factory=list)
    devices: list[_Entry] = field(default_factory=list)


@dataclass(slots=True)
class PendingIccp:
    """``[iccp]`` read up to what needs the point list."""

    identity: PeerIdentity
    listen: str | None
    peers: list[_PendingPeer]
    remotes: tuple[RemoteCentre, ...]
    remote_readers: list[Any]

    @property
    def rtus(self) -> tuple[RtuConfig, ...]:
        """One RTU of protocol ``iccp`` per remote centre (no field address: ``common_address`` 0)."""
        return tuple(RtuConfig(name=x.name, protocol=Protocol.ICCP, common_address=0, addresses=x.addresses,
                               connect_timeout_s=x.connect_timeout_s, reconnect_backoff_s=x.reconnect_backoff_s,
                               reconnect_backoff_max_s=x.reconnect_backoff_max_s) for x in self.remotes)

    def finish(self, points: tuple[PointDef, ...]) -> IccpConfig:
        by_name = {p.name: p for p in points}
        for x, r in zip(self.remotes, self.remote_readers, strict=True):
            if not any(p.source.rtu == x.name for p in points):
                raise r.fail(None, f"remote centre {x.name!r} has no points: add [[points]] with rtu = {x.name!r}")
        tables = []
        for pp in self.peers:
            tables.append(_build_table(pp, by_name))
        return IccpConfig(self.identity, self.listen, tuple(tables), self.remotes)


def _build_table(pp: _PendingPeer, by_name: dict[str, PointDef]) -> BilateralTable:
    r = pp.reader

    def point_of(e: _Entry) -> PointDef:
        p = by_name.get(e.point)
        if p is None:
            raise r.fail(e.where, f"unknown point {e.point!r}")
        return p

    def bilateral_point(e: _Entry, writable: bool) -> BilateralPoint:
        p = point_of(e)
        if writable and p.kind is not PointKind.SETPOINT:
            raise r.fail(e.where, f"point {p.name!r} is a {p.kind.value} point; a peer may write set-point points "
                                  "only (its write becomes a set-point command)")
        if not writable and p.kind is PointKind.COMMAND:
            raise r.fail(e.where, f"point {p.name!r} is a command without a value: list it under devices")
        default = "Data_RealQ" if p.kind is PointKind.SETPOINT else DEFAULT_TYPES.get(p.kind, "")
        raw_type = e.type or default
        try:
            ptype = PointType(raw_type)
        except ValueError:
            raise r.fail(e.where, f"unknown TASE.2 type {raw_type!r} (expected one of: "
                                  f"{', '.join(t.value for t in PointType)})") from None
        if not value_fits(p.kind, ptype):
            raise r.fail(e.where, f"a {p.kind.value} point cannot be exchanged as {ptype.value}")
        return BilateralPoint(e.name, p.name, ptype, writable, e.scope)

    pts = [bilateral_point(e, False) for e in pp.read] + [bilateral_point(e, True) for e in pp.write]
    devices = []
    for e in pp.devices:
        p = point_of(e)
        if p.control is None:
            raise r.fail(e.where, f"point {p.name!r} has no control table: it cannot be operated")
        kind = {ControlType.SINGLE: ControlKind.COMMAND, ControlType.DOUBLE: ControlKind.COMMAND,
                ControlType.SETPOINT_FLOAT: ControlKind.SETPOINT_REAL,
                ControlType.SETPOINT_SCALED: ControlKind.SETPOINT_DISCRETE}[p.control.type]
        sbo = p.control.mode.selects if e.sbo is None else e.sbo
        try:
            devices.append(BilateralDevice(DeviceDef(e.name, kind, sbo, e.tag), p.name))
        except Tase2Error as exc:
            raise r.fail(e.where, str(exc)) from None
    if devices and not pp.operator:
        raise r.fail("operator", "a peer with devices needs the SCADA operator its commands are audited as")
    try:
        return BilateralTable(pp.peer, pp.table_id, pp.identity, pp.domain, tuple(pts), tuple(devices), pp.limits,
                              pp.layout, pp.state, pp.operator)
    except IccpError as exc:
        raise r.fail(None, str(exc)) from None


def _entries(r: Any, key: str, *, device: bool = False) -> list[_Entry]:
    raw = r.get(key, list, [])
    out = []
    for j, item in enumerate(raw):
        where = f"{key}[{j}]"
        if isinstance(item, str):
            out.append(_Entry(where, item, _identifier(r, where, tase2_name_of(item))))
            continue
        if not isinstance(item, dict):
            raise r.fail(where, "must be a point name or a table { point = ..., name = ... }")
        s = type(r)(r.path, r.loc, item, f"{r.where}.{where}", r.lineno)
        point = s.get("point", str, required=True)
        name = _identifier(s, "name", s.get("name", str, tase2_name_of(point)))
        if device:
            e = _Entry(where, point, name, sbo=s.get("sbo", bool, None), tag=s.get("tag", bool, True))
        else:
            scope_text = s.get("scope", str, "icc")
            if scope_text not in ("icc", "vcc"):
                raise s.fail("scope", f"must be \"icc\" or \"vcc\", got {scope_text!r}")
            e = _Entry(where, point, name, s.get("type", str, ""), Scope.ICC if scope_text == "icc" else Scope.VCC)
        s.finish()
        out.append(e)
    return out


def parse_iccp(r: Any, rtu_names: set[str] | frozenset[str]) -> PendingIccp:
    """Read ``[iccp]`` (``r``: the ``models.config`` reader of that table); ``rtu_names``: names already taken."""
    identity = _identity(r)
    listen = r.get("listen", str, None)
    if listen is not None:
        _address(r, "listen", listen, allow_port_zero=True)
    peers: list[_PendingPeer] = []
    seen_ids: dict[PeerIdentity, int] = {}
    seen_names: dict[str, int] = {}
    for i, raw in enumerate(r.get("peers", list, [])):
        if not isinstance(raw, dict):
            raise r.fail(f"peers[{i}]", "must be a table ([[iccp.peers]])")
        p = type(r)(r.path, r.loc, raw, f"iccp.peers[{i}]", r.loc.line("iccp.peers", i) or r.lineno)
        name = p.get("name", str, required=True)
        p.where = f"iccp.peers[{i}] ({name})"
        if name in seen_names:
            raise p.fail("name", f"duplicate peer name (also iccp.peers[{seen_names[name]}])")
        pid = _identity(p)
        if pid == identity:
            raise p.fail("ap_title", f"{pid} is our own AP title and AE qualifier")
        if pid in seen_ids:
            raise p.fail("ap_title", f"AP title and AE qualifier {pid} already identify iccp.peers[{seen_ids[pid]}]")
        lim = p.sub("limits")
        limits = TransferSetLimits()
        if lim is not None:
            try:
                limits = TransferSetLimits(
                    max_transfer_sets=lim.get("max_transfer_sets", int, limits.max_transfer_sets),
                    max_data_sets=lim.get("max_data_sets", int, limits.max_data_sets),
                    max_data_set_size=lim.get("max_data_set_size", int, limits.max_data_set_size),
                    min_interval_s=lim.get("min_interval_s", int, limits.min_interval_s),
                    min_integrity_s=lim.get("min_integrity_s", int, limits.min_integrity_s),
                    min_buffer_time_s=lim.get("min_buffer_time_s", int, limits.min_buffer_time_s))
            except IccpError as exc:
                raise lim.fail(None, str(exc)) from None
            lim.finish()
        pp = _PendingPeer(
            reader=p, peer=name, table_id=_table_id(p), identity=pid,
            domain=_identifier(p, "domain", p.get("domain", str, required=True)),
            operator=p.get("operator", str, ""), limits=limits,
            layout=p.enum("flags_layout", FlagsLayout, FlagsLayout.MSB_FIRST),
            state=p.enum("state_encoding", StateEncoding, StateEncoding.IN_FLAGS),
            read=_entries(p, "read"), write=_entries(p, "write"), devices=_entries(p, "devices", device=True))
        p.finish()
        seen_names[name], seen_ids[pid] = i, i
        peers.append(pp)

    remotes: list[RemoteCentre] = []
    readers: list[Any] = []
    seen_remote: dict[str, int] = {}
    for i, raw in enumerate(r.get("remotes", list, [])):
        if not isinstance(raw, dict):
            raise r.fail(f"remotes[{i}]", "must be a table ([[iccp.remotes]])")
        x = type(r)(r.path, r.loc, raw, f"iccp.remotes[{i}]", r.loc.line("iccp.remotes", i) or r.lineno)
        name = x.get("name", str, required=True)
        x.where = f"iccp.remotes[{i}] ({name})"
        if name in rtu_names:
            raise x.fail("name", f"{name!r} is already the name of an RTU")
        if name in seen_remote:
            raise x.fail("name", f"duplicate remote centre (also iccp.remotes[{seen_remote[name]}])")
        addrs = x.get("addresses", list, required=True)
        if not 1 <= len(addrs) <= 2:
            raise x.fail("addresses", "must list one or two \"host:port\" strings (primary, backup)")
        remote = RemoteCentre(
            name=name,
            addresses=tuple(_address(x, "addresses", a) for a in addrs),
            identity=_identity(x),
            domain=_identifier(x, "domain", x.get("domain", str, required=True)),
            bilateral_table_id=_table_id(x),
            interval_s=_whole_s(x, "interval_s", 10, lo=1),
            integrity_s=_whole_s(x, "integrity_s", 300),
            buffer_time_s=_whole_s(x, "buffer_time_s", 1),
            rbe=x.get("rbe", bool, True),
            all_changes_reported=x.get("all_changes_reported", bool, False),
            critical=x.get("critical", bool, False),
            max_data_set_size=_whole_s(x, "max_data_set_size", 500, lo=1),
            connect_timeout_s=x.positive("connect_timeout_s", 5.0),
            request_timeout_s=x.positive("request_timeout_s", 10.0),
            reconnect_backoff_s=x.positive("reconnect_backoff_s", 1.0),
            reconnect_backoff_max_s=x.positive("reconnect_backoff_max_s", 30.0),
            flags_layout=x.enum("flags_layout", FlagsLayout, FlagsLayout.MSB_FIRST),
            state_encoding=x.enum("state_encoding", StateEncoding, StateEncoding.IN_FLAGS),
            dr_directory=_directory(x, "dr_directory"),
        )
        x.finish()
        if remote.reconnect_backoff_max_s < remote.reconnect_backoff_s:
            raise x.fail("reconnect_backoff_max_s", "must be >= reconnect_backoff_s")
        seen_remote[name] = i
        remotes.append(remote)
        readers.append(x)
    r.finish()
    if not peers and not remotes:
        raise r.fail(None, "lists neither peers ([[iccp.peers]]) nor remote centres ([[iccp.remotes]])")
    if peers and listen is None:
        raise r.fail("listen", "is required when peers may connect ([[iccp.peers]])")
    return PendingIccp(identity, listen, peers, tuple(remotes), readers)
