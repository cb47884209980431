"""A tenant against the agent's file operations on its kernel's work dir (issue 26, attack 1,
the download half of attack 5, and their family): the agent runs as root on the host and
the tenant owns every name in the work dir, so each test plants symlinks, FIFOs, hard links,
huge sparse files or swaps names while the agent works, and checks that nothing outside the
work dir is ever written or read back, and that nothing hangs.

The unit tests run against real directories (no services); the last one replays the upload
attack through ``kh`` on a real stack with Docker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import tarfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from actors.agents import safe_fs, workdir
from actors.domain.errors import InvalidAPIParameters, ObjectNotFound
from kernelhub import AsyncClient
from kernelhub.sdk import ClientConfig
from kernelhub.sdk._wire import signed_headers
from kernelhub.sdk.errors import APIError
from kernelhub.testing import eventually

from .khstack import Stack, kh_up, second_tenant

pytestmark = pytest.mark.hostile

SECRET = b"host secret: master.key"
KERNEL_UID = 1000
AS_ROOT = os.geteuid() == 0


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with openat2 (where the kernel has it) and with the fallback that
    walks one component at a time."""
    if request.param == "walk":
        monkeypatch.setattr(safe_fs, "OPENAT2", False)
    return str(request.param)


@pytest.fixture
def work(tmp_path: Path, resolver: str) -> Path:
    """A kernel's work dir, owned (as on the Docker backend) by the kernel's user."""
    path = tmp_path / "work"
    path.mkdir()
    if AS_ROOT:
        os.chown(path, KERNEL_UID, KERNEL_UID)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The host: a root-owned directory next to the work dir with a secret in it."""
    path = tmp_path / "host"
    path.mkdir()
    (path / "secret").write_bytes(SECRET)
    return path


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {member.name: member for member in tar.getmembers()}


# ---- uploads ---------------------------------------------------------------------------------
@pytest.mark.unit
def test_the_planted_temporary_name_does_not_redirect_an_upload(work: Path, outside: Path) -> None:
    """The issue's attack: ``.x.kh-upload`` -> a host file, then ``kh upload SESSION x``."""
    os.symlink(outside / "x", work / ".x.kh-upload")
    os.symlink(outside / "secret", work / ".y.kh-upload")
    assert workdir.upload(work, [("x", b"tenant data"), ("y", b"more")]) == ["x", "y"]
    assert not (outside / "x").exists() and (outside / "secret").read_bytes() == SECRET
    assert (work / "x").read_bytes() == b"tenant data" and (work / "y").read_bytes() == b"more"
    assert os.path.islink(work / ".x.kh-upload")  # the tenant's own link, left alone
    assert not [p for p in os.listdir(work) if p.startswith(".kh-upload-")]  # no temp left


@pytest.mark.unit
def test_an_upload_replaces_a_symlink_at_its_name_and_never_writes_through_it(
    work: Path, outside: Path
) -> None:
    os.symlink(outside / "secret", work / "x")
    workdir.upload(work, [("x", b"new")])
    assert (outside / "secret").read_bytes() == SECRET
    assert not os.path.islink(work / "x") and (work / "x").read_bytes() == b"new"


@pytest.mark.unit
def test_an_upload_below_a_symlinked_directory_is_refused(work: Path, outside: Path) -> None:
    os.symlink(outside, work / "d")
    os.symlink("d", work / "inner")  # even a link that points inside: it could change
    for name in ("d/y", "d%2Fy", "/home/work/d/y", "inner/y", "d/sub/y"):
        with pytest.raises(InvalidAPIParameters, match="symbolic link"):
            workdir.upload(work, [(name, b"x")])
    assert sorted(os.listdir(outside)) == ["secret"]


@pytest.mark.unit
def test_a_refused_name_in_a_batch_writes_nothing(work: Path, outside: Path) -> None:
    os.symlink(outside, work / "d")
    with pytest.raises(InvalidAPIParameters):
        workdir.upload(work, [("first", b"1"), ("d/second", b"2")])
    assert os.listdir(work) == ["d"] and sorted(os.listdir(outside)) == ["secret"]


