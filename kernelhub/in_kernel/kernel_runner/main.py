"""The runner process: a unix-socket server, a serial task queue, user code on the main
thread.

Threads: one accepts the agent's connections (a new one replaces the old, as after an agent
restart), one per connection reads frames and dispatches them; ``clean``/``build``/``exec``/
``code`` are queued for the main thread, everything else (``input``, ``interrupt``,
``complete``, ``status``, ``event``, services) is answered at once, even while code runs.
``shutdown`` (or SIGTERM) stops services and the running command and exits.

A session's bootstrap script (``--bootstrap``, :mod:`.bootstrap`) runs on the main thread once
the socket is bound and before any task; ``status`` is answered only after it (with how it
ended), which is what the agent waits on before it reports the kernel started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

from .batch import BatchEngine
from .bootstrap import BootstrapOutcome, run_bootstrap
from .environment import child_environ
from .framing import FrameError, read_frame
from .outbox import Outbox
from .procstat import ProcessMonitor
from .query import QueryEngine
from .services import Services, load_definitions
from .tunnel import Tunnel

log = logging.getLogger("kernelhub.runner")

QUEUED = frozenset({"clean", "build", "exec", "code"})
_SHUTDOWN = ("", "")


class _Shutdown(SystemExit):
    _kh_shutdown = True


class Runner:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.started_at = time.monotonic()
        self.outbox = Outbox()
        self.tasks: queue.Queue[tuple[str, str]] = queue.Queue()
        self.work_dir = os.path.abspath(options.work_dir)
        env = child_environ(
            os.environ,
            os.environ.get("HOME") or self.work_dir,
            os.path.join(options.config_dir, "environ.txt"),
        )
        os.environ.clear()
        os.environ.update(env)
        self.query = QueryEngine(self.outbox, enabled=options.query)
        kernel_id = os.environ.get("BACKENDAI_KERNEL_ID", "")
        self.batch = BatchEngine(
            self.outbox, self.work_dir, options.runtime_path, options.batch_record, kernel_id
        )
        self.services = Services(
            load_definitions(options.service_defs),
            self.work_dir,
            options.runtime_path,
            dict(env),
            options.port_timeout,
        )
        self.monitor = ProcessMonitor(
            options.snapshot_interval,
            options.oom_polls,
            options.oom_poll_interval,
            session=os.getsid(0),
            report=self._warn,
        )
        self.tunnel = Tunnel(options.proxy_socket, self.work_dir) if options.proxy_socket else None
        self.stopping = threading.Event()
        self.terminated = False
        """Stopped by SIGTERM: the process then ends *by* SIGTERM, as an unhandled one would
        (its exit status says so)."""
        self.server: socket.socket | None = None
        self.bootstrapped = threading.Event()
        """Set once the bootstrap script (if any) has ended: ``status`` waits on it."""
        self.bootstrap: BootstrapOutcome | None = None

    def _warn(self, message: str) -> None:
        """A warning to the kernel log and, like upstream's log forwarder, to the console."""
        log.warning("%s", message)
        self.outbox.send("stderr", "kernelhub-runner: " + message + "\n")

    # ---- serving --------------------------------------------------------------------------
    def bind(self) -> None:
        path = self.options.socket
        if os.path.exists(path):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o600)
        server.listen(4)
        self.server = server
        threading.Thread(target=self._accept, name="accept", daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.outbox.attach(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        try:
            while True:
                frame = read_frame(stream)
                if frame is None:
                    return
                self.dispatch(*frame)
        except (OSError, FrameError) as exc:
            log.info("agent connection ended: %s", exc)
        finally:
            self.outbox.detach(conn)
            stream.close()

    def dispatch(self, op: str, payload: bytes) -> None:
        try:
            text = payload.decode("utf-8", "replace")
            if op in QUEUED:
                self.tasks.put((op, text))
            elif op == "input":
                self.query.user_input.provide(text)
            elif op == "interrupt":
                self.interrupt()
            elif op == "status":
                if self.bootstrapped.is_set():
                    self._send_status()
                else:  # answered once the bootstrap script ended, never by this reader
                    self._background(lambda _t: self._send_status(), text)
            elif op == "complete":
                self._background(self._complete, text)
            elif op == "event":
                self._background(lambda t: self.monitor.on_event(json.loads(t)), text)
            elif op == "start-service":
                self._background(self._start_service, text)
            elif op == "shutdown-service":
                self._background(lambda t: self.services.shutdown(str(json.loads(t))), text)
            elif op == "get-apps":
                apps = self.services.apps(text.strip().strip('"'))
                self.outbox.send("apps-result", json.dumps({"status": "done", "data": apps}))
            elif op == "shutdown":
                self.shutdown()
            else:
                log.warning("Unsupported operation: %s", op)
        except Exception:
            log.exception("handling %s failed", op)

    def _background(self, handler: Callable[[str], None], text: str) -> None:
        def run() -> None:
            try:
                handler(text)
            except Exception:
                log.exception("background handler failed")

        threading.Thread(target=run, daemon=True).start()

    def _send_status(self) -> None:
        self.bootstrapped.wait()
        status: dict[str, Any] = {"started_at": self.started_at}
        if self.bootstrap is not None:
            status["bootstrap"] = self.bootstrap.to_status()
        self.outbox.send("status", json.dumps(status))

    def _run_bootstrap(self) -> None:
        try:
            if self.options.bootstrap:
                self.bootstrap = run_bootstrap(
                    self.options.bootstrap,
                    self.work_dir,
                    os.environ,
                    self.options.bootstrap_timeout,
                )
        except Exception:  # a failure to run it is its failure, told to the agent
            log.exception("bootstrap script failed")
            self.bootstrap = BootstrapOutcome(-1, False, b"the runner could not run it", 0.0)
        finally:
            self.bootstrapped.set()

    def _complete(self, text: str) -> None:
        try:
            request = json.loads(text) if text.strip() else {}
        except ValueError:
            request = {"code": text}
        if not isinstance(request, dict):
            request = {"code": str(request)}
        from .complete import complete  # on first use: a kernel's start waits on imports

        self.outbox.send("completion", json.dumps(complete(self.query.namespace, request)))

    def _start_service(self, text: str) -> None:
        result = self.services.start(json.loads(text))
        self.outbox.send("service-result", json.dumps(result))

    def interrupt(self) -> None:
        """SIGINT to the batch command if one runs, else to the user's query code."""
        if not self.batch.interrupt() and self.query.executing:
            os.kill(os.getpid(), signal.SIGINT)

    def shutdown(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.tasks.put(_SHUTDOWN)
        self.interrupt()

    # ---- the main thread ------------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.query.executing:
            raise KeyboardInterrupt

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.terminated = True
        self.stopping.set()
        self.tasks.put(_SHUTDOWN)
        if self.query.executing:
            raise _Shutdown(0)
        # a batch command ends first, so its finished record (and exit code) still goes out
        threading.Thread(target=self.batch.terminate, daemon=True).start()

    def serve_forever(self) -> None:
        # A process kernel inherits its spawner's signal mask (a Ray worker's agent blocks
        # SIGINT): blocked, an interrupt would never reach user code or a batch command.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        os.chdir(self.work_dir)
        self.query.install()
        self.bind()
        if self.tunnel is not None:
            self.tunnel.start()
        self._run_bootstrap()
        self.monitor.start()
        try:
            while True:
                op, text = self.tasks.get()
                if (op, text) == _SHUTDOWN:
                    break
                self._run_task(op, text)
        except _Shutdown:
            pass
        finally:
            self._stop()

    def _run_task(self, op: str, text: str) -> None:
        if self.stopping.is_set():
            return
        if op == "code":
            try:
                code = self.query.run(text)
            except _Shutdown:
                raise
            except BaseException:
                log.exception("query failed")
                code = -1
            self.outbox.send("finished", json.dumps({"exitCode": code}))
        else:
            self.batch.step(op, text)

    def _stop(self) -> None:
        self.monitor.stop()
        if self.tunnel is not None:
            self.tunnel.stop()
        self.services.shutdown_all()
        self.batch.terminate()
        self.outbox.flush(1.0)
        if self.server is not None:
            self.server.close()
            try:
                os.unlink(self.options.socket)
            except OSError:
                pass
        self.outbox.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kernelhub-runner")
    parser.add_argument("runtime_type", nargs="?", default="python")
    parser.add_argument("runtime_path", nargs="?", default=sys.executable)
    parser.add_argument("--socket", required=True, help="the unix socket to listen on")
    parser.add_argument("--work-dir", default="/home/work")
    parser.add_argument("--config-dir", default="/home/config")
    parser.add_argument("--service-defs", default="/etc/backend.ai/service-defs")
    parser.add_argument(
        "--batch-record", default=None, help="append each finished batch step here (JSON lines)"
    )
    parser.add_argument(
        "--proxy-socket", default=None, help="tunnel app connections in through this socket"
    )
    parser.add_argument(
        "--no-query",
        dest="query",
        action="store_false",
        help="query mode off: code requests answer exit code 127",
    )
    parser.add_argument(
        "--bootstrap", default=None, help="a script run by /bin/sh before the runner is ready"
    )
    parser.add_argument(
        "--bootstrap-timeout", type=float, default=300.0, help="seconds before it is killed"
    )
    parser.add_argument("--port-timeout", type=float, default=5.0)
    parser.add_argument("--snapshot-interval", type=float, default=2.0)
    parser.add_argument("--oom-polls", type=int, default=30)
    parser.add_argument("--oom-poll-interval", type=float, default=0.5)
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    # The kernel log is one stream, in order. A container's stdout and stderr are kept apart
    # by Docker, and their relative order is lost, so stdout goes where stderr goes. The
    # process backend sends both to one file anyway.
    sys.stdout.flush()
    os.dup2(2, 1)
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s kernelhub-runner: %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if options.debug else logging.INFO)
    log.propagate = False
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != own]
    runner = Runner(options)
    log.info("runner started (pid %d, socket %s)", os.getpid(), options.socket)
    runner.serve_forever()
    log.info("runner stopped")
    if runner.terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
