"""A hand-written device on a free 127.0.0.1 port, for tests that feed an adapter bytes no real library would send."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator


class RawServer:
    """Accepts on its own thread and gives each connection to ``session`` (a subclass's); ``close`` stops both.

    Connections are served one at a time on the accept thread, or each on a thread of its own with
    ``threaded=True``. ``recv_timeout_s`` is the accepted socket's time-out (None: blocking), so a session that
    reads through ``chunks`` notices ``close`` within that time. Subclasses set their own state before calling
    ``super().__init__()``: the accept thread starts in it.
    """

    def __init__(self, *, threaded: bool = False, recv_timeout_s: float | None = 0.2) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self._threaded = threaded
        self._recv_timeout_s = recv_timeout_s
        self._thread = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)
        self._thread.start()

    def session(self, conn: socket.socket) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not serve connections: define session()")

    def chunks(self, conn: socket.socket) -> Iterator[bytes]:
        """The bytes arriving on ``conn`` until the peer closes it, it fails, or the server stops."""
        while not self.stopped.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            yield data

    def close(self) -> None:
        self.stopped.set()
        self._thread.join(2)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.settimeout(self._recv_timeout_s)
            if self._threaded:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
            else:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            self.session(conn)
