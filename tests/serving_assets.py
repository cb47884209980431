"""A model folder's content for serving tests and the benchmark: a tiny model server
(standard library only, HTTP/1.1 with keep-alive) and its ``model-definition.yaml``.

The server answers ``GET /health`` with 200 (503 while the file ``/models/unhealthy`` — or
``$MODEL_UNHEALTHY_FLAG`` — exists, so a test can make a replica sick), and any other request
with a JSON body naming the replica (its hostname and pid), the method, the path and the
length of what it received: enough to see which replica served a request and that the body
arrived whole.
"""

from __future__ import annotations

MODEL_PORT = 8000

MODEL_SERVER = """\
import json, os, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAG = os.environ.get("MODEL_UNHEALTHY_FLAG", "/models/unhealthy")
REPLICA = "%s/%d" % (socket.gethostname(), os.getpid())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self):
        if self.path == "/health":
            sick = os.path.exists(FLAG)
            self._answer(503 if sick else 200, {"healthy": not sick})
            return
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length) if length else b""
        self._answer(200, {
            "replica": REPLICA,
            "method": self.command,
            "path": self.path,
            "received": len(received),
            "model": os.environ.get("MODEL_NAME", ""),
            "authorization": self.headers.get("Authorization"),
        })

    do_GET = do_POST = do_PUT = do_DELETE = _serve


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def model_definition(
    *,
    port: int = MODEL_PORT,
    interval: float = 0.5,
    max_retries: int = 2,
    initial_delay: float = 30,
) -> str:
    """The definition of :data:`MODEL_SERVER` served from ``/models`` (fast probes for tests)."""
    return (
        "models:\n"
        "  - name: echo\n"
        "    model_path: /models\n"
        "    service:\n"
        f'      start_command: ["python3", "/models/server.py", "{port}"]\n'
        f"      port: {port}\n"
        "      health_check:\n"
        "        path: /health\n"
        f"        interval: {interval}\n"
        f"        max_retries: {max_retries}\n"
        f"        initial_delay: {initial_delay}\n"
        "    environ:\n"
        "      MODEL_NAME: echo\n"
    )
