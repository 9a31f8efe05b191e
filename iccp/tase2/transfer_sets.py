"""The DS transfer-set engine of the TASE.2 server: attributes written by the client, conditions detected, reports
due. Pure logic driven by explicit wall-clock times (``now_s``, UTC epoch seconds), so it is tested without sockets;
the server (``iccp.tase2.server``) runs one engine per association on its loop, feeds it point changes and sends
the :class:`PendingReport` s it returns.

Semantics implemented (the standard is not available to the project; these are our documented choices):

* A transfer set is allocated by reading ``Next_DSTransfer_Set``; the client writes its attributes (the whole
  structure or components) while it is disabled, then ``Status`` = true. Enabling checks: the data set exists,
  at least one of IntervalTimeOut, IntegrityTimeOut, ObjectChange is requested, Interval >= the peer's
  ``min_interval_s`` (when IntervalTimeOut is requested), IntegrityCheck >= ``min_integrity_s`` (when
  IntegrityTimeOut is requested), BufferTime >= ``min_buffer_time_s``. Writing an attribute other than Status while
  enabled is refused (object-attribute-inconsistent). ``Status`` = false disables (pending changes are dropped).
  OperatorRequest and OtherExternalEvent are accepted but never detected.
* StartTime: the first interval/integrity period starts at max(now, StartTime).
* IntervalTimeOut (every Interval s): a report of the whole data set (current values). IntegrityTimeOut (every
  IntegrityCheck s): the same, flagged IntegrityTimeOut; the two in the same instant are one report with both bits.
  Periods missed (the loop was late) are skipped, not caught up.
* ObjectChange: a change of a member point is held for BufferTime s from the first change (0: sent at once, changes
  of one loop turn together), then reported:

  - RBE true: only the changed members. AllChangesReported false: the latest value of each changed member;
    AllChangesReported true: every change in order (a member may appear several times in one report).
  - RBE false: the whole data set (current values), flagged ObjectChange.

  When an interval or integrity report goes out while changes are buffered and AllChangesReported is false, the
  buffered changes are dropped (the whole report carries their latest values); with AllChangesReported they still
  go in their own change report.
* TLE (time limit for execution, s, 0 = none): a report must be handed to the transport within TLE of the moment
  its condition was detected (the end of the buffer time for changes); a later one is dropped and counted
  (``tle_expired``).
* Critical: each report of a critical transfer set must be acknowledged (``Transfer_Report_ACK`` written with the
  Transfer_Set_Name, oldest outstanding report first) within ``ack_timeout_s``; a missing acknowledgement makes the
  report go again (current values, up to ``ack_retries`` times), then it is dropped, counted (``critical_unacked``)
  and ``on_alarm`` is called.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from open61850.data import IECData

from iccp.mms.codec import DataAccessCode
from iccp.tase2.bilateral import TransferSetLimits
from iccp.tase2.mapping import RtdbValue
from iccp.tase2.model import (
    DSConditions,
    DSTransferSet,
    FlagsLayout,
    ObjectName,
    Scope,
    Tase2DecodeError,
    Tase2Error,
)

__all__ = [
    "DataSetLookup",
    "EngineStats",
    "PendingReport",
    "ReportEntry",
    "TransferSetEngine",
    "TransferSetError",
]

log = logging.getLogger("iccp.tase2.transfer_sets")

_WATCHED = DSConditions.INTERVAL | DSConditions.INTEGRITY | DSConditions.CHANGE


class TransferSetError(Tase2Error):
    """An unknown transfer set, or one this association does not own."""


#: The members (wire names, in order, header members included) of a data set, or None when it does not exist.
DataSetLookup = Callable[[ObjectName], "tuple[str, ...] | None"]


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One data-set member in a report; ``value`` None: the member's current value at send time."""

    member: str
    value: RtdbValue | None = None


@dataclass(frozen=True, slots=True)
class PendingReport:
    transfer_set: str
    data_set: ObjectName
    conditions: DSConditions
    detected_s: float
    entries: tuple[ReportEntry, ...]  # point members (header members are the server's business)
    whole: bool  # every member of the data set, in order
    critical: bool
    deadline_s: float | None  # detected + TLE; None: no limit
    attempt: int = 0  # 0 first transmission, n the n-th retransmission of a critical report