@pytest.mark.unit
def test_an_upload_over_a_hard_link_leaves_the_other_name_alone(work: Path) -> None:
    (work / "a").write_bytes(b"original")
    os.link(work / "a", work / "b")
    workdir.upload(work, [("b", b"replaced")])
    assert (work / "a").read_bytes() == b"original" and (work / "b").read_bytes() == b"replaced"


@pytest.mark.unit
@pytest.mark.skipif(not AS_ROOT, reason="giving files away needs root (as the agent has)")
def test_uploaded_files_and_their_parents_belong_to_the_kernels_user(work: Path) -> None:
    workdir.upload(work, [("deep/er/x.txt", b"x"), ("top.txt", b"y")])
    for path in (
        work / "deep",
        work / "deep" / "er",
        work / "deep" / "er" / "x.txt",
        work / "top.txt",
    ):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (KERNEL_UID, KERNEL_UID), path


@pytest.mark.unit
def test_a_directory_is_not_overwritten_by_an_upload(work: Path) -> None:
    (work / "d").mkdir()
    for name in ("d", "/home/work", "."):
        with pytest.raises(InvalidAPIParameters, match="directory"):
            workdir.upload(work, [(name, b"x")])
    assert (work / "d").is_dir()


# ---- names -----------------------------------------------------------------------------------
LEAVING = [
    "../escape",
    "..%2Fescape",
    "/etc/passwd",
    "sub/../../escape",
    "/home/work/../escape",
    "%2Fetc%2Fpasswd",
    "a/..",
    "x\0y",
    "x%00y",
]


@pytest.mark.unit
@pytest.mark.parametrize("name", LEAVING)
def test_names_that_leave_the_work_dir_are_refused_everywhere(
    work: Path, outside: Path, name: str
) -> None:
    (work / "sub").mkdir()
    calls: list[Callable[[], object]] = [
        lambda: workdir.upload(work, [(name, b"x")]),
        lambda: workdir.download_single(work, name),
        lambda: workdir.download(work, [name]),
        lambda: workdir.list_files(work, name),
    ]
    for call in calls:
        with pytest.raises(InvalidAPIParameters):
            call()
    assert not (work.parent / "escape").exists()


@pytest.mark.unit
def test_the_names_the_clients_send_still_work(work: Path) -> None:
    assert workdir.upload(
        work, [("sub%2Fb.txt", b"b"), ("/home/work/c.txt", b"c"), ("./d.txt", b"d")]
    ) == ["sub/b.txt", "c.txt", "d.txt"]
    assert workdir.download_single(work, "/home/work/sub/b.txt") == b"b"
    assert workdir.download_single(work, "sub%2Fb.txt") == b"b"
    listing = workdir.list_files(work, "/home/work")
    assert listing["abspath"] == "/home/work" and listing["errors"] == ""
    assert isinstance(listing["files"], str)  # a JSON string: the official client decodes it
    assert workdir.list_files(work, "sub")["abspath"] == "/home/work/sub"
    with pytest.raises(ObjectNotFound):
        workdir.download_single(work, "nope.txt")


# ---- single downloads ----------------------------------------------------------------------
@pytest.mark.unit
def test_a_symlink_is_not_downloaded_whatever_it_points_at(work: Path, outside: Path) -> None:
    os.symlink(outside / "secret", work / "s")
    os.symlink("/dev/null", work / "null")
    os.symlink(outside, work / "d")
    (work / "inside").write_bytes(b"ok")
    os.symlink("inside", work / "alias")
    for name in ("s", "null", "d/secret", "alias"):
        with pytest.raises(InvalidAPIParameters, match="symbolic link"):
            workdir.download_single(work, name)


@pytest.mark.unit
@pytest.mark.timeout(20)
def test_a_fifo_download_is_refused_instead_of_hanging(work: Path) -> None:
    os.mkfifo(work / "pipe")
    with pytest.raises(InvalidAPIParameters, match="FIFO"):
        workdir.download_single(work, "pipe")
    with pytest.raises(InvalidAPIParameters, match="FIFO"):
        workdir.download(work, ["pipe"])
    for call in (
        lambda: workdir.list_files(work, "pipe"),
        lambda: workdir.download_single(work, "pipe/x"),
        lambda: workdir.upload(work, [("pipe/x", b"x")]),
    ):
        with pytest.raises(InvalidAPIParameters, match="not a directory"):
            call()


