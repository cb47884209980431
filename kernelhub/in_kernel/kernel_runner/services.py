"""Services: long-running processes a kernel offers through its service ports (a web app,
a notebook, a terminal), started on the agent's request from service-definition files
(``<defs>/<name>.json``, the spec's ServiceDefinition).

Rules as upstream: a ``preopen`` service is "started" without spawning anything; a second
start of a running one answers "running"; the runner waits (5 s by default) for the port to
accept on 127.0.0.1 and kills the process when it does not.

An ``inference`` service (a model-serving replica's) is the one kind whose definition comes
inline, in the request (``options["definition"]``: ``{"command": [...], "env": {...}}``, the
model folder's definition as the endpoint recorded it): the image has no file for it. It is
started without waiting for its port (a model may take minutes to load: the reconciler's
health probe decides when it serves), and started again when asked after it died. No other
protocol takes an inline definition: one there is refused, never ignored (a user's
``start-service`` never carries one; this is the runner's own line of defence).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

log = logging.getLogger("kernelhub.runner")


class ServiceError(Exception):
    pass


class ServiceDefinition:
    def __init__(self, name: str, raw: dict[str, Any]) -> None:
        self.name = name
        command = raw.get("command", [])
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise ValueError("command must be a list of strings")
        self.command: list[str] = command
        self.noop = bool(raw.get("noop", False))
        self.url_template: str = str(raw.get("url_template", ""))
        self.prestart_actions: list[dict[str, Any]] = list(
            raw.get("prestart_actions", raw.get("prestart", [])) or []
        )
        self.env: dict[str, str] = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
        self.allowed_envs: list[str] = list(raw.get("allowed_envs") or [])
        self.allowed_arguments: list[str] = list(raw.get("allowed_arguments") or [])
        self.default_arguments: dict[str, Any] = dict(raw.get("default_arguments") or {})


def load_definitions(directory: str | None) -> dict[str, ServiceDefinition]:
    """Every ``*.json`` definition in ``directory``; a broken file is logged and skipped."""
    found: dict[str, ServiceDefinition] = {}
    if not directory or not os.path.isdir(directory):
        return found
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".json"):
            continue
        name = entry[: -len(".json")]
        try:
            with open(os.path.join(directory, entry)) as definition:
                found[name] = ServiceDefinition(name, json.load(definition))
        except (OSError, ValueError) as exc:
            log.warning("invalid service definition %s: %s", entry, exc)
    return found


class Services:
    def __init__(
        self,
        definitions: dict[str, ServiceDefinition],
        work_dir: str,
        runtime_path: str,
        frozen_env: dict[str, str],
        port_timeout_s: float = 5.0,
    ) -> None:
        self.definitions = definitions
        self.work_dir = work_dir
        self.runtime_path = runtime_path
        self.frozen_env = frozen_env
        self.port_timeout_s = port_timeout_s
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def start(self, info: dict[str, Any]) -> dict[str, Any]:
        """The ``service-result`` for a ``start-service`` request."""
        with self._lock:
            try:
                return self._start(info)
            except ServiceError as exc:
                return {"status": "failed", "error": str(exc)}
            except PermissionError:
                return {"status": "failed", "error": "the target file is not executable"}
            except FileNotFoundError:
                return {"status": "failed", "error": "the executable file is not found"}
            except Exception as exc:  # a broken definition must not take the runner down
                log.exception("starting service %s failed", info.get("name"))
                return {"status": "failed", "error": repr(exc)}

    def _start(self, info: dict[str, Any]) -> dict[str, Any]:
        name = str(info.get("name", ""))
        if info.get("protocol") == "preopen":
            return {"status": "started"}
        process = self.running.get(name)
        if process is not None and process.poll() is None:
            return {"status": "running"}
        if info.get("protocol") == "pty":
            raise ServiceError("not implemented yet")
        options = info.get("options") or {}
        if info.get("protocol") == "inference":
            return self._start_inference(name, options)
        if "definition" in options:
            raise ServiceError("an inline definition is accepted for inference services only")
        definition = self.definitions.get(name)
        if definition is None:
            raise ServiceError("unsupported service")
        if definition.noop:
            return {"status": "started"}
        port = int(info["port"])
        ports = [int(p) for p in info.get("ports") or [port]]
        variables: dict[str, Any] = {"runtime_path": self.runtime_path, "ports": ports}
        for action in definition.prestart_actions:
            result = self._prestart(action, variables)
            if action.get("ref"):
                variables[str(action["ref"])] = result
        command = [part.format_map(variables) for part in definition.command]
        command += self._arguments(definition, options.get("arguments") or {})
        env = dict(self.frozen_env)
        env.update({k: v.format_map(variables) for k, v in definition.env.items()})
        env.update(self._envs(definition, options.get("envs") or {}))
        env["LD_LIBRARY_PATH"] = env.get("LD_LIBRARY_PATH", "").replace("/opt/backend.ai/lib:", "")
        process = subprocess.Popen(
            command,
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=os.setpgrp,
        )
        if not _wait_for_port(port, self.port_timeout_s, process):
            _stop_group(process)
            raise ServiceError("opening the service port timed out: " + name)
        self._keep(name, process)
        return {"status": "started"}

    def _keep(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.running[name] = process
        threading.Thread(target=self._watch, args=(name, process), daemon=True).start()

    def _start_inference(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """A model service from its inline definition: its command as given (no template
        is expanded in it: it is the tenant's text), its variables over the kernel's; not
        waited for (see the module docstring)."""
        raw = options.get("definition")
        if not isinstance(raw, dict):
            raise ServiceError("an inference service needs its definition")
        unknown = sorted(set(raw) - {"command", "env"})
        if unknown:
            raise ServiceError("unsupported definition fields: " + ", ".join(unknown))
        extra = sorted(set(options) - {"definition"})
        if extra:
            raise ServiceError("unsupported options for an inference service: " + ", ".join(extra))
        env_raw = raw.get("env") or {}
        if not isinstance(env_raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_raw.items()
        ):
            raise ServiceError("the definition's env maps names to strings")
        try:
            definition = ServiceDefinition(name, {"command": raw.get("command"), "env": env_raw})
        except ValueError as exc:
            raise ServiceError("the definition's " + str(exc)) from None
        if not definition.command:
            raise ServiceError("the definition's command is empty")
        env = dict(self.frozen_env)
        env.update(definition.env)
        process = subprocess.Popen(
            definition.command,
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=os.setpgrp,
        )
        self._keep(name, process)
        return {"status": "started"}

    def _arguments(self, definition: ServiceDefinition, requested: dict[str, Any]) -> list[str]:
        arguments = dict(definition.default_arguments)
        for key, value in requested.items():
            if key not in definition.allowed_arguments:
                raise ServiceError("DisallowedArgument: " + str(key))
            arguments[key] = value
        argv: list[str] = []
        for key, value in arguments.items():
            argv.append(str(key))
            if isinstance(value, list):
                argv.extend(str(v) for v in value)
            elif value is not None and value is not True:
                argv.append(str(value))
        return argv

    def _envs(self, definition: ServiceDefinition, requested: dict[str, Any]) -> dict[str, str]:
        for key in requested:
            if key not in definition.allowed_envs or key in self.frozen_env:
                raise ServiceError("DisallowedEnvironment: " + str(key))
        return {str(k): str(v) for k, v in requested.items()}

    def _prestart(self, action: dict[str, Any], variables: dict[str, Any]) -> Any:
        kind = action.get("action")
        args = {
            k: (v.format_map(variables) if isinstance(v, str) else v)
            for k, v in (action.get("args") or {}).items()
        }
        if kind == "write_file":
            path = os.path.join(self.work_dir, args["filename"])
            with open(path, "a" if args.get("append") else "w") as target:
                target.write(args.get("body", ""))
            os.chmod(path, int(str(args.get("mode", "644")), 8))
            return path
        if kind == "write_tempfile":
            fd, path = tempfile.mkstemp()
            with os.fdopen(fd, "w") as target:
                target.write(args.get("body", ""))
            os.chmod(path, int(str(args.get("mode", "644")), 8))
            return path
        if kind == "mkdir":
            os.makedirs(os.path.join(self.work_dir, args["path"]), exist_ok=True)
            return None
        if kind == "run_command":
            done = subprocess.run(args["command"], cwd=self.work_dir, capture_output=True)
            return {
                "out": done.stdout.decode("utf-8", "replace"),
                "err": done.stderr.decode("utf-8", "replace"),
            }
        if kind == "log":
            log.info("%s", args.get("message", ""))
            return None
        raise ServiceError("unknown prestart action: " + str(kind))

    def _watch(self, name: str, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        with self._lock:
            if self.running.get(name) is process:
                del self.running[name]

    def shutdown(self, name: str) -> None:
        with self._lock:
            process = self.running.pop(name, None)
        if process is not None:
            _stop_group(process)

    def shutdown_all(self) -> None:
        for name in list(self.running):
            self.shutdown(name)

    def apps(self, name: str = "") -> list[dict[str, Any]]:
        """The ``apps-result`` data: the definitions (one, or all)."""
        chosen = (
            [self.definitions[name]]
            if name in self.definitions
            else ([] if name else list(self.definitions.values()))
        )
        return [
            {
                "name": d.name,
                "url_template": d.url_template,
                "allowed_arguments": d.allowed_arguments,
                "allowed_envs": d.allowed_envs,
            }
            for d in chosen
        ]


def _wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop_group(process: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after the grace period (upstream's 2 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
