"""The Docker backend: each kernel a container, driven through aiodocker.

The container's main process is the kernel runner
(:mod:`kernelhub.in_kernel.kernel_runner`), mounted read-only from this host at
``/opt/kernelhub/kernel_runner`` and started under Docker's init
(so the runner is not PID 1, whose default signal actions are ignored, and orphans are
reaped). The agent reaches it through its unix socket in the kernel's ``run`` dir, bind
mounted at ``/opt/kernelhub/run``: containers have no network unless asked for
(``--network none``). Limits come from the kernel's slots: memory with swap equal to it (no
swap), CPU cores pinned (cpuset) plus a CFS quota for a fractional share, a cap on pids. The
container runs as the image's ``work`` user with no capabilities at all (the runner, its
terminals, services and batch commands need none), no new privileges (setuid binaries do
not elevate), and a read-only root with tmpfs scratch at ``/tmp``, ``/var/tmp`` and ``/run``:
what user code can write is its work dir, its run dir and those.

The session's options: ``environ`` is in the container's environment (and ``environ.txt``)
beside ours, which win; the bootstrap script lies read-only at ``/home/config/bootstrap.sh``
and the runner runs it, as the ``work`` user inside the container, before it answers
``status``; its output is the container's output (the kernel log). ``resource_opts.shmem`` is
the container's ``/dev/shm`` (``ShmSize``), carved out of its memory limit as upstream does
(a shmem not below the memory is refused: Docker would read the rest as no limit at all).
Virtual folders are bind mounts (``HostConfig.Mounts``, read-only for ``ro``) at their
kernel paths, each checked first (:mod:`..vfolder_mounts`: the exact folder directory under
the volume root, never a symlink).

What happens to a container on its own (it exits, it is OOM-killed, ``docker kill`` from
outside) comes from the Docker event stream, never from polling; after every (re)connection
of that stream the known containers are inspected once, so an exit while the stream was
down is not lost. A new backend finds the containers of its agent by label (``adopt``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import structlog

from ...domain.isolation import isolation_of_backend
from ..cgroups import cgroup_stats
from ..kernel_sockets import KernelPeer, read_tail
from ..safe_fs import Owner
from ..vfolder_mounts import docker_mounts, parse_mounts
from .base import (
    BOOT_RUNNER,
    MAX_LOG_BYTES,
    RUNNER_PACKAGE,
    DirectoryBackend,
    ImageNotAvailable,
    KernelLaunch,
    KernelObserver,
    runner_bootstrap_args,
    write_bootstrap,
    write_environ,
)

__all__ = ["DockerBackend", "UnlimitedKernel", "docker_answers"]

log = structlog.get_logger(__name__)

KERNEL_LABEL = "ai.backend.kernel-id"
SESSION_LABEL = "ai.backend.session-id"
OWNER_LABEL = "ai.backend.owner"
SUPPORTED_KERNELSPEC = range(1, 2)
"""``ai.backend.kernelspec`` values this agent runs (upstream's [MIN, MAX] = [1, 1])."""
WORK_UID = 1000
"""The uid of the image's ``work`` user, which owns the bind-mounted work and run dirs."""
_IN_CONTAINER_RUN = "/opt/kernelhub/run"
_IN_CONTAINER_PACKAGE = "/opt/kernelhub"
_SERVICE_DEFS = "/etc/backend.ai/service-defs"
_TMPFS = {
    "/tmp": "rw,nosuid,nodev,size=1g,mode=1777",
    "/var/tmp": "rw,nosuid,nodev,size=256m,mode=1777",
    "/run": "rw,nosuid,nodev,noexec,size=16m,mode=755",
}
"""The writable places of a read-only root: scratch space a shell, pip or a service expects
(tmpfs counts against the container's memory limit, so a size only caps it further)."""
_CPU_PERIOD_US = 100_000
_RECONNECT_S = 1.0
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "4m", "max-file": "2"}}
"""What dockerd keeps of a container's output: user code writes to the container's stderr
directly (the runner's own fds), as fast as it likes; unbounded, that fills the host's
``/var/lib/docker`` and whatever reads it. Two files of 4 MiB: a rotation never leaves less
than the last 4 MiB (one file of 8 MiB would be emptied at each rotation)."""
_LOG_TAIL_LINES = 16384
"""Lines asked of dockerd when reading a log (it splits lines at 16 KiB): what is streamed
from a container made before :data:`LOG_CONFIG` existed stays bounded too."""
_LOG_READ_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_read=30)
_EARLIER_LOG = "earlier.log"


