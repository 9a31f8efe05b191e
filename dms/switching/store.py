"""SQLite persistence of switching orders (``switching.sqlite`` in the server's data directory).

An order is one row of ``orders`` and one row per step in ``steps``; every save rewrites the order and its steps in
one transaction, so a reader (another thread, a restarted server) sees an order whole, never half-executed.
"""

from __future__ import annotations

import sqlite3

from dms.switching.errors import OrderNotFoundError, SwitchingError
from dms.switching.order import OrderState, StepAction, StepStatus, SwitchingOrder, SwitchingStep
from scada.sqlite_store import SqliteStore

__all__ = ["OrderStore"]

_ORDER_COLS = "id, title, purpose, author, state, created_ms, updated_ms, approved_by, network"
_STEP_COLS = "number, action, target, target_mrid, telemetered, note, status, executed_by, executed_ms, detail"


class OrderStore(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused
        title TEXT NOT NULL,
        purpose TEXT NOT NULL,
        author TEXT NOT NULL,
        state TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        approved_by TEXT NOT NULL DEFAULT '',
        network TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE IF NOT EXISTS steps (
        order_id INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        target_mrid TEXT NOT NULL,
        telemetered INTEGER NOT NULL,
        note TEXT NOT NULL,
        status TEXT NOT NULL,
        executed_by TEXT NOT NULL,
        executed_ms INTEGER,
        detail TEXT NOT NULL,
        PRIMARY KEY (order_id, number)
    );
    """

    def create(self, order: SwitchingOrder) -> SwitchingOrder:
        """Store a new order (its ``id`` is ignored) and return it with the id given by the database."""
        try:
            with self.conn() as c:
                cur = c.execute(
                    "INSERT INTO orders (title, purpose, author, state, created_ms, updated_ms, approved_by, network)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (order.title, order.purpose, order.author, order.state.value, order.created_ms,
                     order.updated_ms, order.approved_by, order.network))
                order_id = int(cur.lastrowid or 0)
                self._put_steps(c, order_id, order.steps)
        except sqlite3.Error as exc:
            raise SwitchingError(f"{self.path}: cannot store switching order {order.title!r}: {exc}") from exc
        return self.get(order_id)

    def save(self, order: SwitchingOrder) -> None:
        try:
            with self.conn() as c:
                cur = c.execute("UPDATE orders SET title = ?, purpose = ?, author = ?, state = ?, updated_ms = ?, "
                                "approved_by = ?, network = ? WHERE id = ?",
                                (order.title, order.purpose, order.author, order.state.value, order.updated_ms,
                                 order.approved_by, order.network, order.id))
                if not cur.rowcount:
                    raise OrderNotFoundError(f"no switching order {order.id} to update in {self.path}")
                c.execute("DELETE FROM steps WHERE order_id = ?", (order.id,))
                self._put_steps(c, order.id, order.steps)
        except sqlite3.Error as exc:
            raise SwitchingError(f"{self.path}: cannot store switching order {order.id}: {exc}") from exc

    @staticmethod
    def _put_steps(c: sqlite3.Connection, order_id: int, steps: tuple[SwitchingStep, ...]) -> None:
        c.executemany(f"INSERT INTO steps (order_id, {_STEP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      [(order_id, s.number, s.action.value, s.target, s.target_mrid, int(s.telemetered), s.note,
                        s.status.value, s.executed_by, s.executed_ms, s.detail) for s in steps])

    def get(self, order_id: int) -> SwitchingOrder:
        got = self._orders("WHERE id = ?", (order_id,))
        if not got:
            raise OrderNotFoundError(f"no switching order {order_id}")
        return got[0]

    def list(self, state: OrderState | None = None, *, limit: int = 1000) -> list[SwitchingOrder]:
        """Orders, newest first; only those in ``state`` if given."""
        if state is None:
            return self._orders("ORDER BY id DESC LIMIT ?", (limit,))
        return self._orders("WHERE state = ? ORDER BY id DESC LIMIT ?", (OrderState(state).value, limit))

    def _orders(self, where: str, args: tuple) -> list[SwitchingOrder]:
        try:
            c = self.conn()
            rows = c.execute(f"SELECT {_ORDER_COLS} FROM orders {where}", args).fetchall()
            out = []
            for r in rows:
                steps = c.execute(f"SELECT {_STEP_COLS} FROM steps WHERE order_id = ? ORDER BY number",
                                  (r[0],)).fetchall()
                out.append(SwitchingOrder(
                    id=r[0], title=r[1], purpose=r[2], author=r[3], state=OrderState(r[4]), created_ms=r[5],
                    updated_ms=r[6], approved_by=r[7], network=r[8],
                    steps=tuple(SwitchingStep(s[0], StepAction(s[1]), s[2], s[3], bool(s[4]), s[5], StepStatus(s[6]),
                                              s[7], s[8], s[9]) for s in steps)))
        except sqlite3.Error as exc:
            raise SwitchingError(f"{self.path}: cannot read switching orders: {exc}") from exc
        return out
