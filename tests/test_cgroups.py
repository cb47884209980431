"""Container stats from cgroup files, v1 and v2 layouts (this machine has one of them;
the other is laid out in a temp dir the way the kernel presents it, for this process's own
cgroup paths as ``/proc/self/cgroup`` names them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.agents.cgroups import cgroup_paths, cgroup_stats

pytestmark = pytest.mark.unit
TICKS = os.sysconf("SC_CLK_TCK")


def own_cgroup(controller: str) -> str:
    """This process's cgroup path for a v1 controller ("" for the unified hierarchy)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return path.lstrip("/")
    pytest.skip(f"no {controller or 'unified'} line in /proc/self/cgroup")


def write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_v2_files_give_memory_cpu_io_and_pids(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    write(
        tmp_path / own_cgroup(""),
        {
            "memory.current": "52428800\n",
            "memory.stat": "anon 40000000\ninactive_file 2428800\n",
            "memory.max": "134217728\n",
            "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n",
            "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
            "pids.current": "3\n",
        },
    )
    stats = cgroup_stats(os.getpid(), tmp_path)
    assert stats == {
        "rss_bytes": 50_000_000,
        "mem_limit_bytes": 134217728,
        "cpu_ticks": 25 * TICKS // 10,
        "cpu_used_ns": 2_500_000_000,
        "io_read_bytes": 4097,
        "io_write_bytes": 8194,
        "pids": 3,
    }


def test_v2_without_a_memory_limit_leaves_it_out(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    write(tmp_path / own_cgroup(""), {"memory.current": "1000\n", "memory.max": "max\n"})
    stats = cgroup_stats(os.getpid(), tmp_path)
    assert stats is not None and "mem_limit_bytes" not in stats and stats["rss_bytes"] == 1000


def test_v1_files_give_memory_cpu_io_and_pids(tmp_path: Path) -> None:
    write(
        tmp_path / "memory" / own_cgroup("memory"),
        {
            "memory.usage_in_bytes": "30000000\n",
            "memory.limit_in_bytes": "268435456\n",
            "memory.stat": "cache 100\ntotal_inactive_file 5000000\n",
        },
    )
    write(tmp_path / "cpuacct" / own_cgroup("cpuacct"), {"cpuacct.usage": "1000000000\n"})
    write(
        tmp_path / "blkio" / own_cgroup("blkio"),
        {
            "blkio.throttle.io_service_bytes": (
                "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Total 300\nTotal 300\n"
            )
        },
    )
    write(tmp_path / "pids" / own_cgroup("pids"), {"pids.current": "2\n"})
    assert cgroup_stats(os.getpid(), tmp_path) == {
        "rss_bytes": 25_000_000,
        "mem_limit_bytes": 268435456,
        "cpu_ticks": TICKS,
        "cpu_used_ns": 1_000_000_000,
        "io_read_bytes": 100,
        "io_write_bytes": 200,
        "pids": 2,
    }


def test_a_process_that_is_gone_has_no_stats(tmp_path: Path) -> None:
    assert cgroup_paths(2**22 + 1, tmp_path) == {}  # above any pid_max
    assert cgroup_stats(2**22 + 1, tmp_path) is None