@dataclass(slots=True)
class EngineStats:
    reports: int = 0
    tle_expired: int = 0
    critical_retransmits: int = 0
    critical_unacked: int = 0
    acks: int = 0


@dataclass(slots=True)
class _Outstanding:
    report: PendingReport
    ack_due_s: float


@dataclass(slots=True)
class _TransferSet:
    name: str
    attrs: DSTransferSet
    enabled: bool = False
    members: tuple[str, ...] = ()  # point members of the data set (header members left out)
    member_set: frozenset[str] = frozenset()
    next_interval_s: float | None = None
    next_integrity_s: float | None = None
    buffer_until_s: float | None = None
    pending: list[tuple[str, RtdbValue]] = field(default_factory=list)
    outstanding: deque[_Outstanding] = field(default_factory=deque)


def _blank(domain: str) -> DSTransferSet:
    # a placeholder data-set name until the client writes one (ObjectName needs an identifier)
    return DSTransferSet(ObjectName(Scope.ICC, domain, "None"), conditions=DSConditions.NONE)


class TransferSetEngine:
    """The transfer sets of one association (names handed out by the server, unique per domain)."""

    def __init__(self, domain: str, limits: TransferSetLimits, *, header_names: Sequence[str] = (),
                 layout: FlagsLayout = FlagsLayout.MSB_FIRST, ack_timeout_s: float = 5.0, ack_retries: int = 2,
                 on_alarm: Callable[[str, str], None] | None = None) -> None:
        self.domain = domain
        self.limits = limits
        self.layout = layout
        self.ack_timeout_s = ack_timeout_s
        self.ack_retries = ack_retries
        self.on_alarm = on_alarm
        self._header = frozenset(header_names)
        self._sets: dict[str, _TransferSet] = {}
        self.stats = EngineStats()

    # ----------------------------------------------------------------------------------------- allocation
    @property
    def names(self) -> list[str]:
        return sorted(self._sets)

    def __contains__(self, name: str) -> bool:
        return name in self._sets

    def add(self, name: str) -> None:
        if len(self._sets) >= self.limits.max_transfer_sets:
            raise TransferSetError(f"domain {self.domain!r}: no more than {self.limits.max_transfer_sets} transfer "
                                   "sets per association")
        self._sets[name] = _TransferSet(name, _blank(self.domain))

    def remove_all(self) -> list[str]:
        """Disable and free every transfer set (the association ended)."""
        names = list(self._sets)
        self._sets.clear()
        return names

    def uses(self, data_set: ObjectName) -> bool:
        """Whether an enabled transfer set reports ``data_set``."""
        return any(ts.enabled and ts.attrs.data_set == data_set for ts in self._sets.values())

    def enabled(self, name: str) -> bool:
        return self._get(name).enabled

    def _get(self, name: str) -> _TransferSet:
        ts = self._sets.get(name)
        if ts is None:
            raise TransferSetError(f"domain {self.domain!r}: no transfer set {name!r} on this association")
        return ts

    # ----------------------------------------------------------------------------------------- attributes
    def value(self, name: str) -> IECData:
        ts = self._get(name)
        return replace(ts.attrs, status=ts.enabled).encode(self.layout)

    def write(self, name: str, component: tuple[str | int, ...], value: IECData, now_s: float,
              lookup: DataSetLookup) -> DataAccessCode | None:
        """Write the whole transfer set or one component; None = done, else the MMS data-access failure."""
        ts = self._get(name)
        current = replace(ts.attrs, status=ts.enabled).encode(self.layout)
        if not component:
            new_value = value
        elif len(component) == 1 and component[0] in DSTransferSet.COMPONENTS:
            members = list(current.members)
            members[DSTransferSet.COMPONENTS.index(str(component[0]))] = value
            new_value = type(current)(members)
        else:
            return DataAccessCode.OBJECT_NON_EXISTENT
        try:
            attrs = DSTransferSet.decode(new_value, self.layout, name)
        except Tase2DecodeError as exc:
            log.info("transfer set %s: write refused: %s", name, exc)
            return DataAccessCode.TYPE_INCONSISTENT
        except Tase2Error as exc:
            log.info("transfer set %s: write refused: %s", name, exc)
            return DataAccessCode.OBJECT_VALUE_INVALID
        changes_other = replace(attrs, status=False) != replace(ts.attrs, status=False)
        if ts.enabled and changes_other:
            log.info("transfer set %s: attributes cannot change while it is enabled", name)
            return DataAccessCode.OBJECT_ATTRIBUTE_INCONSISTENT
        if attrs.status and not ts.enabled:
            problem = self._enable(ts, attrs, now_s, lookup)
            if problem is not None:
                return problem
        elif not attrs.status and ts.enabled:
            self._disable(ts)
        ts.attrs = replace(attrs, status=ts.enabled)
        return None

    def _enable(self, ts: _TransferSet, attrs: DSTransferSet, now_s: float,
                lookup: DataSetLookup) -> DataAccessCode | None:
        lim = self.limits
        why = None
        members = lookup(attrs.data_set)
        if members is None:
            why = f"data set {attrs.data_set} does not exist"
        elif not attrs.conditions & _WATCHED:
            why = "no IntervalTimeOut, IntegrityTimeOut or ObjectChange requested"
        elif attrs.conditions & DSConditions.INTERVAL and attrs.interval_s < max(1, lim.min_interval_s):
            why = f"Interval {attrs.interval_s} s below the minimum {max(1, lim.min_interval_s)} s"
        elif attrs.conditions & DSConditions.INTEGRITY and attrs.integrity_check_s < max(1, lim.min_integrity_s):
            why = f"IntegrityCheck {attrs.integrity_check_s} s below the minimum {max(1, lim.min_integrity_s)} s"
        elif attrs.buffer_time_s < lim.min_buffer_time_s:
            why = f"BufferTime {attrs.buffer_time_s} s below the minimum {lim.min_buffer_time_s} s"
        if why is not None:
            log.info("transfer set %s/%s: not enabled: %s", self.domain, ts.name, why)
            return DataAccessCode.OBJECT_VALUE_INVALID
        assert members is not None
        ts.members = tuple(m for m in members if m not in self._header)
        ts.member_set = frozenset(ts.members)
        start = max(now_s, float(attrs.start_time_s))
        ts.next_interval_s = start + attrs.interval_s if attrs.conditions & DSConditions.INTERVAL else None
        ts.next_integrity_s = (start + attrs.integrity_check_s if attrs.conditions & DSConditions.INTEGRITY
                               else None)
        ts.buffer_until_s = None
        ts.pending.clear()
        ts.enabled = True
        log.info("transfer set %s/%s enabled on %s (%d points, conditions %s)", self.domain, ts.name,
                 attrs.data_set, len(ts.members), attrs.conditions)
        return None

    def _disable(self, ts: _TransferSet) -> None:
        ts.enabled = False
        ts.next_interval_s = ts.next_integrity_s = ts.buffer_until_s = None
        ts.pending.clear()
        ts.outstanding.clear()

    # ----------------------------------------------------------------------------------------- conditions
    def on_changes(self, changes: Sequence[tuple[str, RtdbValue]], now_s: float) -> bool:
        """Changed member values (wire names); True when some transfer set now has changes buffered."""
        any_pending = False
        for ts in self._sets.values():
            if not ts.enabled or not ts.attrs.conditions & DSConditions.CHANGE:
                continue
            mine = [c for c in changes if c[0] in ts.member_set]
            if not mine:
                continue
            ts.pending.extend(mine)
            if ts.buffer_until_s is None:
                ts.buffer_until_s = now_s + ts.attrs.buffer_time_s
            any_pending = True
        return any_pending

    def next_deadline(self) -> float | None:
        times = []
        for ts in self._sets.values():
            if not ts.enabled:
                continue
            times += [t for t in (ts.next_interval_s, ts.next_integrity_s) if t is not None]
            if ts.pending and ts.buffer_until_s is not None:
                times.append(ts.buffer_until_s)
            times += [o.ack_due_s for o in ts.outstanding]
        return min(times) if times else None

    def due(self, now_s: float) -> list[PendingReport]:
        """The reports whose condition is met at ``now_s`` (critical ones are then awaited for acknowledgement)."""
        out: list[PendingReport] = []
        for ts in self._sets.values():
            if not ts.enabled:
                continue
            out += self._retransmissions(ts, now_s)
            a = ts.attrs
            conditions = DSConditions.NONE
            detected = now_s
            if ts.next_interval_s is not None and now_s >= ts.next_interval_s:
                conditions |= DSConditions.INTERVAL
                detected = min(detected, ts.next_interval_s)
                ts.next_interval_s = _next_after(ts.next_interval_s, a.interval_s, now_s)
            if ts.next_integrity_s is not None and now_s >= ts.next_integrity_s:
                conditions |= DSConditions.INTEGRITY
                detected = min(detected, ts.next_integrity_s)
                ts.next_integrity_s = _next_after(ts.next_integrity_s, a.integrity_check_s, now_s)
            change_entries: tuple[ReportEntry, ...] = ()
            if ts.pending and ts.buffer_until_s is not None and now_s >= ts.buffer_until_s:
                if a.rbe:
                    change_entries = _change_entries(ts.pending, a.all_changes_reported)
                else:
                    conditions |= DSConditions.CHANGE
                    detected = min(detected, ts.buffer_until_s)
                change_detected = ts.buffer_until_s
                ts.pending.clear()
                ts.buffer_until_s = None
            elif conditions and ts.pending and not a.all_changes_reported:
                ts.pending.clear()  # the whole report carries the latest values
                ts.buffer_until_s = None
            if conditions:
                out.append(self._report(ts, conditions, detected, tuple(ReportEntry(m) for m in ts.members), True))
            if change_entries:
                out.append(self._report(ts, DSConditions.CHANGE, change_detected, change_entries, False))
        return out

    def _report(self, ts: _TransferSet, conditions: DSConditions, detected_s: float,
                entries: tuple[ReportEntry, ...], whole: bool) -> PendingReport:
        a = ts.attrs
        report = PendingReport(ts.name, a.data_set, conditions, detected_s, entries, whole, a.critical,
                               detected_s + a.tle_s if a.tle_s > 0 else None)
        if a.critical:
            ts.outstanding.append(_Outstanding(report, detected_s + self.ack_timeout_s))
        self.stats.reports += 1
        return report

    def _retransmissions(self, ts: _TransferSet, now_s: float) -> list[PendingReport]:
        out = []
        keep: deque[_Outstanding] = deque()
        for o in ts.outstanding:
            if now_s < o.ack_due_s:
                keep.append(o)
            elif o.report.attempt < self.ack_retries:
                again = replace(o.report, attempt=o.report.attempt + 1, detected_s=now_s,
                                deadline_s=now_s + ts.attrs.tle_s if ts.attrs.tle_s > 0 else None)
                keep.append(_Outstanding(again, now_s + self.ack_timeout_s))
                self.stats.critical_retransmits += 1
                out.append(again)
            else:
                self.stats.critical_unacked += 1
                text = (f"critical report of {ts.name} ({o.report.conditions!s}) not acknowledged after "
                        f"{self.ack_retries + 1} transmissions")
                log.warning("domain %s: %s", self.domain, text)
                if self.on_alarm is not None:
                    self.on_alarm(ts.name, text)
        ts.outstanding = keep
        return out

    def acknowledge(self, name: str) -> bool:
        """A ``Transfer_Report_ACK`` naming transfer set ``name``: the oldest outstanding report is acknowledged."""
        ts = self._get(name)
        if not ts.outstanding:
            return False
        ts.outstanding.popleft()
        self.stats.acks += 1
        return True

    def outstanding(self, name: str) -> int:
        return len(self._get(name).outstanding)

    def expired(self, report: PendingReport, now_s: float) -> bool:
        """Whether ``report`` missed its TLE (counted)."""
        if report.deadline_s is not None and now_s > report.deadline_s:
            self.stats.tle_expired += 1
            log.warning("domain %s: report of %s (%s) missed its TLE by %.3f s: dropped", self.domain,
                        report.transfer_set, report.conditions, now_s - report.deadline_s)
            return True
        return False


def _next_after(t: float, period_s: int, now_s: float) -> float:
    """The next period boundary after ``now_s`` (missed periods skipped)."""
    n = math.floor((now_s - t) / period_s) + 1
    return t + n * period_s


def _change_entries(pending: list[tuple[str, RtdbValue]], all_changes: bool) -> tuple[ReportEntry, ...]:
    if all_changes:
        return tuple(ReportEntry(m, v) for m, v in pending)
    latest: dict[str, RtdbValue] = {}
    for m, v in pending:
        latest[m] = v  # dict keeps first-appearance order
    return tuple(ReportEntry(m, v) for m, v in latest.items())
