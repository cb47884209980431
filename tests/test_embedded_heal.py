"""The embedded stack heals itself (issue 32): ``kh up``'s redis-server is restarted when it
dies, ``kh status`` names a half-alive stack, ``kh up`` repairs it (never a second Ray head
or gateway) and ``kh down`` stops all of it, even from a stale or lost record.

The stack tests share one ``kh up`` on the sim backend (each costs ~20 s) and run in order;
each leaves it whole again, and ``healthy`` repairs what a failed one left broken."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernelhub import procs
from kernelhub.embedded import RayHealth, RedisHealth, StackHealth
from kernelhub.redis_supervisor import Backoff, SupervisorState, describe_exit
from kernelhub.testing import eventually

from .khstack import kill_what_mentions

KH = [sys.executable, "-m", "kernelhub.cli"]


# ---- the pure pieces -------------------------------------------------------------------------
@pytest.mark.unit
def test_restarts_back_off_to_a_ceiling_and_start_over_after_a_stable_run() -> None:
    backoff = Backoff()
    assert [backoff.delay(0.5) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff.delay(60.0) == 0.2  # it stayed up: a new crash is not a crash loop
    assert backoff.delay(1.0) == 0.4


@pytest.mark.unit
def test_an_exit_is_said_in_words() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


def _health(redis: RedisHealth, ray: RayHealth) -> StackHealth:
    return StackHealth(data_dir="/d", state=None, log_server=redis, ray=ray)


_RAY_UP = RayHealth(expected=True, answers=True, head_pid=7, address="127.0.0.1:1", processes=30)
_RAY_GONE = RayHealth(expected=True, answers=False, address="127.0.0.1:1")
_REDIS_UP = RedisHealth(answers=True, pid=5, supervisor_pid=4)
_RESTARTING = SupervisorState(
    pid=4, state="restarting", restarts=2, why="redis-server pid 3 was killed by SIGKILL"
)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("redis", "ray", "verdict", "said"),
    [
        (_REDIS_UP, _RAY_UP, "running", []),
        (RedisHealth(answers=False), RayHealth(expected=True, answers=False), "stopped", []),
        (
            RedisHealth(answers=False, supervisor_pid=4, supervisor=_RESTARTING),
            _RAY_UP,
            "degraded",
            ["Redis is not answering (restarting: redis-server pid 3 was killed by SIGKILL)"],
        ),
        (RedisHealth(answers=False), _RAY_UP, "degraded", ["Redis is not running"]),
        (
            RedisHealth(answers=False, pid=5, stopped=True, supervisor_pid=4),
            _RAY_UP,
            "degraded",
            ["Redis is not answering: redis-server pid 5 is stopped"],
        ),
        (
            RedisHealth(answers=True, pid=5),
            _RAY_UP,
            "degraded",
            ["Redis answers but nothing restarts it if it dies (no supervisor)"],
        ),
        (
            RedisHealth(
                answers=False,
                supervisor=SupervisorState(pid=4, state="failed", why="Bad file format"),
            ),
            _RAY_UP,
            "degraded",
            ["Redis is not running: it cannot start (Bad file format)"],
        ),
        (_REDIS_UP, _RAY_GONE, "degraded", ["the Ray head is not running"]),
        (
            RedisHealth(answers=False),
            RayHealth(expected=True, answers=False, address="127.0.0.1:1", processes=12),
            "degraded",
            [
                "Redis is not running",
                "the Ray head is not answering at 127.0.0.1:1 (12 of its processes still run)",
            ],
        ),
    ],
)
def test_a_half_alive_stack_is_named_part_by_part(
    redis: RedisHealth, ray: RayHealth, verdict: str, said: list[str]
) -> None:
    health = _health(redis, ray)
    assert health.verdict == verdict and health.problems == said
    if verdict == "degraded":
        assert health.summary().startswith("kernelhub is degraded (data dir /d): " + said[0])
        assert health.to_json()["verdict"] == "degraded"


@pytest.mark.unit
def test_the_degraded_line_says_what_still_works() -> None:
    health = _health(RedisHealth(answers=False, supervisor_pid=4, supervisor=_RESTARTING), _RAY_UP)
    assert health.summary().endswith(", Ray head pid 7 up")


# ---- one real stack, broken and repaired ----------------------------------------------------
@dataclass
class Heal:
    root: Path
    data: Path
    env: dict[str, str]

    def kh(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KH, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def status(self) -> tuple[int, dict[str, Any]]:
        done = self.kh("status", "--json", timeout=60)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)

    def up(self) -> str:
        done = self.kh("up", "--backend", "sim", "--durability", "always")
        assert done.returncode == 0, done.stderr
        return done.stdout

    def endpoint(self) -> str:
        return str(json.loads((self.data / "embedded.json").read_text())["endpoint"])

    def mine(self) -> list[procs.Proc]:
        """What runs with this stack's data dir in its environment or command line."""
        entry = f"KH_DATA_DIR={self.data}"
        return [p for p in procs.scan() if p.environ_has(entry) or str(self.data) in p.cmdline]

    def gcs_servers(self) -> list[procs.Proc]:
        return [p for p in self.mine() if p.comm == "gcs_server"]


