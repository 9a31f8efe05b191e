"""SQLite opened the way every store of the control centre needs it: WAL, one connection per thread.

WAL with synchronous=NORMAL makes a committed transaction survive a crash or kill -9 of the server process (the
commit is in the WAL file in the OS cache); only a power loss of the machine can lose the last transactions, and
``durable=True`` (synchronous=FULL) closes that gap at the price of an fsync per commit.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from scada.errors import StorageError


class SqliteStore:
    """A database file with per-thread connections; subclasses declare ``SCHEMA`` (executed once at open)."""

    SCHEMA: str = ""

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self._durable = durable
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self.conn()
            with conn:
                conn.executescript(self.SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"{self.path}: cannot open database: {exc}") from exc

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
