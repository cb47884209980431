"""Every benchmark runs at a tiny size, so the scripts never rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench_smoke

ROOT = Path(__file__).parents[1]


def test_append_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/append.py", "--single", "50", "--batches", "2", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "ours_single_per_s",
        "raw_single_per_s",
        "ours_batch_per_s",
        "raw_batch_per_s",
        "ratio_single",
        "ratio_batch",
    ):
        assert figures[key] > 0, key
    assert figures["batch_events"] == 200
    assert figures["machine"]["nproc"] >= 1 and figures["machine"]["redis"]


def test_policy_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/policy.py", "--sessions", "200", "--agents", "20", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["sessions"], figures["agents"], figures["placed"]) == (200, 20, 200)
    assert figures["policy_only_per_s"] > 0


def test_replay_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/replay.py",
            "--events",
            "1500",
            "--rounds",
            "1",
            "--seconds",
            "2",
            "--rate",
            "200",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["events"] >= 1500
    for key in ("rebuild_events_per_s", "raw_read_events_per_s", "ratio", "live_lag_ms"):
        assert figures[key] > 0, key
    assert figures["live_events"] > 0


def test_schedule_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/schedule.py",
            "--sessions",
            "60",
            "--agents",
            "6",
            "--rate",
            "20",
            "--seconds",
            "1",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["sessions"], figures["agents"], figures["open_loop_sessions"]) == (60, 6, 20)
    for key in ("enqueue_per_s", "ours_per_s", "policy_only_per_s", "ratio", "open_loop_p99_ms"):
        assert figures[key] > 0, key
    cpu = figures["open_loop_cpu_ms_per_session"]  # where the open loop's CPU went
    assert {"SessionsActor", "SchedulerActor", "AgentsActor", "redis"} <= set(cpu), cpu
    assert all(ms >= 0 for ms in cpu.values()) and sum(cpu.values()) > 0
    assert figures["cpu_ms_per_session"] == pytest.approx(sum(cpu.values()), abs=0.1)


def test_idle_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/idle.py", "--sessions", "300", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["sessions"], figures["expired"], figures["reclaimed_per_round"]) == (300, 3, 3)
    for key in ("idle_pass_ms_10k", "scan_ms_10k", "ratio"):
        assert figures[key] > 0, key


def test_exec_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/exec.py", "--calls", "50", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["calls"] == 50
    for key in ("exec_ms", "runner_direct_ms", "agent_actor_ms"):
        assert figures[key] > 0, key
    overhead = figures["exec_ms"] - figures["runner_direct_ms"]  # each rounded on its own
    assert abs(figures["exec_overhead_ms"] - overhead) <= 0.002


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_start_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/start.py", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("start_ms", "docker_run_ms", "docker_start_ms", "docker_cli_ms"):
        assert figures[key] > 0, key
    ratio = figures["start_ms"] / figures["docker_run_ms"]  # each rounded on its own
    assert abs(figures["start_ratio"] - ratio) <= 0.01


def test_gateway_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/gateway.py",
            "--requests",
            "300",
            "--rounds",
            "1",
            "--connections",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("ours_rps", "hello_rps", "p99_ms"):
        assert figures[key] > 0, key
    assert abs(figures["ratio"] - figures["ours_rps"] / figures["hello_rps"]) <= 0.01


def test_chaos_bench_prints_its_figures() -> None:
    """A quarter-minute chaos run: faults injected, the checker's verdict in the figures
    (tests/test_chaos.py runs the driver at length)."""
    result = subprocess.run(
        [sys.executable, "bench/chaos.py", "--minutes", "0.25", "--seed", "5", "--gap", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chaos: seed 5" in result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["seed"] == 5 and figures["faults"] >= 1 and figures["sessions"] >= 1
    assert figures["acked_lost"] == 0 and figures["stuck"] == 0 and figures["verify_ok"]
    assert sum(figures["faults_by_kind"].values()) == figures["faults"]
    assert figures["machine"]["nproc"] >= 1


def test_soak_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "bench/soak.py", "--minutes", "0.25", "--sample", "2", "--warmup", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["sessions"] >= 1 and figures["log_bytes_per_session"] is not None
    growth = figures["rss_growth_mb_per_h"]
    assert {"gateway", "projector", "sessions:0"} <= set(growth), growth
    assert figures["redis_rss_growth_mb_per_h"] is not None


def test_whatif_bench_prints_its_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/whatif.py",
            "--trace",
            "tests/data/alibaba-gpu-v2023-head",
            "--limit",
            "200",
            "--agents",
            "scale:0.05",
            "--samples",
            "50",
            "--policy",
            "fifo/concentrated",
            "--policy",
            "drf/default",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["tasks"], figures["nodes"]) == (200, 76)
    assert set(figures["policies"]) == {"fifo/concentrated", "drf/default"}
    assert all(p["gpu_alloc_pct"] > 0 for p in figures["policies"].values())
    assert figures["eta_policy"] == "fifo/concentrated"  # estimates judged on a replay
    assert figures["eta_judged"] == 0 or figures["eta_within_50pct"] is not None
    assert list(figures["eta_by_agents"]) == ["scale:0.01", "scale:0.005"]  # two loads
    assert figures["eta_agents"] == "scale:0.01"  # the first is the headline