class UnlimitedKernel(ValueError):
    """A launch without a cpu or a mem amount: the gateway and the catalogue bound what a
    tenant asks, and this is the last check where a zero would mean "unlimited"."""


@dataclass
class _Container:
    container_id: str
    pid: int
    cores: tuple[int, ...]
    running: bool = True
    exit_code: int | None = None
    oom: bool = False
    """An OOM kill happened in the container (Docker's ``oom`` event or State.OOMKilled)."""
    stopping: bool = False
    """This backend is stopping it: its ``die`` is expected, not news."""
    reported: bool = False


async def docker_answers(url: str | None = None, timeout: float = 2.0) -> bool:
    """Whether a Docker daemon answers at ``url`` (``DOCKER_HOST`` or the default socket).

    No socket at all is an answer too (no): aiodocker then fails an ``assert`` rather than
    raising an error of its own, and ``kh up`` on a machine without Docker must fall back
    to the process backend, not crash. A socket nobody listens on, or a daemon that does not
    reply within ``timeout``, is a no as well."""
    try:
        docker = aiodocker.Docker(url)
    except (ValueError, OSError, AssertionError, aiodocker.DockerError):
        return False
    try:
        await asyncio.wait_for(docker.version(), timeout)
        return True
    except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError):
        return False
    finally:
        await docker.close()


