"""The ``[iccp]`` table of the station TOML: our identity, the server's listen address, the bilateral table of each
peer allowed to connect, and the remote control centres our client connects to.

Pure data (``models`` never imports ``iccp``): the access checks on a bilateral table (raising ``AccessDenied``) and
every wire encoding are ``iccp.tase2``'s, which re-exports these types.

Called by ``models.config.parse_station_config`` in two steps (the remote centres are RTUs the point list refers
to; the bilateral tables refer to points): :func:`parse_iccp` before the points are read, then
:meth:`PendingIccp.finish` with the complete point list. Every error is a ``ConfigError`` naming file, line and field.

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
    operator = "iccp-tso"              # SCADA operator its commands/writes are audited as (needed with either)
    read = ["SS1-T1-P", { point = "F1-CB", name = "F1_CB", type = "Data_StateQTimeTag" }]
    write = [{ point = "SS1-T1-TAP-SP", name = "T1_TAP_SP" }]   # set-points, and points of a remote centre
    devices = [{ point = "F1-CB", name = "F1_CB_CTL", sbo = true, tag = true }]
    limits = { max_transfer_sets = 8, min_interval_s = 1 }
    flags_layout = "msb_first"         # or "lsb_first"
    state_encoding = "in_flags"        # or "separate_value"
    select_timeout_s = 30              # a select (<Device>_SBO read) must be followed by the operate within this

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
    keepalive_s = 5                   # a read of Bilateral_Table_ID this often finds a silent link
    dr_directory = "dr/tso"            # optional: the remote's DR snapshot files, to backfill link outages
    recovery_retry_s = 30              # a gap not yet in the snapshot files is tried again after this
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from models.config import Protocol, RtuConfig
from models.errors import ModelError
from models.points import ControlType, PointDef, PointKind
from models.protocols.iccp import (
    DEFAULT_TYPES,
    IDENTIFIER_RE,
    ControlKind,
    FlagsLayout,
    PointType,
    Scope,
    StateEncoding,
    value_fits,
)

if TYPE_CHECKING:
    from models.config import _Reader

__all__ = [
    "DEFAULT_AE_QUALIFIER",
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_RECOVERY_RETRY_S",
    "DEFAULT_SELECT_TIMEOUT_S",
    "ApTitle",
    "BilateralDevice",
    "BilateralPoint",
    "BilateralTable",
    "BilateralTableError",
    "DeviceDef",
    "IccpConfig",
    "IccpConfigError",
    "Operation",
    "PeerIdentity",
    "PendingIccp",
    "RemoteCentre",
    "TransferSetLimits",
    "parse_iccp",
    "peer_read_only_reason",
    "peer_writable",
    "tase2_name_of",
]

DEFAULT_AE_QUALIFIER = 1
DEFAULT_SELECT_TIMEOUT_S = 30.0
DEFAULT_KEEPALIVE_S = 5.0
DEFAULT_RECOVERY_RETRY_S = 30.0
_ADDRESS_RE = re.compile(r"([A-Za-z0-9_.\-]+):(\d{1,5})")
_OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


class IccpConfigError(ModelError):
    """An ``[iccp]`` value that does not hold together (an unknown remote, a bad AP title, a bad device)."""


class BilateralTableError(IccpConfigError):
    """A bilateral table that does not hold together (duplicate names, bad identifiers, bad limits)."""


# ------------------------------------------------------------------------------------------------ value types
@dataclass(frozen=True, slots=True)
class ApTitle:
    """An AP title in its object-identifier form, e.g. ``1.3.9999.13``."""

    arcs: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> ApTitle:
        if not _OID_RE.fullmatch(text):
            raise BilateralTableError(f"AP title {text!r} is not an object identifier such as \"1.3.9999.13\"")
        arcs = tuple(int(a) for a in text.split("."))
        if arcs[0] < 2 and arcs[1] > 39:
            raise BilateralTableError(f"AP title {text!r}: second arc must be 0..39 under arc {arcs[0]}")
        return cls(arcs)

    def __str__(self) -> str:
        return ".".join(map(str, self.arcs))


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What an association presents: AP title and AE qualifier (calling ones for a peer, called ones for us)."""

    ap_title: ApTitle
    ae_qualifier: int

    def __str__(self) -> str:
        return f"{self.ap_title}/{self.ae_qualifier}"


class Operation(StrEnum):
    """What a peer does to an object (what its bilateral table allows or denies)."""

    READ = "read"
    WRITE = "write"
    SELECT = "select"  # read <Device>_SBO
    OPERATE = "operate"  # write <Device>
    TAG = "tag"  # read or write <Device>_TAG


