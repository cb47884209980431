"""Folder transfers through the gateway vs a plain file copy on the same disk.

Setup (untimed): Redis, the tenancy and vfolder read models with one folder, the gateway app
(``make_app``, every middleware) on 127.0.0.1 in this process. Each round, interleaved: the
baseline copies the payload file to the volume's filesystem (``shutil.copyfile``: what the
upload ends as, without a network or a protocol); the official client (its own interpreter,
``aiotusclient`` underneath, 16 MiB PATCHes: its default) uploads the same file, then
downloads it; the client times its own ``upload``/``download`` call, so its interpreter's
start is not counted. Median of the rounds.

Last line JSON: ``upload_mib_s``, ``download_mib_s``, ``copy_mib_s``, ``upload_ratio``
(= upload / copy), ``download_ratio``, plus ``machine``. Floor: ``upload_ratio >= 0.1`` (2 cores:
the client, the gateway and the disk share them; measured 0.15-0.26 there).

    .venv/bin/python bench/vfolder_transfer.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp.test_utils import TestServer

from actors.domain.commands.vfolders import VFolderCommand
from actors.domain.idle import IdleConfig
from actors.gateway.app import make_app
from actors.gateway.auth import Authenticator
from actors.gateway.context import GatewayContext
from actors.gateway.ratelimit import RateLimiter
from actors.idle.facts import IdleFacts
from actors.sessions.routing import ShardRouter
from actors.vfolders.writer import VFolderService
from bench._baselines import machine, redis_version_at
from events import RedisEventStore
from events.catalogue import VFolderCreated
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.testing import temporary_redis
from projections.models import TenancyProjection
from projections.queries import ReadModels
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

ROOT = Path(__file__).resolve().parents[1]
BAI_PYTHON = ROOT / ".venv-bai" / "bin" / "python"
CLIENT = """
import sys, time
from pathlib import Path
from ai.backend.client.session import Session
op, base, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with Session() as s:
    f = s.VFolder("bench")
    started = time.perf_counter()
    if op == "upload":
        f.upload([name], basedir=base)
    else:
        f.download([name], basedir=base)
    print(time.perf_counter() - started)
"""


async def _client(env: dict[str, str], *args: str) -> float:
    process = await asyncio.create_subprocess_exec(
        str(BAI_PYTHON), "-c", CLIENT, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(err.decode()[-2000:])
    return float(out.decode().strip().splitlines()[-1])


def _payload(path: Path, mib: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(2**20))


async def main(mib: int, rounds: int) -> dict[str, object]:
    with temporary_redis() as redis_server, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        store = RedisEventStore.from_url(redis_server.url)
        box = SecretBox.from_file(work / "master.key", create=True)
        boot = await bootstrap(store, box)
        folder_id = uuid.uuid4()
        writer = await VFolderService(store).load()
        await writer.handle(
            VFolderCommand(
                event=VFolderCreated(
                    folder_id=folder_id, name="bench", host="local:default", domain="default",
                    ownership_type="user", user=boot.user_id, creator="admin@kernelhub.local",
                )
            )
        )  # fmt: skip
        await Projector(store, [TenancyProjection()]).catch_up()
        root = work / "vfolders"
        (root / folder_id.hex).mkdir(parents=True)
        lookups = TenancyLookups(store)
        ctx = GatewayContext(
            store=store,
            router=ShardRouter.named(store, 1, "bench"),
            auth=Authenticator(lookups, box),
            models=ReadModels(store),
            lookups=lookups,
            rate_limiter=RateLimiter(store.rate_limits),
            idle=IdleFacts(store, IdleConfig.parse({})),
            vfolder_root=root,
        )
        server = TestServer(make_app(ctx), host="127.0.0.1")
        await server.start_server()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": tmp,
            "BACKEND_ENDPOINT": f"http://127.0.0.1:{server.port}",
            "BACKEND_ENDPOINT_TYPE": "api",
            "BACKEND_ACCESS_KEY": boot.access_key,
            "BACKEND_SECRET_KEY": boot.secret_key,
        }
        src, down = work / "src", work / "down"
        src.mkdir()
        down.mkdir()
        _payload(src / "payload.bin", mib)
        copies, uploads, downloads = [], [], []
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                shutil.copyfile(src / "payload.bin", root / "copy.bin")
                os.sync()
                copies.append(time.perf_counter() - started)
                (root / "copy.bin").unlink()
                uploads.append(await _client(env, "upload", str(src), "payload.bin"))
                downloads.append(await _client(env, "download", str(down), "payload.bin"))
                (down / "payload.bin").unlink()
        finally:
            await server.close()
            await store.close()
        copy_rate = mib / statistics.median(copies)
        up_rate = mib / statistics.median(uploads)
        down_rate = mib / statistics.median(downloads)
        return {
            "mib": mib,
            "rounds": rounds,
            "copy_mib_s": round(copy_rate, 1),
            "upload_mib_s": round(up_rate, 1),
            "download_mib_s": round(down_rate, 1),
            "upload_ratio": round(up_rate / copy_rate, 3),
            "download_ratio": round(down_rate / copy_rate, 3),
            "machine": machine(redis_version_at(redis_server.url)),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.mib, options.rounds))))