class DockerBackend(DirectoryBackend):
    isolation = isolation_of_backend("docker")

    def __init__(
        self,
        work_root: str | os.PathLike[str],
        *,
        owner: str,
        docker_url: str | None = None,
        network: str = "none",
        max_processes: int = 256,
        cores: Sequence[int] | None = None,
        service_defs: str | os.PathLike[str] | None = None,
        runner_options: tuple[str, ...] = (),
        volume_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.work_root = Path(work_root)
        self.volume_root = Path(volume_root) if volume_root is not None else None
        self.owner = owner
        """The agent id on the containers' ``ai.backend.owner`` label."""
        self.docker_url = docker_url
        self.network = network
        self.max_processes = max_processes
        self.cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
        self.service_defs = str(service_defs) if service_defs is not None else None
        self.runner_options = runner_options
        self._docker: aiodocker.Docker | None = None
        self._kernels: dict[uuid.UUID, _Container] = {}
        self._images: dict[str, dict[str, str]] = {}
        self._reserved: dict[uuid.UUID, tuple[int, ...]] = {}
        """Cores of kernels being started (two starts at once must not pick the same)."""

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:  # made on first use: it binds to the running loop
            self._docker = aiodocker.Docker(self.docker_url)
        return self._docker

    # ---- images ---------------------------------------------------------------------------
    async def image_labels(self, image: str) -> dict[str, str]:
        """The image's labels, as dockerd has them; ImageNotAvailable when it lacks it."""
        if image not in self._images:
            try:
                info = await self.docker.images.inspect(image)
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    raise ImageNotAvailable(image) from exc
                raise
            self._images[image] = dict(info.get("Config", {}).get("Labels") or {})
        return self._images[image]

    async def check_image(self, image: str) -> bool:
        """There is no registry to pull from: an image dockerd lacks cannot be had."""
        await self.image_labels(image)
        return False

    # ---- lifecycle ------------------------------------------------------------------------
    def _allocate_cores(self, cpu: Decimal) -> tuple[int, ...]:
        """The least used cores, as many as the CPU share rounds up to (all at most)."""
        wanted = min(len(self.cores), max(1, math.ceil(cpu)))
        held = [k.cores for k in self._kernels.values()] + list(self._reserved.values())
        load = Counter(core for cores in held for core in cores)
        return tuple(sorted(sorted(self.cores, key=lambda core: (load[core], core))[:wanted]))

    def _config(
        self,
        launch: KernelLaunch,
        labels: dict[str, str],
        cores: tuple[int, ...],
        mounts: list[dict[str, Any]] | None = None,
    ) -> Any:
        dirs = self.dirs(launch.kernel_id)
        runtime = labels.get("ai.backend.runtime-path") or "/usr/bin/python3"
        entrypoint = [
            runtime,
            "-c",
            BOOT_RUNNER,
            _IN_CONTAINER_PACKAGE,
            RUNNER_PACKAGE.name,
            labels.get("ai.backend.runtime-type", "python"),
            runtime,
            "--socket",
            f"{_IN_CONTAINER_RUN}/runner.sock",
            "--work-dir",
            "/home/work",
            "--config-dir",
            "/home/config",
            "--batch-record",
            f"{_IN_CONTAINER_RUN}/batch.jsonl",
            "--proxy-socket",
            f"{_IN_CONTAINER_RUN}/proxy.sock",
            *runner_bootstrap_args(launch, "/home/config"),
            *self.runner_options,
        ]
        package = f"{_IN_CONTAINER_PACKAGE}/{RUNNER_PACKAGE.name}"
        binds = [
            f"{dirs.work}:/home/work:rw",
            f"{dirs.config}:/home/config:ro",
            f"{dirs.run}:{_IN_CONTAINER_RUN}:rw",
            f"{RUNNER_PACKAGE}:{package}:ro",
        ]
        if self.service_defs is not None:
            binds.append(f"{self.service_defs}:{_SERVICE_DEFS}:ro")
        environ = {
            **launch.environ,
            **launch.devices.environ(on_host=False),
            "HOME": "/home/work",
            "KERNELHUB_BACKEND": "docker",
            "KERNELHUB_WORK_DIR": "/home/work",
        }
        host: dict[str, Any] = {
            "Init": True,
            "NetworkMode": self.network,
            "Binds": binds,
            "Mounts": list(mounts or []),
            "PidsLimit": self.max_processes,
            "CpusetCpus": ",".join(str(core) for core in cores),
            "SecurityOpt": ["no-new-privileges"],
            "CapDrop": ["ALL"],
            "ReadonlyRootfs": True,
            "Tmpfs": dict(_TMPFS),
            "LogConfig": LOG_CONFIG,
        }
        cpu = launch.slots.get("cpu", Decimal(0))
        memory = int(launch.slots.get("mem", 0))
        if not (cpu > 0 and memory > 0):  # Docker reads 0 as "no limit": never start one
            raise UnlimitedKernel(
                f"a kernel needs a cpu and a mem limit (got cpu={cpu}, "
                f"mem={memory}); it was not started"
            )
        host["CpuPeriod"] = _CPU_PERIOD_US
        host["CpuQuota"] = max(1000, int(cpu * _CPU_PERIOD_US))
        if launch.shmem:  # upstream: /dev/shm is carved out of the kernel's memory
            if launch.shmem >= memory:
                raise UnlimitedKernel(
                    f"shmem ({launch.shmem} bytes) must be less than mem ({memory} bytes); "
                    "the kernel was not started"
                )
            host["ShmSize"] = launch.shmem
            memory -= launch.shmem
        host["Memory"] = host["MemorySwap"] = memory  # no swap: the limit is the limit
        host.update(launch.devices.docker())  # its GPUs, and only those
        return {
            "Image": launch.image,
            "Entrypoint": entrypoint,
            "Cmd": [],
            "User": "work",
            "WorkingDir": "/home/work",
            "Env": [f"{key}={value}" for key, value in sorted(environ.items())],
            "Labels": {
                KERNEL_LABEL: str(launch.kernel_id),
                SESSION_LABEL: str(launch.session_id),
                OWNER_LABEL: self.owner,
                "ai.backend.service-ports": labels.get("ai.backend.service-ports", ""),
            },
            "HostConfig": host,
        }

    @staticmethod
    def container_name(launch: KernelLaunch) -> str:
        short = launch.image.rsplit("/", 1)[-1].split(":", 1)[0] or "kernel"
        return f"kernel.{short}.{launch.kernel_id}"

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        labels = await self.image_labels(launch.image)
        spec = labels.get("ai.backend.kernelspec", "")
        if not spec.isdigit() or int(spec) not in SUPPORTED_KERNELSPEC:
            raise ImageNotAvailable(launch.image, f"unsupported kernelspec {spec!r}")
        folders = parse_mounts(launch.vfolder_mounts)
        dirs = self.dirs(launch.kernel_id)
        dirs.create()
        await dirs.clear_run()
        for path in (dirs.work, dirs.run):
            os.chown(path, WORK_UID, WORK_UID)
        mounts = await asyncio.to_thread(
            docker_mounts, self.volume_root, folders, dirs.work, Owner(WORK_UID, WORK_UID)
        )
        write_environ(dirs, {**launch.environ, **launch.devices.environ(on_host=False)})
        write_bootstrap(dirs, launch.bootstrap_script)
        name = self.container_name(launch)
        await self._retire(launch.kernel_id, name)
        cores = self._reserved[launch.kernel_id] = self._allocate_cores(
            launch.slots.get("cpu", Decimal(0))
        )
        try:
            container = await self.docker.containers.create(
                self._config(launch, labels, cores, mounts), name=name
            )
            try:
                await container.start()
                state = (await container.show())["State"]
            except BaseException:
                with contextlib.suppress(aiodocker.DockerError):
                    await container.delete(force=True, v=True)
                raise
        finally:
            self._reserved.pop(launch.kernel_id, None)
        record = _Container(
            container.id, int(state.get("Pid") or 0), cores, running=bool(state.get("Running"))
        )
        if not record.running:
            record.exit_code = int(state.get("ExitCode", -1))
        self._kernels[launch.kernel_id] = record
        return {
            "container_id": container.id,
            "kernel_host": "127.0.0.1",
            "work_dir": str(dirs.work),
            "image": launch.image,
            "cpuset": list(cores),
        }

    async def _retire(self, kernel_id: uuid.UUID, name: str) -> None:
        """A restart's previous container: its log is carried over (the kernel's log spans
        its restarts, as on the process backend), then it goes."""
        try:
            tail = await container_log_tail(self.docker, name)
        except aiodocker.DockerError:
            return  # none
        try:
            await asyncio.to_thread(keep_earlier_log, self.dirs(kernel_id).root, tail)
        except OSError as exc:  # a full disk: the restart goes on without it
            log.warning("earlier log not kept", kernel=str(kernel_id), error=repr(exc))
        with contextlib.suppress(aiodocker.DockerError):
            await self.docker.containers.container(name).delete(force=True, v=True)

    async def stop(self, kernel_id: uuid.UUID, grace_s: float) -> int | None:
        """``docker stop``: SIGTERM to the runner (it ends its commands and services), SIGKILL
        after the grace period. The container's exit code."""
        record = self._kernels.get(kernel_id)
        if record is None:
            return None
        record.stopping = True
        container = self.docker.containers.container(record.container_id)
        try:
            if record.running:
                await container.stop(t=max(0, math.ceil(grace_s)))
            state = (await container.show())["State"]
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            record.running = False  # removed from outside
            return record.exit_code if record.exit_code is not None else -1
        record.running = False
        record.exit_code = int(state.get("ExitCode", -1))
        return record.exit_code

    async def logs(self, kernel_id: uuid.UUID) -> bytes:
        """The container's output, after what earlier incarnations (restarts) wrote."""
        record = self._kernels.get(kernel_id)
        if record is None:
            return b""
        root = str(self.dirs(kernel_id).root)
        earlier = await asyncio.to_thread(read_tail, root, _EARLIER_LOG, MAX_LOG_BYTES)
        try:
            current = await container_log_tail(self.docker, record.container_id)
        except aiodocker.DockerError:
            current = b""
        return ((earlier or b"") + current)[-MAX_LOG_BYTES:]

    async def remove(self, kernel_id: uuid.UUID) -> None:
        record = self._kernels.get(kernel_id)
        if record is not None and record.running:
            return  # not stopped: nothing to clean yet
        self._kernels.pop(kernel_id, None)
        if record is not None:
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.containers.container(record.container_id).delete(
                    force=True, v=True
                )
        await self.dirs(kernel_id).remove()

    def running(self) -> set[uuid.UUID]:
        return {k for k, record in self._kernels.items() if record.running}

    def known(self) -> set[uuid.UUID]:
        return set(self._kernels)

    def runner_peer(self, kernel_id: uuid.UUID) -> KernelPeer | None:
        """The container's pid namespace (its init's): only a process in the container may
        answer on its sockets. None when it does not run (or its init is gone)."""
        record = self._kernels.get(kernel_id)
        if record is None or not record.running or record.pid <= 0:
            return None
        try:
            return KernelPeer.of_namespace(record.pid)
        except OSError:
            return None

    def stats(self, kernel_id: uuid.UUID) -> dict[str, Any] | None:
        record = self._kernels.get(kernel_id)
        if record is None or not record.running or record.pid <= 0:
            return None
        return cgroup_stats(record.pid)

    async def adopt(self) -> set[uuid.UUID]:
        """This agent's containers, running or not (the label says whose); the running ones'
        ids. Exited ones are reported by :meth:`watch` once it runs."""
        filters = json.dumps({"label": [f"{OWNER_LABEL}={self.owner}"]})
        found: set[uuid.UUID] = set()
        for container in await self.docker.containers.list(all=True, filters=filters):
            info = await container.show()
            try:
                kernel_id = uuid.UUID(info["Config"]["Labels"][KERNEL_LABEL])
            except (KeyError, ValueError):
                continue
            if kernel_id in self._kernels:
                continue
            state = info["State"]
            cpuset = str(info.get("HostConfig", {}).get("CpusetCpus") or "")
            cores = tuple(int(c) for c in cpuset.split(",") if c.isdigit())
            record = _Container(
                info["Id"],
                int(state.get("Pid") or 0),
                cores,
                running=bool(state.get("Running")),
                oom=bool(state.get("OOMKilled")),
            )
            if not record.running:
                record.exit_code = int(state.get("ExitCode", -1))
            self._kernels[kernel_id] = record
            if record.running:
                found.add(kernel_id)
        return found

    # ---- what happens on its own ----------------------------------------------------------
    async def watch(self, observer: KernelObserver) -> None:
        """Follow Docker's events for this agent's containers until cancelled: ``oom`` and
        ``die`` go to the observer (a ``die`` this backend caused does not)."""
        filters = json.dumps(
            {
                "type": ["container"],
                "event": ["oom", "die"],
                "label": [f"{OWNER_LABEL}={self.owner}"],
            }
        )
        while True:
            events = self.docker.events
            subscriber = events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
            try:
                await self._resync(observer)
                while (event := await subscriber.get()) is not None:
                    self._on_event(event, observer)
            except Exception as exc:  # whatever ended it, the watch goes on
                log.warning("docker event stream lost", error=repr(exc))
            finally:
                with contextlib.suppress(Exception):
                    await events.stop()  # type: ignore[no-untyped-call]
            await asyncio.sleep(_RECONNECT_S)

    def _by_container(self, container_id: str) -> tuple[uuid.UUID, _Container] | None:
        for kernel_id, record in self._kernels.items():
            if record.container_id == container_id:
                return kernel_id, record
        return None

    def _on_event(self, event: dict[str, Any], observer: KernelObserver) -> None:
        found = self._by_container(str(event.get("Actor", {}).get("ID") or event.get("id")))
        if found is None:
            return
        kernel_id, record = found
        action = event.get("Action") or event.get("status")
        if action == "oom":
            record.oom = True
            observer.kernel_oom(kernel_id)
        elif action == "die":
            attributes = event.get("Actor", {}).get("Attributes") or {}
            self._exited(kernel_id, record, int(attributes.get("exitCode", 255)), observer)

    def _exited(
        self, kernel_id: uuid.UUID, record: _Container, exit_code: int, observer: KernelObserver
    ) -> None:
        record.running = False
        record.exit_code = exit_code
        if record.stopping or record.reported:
            return
        record.reported = True
        observer.kernel_exited(kernel_id, exit_code, record.oom and exit_code != 0)

    async def _resync(self, observer: KernelObserver) -> None:
        """What the event stream may have missed: containers that ended while it was down
        (or before this backend existed, for adopted ones)."""
        for kernel_id, record in list(self._kernels.items()):
            if record.stopping or record.reported:
                continue
            try:
                state = (await self.docker.containers.container(record.container_id).show())[
                    "State"
                ]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
                self._exited(kernel_id, record, record.exit_code or -1, observer)
                continue
            if not state.get("Running"):
                record.oom = record.oom or bool(state.get("OOMKilled"))
                self._exited(kernel_id, record, int(state.get("ExitCode", -1)), observer)

    async def close(self) -> None:
        if self._docker is not None:
            with contextlib.suppress(Exception):
                await self._docker.events.stop()  # type: ignore[no-untyped-call]
            await self._docker.close()
            self._docker = None


async def container_log_tail(
    docker: aiodocker.Docker, container: str, limit: int = MAX_LOG_BYTES
) -> bytes:
    """The last ``limit`` bytes of a container's stdout and stderr, read as dockerd streams
    them and never held beyond ``limit`` plus one chunk (aiodocker's ``log()`` returns the
    whole log, then a join and an encode copy it twice: a tenant's output, in the agent's
    memory). Raises :class:`aiodocker.DockerError` when there is no such container. Our
    containers have no TTY, so the stream is multiplexed: an 8-byte header (stream, 3 zero
    bytes, a big-endian length) before each chunk."""
    params = {"stdout": "1", "stderr": "1", "tail": str(_LOG_TAIL_LINES)}
    kept: collections.deque[bytes] = collections.deque()
    held = 0
    async with docker._query(
        f"containers/{container}/logs", params=params, timeout=_LOG_READ_TIMEOUT
    ) as response:
        try:
            while True:
                header = await response.content.readexactly(8)
                left = int.from_bytes(header[4:], "big")
                while left:
                    chunk = await response.content.readexactly(min(left, 2**16))
                    left -= len(chunk)
                    kept.append(chunk)
                    held += len(chunk)
                    while held - len(kept[0]) >= limit:
                        held -= len(kept.popleft())
        except asyncio.IncompleteReadError:
            pass  # the end of the log
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("container log cut short", container=container, error=repr(exc))
        finally:
            response.close()
    return b"".join(kept)[-limit:]


def keep_earlier_log(root: Path, tail: bytes, limit: int = MAX_LOG_BYTES) -> None:
    """Append a retired container's log to the kernel's ``earlier.log``, which keeps only its
    last ``limit`` bytes (a session restarted in a loop grew it by 1 MiB each time). The
    file is replaced, never written through whatever is at its name. Blocking: a thread."""
    earlier = read_tail(str(root), _EARLIER_LOG, limit) or b""
    kept = (earlier + tail)[-limit:]
    temporary = root / f".{_EARLIER_LOG}.{uuid.uuid4().hex}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(kept)
        os.replace(temporary, root / _EARLIER_LOG)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