@pytest.mark.unit
@pytest.mark.timeout(20)
def test_a_unix_socket_is_refused(work: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(work / "sock"))
        with pytest.raises(InvalidAPIParameters, match="socket"):
            workdir.download_single(work, "sock")


@pytest.mark.unit
@pytest.mark.timeout(20)
def test_a_device_node_is_never_opened(work: Path) -> None:
    """A tenant that could make device nodes (root in a container with CAP_MKNOD) plants
    ``/dev/zero``'s twin: refused by what it is, before an open could reach its driver."""
    try:
        os.mknod(work / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError as exc:
        pytest.skip(f"no device nodes here: {exc}")
    with pytest.raises(InvalidAPIParameters, match="character device"):
        workdir.download_single(work, "zero")
    with pytest.raises(InvalidAPIParameters, match="character device"):
        workdir.download(work, ["zero"])
    assert "zero" not in members(workdir.download(work, ["/home/work"]))


@pytest.mark.unit
@pytest.mark.timeout(20)
def test_a_sparse_100_gib_file_is_refused_without_being_read(work: Path) -> None:
    with open(work / "huge", "wb") as huge:
        huge.truncate(100 * 2**30)
    with pytest.raises(InvalidAPIParameters, match=f"larger than {workdir.MAX_DOWNLOAD_BYTES}"):
        workdir.download_single(work, "huge")
    with pytest.raises(InvalidAPIParameters, match=f"larger than {workdir.MAX_ARCHIVE_BYTES}"):
        workdir.download(work, ["huge"])
    with pytest.raises(InvalidAPIParameters, match="larger than"):
        workdir.download(work, ["/home/work"])


@pytest.mark.unit
def test_a_file_at_the_cap_comes_back_and_one_byte_more_does_not(work: Path) -> None:
    with open(work / "at-cap", "wb") as file:
        file.truncate(workdir.MAX_DOWNLOAD_BYTES)
    assert len(workdir.download_single(work, "at-cap")) == workdir.MAX_DOWNLOAD_BYTES
    with open(work / "at-cap", "ab") as file:
        file.write(b"!")
    with pytest.raises(InvalidAPIParameters, match="larger than"):
        workdir.download_single(work, "at-cap")


@pytest.mark.unit
@pytest.mark.skipif(not AS_ROOT, reason="a link to a root-owned file is made as root")
def test_a_hard_link_to_a_file_the_kernels_user_does_not_own_is_not_read(
    work: Path, outside: Path
) -> None:
    """Where ``protected_hardlinks`` is off, a tenant may link a file it can name but not
    read; the agent, as root, must not read it for them."""
    os.link(outside / "secret", work / "hard")
    with pytest.raises(InvalidAPIParameters, match="hard link"):
        workdir.download_single(work, "hard")
    assert SECRET not in workdir.download(work, ["/home/work"])
    (work / "mine").write_bytes(b"mine")
    os.chown(work / "mine", KERNEL_UID, KERNEL_UID)
    os.link(work / "mine", work / "also-mine")
    assert workdir.download_single(work, "also-mine") == b"mine"


@pytest.mark.unit
def test_chunks_are_read_as_safely_and_bounded(work: Path, outside: Path) -> None:
    (work / "f").write_bytes(b"0123456789")
    assert workdir.read_chunk(work, "f", 0, 4) == (b"0123", 10)
    assert workdir.read_chunk(work, "/home/work/f", 8, 4) == (b"89", 10)
    assert workdir.read_chunk(work, "f", 10, 4) == (b"", 10)
    for offset, length in ((-1, 4), (0, 0), (0, workdir.MAX_CHUNK_BYTES + 1)):
        with pytest.raises(InvalidAPIParameters, match="chunk"):
            workdir.read_chunk(work, "f", offset, length)
    os.symlink(outside / "secret", work / "s")
    os.mkfifo(work / "pipe")
    with open(work / "huge", "wb") as huge:
        huge.truncate(100 * 2**30)
    for name, words in (("s", "symbolic link"), ("pipe", "FIFO"), ("huge", "larger than")):
        with pytest.raises(InvalidAPIParameters, match=words):
            workdir.read_chunk(work, name, 0, 4)


# ---- tar downloads and listings -------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.timeout(30)
def test_a_tar_download_follows_nothing_and_leaves_out_what_is_not_a_file(
    work: Path, outside: Path
) -> None:
    data = work / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "file.txt").write_bytes(b"kept")
    os.symlink("sub/file.txt", data / "inner-link")
    os.symlink(outside / "secret", data / "out-link")
    os.symlink("../../host/secret", data / "relative-out")
    os.symlink(outside, data / "out-dir")
    os.symlink("/dev/zero", data / "zero")
    os.mkfifo(data / "pipe")
    archive = workdir.download(work, ["data", "/home/work/data/sub/file.txt"])
    got = members(archive)
    assert set(got) == {"data", "data/sub", "data/sub/file.txt", "data/inner-link"}
    assert got["data/inner-link"].issym() and got["data/inner-link"].linkname == "sub/file.txt"
    assert SECRET not in archive
    for named in ("data/out-dir/secret", "data/out-link", "data/inner-link"):
        with pytest.raises(InvalidAPIParameters, match="symbolic link"):
            workdir.download(work, [named])


