"""TCP into the kernel over a unix socket: how app connections reach services inside a
container that has no network (the agent's host sees the socket in the shared run dir).

Each connection to the proxy socket starts with one line, ``tcp <port>\\n``; the runner
connects to that port on the kernel's loopback (retrying while the service starts) and
answers ``ok\\n`` or ``error <why>\\n``; after ``ok`` bytes flow both ways until either side
closes. ``pty <rows> <cols>\\n`` asks for a terminal instead (:mod:`.terminal`).
Standard library only (Python 3.8+), like the rest of the runner.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from .terminal import serve_terminal

__all__ = ["Tunnel"]

log = logging.getLogger("kernelhub-runner")

_MAX_HEADER = 256
_CONNECT_FOR_S = 10.0
_CHUNK = 65536


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk or len(data) > _MAX_HEADER:
            raise ValueError("no request line")
        data += chunk
    return data.decode("ascii", "replace").strip()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            chunk = source.recv(_CHUNK)
            if not chunk:
                break
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


class Tunnel:
    def __init__(self, path: str, work_dir: str | None = None) -> None:
        self.path = path
        self.work_dir = work_dir
        """Where a terminal's shell starts."""
        self.server: socket.socket | None = None

    def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        os.chmod(self.path, 0o600)
        server.listen(16)
        self.server = server
        threading.Thread(target=self._accept, name="tunnel", daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            kind, _, rest = _read_line(conn).partition(" ")
            if kind == "pty":
                rows, cols = (int(n) for n in rest.split())
                if not (0 < rows < 1000 and 0 < cols < 1000):
                    raise ValueError("rows and cols must be 1..999")
                serve_terminal(conn, rows, cols, self.work_dir)
                return
            port = int(rest)
            if kind != "tcp" or not 0 < port < 65536:
                raise ValueError("expected 'tcp <port>' or 'pty <rows> <cols>'")
        except (ValueError, OSError) as exc:
            self._refuse(conn, str(exc))
            return
        target = self._connect(port)
        if target is None:
            self._refuse(conn, f"nothing listens on port {port}")
            return
        conn.sendall(b"ok\n")
        back = threading.Thread(target=_pump, args=(target, conn), daemon=True)
        back.start()
        _pump(conn, target)
        back.join()
        conn.close()
        target.close()

    @staticmethod
    def _connect(port: int) -> socket.socket | None:
        deadline = time.monotonic() + _CONNECT_FOR_S
        while True:
            try:
                target = socket.create_connection(("127.0.0.1", port), timeout=5)
                target.settimeout(None)  # an idle app connection is not a dead one
                return target
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

    @staticmethod
    def _refuse(conn: socket.socket, why: str) -> None:
        log.info("tunnel request refused: %s", why)
        try:
            conn.sendall(f"error {why}\n".encode())
        except OSError:
            pass
        conn.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
