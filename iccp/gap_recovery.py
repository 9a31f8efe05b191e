"""Data recovery of an ICCP link outage, in the server process (it owns the historian; the adapter has none).

The ICCP adapter reports a remote centre's link going down and coming back as ``LinkEvent`` s with their times (the
one update path). :class:`GapRecovery` listens to the RTDB's link events (``Rtdb.add_link_listener``): it remembers
when a remote's link went down and, once it is up again, backfills the historian for [down, up) from that remote's
DR snapshot directory (``iccp.recovery.recover_gap``; the files arrive there by FTP/rsync/a shared mount). The file
covering the end of the gap is closed up to one snapshot interval later, so an incomplete recovery is retried every
``retry_s`` (per remote: ``[[iccp.remotes]] recovery_retry_s``) until complete or ``max_attempts`` is reached. Work
runs on its own thread: link listeners are called on the RTDB's writer thread and must not block.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from iccp.recovery import RecoveryError, RecoveryResult, SnapshotArchive, recover_gap
from models.config import Protocol, StationConfig
from models.updates import LinkEvent
from scada.historian import Historian

__all__ = ["GapRecovery", "RecoveryJob"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryJob:
    remote: str
    start_ms: int
    end_ms: int
    attempt: int = 1


class GapRecovery:
    """Backfills the historian after each ICCP link outage; ``directories``: remote centre name -> DR directory;
    ``retry_s``: one retry period for all, or remote centre name -> its period."""

    def __init__(self, config: StationConfig, historian: Historian, directories: Mapping[str, str | Path], *,
                 retry_s: float | Mapping[str, float] = 30.0, max_attempts: int = 10) -> None:
        self._historian = historian
        self._dirs = {name: Path(d) for name, d in directories.items()}
        for name in self._dirs:
            if config.rtu(name).protocol is not Protocol.ICCP:
                raise RecoveryError(f"DR directory given for {name!r}, which is not an ICCP remote centre")
        self._ids = {name: {p.source.reference: p.id for p in config.points_of_rtu(name)} for name in self._dirs}
        self._retry_s = {name: float(retry_s) if isinstance(retry_s, int | float) else float(retry_s[name])
                         for name in self._dirs}
        self._max_attempts = max_attempts
        self._down_since: dict[str, int] = {}
        self._jobs: queue.Queue[RecoveryJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.results: list[tuple[RecoveryJob, RecoveryResult]] = []  # every attempt, for status and tests

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="iccp-gap-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def on_link(self, ev: LinkEvent) -> None:
        """RTDB link listener (RTDB thread): note the outage start; queue the gap when the link is back."""
        if ev.rtu not in self._dirs:
            return
        t = ev.time_ms or int(time.time() * 1000)
        if not ev.up:
            self._down_since.setdefault(ev.rtu, t)
            return
        start = self._down_since.pop(ev.rtu, None)
        if start is not None and t > start:
            self._jobs.put(RecoveryJob(ev.rtu, start, t))

    def _run(self) -> None:
        waiting: list[tuple[float, RecoveryJob]] = []  # (due, monotonic s; job): new gaps and retries
        while True:
            next_due = min((d for d, _ in waiting), default=None)
            try:
                job = self._jobs.get(timeout=None if next_due is None else max(0.0, next_due - time.monotonic()))
                if job is None:
                    return
                waiting.append((time.monotonic(), job))
            except queue.Empty:
                pass
            now = time.monotonic()
            due = [j for d, j in waiting if d <= now]
            waiting = [(d, j) for d, j in waiting if d > now]
            for j in due:
                again = self._attempt(j)
                if again is not None:
                    waiting.append((time.monotonic() + self._retry_s[again.remote], again))

    def _attempt(self, job: RecoveryJob) -> RecoveryJob | None:
        try:
            result = recover_gap(SnapshotArchive(self._dirs[job.remote]), self._historian, self._ids[job.remote],
                                 job.start_ms, job.end_ms)
        except Exception:
            log.exception("ICCP remote %s: recovery of [%d, %d) failed", job.remote, job.start_ms, job.end_ms)
            return None
        self.results.append((job, result))
        log.info("ICCP remote %s: recovered %d samples of [%d, %d) from %d files (missing %s)", job.remote,
                 result.inserted, job.start_ms, job.end_ms, result.files_read, result.missing)
        if result.complete or job.attempt >= self._max_attempts:
            return None
        return RecoveryJob(job.remote, job.start_ms, job.end_ms, job.attempt + 1)