@pytest.fixture(scope="module")
def heal() -> Iterator[Heal]:
    with tempfile.TemporaryDirectory(prefix="kh-heal-") as path:
        root = Path(path)
        env = {
            **os.environ,
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "KH_GATEWAY_PORT": "0",
        }
        env.pop("KH_REDIS_URL", None)
        stack = Heal(root, root / "data", env)
        try:
            stack.up()
            yield stack
        finally:
            stack.kh("down", timeout=120)
            kill_what_mentions(root)


@pytest.fixture
def stack(heal: Heal) -> Heal:
    """The shared stack, whole (a test that failed half-way may have left it broken)."""
    if heal.status()[0] != 0:
        heal.up()
    return heal


def _gateway_answers(endpoint: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(endpoint + "/", timeout=5) as reply:
            return reply.status == 200
    return False


@pytest.mark.fault
@pytest.mark.ray
async def test_a_killed_redis_server_is_restarted_with_its_data(stack: Heal) -> None:
    created = stack.kh("session", "create", "--wait", "60")
    assert created.returncode == 0, created.stderr
    session = created.stdout.split()[0]
    code, before = stack.status()
    assert code == 0 and before["supervisor_pid"] and before["redis_pid"]

    os.kill(before["redis_pid"], signal.SIGKILL)

    async def restarted() -> dict[str, Any] | None:
        code, report = stack.status()
        moved = report.get("redis_restarts", 0) > before["redis_restarts"]
        return report if code == 0 and moved else None

    after = await eventually(restarted, timeout=60, message="redis-server restarted")
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["redis_pid"] != before["redis_pid"]
    assert after["stack"]["redis"]["last_restart_why"] == (
        f"redis-server pid {before['redis_pid']} was killed by SIGKILL"
    )
    shown = stack.kh("session", "show", session, "--json")  # acknowledged: still in the log
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == session
    assert "restarting from its AOF" in (stack.data / "redis" / "supervisor.log").read_text()


@pytest.mark.fault
@pytest.mark.ray
async def test_redis_down_under_a_running_ray_is_degraded_and_kh_up_repairs_it(
    stack: Heal,
) -> None:
    _, before = stack.status()
    heads = stack.gcs_servers()
    assert len(heads) == 1
    os.kill(before["supervisor_pid"], signal.SIGKILL)  # nothing restarts it now
    os.kill(before["redis_pid"], signal.SIGKILL)
    await eventually(lambda: not procs.alive(before["redis_pid"]), message="redis-server gone")

    code, report = stack.status()
    assert code == 4, report
    assert report["degraded"] and report["verdict"] == "degraded"
    assert report["problems"] == ["Redis is not running"]
    shown = stack.kh("status")
    assert shown.returncode == 4 and "Traceback" not in shown.stderr
    assert shown.stdout.startswith(
        f"kernelhub is degraded (data dir {stack.data}): Redis is not running, Ray head pid "
    )

    repaired = stack.up()
    assert "kernelhub is up (repaired: Redis started again)" in repaired
    assert [p.pid for p in stack.gcs_servers()] == [p.pid for p in heads]  # no second head
    code, after = stack.status()
    assert code == 0 and after["ray_address"] == before["ray_address"]
    assert after["supervisor_pid"] != before["supervisor_pid"]
    assert _gateway_answers(stack.endpoint())


@pytest.mark.fault
@pytest.mark.ray
async def test_a_dead_ray_head_is_reported_and_kh_up_starts_one(stack: Heal) -> None:
    _, before = stack.status()
    (head,) = stack.gcs_servers()
    for p in procs.session_members([head.sid]):  # the whole head node dies
        os.kill(p.pid, signal.SIGKILL)
    await eventually(
        lambda: not procs.session_members([head.sid]), timeout=20, message="the head gone"
    )

    code, report = stack.status()
    assert code == 4 and report["problems"] == ["the Ray head is not running"], report
    assert report["redis"]["answers"]

    repaired = stack.up()
    assert "repaired: Ray head started again" in repaired
    assert len(stack.gcs_servers()) == 1
    code, after = stack.status()
    assert code == 0 and after["ray_address"] != before["ray_address"]
    assert {a["name"] for a in after["actors"] if a["state"] == "ALIVE"} >= {
        "gateway",
        "projector",
        "scheduler:default",
    }
    assert _gateway_answers(stack.endpoint())


@pytest.mark.fault
@pytest.mark.ray
async def test_kh_down_stops_all_of_it_from_a_stale_and_lost_record(stack: Heal) -> None:
    _, before = stack.status()
    (head,) = stack.gcs_servers()
    ray_session = head.sid
    os.kill(ray_session, signal.SIGKILL)  # `ray start`: its GCS, raylet, workers orphaned
    os.kill(before["supervisor_pid"], signal.SIGKILL)  # redis-server runs unsupervised
    (stack.data / "embedded.json").unlink()  # and the record is lost (the old bug)
    await eventually(lambda: not procs.alive(ray_session), message="the head process gone")
    assert procs.session_members([ray_session])

    down = stack.kh("down", timeout=120)
    assert down.returncode == 0 and down.stdout.strip() == "kernelhub is down", down.stderr
    left = [f"{p.pid} {p.cmdline[:80]}" for p in stack.mine()]
    left += [f"{p.pid} {p.cmdline[:80]}" for p in procs.session_members([ray_session])]
    assert left == []
    assert not (stack.data / "embedded.json").exists()
    stopped = stack.kh("status")
    assert stopped.returncode == 3 and "not running" in stopped.stdout


@pytest.mark.docker
@pytest.mark.hostile
def test_a_tenants_container_process_is_never_taken_for_part_of_the_stack() -> None:
    """A container's processes show in the host's /proc with whatever command line its
    tenant gives them: one that names the supervisor and the data dir must not be found
    (``kh up`` would believe a dead supervisor runs; ``kh down`` would signal it)."""
    from kernelhub.testing import BASE_IMAGE, docker_missing, docker_required

    missing = docker_missing()
    if missing is not None:
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {missing}")
        pytest.skip(missing)
    marker = f"kernelhub.redis_supervisor --data-dir /tmp/kh-fake-{os.getpid()}"
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",  # root, as the agent: only the pid namespace tells it apart
            BASE_IMAGE,
            "sh",
            "-c",
            "sleep 60",
            marker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    container = started.stdout.strip()
    try:

        def seen_on_the_host() -> bool:
            found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
            return bool(found.stdout.strip())

        import asyncio

        asyncio.run(eventually(seen_on_the_host, timeout=30, message="the container runs"))
        assert [p.pid for p in procs.scan() if marker in p.cmdline] == []
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
