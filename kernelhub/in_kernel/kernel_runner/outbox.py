"""Records from the runner to the agent, through one sender thread.

Any thread may :meth:`Outbox.send`; the sender merges consecutive chunks of the same console
stream (a ``print`` is two writes) and writes frames in order. While no agent is connected
(it restarts, or has not connected yet) records wait, up to a bound, and go to the next
connection: like the spec's ZMQ PUSH socket, which queues for a peer that comes back.
"""

from __future__ import annotations

import collections
import socket
import threading

from .framing import encode

MERGEABLE = frozenset({"stdout", "stderr"})
DISPLAYS = frozenset({"media", "html"})
MAX_RECORD = 10 * 2**20
"""The largest payload a record carries; the agent refuses a frame past this plus room for
its op (and the runner would send the refused frame again on every reconnection, the run
stuck). A console chunk is cut here, merging stops short of it, a larger display is replaced
by a note on stderr, any other record (a reply) is cut."""
MAX_MERGED = 64 * 1024
BACKLOG = 65536
"""Records kept while disconnected; the oldest console records go first past this."""
WRITE_AHEAD = 4 * 2**20
"""Bytes queued for a connected agent before a console write waits for the sender: code
printing faster than the socket drains is slowed down (as by a pipe), so the queue, the
runner's memory and the delay of an ``interrupt``'s end behind the flood stay bounded."""


class Outbox:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[str, bytes]] = collections.deque()
        self._pending_bytes = 0
        self._conn: socket.socket | None = None
        self._closed = False
        self._writing = False
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def send(self, op: str, payload: bytes | str = b"") -> None:
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        if len(data) > MAX_RECORD:
            op, data = _within_cap(op, data)
        with self._cond:
            if op in MERGEABLE and threading.current_thread() is not self._thread:
                while (
                    self._conn is not None
                    and not self._closed
                    and self._pending_bytes >= WRITE_AHEAD
                ):
                    self._cond.wait(0.1)  # a signal (interrupt) still lands meanwhile
            self._pending.append((op, data))
            self._pending_bytes += len(data)
            if self._conn is None and len(self._pending) > BACKLOG:
                self._drop_oldest_console()
            self._cond.notify()

    def _drop_oldest_console(self) -> None:
        for index, (op, _) in enumerate(self._pending):
            if op in MERGEABLE:
                self._pending_bytes -= len(self._pending[index][1])
                del self._pending[index]
                return
        self._pending_bytes -= len(self._pending.popleft()[1])

    def attach(self, conn: socket.socket) -> None:
        """A new agent connection; it replaces (and closes) the previous one."""
        with self._cond:
            previous, self._conn = self._conn, conn
            self._cond.notify()
        if previous is not None and previous is not conn:
            _close(previous)

    def detach(self, conn: socket.socket) -> None:
        with self._cond:
            if self._conn is conn:
                self._conn = None

    def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until what was sent so far is written, e.g. before exiting."""
        with self._cond:
            self._cond.wait_for(
                lambda: (not self._pending and not self._writing) or self._conn is None, timeout
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _take(self) -> tuple[socket.socket, list[tuple[str, bytes]]] | None:
        """The next records to write, consecutive console chunks merged."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or bool(self._pending and self._conn))
            if self._closed or self._conn is None:
                return None
            records: list[tuple[str, bytes]] = []
            while self._pending and len(records) < 256:
                op, data = self._pending.popleft()
                while (
                    op in MERGEABLE
                    and self._pending
                    and self._pending[0][0] == op
                    and len(data) < MAX_MERGED
                    and len(data) + len(self._pending[0][1]) <= MAX_RECORD
                ):
                    data += self._pending.popleft()[1]
                records.append((op, data))
            self._pending_bytes -= sum(len(data) for _, data in records)
            self._writing = True
            return self._conn, records

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            conn, records = taken
            try:
                conn.sendall(b"".join(encode(op, data) for op, data in records))
            except OSError:
                # the agent went away mid-write: the records wait for the next connection
                with self._cond:
                    self._pending.extendleft(reversed(records))
                    self._pending_bytes += sum(len(data) for _, data in records)
                    if self._conn is conn:
                        self._conn = None
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _within_cap(op: str, data: bytes) -> tuple[str, bytes]:
    """A record over :data:`MAX_RECORD` made to fit (see there)."""
    if op in DISPLAYS:
        note = "kernelhub: a display of %d bytes was not sent (the cap is %d)\n"
        return "stderr", (note % (len(data), MAX_RECORD)).encode()
    return op, data[:MAX_RECORD]


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
