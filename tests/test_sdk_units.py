"""The SDK's pure pieces, without a server: configuration, signing, server-sent-event
framing, upload bodies, the download's tar parts, problem bodies to exceptions, the models'
reading of 23.03's wire shapes, and what ``kh`` exits with."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kernelhub.client_cli.app import EXIT, _exec_for, exit_code_of
from kernelhub.sdk import (
    APIError,
    AuthenticationFailed,
    ClientConfig,
    ConfigurationError,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PendingTimeout,
    QuotaExceeded,
    ServerError,
    ServerFrozen,
    SessionInfo,
    SessionNotFound,
)
from kernelhub.sdk._transfer import upload_body
from kernelhub.sdk._wire import SSEParser, extract_tars, signed_headers, tar_parts
from kernelhub.sdk.errors import api_error
from kernelhub.signing import parse_date, sign, string_to_sign

pytestmark = pytest.mark.unit


def test_config_prefers_the_environment_then_kh_ups_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'access_key = "AKFILE"\nsecret_key = "skfile"\nendpoint = "http://127.0.0.1:9"\n'
    )
    from_file = ClientConfig.load({"KH_CONFIG_DIR": str(tmp_path)})
    assert (from_file.endpoint, from_file.access_key) == ("http://127.0.0.1:9", "AKFILE")
    env = {
        "KH_CONFIG_DIR": str(tmp_path),
        "BACKEND_ACCESS_KEY": "AKENV",
        "BACKEND_SECRET_KEY": "skenv",
        "BACKEND_ENDPOINT": "http://a:1/, http://b:2",
    }
    from_env = ClientConfig.load(env)
    assert (from_env.endpoint, from_env.access_key, from_env.secret_key) == (
        "http://a:1",
        "AKENV",
        "skenv",
    )
    assert "skenv" not in repr(from_env)
    with pytest.raises(ConfigurationError, match="no keypair"):
        ClientConfig.load({"KH_CONFIG_DIR": str(tmp_path / "none")})
    with pytest.raises(ConfigurationError, match="http"):
        ClientConfig.load({**env, "BACKEND_ENDPOINT": "ftp://x"})


def test_signed_headers_verify_as_the_gateway_checks_them() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    headers = signed_headers(
        "GET",
        "/session/x?owner_access_key=A",
        "127.0.0.1:8081",
        "text/plain; charset=utf-8",
        "AK",
        "SK",
        now,
    )
    version = headers["X-BackendAI-Version"]
    text = string_to_sign(
        "GET",
        "/session/x?owner_access_key=A",
        headers["Date"],
        "127.0.0.1:8081",
        "text/plain",
        version,
    )
    expected = sign("SK", parse_date(headers["Date"]), "127.0.0.1:8081", text)
    assert headers["Authorization"] == (
        f"BackendAI signMethod=HMAC-SHA256, credential=AK:{expected}"
    )


def test_sse_framing() -> None:
    parser = SSEParser()
    lines = [
        "event: kernel_started\r\n",
        'data: {"a":\n',
        "data: 1}\n",
        "\n",
        ": ping\n",
        "\n",
        "data: plain\n",
        "\n",
    ]
    messages = [m for m in (parser.feed(line) for line in lines) if m]
    assert messages == [("kernel_started", '{"a":\n1}'), ("message", "plain")]


def test_an_upload_body_names_files_as_the_official_client(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b c.txt").write_bytes(b"bee")
    (tmp_path / "a").write_bytes(b"x" * 600_000)
    seen: list[tuple[int, int]] = []
    body = upload_body(["a", "sub/b c.txt"], tmp_path, lambda d, t: seen.append((d, t)))

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in body.chunks()])

    data = asyncio.run(collect())
    assert len(data) == body.length and body.names == ["a", "sub/b c.txt"]
    assert b'filename="sub%2Fb%20c.txt"' in data and data.count(b'name="src"') == 2
    assert seen[-1] == (600_003, 600_003) and len(seen) >= 3
    with pytest.raises(ValueError, match="outside"):
        upload_body(["../a"], tmp_path / "sub")
    with pytest.raises(FileNotFoundError):
        upload_body(["missing"], tmp_path)


def _tar(**files: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name.replace("__", "/"))
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_downloads_unpack_every_part_and_refuse_escapes(tmp_path: Path) -> None:
    boundary = "kh-boundary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/x-tar\r\n\r\n".encode() + part + b"\r\n"
            for part in (_tar(a=b"alpha", d__b=b"bee"), _tar(c=b"sea"))
        )
        + f"--{boundary}--\r\n".encode()
    )
    parts = tar_parts(f"multipart/mixed; boundary={boundary}", body)
    written = extract_tars(parts, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["a", "c", "d/b"]
    assert (tmp_path / "out" / "d" / "b").read_bytes() == b"bee"
    with pytest.raises(tarfile.TarError):
        extract_tars([_tar(**{"..__escape": b"no"})], tmp_path / "out")
    assert not (tmp_path / "escape").exists()
    with pytest.raises(ValueError, match="multipart"):
        tar_parts("application/json", b"{}")


@pytest.mark.parametrize(
    ("status", "body", "kind", "slug"),
    [
        (
            404,
            {"type": "https://api.backend.ai/probs/object-not-found", "title": "No such session."},
            SessionNotFound,
            "object-not-found",
        ),
        (404, {"type": ".../object-not-found", "title": "No such app service."}, NotFound, None),
        (
            401,
            {"type": ".../auth-failed", "title": "Credential/signature mismatch."},
            AuthenticationFailed,
            "auth-failed",
        ),
        (400, {"type": ".../invalid-auth-params", "title": "x"}, AuthenticationFailed, None),
        (412, {"type": ".../quota-exceeded", "title": "limit"}, QuotaExceeded, "quota-exceeded"),
        (503, {"type": ".../server-frozen", "title": "frozen"}, ServerFrozen, None),
        (500, {"type": ".../internal-server-error", "title": "oops"}, ServerError, None),
        (
            400,
            {"type": ".../invalid-api-params", "title": "bad", "msg": "why"},
            InvalidRequest,
            "invalid-api-params",
        ),
    ],
)
def test_problem_bodies_become_named_exceptions(
    status: int, body: dict[str, str], kind: type[APIError], slug: str | None
) -> None:
    error = api_error(status, json.dumps(body).encode())
    assert type(error) is kind and error.status == status and error.problem == body
    assert slug is None or error.slug == slug
    assert str(error).startswith(body["title"])


def test_a_body_that_is_no_problem_is_kept_as_text() -> None:
    error = api_error(502, b"<html>Bad gateway</html>")
    assert isinstance(error, ServerError) and error.msg == "<html>Bad gateway</html>"


def _graphql_item(**overrides: object) -> dict[str, object]:
    item: dict[str, object] = {
        "id": "9b7b9a36-1111-2222-3333-444444444444",
        "name": "s1",
        "type": "BATCH",
        "image": "kernelhub/python:3.11",
        "status": "PENDING",
        "status_info": "",
        "status_data": json.dumps(
            {
                "scheduler": {
                    "failed_predicates": [
                        {
                            "name": "concurrency",
                            "msg": "You cannot run more than 1 concurrent sessions",
                        }
                    ]
                }
            }
        ),
        "status_history": json.dumps({"PENDING": "2026-12-01T12:00:00.000Z"}),
        "result": "UNDEFINED",
        "exit_code": None,
        "created_at": "2026-12-01T12:00:00.000Z",
        "requested_slots": json.dumps({"cpu": "1", "mem": "268435456"}),
        "idle_checks": json.dumps({}),
        "containers": [
            {
                "id": "9b7b9a36-1111-2222-3333-555555555555",
                "cluster_role": "main",
                "status": "TERMINATED",
                "agent": "i-local",
                "status_data": json.dumps({"kernel": {"exit_code": 143}}),
                "occupied_slots": "{}",
            }
        ],
    }
    return {**item, **overrides}


def test_session_info_reads_the_wire_shapes() -> None:
    pending = SessionInfo.from_graphql(_graphql_item())
    assert pending.type == "batch" and pending.is_waiting and pending.is_live
    assert pending.pending_reason == "You cannot run more than 1 concurrent sessions"
    assert pending.requested_slots == {"cpu": "1", "mem": "268435456"}
    ended = SessionInfo.from_graphql(
        _graphql_item(status="TERMINATED", result="SUCCESS", exit_code=0)
    )
    assert (ended.pending_reason, ended.exit_code, ended.result) == (None, 0, "success")
    assert not ended.is_live
    no_result = SessionInfo.from_graphql(_graphql_item(status="TERMINATED"))
    assert no_result.exit_code == 143  # the main kernel's, when there is no batch result
    dumped = json.loads(ended.model_dump_json())
    assert dumped["exit_code"] == 0 and dumped["pending_reason"] is None


def test_kh_exit_codes_and_how_files_run() -> None:
    info = SessionInfo.from_graphql(_graphql_item())
    assert exit_code_of(SessionNotFound(404, {})) == EXIT["not_found"] == 3
    assert exit_code_of(FileNotFoundError("x")) == 3
    assert exit_code_of(QuotaExceeded(412, {})) == exit_code_of(PendingTimeout("x", info)) == 4
    assert exit_code_of(ServerError(500, {})) == exit_code_of(ConnectionFailed("x")) == 5
    assert exit_code_of(AuthenticationFailed(401, {})) == exit_code_of(ValueError()) == 1
    assert _exec_for(["lib.py", "main.py"]) == "*"
    assert _exec_for(["data.csv", "job.py"]) == "python3 job.py"
    assert _exec_for(["notes.txt"]) == "*"
