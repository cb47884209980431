"""Virtual folders end to end, as a lab's users see them: Backend.AI's official client
(``backend.ai-client==23.3.12``, unmodified, its own venv) against ``kh up`` — data kept
across sessions, shared read-only, bounded by a quota, and nobody else's (issue 30).

Containers where Docker runs (CI), else process kernels: the read-only share and the
symlink escape need a container's mount namespace and are skipped without one. Sessions
name files relative to their work dir (``/home/work`` in a container, where folders are
mounted; a process kernel's own work dir, where they are linked), so one test runs on both.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from .khstack import ROOT, Stack, second_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


class Lab(Stack):
    """The stack, with the official client run as its admin or as another user."""

    def bai(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(client_binary()), *args],
            env=self.env(**env),
            cwd=cwd or self.workdir,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def sdk(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(client_binary().parent / "python"), "-c", code],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=240,
        )


@pytest.fixture(scope="module")
def client_installed() -> None:
    """Skip (or fail, where ``KH_REQUIRE_CLIENT=1``) before any stack is started for it."""
    if not client_binary().exists():
        reason = f"the official client is not installed at {client_binary()}"
        if os.environ.get("KH_REQUIRE_CLIENT") == "1":
            pytest.fail(f"KH_REQUIRE_CLIENT=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab(client_installed: None, shared_stack: Stack) -> Lab:
    """The shared default stack (tests/conftest.py, ``SHARED_STACKS``): the superadmin's
    folders made here are purged when the module ends."""
    return Lab(shared_stack.root, shared_stack.exports, shared_stack.backend)


@pytest.fixture(scope="module")
def bob(lab: Lab) -> dict[str, str]:
    access_key, secret_key = asyncio.run(second_tenant(lab, "vbob"))  # kh_vfolder has a bob
    return {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_data_uploaded_is_read_by_a_session_and_kept_for_the_next(lab: Lab, tmp_path: Path) -> None:
    created = _ok(lab.bai("vfolder", "create", "data"))
    assert 'Virtual folder "data" is created.' in created.stdout
    (lab.workdir / "file.csv").write_text("a,b\n1,2\n")
    _ok(lab.bai("vfolder", "upload", "data", "file.csv"))
    ran = lab.bai(
        "run",
        "-m",
        "data",
        "--rm",
        "python",
        "-c",
        "print(open('data/file.csv').read(), end='')",
    )
    assert ran.stdout == "a,b\n1,2\n", ran.stderr
    wrote = lab.bai(
        "run",
        "-m",
        "data=/home/work/results",
        "--rm",
        "python",
        "-c",
        "open('results/out.txt', 'w').write('from the first session')",
    )
    assert "exit code = 0" in wrote.stderr, wrote.stderr
    read = lab.bai(
        "run",
        "-m",
        "data",
        "--rm",
        "python",
        "-c",
        "import os; print(open('data/out.txt').read(), os.environ['KERNELHUB_VFOLDER_MOUNTS'])",
    )
    assert read.stdout == "from the first session /home/work/data\n", read.stderr
    configured = lab.bai(  # the client's own setting: folders mounted in every session
        "run",
        "--rm",
        "python",
        "-c",
        "print(open('data/out.txt').read())",
        BACKEND_VFOLDER_MOUNTS="data",
    )
    assert configured.stdout == "from the first session\n", configured.stderr
    _ok(lab.bai("vfolder", "download", "data", "out.txt", cwd=tmp_path))
    assert (tmp_path / "out.txt").read_text() == "from the first session"
    listed = _ok(lab.bai("vfolder", "ls", "data"))
    assert "file.csv" in listed.stdout and "out.txt" in listed.stdout


def test_nobody_else_lists_mounts_or_downloads_the_folder(
    lab: Lab, bob: dict[str, str], tmp_path: Path
) -> None:
    _ok(lab.bai("vfolder", "create", "private"))
    (lab.workdir / "secret.txt").write_text("the admin's")
    _ok(lab.bai("vfolder", "upload", "private", "secret.txt"))
    listed = lab.sdk(
        "import json\nfrom ai.backend.client.session import Session\n"
        "with Session() as api: print(json.dumps([f['name'] for f in api.VFolder.list()]))",
        **bob,
    )
    # the stack is shared: a project folder another module left may be listed, never this
    assert listed.returncode == 0 and "private" not in json.loads(listed.stdout), listed.stderr
    info = lab.bai("vfolder", "info", "private", **bob)
    assert info.returncode != 0 and "No such virtual folder" in info.stderr + info.stdout
    ran = lab.bai(
        "run",
        "-m",
        "private",
        "--rm",
        "python",
        "-c",
        "print(open('/home/work/private/secret.txt').read())",
        **bob,
    )
    assert "the admin's" not in ran.stdout and "No such virtual folder" in ran.stderr + ran.stdout
    folder_id = json.loads(
        _ok(
            lab.sdk(
                "import json\nfrom ai.backend.client.session import Session\n"
                "with Session() as api: print(json.dumps(api.VFolder('private').info()['id']))"
            )
        ).stdout
    )
    by_id = lab.bai("vfolder", "download", folder_id, "secret.txt", cwd=tmp_path, **bob)
    assert not (tmp_path / "secret.txt").exists(), by_id.stdout
    assert "No such virtual folder" in by_id.stderr + by_id.stdout


def test_a_read_only_invitation_refuses_the_invitees_writes(lab: Lab, bob: dict[str, str]) -> None:
    if lab.backend != "docker":
        pytest.skip("read-only mounts need containers (the process backend has no isolation)")
    _ok(lab.bai("vfolder", "create", "shared-ro"))
    (lab.workdir / "readme.txt").write_text("read me")
    _ok(lab.bai("vfolder", "upload", "shared-ro", "readme.txt"))
    invited = _ok(lab.bai("vfolder", "invite", "-p", "ro", "shared-ro", "vbob@kernelhub.local"))
    assert "vbob@kernelhub.local" in invited.stdout
    accepted = lab.sdk(
        "from ai.backend.client.session import Session\n"
        "with Session() as api:\n"
        "    (inv,) = api.VFolder.invitations()['invitations']\n"
        "    api.VFolder.accept_invitation(inv['id'])\n"
        "    print('accepted')",
        **bob,
    )
    assert accepted.stdout == "accepted\n", accepted.stderr
    code = (
        "print(open('/home/work/shared-ro/readme.txt').read())\n"
        "try:\n    open('/home/work/shared-ro/x', 'w')\n"
        "except OSError as e:\n    print('refused', e.errno)"
    )
    ran = lab.bai("run", "-m", "shared-ro", "--rm", "python", "-c", code, **bob)
    assert ran.stdout == "read me\nrefused 30\n", ran.stderr  # EROFS


def test_an_upload_past_the_quota_is_refused_and_lands_nothing(lab: Lab) -> None:
    _ok(lab.bai("vfolder", "create", "-q", "1k", "tiny"))
    (lab.workdir / "big.bin").write_bytes(os.urandom(4096))
    refused = lab.bai("vfolder", "upload", "tiny", "big.bin")
    assert refused.returncode == 1, refused.stdout
    assert "412 Precondition Failed" in refused.stderr and "quota is 1024 bytes" in refused.stderr
    assert "Traceback" not in refused.stderr
    (lab.workdir / "small.bin").write_bytes(b"x" * 1000)
    _ok(lab.bai("vfolder", "upload", "tiny", "small.bin"))  # within it: accepted
    listed = _ok(lab.bai("vfolder", "ls", "tiny"))
    assert "big.bin" not in listed.stdout and "small.bin" in listed.stdout


def test_a_symlink_a_session_leaves_never_leads_the_host_outside_the_folder(
    lab: Lab, tmp_path: Path
) -> None:
    if lab.backend != "docker":
        pytest.skip("the process backend runs tenants unisolated by design")
    _ok(lab.bai("vfolder", "create", "links"))
    planted = lab.bai(
        "run",
        "-m",
        "links",
        "--rm",
        "python",
        "-c",
        "import os; os.symlink('/etc/hostname', '/home/work/links/escape'); "
        "os.symlink('/etc', '/home/work/links/etcdir'); print('planted')",
    )
    assert "planted" in planted.stdout, planted.stderr
    got = lab.bai("vfolder", "download", "links", "escape", cwd=tmp_path)
    print("LINK", got.returncode, got.stdout[-800:], got.stderr[-1500:])
    assert (
        not (tmp_path / "escape").exists()
        or (tmp_path / "escape").read_text() != Path("/etc/hostname").read_text()
    )
    assert got.returncode != 0 or "Traceback" not in got.stderr
    inside = lab.bai("vfolder", "ls", "links", "etcdir")
    print("LS", inside.returncode, inside.stdout[-800:], inside.stderr[-800:])
    print("MKDIR", lab.bai("vfolder", "mkdir", "links", "etcdir/zz"))
    assert "passwd" not in inside.stdout
    marker = f"kh-escape-{uuid.uuid4().hex}"
    lab.bai("vfolder", "mkdir", "links", f"etcdir/{marker}")
    assert not Path("/etc", marker).exists()