@dataclass(frozen=True, slots=True)
class TransferSetLimits:
    """What the peer may ask of our server."""

    max_transfer_sets: int = 16
    max_data_sets: int = 32
    max_data_set_size: int = 1000  # members per data set
    min_interval_s: int = 1
    min_integrity_s: int = 10
    min_buffer_time_s: int = 0

    def __post_init__(self) -> None:
        for name in ("max_transfer_sets", "max_data_sets", "max_data_set_size"):
            if getattr(self, name) < 1:
                raise BilateralTableError(f"transfer-set limits: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_interval_s", "min_integrity_s", "min_buffer_time_s"):
            if getattr(self, name) < 0:
                raise BilateralTableError(f"transfer-set limits: {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class DeviceDef:
    """A controllable device: ``<name>`` (operate), ``<name>_SBO`` (select, when ``sbo``), ``<name>_TAG``. Its MMS
    type is ``iccp.tase2.model.control_mms_type(kind)``."""

    name: str
    kind: ControlKind = ControlKind.COMMAND
    sbo: bool = True
    tag: bool = True

    def __post_init__(self) -> None:
        if not IDENTIFIER_RE.fullmatch(self.name):
            raise BilateralTableError(f"device: name {self.name!r} is not an MMS identifier (letter or _, then "
                                      "letters, digits, _ or $; at most 32 characters)")
        if len(self.name) > 28:  # room for the _SBO / _TAG suffix within 32 characters
            raise BilateralTableError(f"device {self.name!r}: name longer than 28 characters leaves no room for "
                                      "_SBO/_TAG")

    @property
    def sbo_name(self) -> str:
        return f"{self.name}_SBO"

    @property
    def tag_name(self) -> str:
        return f"{self.name}_TAG"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *((self.sbo_name,) if self.sbo else ()), *((self.tag_name,) if self.tag else ()))


@dataclass(frozen=True, slots=True)
class BilateralPoint:
    """A point exchanged with the peer: ``name`` on the wire (in ``scope``), ``point`` the RTDB point name."""

    name: str
    point: str
    type: PointType
    writable: bool = False
    scope: Scope = Scope.ICC


@dataclass(frozen=True, slots=True)
class BilateralDevice:
    """A device the peer may operate: TASE.2 ``device`` (kind, SBO, tag) mapped onto RTDB point ``point`` (which
    has a control); commands go through the SCADA command path as the table's ``operator``."""

    device: DeviceDef
    point: str


