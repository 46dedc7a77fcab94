"""The benchmark harness's smoke mode runs end to end (issue 8): structure only, never timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benches" / "run.py"

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk nginx-light)"
)


def _silex() -> str:
    found = shutil.which("silex", path=str(Path(sys.executable).parent)) or shutil.which("silex")
    if found is None:
        pytest.skip("the silex command is not installed (make install)")
    return found


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run (a few seconds) shared by the tests of this module."""
    results = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--silex", _silex(), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return results


def test_smoke_run_writes_well_formed_results(smoke_results: Path) -> None:
    doc = json.loads(smoke_results.read_text())
    assert doc["profile"] == "smoke"
    assert doc["machine"]["cpus"] >= 1
    proxies = {run["proxy"] for run in doc["runs"]}
    assert {"silex", "direct"} <= proxies
    for run in doc["runs"]:
        assert run["requests"] > 0
        assert run["rps"] > 0
        assert run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert isinstance(run["disturbed"], bool)
        assert run["errors"] == 0
    silex = next(run for run in doc["runs"] if run["proxy"] == "silex")
    assert silex["cpu_us_per_req"] > 0
    assert silex["rss_load_kib"] > 0
    [idle] = doc["idle"]
    assert idle["opened"] == idle["connections"]
    [reload] = doc["reload"]
    assert reload["proxy"] == "silex"
    assert reload["not_served_in_time"] == 0
    assert reload["changes"] == len(reload["apply_ms"])
    micro = doc["translate_apply"]["results"]
    assert micro[0]["translate_apply"]["median_s"] > 0


def test_report_renders_from_smoke_results(smoke_results: Path, tmp_path: Path) -> None:
    """report.py turns a results JSON into markdown (charts only where matplotlib is)."""
    results = smoke_results
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, str(ROOT / "benches" / "report.py"), str(results), "--out", str(out)],
        check=True,
        timeout=120,
    )
    text = out.read_text()
    assert "## Targets (issue 8)" in text
    assert "| http1-1k" in text


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("taskset") is None,
    reason="benches/balancing.py needs nginx and taskset",
)
def test_balancing_bench_runs_every_policy_and_the_kill(tmp_path: Path) -> None:
    """benches/balancing.py at its shortest: every policy measured, the kill scenario counted."""
    out = tmp_path / "balancing.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benches" / "balancing.py"),
            "--duration",
            "1",
            "--reps",
            "1",
            "--kill-duration",
            "1",
            "--kill-connections",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    policies = {"round_robin", "least_request", "ewma", "hash", "cookie"}
    assert set(doc["throughput"]) == policies
    assert set(doc["kill"]) == policies
    for result in doc["throughput"].values():
        assert result["rps_median"] > 0
        assert result["cpu_us_per_request_median"] > 0
    assert all(run["requests"] > 0 for run in doc["kill"].values())
