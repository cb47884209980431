"""A terminal in the kernel: a login shell on a pseudo-terminal, over the app tunnel.

A tunnel connection that starts with ``pty <rows> <cols>\\n`` gets ``ok\\n`` and then
frames both ways. A frame is one type byte, a 4-byte big-endian length, and the payload:
- ``d``: bytes (keystrokes in, terminal output out);
- ``r``: a resize, ``<rows> <cols>`` in ASCII;
- ``x``: the shell ended, with its exit status in ASCII (runner to client, last frame).

Frames keep a resize out of the byte stream: a terminal's bytes can be anything. The shell
is ``bash`` (``sh`` where there is none), in the kernel's work directory, with the kernel's
environment. Standard library only, like the rest of the runner.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import struct
import termios
import threading

__all__ = ["read_frame", "serve_terminal", "write_frame"]

_HEADER = struct.Struct(">cI")
_MAX_FRAME = 1 << 20


def write_frame(conn: socket.socket, kind: bytes, payload: bytes) -> None:
    conn.sendall(_HEADER.pack(kind, len(payload)) + payload)


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame, or None once the other side has closed."""
    header = _recv_exactly(conn, _HEADER.size)
    if header is None:
        return None
    kind, size = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    payload = _recv_exactly(conn, size) if size else b""
    return None if payload is None else (kind, payload)


def _resize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _shell() -> list[str]:
    bash = shutil.which("bash")
    return [bash, "-i"] if bash else [shutil.which("sh") or "/bin/sh", "-i"]


def serve_terminal(conn: socket.socket, rows: int, cols: int, cwd: str | None) -> None:
    """Run a shell for this connection until it exits or the connection closes."""
    argv = _shell()
    pid, fd = pty.fork()
    if pid == 0:  # the shell
        try:
            if cwd:
                os.chdir(cwd)
            os.environ["TERM"] = os.environ.get("TERM") or "xterm-256color"
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _resize(fd, rows, cols)
    conn.sendall(b"ok\n")
    gone = threading.Event()
    inbound = threading.Thread(target=_keys, args=(conn, fd, gone), daemon=True)
    inbound.start()
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                if gone.is_set():  # the client left and the shell keeps quiet: hang up
                    break
                continue
            try:
                output = os.read(fd, 65536)
            except OSError:  # EIO: the shell is gone
                break
            if not output:
                break
            write_frame(conn, b"d", output)
    except OSError:  # the connection went away: end the shell with it
        pass
    finally:
        status = _reap(pid)
        try:
            write_frame(conn, b"x", str(status).encode())
        except OSError:
            pass
        os.close(fd)
        conn.close()


def _keys(conn: socket.socket, fd: int, gone: threading.Event) -> None:
    """Frames from the client into the terminal, until the connection closes."""
    try:
        while (frame := read_frame(conn)) is not None:
            kind, payload = frame
            if kind == b"d":
                os.write(fd, payload)
            elif kind == b"r":
                rows, cols = (int(n) for n in payload.decode().split())
                _resize(fd, rows, cols)
    except (OSError, ValueError):
        pass
    finally:
        gone.set()
        try:
            os.write(fd, b"\x04")  # the client left: end of input for the shell
        except OSError:
            pass


def _reap(pid: int) -> int:
    """The shell's exit status; hung up on (and killed) if it did not exit by itself."""
    for sig in (None, signal.SIGHUP, signal.SIGKILL):
        if sig is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(20):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # os.waitstatus_to_exitcode is 3.9+: the runner supports 3.8
                return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            threading.Event().wait(0.05)
    return -1
