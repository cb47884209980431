"""The kernel runner's app tunnel: one line asks for a port in the kernel, then bytes flow
both ways; a port nothing listens on is refused in words."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhub.in_kernel.kernel_runner import tunnel as tunnel_module
from kernelhub.in_kernel.kernel_runner.tunnel import Tunnel

pytestmark = pytest.mark.unit


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data.upper())


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tunnel(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "proxy.sock")
    running = Tunnel(path)
    running.start()
    try:
        yield path
    finally:
        running.stop()


def ask(path: str, line: bytes) -> tuple[socket.socket, bytes]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(15)
    conn.connect(path)
    conn.sendall(line)
    answer = b""
    while not answer.endswith(b"\n"):
        answer += conn.recv(1)
    return conn, answer


def test_bytes_flow_both_ways_after_ok(tunnel: str, echo_port: int) -> None:
    conn, answer = ask(tunnel, f"tcp {echo_port}\n".encode())
    assert answer == b"ok\n"
    payload = bytes(range(97, 123)) * 4000  # 104 kB: more than one chunk
    conn.sendall(payload)
    conn.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    assert received == payload.upper()
    conn.close()


def test_a_port_without_a_listener_is_refused(tunnel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tunnel_module, "_CONNECT_FOR_S", 0.3)
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn, answer = ask(tunnel, f"tcp {port}\n".encode())
    assert answer == f"error nothing listens on port {port}\n".encode()
    conn.close()
    conn, answer = ask(tunnel, b"udp 53\n")
    assert answer.startswith(b"error expected")
    conn.close()


def _terminal_output(conn: socket.socket, until: bytes, timeout: float = 15) -> bytes:
    """Terminal output frames until ``until`` shows (or the shell's exit frame)."""
    import time

    from kernelhub.in_kernel.kernel_runner.terminal import read_frame

    seen, deadline = b"", time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        frame = read_frame(conn)
        if frame is None:
            break
        kind, payload = frame
        seen += payload if kind == b"d" else b"<exit " + payload + b">"
    return seen


def test_a_terminal_runs_a_shell_in_the_work_dir_and_resizes(tmp_path: Path) -> None:
    from kernelhub.in_kernel.kernel_runner.terminal import write_frame

    path = str(tmp_path / "proxy.sock")
    running = Tunnel(path, work_dir=str(tmp_path))
    running.start()
    try:
        conn, answer = ask(path, b"pty 24 80\n")
        assert answer == b"ok\n"
        write_frame(conn, b"d", b"echo answer=$((6*7)); pwd\n")
        seen = _terminal_output(conn, str(tmp_path).encode() + b"\r\n")
        assert b"answer=42" in seen and str(tmp_path).encode() in seen
        write_frame(conn, b"r", b"30 100")
        write_frame(conn, b"d", b"stty size\n")
        assert b"30 100" in _terminal_output(conn, b"30 100")
        write_frame(conn, b"d", b"exit 3\n")
        assert b"<exit 3>" in _terminal_output(conn, b"<exit")
        conn.close()
    finally:
        running.stop()


def test_a_bad_terminal_request_is_refused_in_words(tunnel: str) -> None:
    conn, answer = ask(tunnel, b"pty 0 80\n")
    assert answer == b"error rows and cols must be 1..999\n"
    conn.close()