@dataclass(frozen=True, slots=True)
class BilateralTable:
    """One peer's table. ``domain`` is the ICC domain our server shows this peer (its points, transfer sets,
    ``Bilateral_Table_ID``); ``operator`` is the SCADA user its commands are audited as; ``select_timeout_s`` how long
    a select of one of its devices lasts. Look-ups only: the checks that deny access are ``iccp.tase2.bilateral``'s.
    """

    peer: str
    table_id: str
    identity: PeerIdentity
    domain: str
    points: tuple[BilateralPoint, ...] = ()
    devices: tuple[BilateralDevice, ...] = ()
    limits: TransferSetLimits = TransferSetLimits()
    flags_layout: FlagsLayout = FlagsLayout.MSB_FIRST
    state_encoding: StateEncoding = StateEncoding.IN_FLAGS
    operator: str = ""
    select_timeout_s: float = DEFAULT_SELECT_TIMEOUT_S
    _by_name: dict[tuple[Scope, str], BilateralPoint] = field(init=False, repr=False, compare=False)
    _devices: dict[str, tuple[BilateralDevice, Operation]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"bilateral table of {self.peer!r}"
        if not self.table_id or len(self.table_id) > 32 or not self.table_id.isascii():
            raise BilateralTableError(f"{where}: Bilateral_Table_ID {self.table_id!r} must be 1..32 ASCII characters")
        if not IDENTIFIER_RE.fullmatch(self.domain):
            raise BilateralTableError(f"{where}: domain {self.domain!r} is not an MMS identifier")
        if not self.select_timeout_s > 0:
            raise BilateralTableError(f"{where}: select_timeout_s must be > 0, got {self.select_timeout_s}")
        by_name: dict[tuple[Scope, str], BilateralPoint] = {}
        for p in self.points:
            if not IDENTIFIER_RE.fullmatch(p.name):
                raise BilateralTableError(f"{where}: point name {p.name!r} is not an MMS identifier")
            if (p.scope, p.name) in by_name:
                raise BilateralTableError(f"{where}: TASE.2 name {p.name!r} listed twice")
            by_name[(p.scope, p.name)] = p
        devices: dict[str, tuple[BilateralDevice, Operation]] = {}
        ops = {"": Operation.OPERATE, "_SBO": Operation.SELECT, "_TAG": Operation.TAG}
        for d in self.devices:
            for wire in d.device.names:
                if wire in devices or (Scope.ICC, wire) in by_name:
                    raise BilateralTableError(f"{where}: device object {wire!r} clashes with another name")
                devices[wire] = (d, ops[wire[len(d.device.name):]])
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_devices", devices)

    def point(self, name: str, scope: Scope = Scope.ICC) -> BilateralPoint | None:
        return self._by_name.get((scope, name))

    def device_object(self, name: str) -> tuple[BilateralDevice, Operation] | None:
        """The device a wire name (``X``, ``X_SBO``, ``X_TAG``) belongs to, and what access to it means."""
        return self._devices.get(name)

    def names(self, scope: Scope = Scope.ICC) -> list[str]:
        """Every variable name this peer sees in ``scope``, sorted (GetNameList order)."""
        out = [n for (s, n) in self._by_name if s is scope]
        if scope is Scope.ICC:
            out += list(self._devices)
        return sorted(out)


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
    keepalive_s: float = DEFAULT_KEEPALIVE_S  # a silent link is found within keepalive_s + request_timeout_s
    flags_layout: FlagsLayout = FlagsLayout.MSB_FIRST
    state_encoding: StateEncoding = StateEncoding.IN_FLAGS
    dr_directory: str | None = None  # the remote's DR snapshot files (absolute; None: no gap recovery)
    recovery_retry_s: float = DEFAULT_RECOVERY_RETRY_S  # a gap recovery not yet complete is tried again after this


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
        raise IccpConfigError(f"no ICCP remote centre named {name!r}")


# ------------------------------------------------------------------------------------------------ the parser
def _identity(r: _Reader, key: str = "ap_title") -> PeerIdentity:
    text = r.get(key, str, required=True)
    try:
        title = ApTitle.parse(text)
    except IccpConfigError as exc:
        raise r.fail(key, str(exc)) from None
    ae = r.get("ae_qualifier", int, DEFAULT_AE_QUALIFIER)
    if not 0 <= ae <= 2**31 - 1:
        raise r.fail("ae_qualifier", f"must be 0..2147483647, got {ae}")
    return PeerIdentity(title, ae)


def _identifier(r: _Reader, key: str, value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise r.fail(key, f"{value!r} is not an MMS identifier (letter or _, then letters, digits, _ or $; at most "
                          "32 characters)")
    return value


def _table_id(r: _Reader) -> str:
    table_id = r.get("bilateral_table_id", str, required=True)
    if not 1 <= len(table_id) <= 32 or not table_id.isascii():
        raise r.fail("bilateral_table_id", f"{table_id!r} must be 1..32 ASCII characters")
    return table_id


def _address(r: _Reader, key: str, value: object, *, allow_port_zero: bool = False) -> str:
    m = _ADDRESS_RE.fullmatch(value) if isinstance(value, str) else None
    if not m or not (0 if allow_port_zero else 1) <= int(m.group(2)) < 65536:
        raise r.fail(key, f"{value!r} is not host:port")
    return m.group(0)


def _whole_s(r: _Reader, key: str, default: int, lo: int = 0) -> int:
    v: int = r.get(key, int, default)
    if not lo <= v <= 2**31 - 1:
        raise r.fail(key, f"must be a whole number of seconds >= {lo}, got {v}")
    return v


def _directory(r: _Reader, key: str) -> str | None:
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
    reader: _Reader
    peer: str
    table_id: str
    identity: PeerIdentity
    domain: str
    operator: str
    limits: TransferSetLimits
    layout: FlagsLayout
    state: StateEncoding
    select_timeout_s: float
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
    remote_readers: list[_Reader]

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


_CONTROL_KINDS = {ControlType.SINGLE: ControlKind.COMMAND, ControlType.DOUBLE: ControlKind.COMMAND,
                  ControlType.SETPOINT_FLOAT: ControlKind.SETPOINT_REAL,
                  ControlType.SETPOINT_SCALED: ControlKind.SETPOINT_DISCRETE}


def peer_writable(p: PointDef) -> bool:
    """Whether a peer's data-value write of ``p`` is possible (``iccp.tase2.peer_writes``): a set-point control (the
    write is a set-point command) or a point without control imported from a remote control centre (the write is a
    value the transmission side supplies). Points of field front ends and calculated points are read-only, and a
    breaker is operated through TASE.2 device control."""
    if p.control is not None:
        return p.control.type in (ControlType.SETPOINT_FLOAT, ControlType.SETPOINT_SCALED)
    return p.source.frontend == Protocol.ICCP.value


def peer_read_only_reason(p: PointDef) -> str:
    """Why a peer cannot write ``p`` (configuration errors and refused writes)."""
    if p.control is not None:
        return (f"point {p.name!r} has a {p.control.type.value} control: a peer operates it through TASE.2 device "
                "control (devices = [...]), not by a data-value write")
    return (f"point {p.name!r} is fed by {p.source.frontend} RTU {p.source.rtu!r}: a peer may write only set-points "
            "and points of a remote control centre (protocol iccp)")


def _build_table(pp: _PendingPeer, by_name: dict[str, PointDef]) -> BilateralTable:
    r = pp.reader

    def point_of(e: _Entry) -> PointDef:
        p = by_name.get(e.point)
        if p is None:
            raise r.fail(e.where, f"unknown point {e.point!r}")
        return p

    def bilateral_point(e: _Entry, writable: bool) -> BilateralPoint:
        p = point_of(e)
        if writable and not peer_writable(p):
            raise r.fail(e.where, peer_read_only_reason(p))
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
        sbo = p.control.mode.selects if e.sbo is None else e.sbo
        try:
            devices.append(BilateralDevice(DeviceDef(e.name, _CONTROL_KINDS[p.control.type], sbo, e.tag), p.name))
        except IccpConfigError as exc:
            raise r.fail(e.where, str(exc)) from None
    if devices and not pp.operator:
        raise r.fail("operator", "a peer with devices needs the SCADA operator its commands are audited as")
    if pp.write and not pp.operator:
        raise r.fail("operator", "a peer with writes needs the SCADA operator its writes are audited as")
    try:
        return BilateralTable(pp.peer, pp.table_id, pp.identity, pp.domain, tuple(pts), tuple(devices), pp.limits,
                              pp.layout, pp.state, pp.operator, pp.select_timeout_s)
    except IccpConfigError as exc:
        raise r.fail(None, str(exc)) from None


def _entries(r: _Reader, key: str, *, device: bool = False) -> list[_Entry]:
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


def _limits(p: _Reader) -> TransferSetLimits:
    lim = p.sub("limits")
    limits = TransferSetLimits()
    if lim is None:
        return limits
    try:
        limits = TransferSetLimits(
            max_transfer_sets=lim.get("max_transfer_sets", int, limits.max_transfer_sets),
            max_data_sets=lim.get("max_data_sets", int, limits.max_data_sets),
            max_data_set_size=lim.get("max_data_set_size", int, limits.max_data_set_size),
            min_interval_s=lim.get("min_interval_s", int, limits.min_interval_s),
            min_integrity_s=lim.get("min_integrity_s", int, limits.min_integrity_s),
            min_buffer_time_s=lim.get("min_buffer_time_s", int, limits.min_buffer_time_s))
    except IccpConfigError as exc:
        raise lim.fail(None, str(exc)) from None
    lim.finish()
    return limits


def parse_iccp(r: _Reader, rtu_names: set[str] | frozenset[str]) -> PendingIccp:
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
        pp = _PendingPeer(
            reader=p, peer=name, table_id=_table_id(p), identity=pid,
            domain=_identifier(p, "domain", p.get("domain", str, required=True)),
            operator=p.get("operator", str, ""), limits=_limits(p),
            layout=p.enum("flags_layout", FlagsLayout, FlagsLayout.MSB_FIRST),
            state=p.enum("state_encoding", StateEncoding, StateEncoding.IN_FLAGS),
            select_timeout_s=p.positive("select_timeout_s", DEFAULT_SELECT_TIMEOUT_S),
            read=_entries(p, "read"), write=_entries(p, "write"), devices=_entries(p, "devices", device=True))
        p.finish()
        seen_names[name], seen_ids[pid] = i, i
        peers.append(pp)

    remotes: list[RemoteCentre] = []
    readers: list[_Reader] = []
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
            keepalive_s=x.positive("keepalive_s", DEFAULT_KEEPALIVE_S),
            flags_layout=x.enum("flags_layout", FlagsLayout, FlagsLayout.MSB_FIRST),
            state_encoding=x.enum("state_encoding", StateEncoding, StateEncoding.IN_FLAGS),
            dr_directory=_directory(x, "dr_directory"),
            recovery_retry_s=x.positive("recovery_retry_s", DEFAULT_RECOVERY_RETRY_S),
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
