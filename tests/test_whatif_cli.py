"""``kh import-trace`` and ``kh whatif`` as a user runs them: real processes, the trace's
first 500 tasks (tests/data), figures side by side, JSON, a plot, and one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TRACE_HEAD = Path(__file__).parent / "data" / "alibaba-gpu-v2023-head"


def kh(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kernelhub.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workload_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whatif") / "alibaba.json"
    done = kh("import-trace", "alibaba-gpu-v2023", TRACE_HEAD, "-o", out, cwd=out.parent)
    assert done.returncode == 0, done.stderr
    assert "500 jobs, 1523 agents" in done.stderr
    return out


def test_whatif_prints_each_policy_beside_what_happened(workload_file: Path) -> None:
    done = kh(
        "whatif",
        workload_file,
        "--policy",
        "fifo",
        "--policy",
        "drf",
        "--agents",
        "scale:0.05",
        "--to",
        "30d",
        cwd=workload_file.parent,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("500 jobs on 76 agents") or "jobs on 76 agents" in lines[0]
    header = lines[1].split()
    assert header == ["recorded", "fifo/default", "drf/default"]
    rows = {line[:28].strip(): line[28:].split() for line in lines[2:]}
    assert set(rows) >= {"wait p99 (s)", "accelerators allocated (%)", "fairness (Jain)"}
    assert len(rows["wait p99 (s)"]) == 3


def test_json_and_plot(workload_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "alloc.png"
    done = kh(
        "whatif",
        workload_file,
        "--policy",
        "fifo",
        "--selector",
        "dispersed",
        "--json",
        "--plot",
        png,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    recorded, replay = figures["columns"]
    assert recorded["policy"] == "recorded" and replay["policy"] == "fifo/dispersed"
    # the tasks withdrawn while pending (no run time) are left out, and counted
    assert replay["jobs"] + replay["left_out"] == 500 and replay["left_out"] > 0
    assert replay["started"] > 0
    assert replay["gpu_alloc_pct"] > 0 and replay["frag_gpus_mean"] >= 0
    assert figures["sim_seconds"]["fifo/dispersed"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inflate_replays_a_drawn_load_without_a_recorded_column(
    workload_file: Path, tmp_path: Path
) -> None:
    png = tmp_path / "inflated.png"
    args = ["--policy", "fifo/fragmentation", "--policy", "fifo/concentrated"]
    done = kh(
        "whatif", workload_file, *args, "--agents", "scale:0.05", "--inflate", "1",
        "--plot", png, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "inflated to 1 of its cuda.shares (seed 0)" in lines[0]
    assert lines[1].split() == ["fifo/fragmentation", "fifo/concentrated"]  # nothing recorded
    rows = {line[:34].strip(): line[34:].split() for line in lines[2:]}
    turned_away = [int(n) for n in rows["turned away (--inflate)"]]
    assert rows["never started"] == rows["turned away (--inflate)"] and min(turned_away) > 0
    assert all(float(p) > 90 for p in rows["accelerators allocated, peak (%)"])
    assert rows["queue length (mean)"] == ["0.000", "0.000"]  # turned away, not queued
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seeded = kh(
        "whatif", workload_file, "--agents", "scale:0.05", "--inflate", "0.5", "--seed", "7",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    figures = json.loads(seeded.stdout)
    assert "seed 7" in figures["workload"] and [c["policy"] for c in figures["columns"]] == [
        "fifo/default"
    ]
    plain = kh("whatif", workload_file, "--agents", "scale:0.05", "--to", "30d", cwd=tmp_path)
    assert "turned away" not in plain.stdout  # a recorded replay turns nothing away


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "sjf"], "--policy 'sjf'"),
        (["--selector", "anywhere"], "--selector 'anywhere'"),
        (["--agents", "scale:7"], "scale must be a share"),
        (["--from", "yesterday"], "--from: 'yesterday' is not a time"),
        (["--from", "10d", "--to", "1d"], "--to must be after --from"),
        (["--config", "[1]"], "--config: a JSON object"),
        (["--policy", "fifo", "--config", '{"num_retries_to_skip": -1}'], "--policy 'fifo'"),
        (["--policy", "fifo", "--config", '{"num_retries_to_skip": 1e400}'], "--policy 'fifo'"),
        (["--policy", "fifo", "--config", '{"drf_share": "sum"}'], "does not read drf_share"),
        (["--policy", "fifo"] * 9, "at most 8"),
        (["--to", "1" + "0" * 400], "is not a time"),
        (["--agents", "scale:nan"], "scale must be a share"),
        (["--plot", "/nonexistent/alloc.png"], "no such folder"),
        (["--inflate", "0"], "--inflate 0.0: a share of the accelerators"),
        (["--inflate", "nan"], "a share of the accelerators"),
        (["--inflate", "11"], "a share of the accelerators in (0, 10.0]"),
        (["--seed", "3"], "--seed: only with --inflate"),
    ],
)
def test_bad_options_are_refused_in_one_line(
    workload_file: Path, args: list[str], message: str
) -> None:
    done = kh("whatif", workload_file, *args, cwd=workload_file.parent)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert message in done.stderr


def test_a_file_that_is_not_a_workload_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.json"
    bad.write_text('{"agents": [], "jobs": [{"job_id": "x", "arrival_s": -1, "requested": {}}]}')
    done = kh("whatif", bad, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not a workload: jobs.0.arrival_s" in done.stderr
    missing = kh("whatif", tmp_path / "none.json", cwd=tmp_path)
    assert missing.returncode == 1 and "no such workload file" in missing.stderr
    twice = {"agents": [], "jobs": [{"job_id": "x", "arrival_s": 1, "requested": {}}] * 2}
    bad.write_text(json.dumps(twice))
    done = kh("whatif", bad, cwd=tmp_path)
    assert done.returncode == 1 and "job_id 'x' appears twice" in done.stderr
    late = {"span_s": 1e11, "agents": [], "jobs": []}
    bad.write_text(json.dumps(late))
    done = kh("whatif", bad, cwd=tmp_path)
    assert done.returncode == 1 and "not a workload: span_s" in done.stderr


def test_an_unreadable_trace_is_refused_by_file_and_line(tmp_path: Path) -> None:
    for name in ("openb_node_list_all_node.csv", "openb_pod_list_default.csv"):
        (tmp_path / name).write_bytes((TRACE_HEAD / name).read_bytes())
    pods = tmp_path / "openb_pod_list_default.csv"
    rows = pods.read_bytes().splitlines()
    pods.write_bytes(b"\n".join([*rows[:3], b"openb-pod-x,\xff\xfe,1,1,1,,LS,Running,1,2,1"]))
    done = kh(
        "import-trace", "alibaba-gpu-v2023", tmp_path, "-o", tmp_path / "w.json", cwd=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "openb_pod_list_default.csv:4: unreadable" in done.stderr
    pods.write_bytes(b"\n".join([*rows[:3], b"openb-pod-x,9e999999,1,1,1,,LS,Running,1,2,1"]))
    done = kh(
        "import-trace", "alibaba-gpu-v2023", tmp_path, "-o", tmp_path / "w.json", cwd=tmp_path
    )
    assert done.returncode == 1 and "openb_pod_list_default.csv:4: cpu_milli" in done.stderr
    gone = kh(
        "import-trace", "alibaba-gpu-v2023", tmp_path, "-o", "/nonexistent/w.json", cwd=tmp_path
    )
    assert gone.returncode == 1 and "no such folder" in gone.stderr