@pytest.mark.unit
def test_a_listing_looks_at_links_without_following_them(work: Path, outside: Path) -> None:
    os.symlink(outside, work / "out-dir")
    os.mkfifo(work / "pipe")
    (work / "f").write_bytes(b"12345")
    entries = {
        e["filename"]: e for e in __import__("json").loads(workdir.list_files(work, ".")["files"])
    }
    assert entries["out-dir"]["mode"].startswith("l") and entries["pipe"]["mode"].startswith("p")
    assert entries["f"]["size"] == 5 and "secret" not in entries
    with pytest.raises(InvalidAPIParameters, match="symbolic link"):
        workdir.list_files(work, "out-dir")


# ---- swaps during the operation ------------------------------------------------------------
class Flipper:
    """A tenant swapping ``name`` between ``inside()`` and a symlink to ``target``, as fast as
    it can, atomically (rename), until stopped."""

    def __init__(self, path: Path, target: Path, inside: Callable[[Path], None]) -> None:
        self.path, self.target, self.inside = path, target, inside
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        spare = self.path.with_name(f"spare-{uuid.uuid4().hex}")
        while not self.stop.is_set():
            self.inside(spare)
            self._swap_in(spare)
            os.symlink(self.target, spare)
            self._swap_in(spare)

    def _swap_in(self, spare: Path) -> None:
        while True:
            try:
                os.replace(spare, self.path)
                return
            except OSError:  # a directory on one side: rename() does not swap kinds
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path, self.path.with_name(f"old-{uuid.uuid4().hex}"))

    def __enter__(self) -> Flipper:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def regular(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def directory(path: Path) -> None:
    path.mkdir()


def for_a_while(seconds: float = 1.5) -> Iterator[int]:
    deadline, rounds = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        yield rounds
        rounds += 1


@pytest.mark.unit
@pytest.mark.timeout(60)
def test_downloads_racing_a_symlink_swap_never_return_host_files(work: Path, outside: Path) -> None:
    (work / "d").mkdir()
    with (
        Flipper(work / "f", outside / "secret", regular(b"inside")),
        Flipper(work / "d" / "g", outside / "secret", regular(b"inside")),
    ):
        seen: set[bytes] = set()
        for _ in for_a_while():
            for call in (
                lambda: workdir.download_single(work, "f"),
                lambda: workdir.download(work, ["f", "d"]),
                lambda: workdir.download(work, ["/home/work"]),
            ):
                try:
                    got = call()
                except (InvalidAPIParameters, ObjectNotFound):
                    continue
                seen.add(b"secret" if SECRET in got else b"ok")
    assert seen and b"secret" not in seen


@pytest.mark.unit
@pytest.mark.timeout(60)
def test_a_directory_swapped_for_a_symlink_never_gets_an_upload_outside(
    work: Path, outside: Path
) -> None:
    with (
        Flipper(work / "d", outside, directory),
        Flipper(work / "x", outside / "secret", regular(b"inside")),
    ):
        for rounds in for_a_while():
            for name in (f"d/up-{rounds}", "x"):
                try:
                    workdir.upload(work, [(name, b"tenant data")])
                except (InvalidAPIParameters, ObjectNotFound):
                    pass
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == SECRET


@pytest.mark.unit
@pytest.mark.timeout(60)
def test_a_name_flipping_to_a_fifo_never_blocks_a_download(work: Path) -> None:
    def fifo(path: Path) -> None:
        os.mkfifo(path)

    spare = work / "spare"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            (spare).write_bytes(b"inside")
            os.replace(spare, work / "f")
            fifo(spare)
            os.replace(spare, work / "f")

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        for _ in for_a_while(1.0):
            for call in (
                lambda: workdir.download_single(work, "f"),
                lambda: workdir.download(work, ["/home/work"]),
            ):
                try:
                    call()
                except (InvalidAPIParameters, ObjectNotFound):
                    pass
    finally:
        stop.set()
        thread.join()
    assert stat.S_ISFIFO(os.lstat(work / "f").st_mode) or (work / "f").is_file()


# ---- through the front door, with Docker -----------------------------------------------------
PLANT = """
import os
os.symlink({target!r}, '/home/work/.x.kh-upload')
os.symlink({secret!r}, '/home/work/s')
os.mkfifo('/home/work/pipe')
with open('/home/work/huge', 'wb') as huge:
    huge.truncate(100 * 2**30)
open('/home/work/blob', 'wb').write(bytes(range(256)) * 12289)
print('planted')
"""


async def fetch_single(stack: Stack, session: str, name: str) -> bytes | APIError:
    """``GET /session/{name}/download_single?file=...`` (no client command sends it)."""
    config = ClientConfig(
        endpoint=stack.exports["BACKEND_ENDPOINT"],
        access_key=stack.exports["BACKEND_ACCESS_KEY"],
        secret_key=stack.exports["BACKEND_SECRET_KEY"],
    )
    async with AsyncClient(config) as client:
        try:
            answer = await client.request(
                "GET", f"/session/{session}/download_single", params={"file": name}
            )
        except APIError as refused:
            return refused
        return answer.content


@pytest.mark.docker
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_kh_upload_after_planting_the_temporary_name_leaves_the_host_alone(
    docker: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The issue's reproduction: in a session the tenant plants ``.x.kh-upload`` -> a host
    path, then ``kh upload SESSION x``. The host file is never written; the upload lands in
    the work dir, owned by the kernel's user; links and FIFOs named in a download are one
    clear error line each."""
    host = tmp_path_factory.mktemp("host")
    (host / "secret").write_bytes(SECRET)
    target = host / "x"
    with kh_up() as stack:
        plant = PLANT.format(target=str(target), secret=str(host / "secret"))
        made = stack.kh("run", "-n", "hostile-files", "python", "-c", plant)
        assert made.returncode == 0 and made.stdout == "planted\n", made.stderr
        (stack.workdir / "x").write_text("tenant data")
        uploaded = stack.kh("upload", "hostile-files", "x")
        assert uploaded.returncode == 0, uploaded.stderr
        assert not target.exists() and (host / "secret").read_bytes() == SECRET
        seen = stack.kh(
            "exec", "hostile-files", "-c", "import os; print(os.stat('x').st_uid, open('x').read())"
        )
        assert seen.stdout == f"{KERNEL_UID} tenant data\n", seen.stderr
        for name, words in (("s", "symbolic link"), ("pipe", "FIFO")):
            refused = stack.kh("download", "hostile-files", name, "--dest", "got")
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode != 0 and len(lines) == 1, refused.stderr
            assert lines[0].startswith("kh: error: ") and words in lines[0], refused.stderr
        assert not (stack.workdir / "got" / "s").exists()
        streamed = asyncio.run(fetch_single(stack, "hostile-files", "blob"))
        assert streamed == bytes(range(256)) * 12289  # three chunks and a bit, in order
        cap = f"larger than {workdir.MAX_DOWNLOAD_BYTES} bytes"
        for name, words in (("s", "symbolic link"), ("pipe", "FIFO"), ("huge", cap)):
            refused = asyncio.run(fetch_single(stack, "hostile-files", name))
            assert isinstance(refused, APIError) and refused.status == 400, refused
            assert refused.msg is not None and words in refused.msg, refused.msg
        stack.kh("rm", "hostile-files")


# ---- what a tenant's file operations may cost the agent and the gateway ------------------------
WIDE, DEEP, LONG = 5_000, 8, 240


@pytest.mark.unit
def test_a_deep_tree_of_wide_directories_is_refused_holding_few_names(work: Path) -> None:
    """8 levels of 5,000 names of 240 characters, the subdirectory first in each: the old
    walk kept every level's listing while it recursed (40,000 names, about 12 MiB, per call);
    now names count against the entries cap as they are read, so the walk holds at most
    10,000 and refuses with a clear error."""
    level = work
    for _ in range(DEEP):
        sub = level / ("0" * LONG)
        sub.mkdir()
        for index in range(WIDE - 1):
            os.close(os.open(level / f"{index:0{LONG}d}f", os.O_CREAT | os.O_WRONLY, 0o644))
        level = sub
    tracemalloc.start()
    try:
        with pytest.raises(InvalidAPIParameters, match=f"more than {workdir.MAX_ARCHIVE_ENTRIES}"):
            workdir.download(work, ["/home/work"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2**20, f"the walk held {peak / 2**20:.1f} MiB"


@pytest.mark.unit
def test_a_file_enters_a_tar_without_a_second_copy(work: Path) -> None:
    """A 40 MiB file in a tar: the old code read it whole, then copied it into the archive
    (twice its size at once); now it is copied from its fd in chunks."""
    size = 40 * 2**20
    (work / "big").write_bytes(b"\x01" * size)
    tracemalloc.start()
    try:
        archive = workdir.download(work, ["big"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert members(archive)["big"].size == size
    assert peak < 1.4 * size, f"the download held {peak / 2**20:.1f} MiB for a 40 MiB file"


@pytest.mark.unit
def test_a_file_that_changes_size_mid_tar_keeps_the_archive_well_formed(work: Path) -> None:
    """The member's size is the one it was opened with: bytes added later are cut, a file
    cut short meanwhile is padded, and the archive still reads back."""
    (work / "f").write_bytes(b"a" * 100)
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        reader = workdir._Fixed(fd, 150)
        assert reader.read(64) == b"a" * 64
        assert reader.read(1000) == b"a" * 36 + bytes(50)
        assert reader.read(10) == b""
    finally:
        os.close(fd)


@pytest.mark.unit
def test_the_agents_file_work_leaves_its_default_executor_free(tmp_path: Path) -> None:
    """Forty file operations stuck on the tenant's files (a download waiting on a slow disk,
    here an event) once filled the agent's default executor, the one batch results are read
    in; now they wait in the file pool, a few per kernel, and other work still runs."""
    from actors.agents.agent import Agent
    from actors.agents.backends.sim import SimBackend
    from events import RedisEventStore

    kernels = [uuid.uuid4() for _ in range(40)]

    class WorkDirs(SimBackend):
        """Kernels that run and have a work dir (the simulated backend has none)."""

        def running(self) -> set[uuid.UUID]:
            return set(kernels)

        def work_dir(self, kernel_id: uuid.UUID) -> Path | None:
            path = tmp_path / str(kernel_id)
            path.mkdir(exist_ok=True)
            return path

    release = threading.Event()
    real_download = workdir.download

    def slow_download(work_dir: Path, names: list[str]) -> bytes:
        release.wait(30)
        return real_download(work_dir, names)

    async def scenario() -> None:
        store = RedisEventStore.from_url("redis://127.0.0.1:1")  # never reached
        agent = Agent(store, None, "agent-files", {"cpu": 4}, backend=WorkDirs())  # type: ignore[arg-type]
        files = agent.execution
        stuck = [asyncio.create_task(files.download_files(k, ["/home/work"])) for k in kernels]
        stuck += [
            asyncio.create_task(files.download_files(kernels[0], ["/home/work"])) for _ in range(3)
        ]
        await asyncio.sleep(0.5)
        try:
            # a batch result read meanwhile (the backends read them with to_thread)
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "batch read"), 5)
            pool = getattr(files, "file_pool", None)
            assert pool is not None and pool.busy(kernels[0]) == 4  # 2 run, 2 wait their turn
        finally:
            release.set()
            archives = await asyncio.wait_for(asyncio.gather(*stuck), 60)
        assert all(members(archive) for archive in archives)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workdir, "download", slow_download)
        asyncio.run(scenario())


@pytest.mark.unit
def test_a_kernel_whose_caller_left_still_holds_its_turn_until_the_work_ends() -> None:
    """A client that gives up (the gateway cancels its call) does not free a thread that is
    still working: the kernel's turn comes back when the work ends, so one kernel never runs
    more than its share at once however often its callers give up."""
    from actors.agents.file_pool import FilePool

    pool = FilePool(workers=4, per_kernel=2)
    kernel, release = uuid.uuid4(), threading.Event()
    running: list[int] = []
    peak: list[int] = [0]

    def work() -> str:
        running.append(1)
        peak[0] = max(peak[0], len(running))
        release.wait(10)
        running.pop()
        return "done"

    async def scenario() -> None:
        first = [asyncio.create_task(pool.run(kernel, work)) for _ in range(2)]
        await asyncio.sleep(0.2)
        for task in first:
            task.cancel()  # the callers left; their work goes on
        later = [asyncio.create_task(pool.run(kernel, work)) for _ in range(2)]
        await asyncio.sleep(0.3)
        assert len(running) == 2 and pool.busy(kernel) == 4
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*later), 10) == ["done", "done"]
        # each turn comes back through the loop once its thread ends (call_soon_threadsafe),
        # which may be a tick after the callers' results
        for _ in range(100):
            if pool.busy(kernel) == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.busy(kernel) == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()
    assert peak[0] == 2


@pytest.mark.unit
def test_file_operation_slots_are_refused_past_either_cap_and_given_back() -> None:
    from actors.gateway.stream_limits import FileOpLimits, TooManyFileOperations

    limits = FileOpLimits(per_keypair=2, total=3)
    with limits.hold("a"), limits.hold("a"):
        with pytest.raises(TooManyFileOperations, match="2 file operations open"):
            with limits.hold("a"):
                pass
        with limits.hold("b"), pytest.raises(TooManyFileOperations, match="gateway"):
            with limits.hold("c"):
                pass
    assert limits.held() == 0 and TooManyFileOperations.status == 429


@pytest.fixture(scope="module")
def cheap_stack(process_stack: Stack) -> Stack:
    """The shared ``kh up`` on the process backend (no containers needed)."""
    return process_stack


@contextlib.asynccontextmanager
async def tenant_session(stack: Stack, name: str) -> AsyncIterator[tuple[ClientConfig, Any]]:
    """A new tenant and a running session of theirs (destroyed on the way out)."""
    access_key, secret_key = await second_tenant(stack, name)
    config = ClientConfig(
        endpoint=stack.exports["BACKEND_ENDPOINT"], access_key=access_key, secret_key=secret_key
    )
    async with AsyncClient(config) as client:
        async with client.session("python", name=f"{name}-files", timeout=120) as session:
            yield config, session


def signed(config: ClientConfig, method: str, path: str, content_type: str) -> dict[str, str]:
    host = config.endpoint.removeprefix("http://")
    headers = signed_headers(method, path, host, content_type, config.access_key, config.secret_key)
    return {**headers, "Content-Type": content_type}


async def raw_download(
    http: aiohttp.ClientSession, config: ClientConfig, session: str, name: str
) -> aiohttp.ClientResponse:
    """``GET /session/{session}/download?files=name``, the answer's body left unread."""
    path = f"/session/{session}/download?files={name}"
    return await http.get(
        yarl.URL(config.endpoint + path, encoded=True),
        headers=signed(config, "GET", path, "text/plain"),
    )


async def problem_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    problem: dict[str, Any] = await response.json(content_type=None)
    return problem


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_one_keypair_cannot_hold_more_file_operations_than_its_cap(
    cheap_stack: Stack, tmp_path: Path
) -> None:
    """Mallory starts downloads of a 24 MiB file and never reads them (each holds an archive
    in the gateway and, while it is built, an agent thread): past the cap the next is a 429,
    while another tenant's download on the same agent is served; read or closed, the slots
    come back. The old gateway served them all (fifty would fill the agent's threads)."""
    from actors.gateway.stream_limits import MAX_FILE_OPS_PER_KEYPAIR as CAP

    async def attack() -> None:
        async with (
            tenant_session(cheap_stack, "fmallory") as (mallory, session),
            tenant_session(cheap_stack, "fvictim") as (victim, victims),
        ):
            (tmp_path / "big").write_bytes(os.urandom(24 * 2**20))
            (tmp_path / "v.txt").write_bytes(b"victim's file")
            await session.upload([tmp_path / "big"], base_dir=tmp_path)
            await victims.upload([tmp_path / "v.txt"], base_dir=tmp_path)
            await hold_past_the_cap(mallory, session.name, victim, victims)

            async def slot_back() -> bool:
                try:
                    await session.list_files()
                except APIError:
                    return False
                return True

            await eventually(slot_back, timeout=30, interval=0.2, message="the slots back")

    async def hold_past_the_cap(
        mallory: ClientConfig, name: str, victim: ClientConfig, victims: Any
    ) -> None:
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            connector=aiohttp.TCPConnector(limit=0),
        )
        held: list[aiohttp.ClientResponse] = []
        try:
            starts = [raw_download(http, mallory, name, "big") for _ in range(CAP)]
            held = list(await asyncio.gather(*starts))
            assert [r.status for r in held] == [200] * CAP
            extra = await raw_download(http, mallory, name, "big")
            assert extra.status == 429, extra.status
            problem = await problem_of(extra)
            assert problem["type"].endswith("/rate-limit-exceeded"), problem
            assert "file operations" in problem["msg"], problem
            fetched = await victims.download(["v.txt"], dest=tmp_path / "got")
            assert [p.read_bytes() for p in fetched] == [b"victim's file"]
            served = await raw_download(http, victim, victims.name, "v.txt")
            assert served.status == 200, await served.text()
            served.close()
        finally:
            for response in held:
                response.close()
            await http.close()

    asyncio.run(attack())


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_an_upload_whose_parts_pass_the_total_cap_is_refused_and_writes_nothing(
    cheap_stack: Stack,
) -> None:
    """Two 40 MiB parts, each under the per-file cap: the old gateway held both (and up to
    20 such parts, 1.28 GiB) and passed them on; now the running total is refused as it
    passes the per-call cap, a 400 naming it, and nothing reaches the work dir."""
    from actors.gateway.sessions import MAX_UPLOAD_CALL_BYTES

    async def attack() -> None:
        async with tenant_session(cheap_stack, "fuploader") as (config, session):
            body = aiohttp.MultipartWriter("form-data")
            for part_name in ("a1", "a2"):
                part = body.append(bytes(40 * 2**20), {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name="src", filename=part_name)
            path = f"/session/{session.name}/upload"
            async with aiohttp.ClientSession() as http:
                headers = signed(config, "POST", path, body.content_type)
                answer = await http.post(config.endpoint + path, data=body, headers=headers)
                assert answer.status == 400, answer.status
                problem = await problem_of(answer)
            assert problem["type"].endswith("/invalid-api-params"), problem
            assert str(MAX_UPLOAD_CALL_BYTES) in problem["msg"], problem
            listing = await session.list_files()
            assert not {"a1", "a2"} & {entry.name for entry in listing.files}, listing

    asyncio.run(attack())
