"""Load generators: wrk (HTTP/1.1, HTTPS) and h2load (HTTP/2), with their output parsed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

# wrk calls done() once at the end; printing JSON there costs nothing per request.
WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SILEXBENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def write_lua(tmp: Path) -> Path:
    path = tmp / "report.lua"
    path.write_text(WRK_LUA)
    return path


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def run_wrk(  # noqa: PLR0917 (internal helper, called positionally)
    url: str,
    host: str,
    connections: int,
    threads: int,
    duration_s: float,
    lua: Path,
    cpus: str | None,
    extra_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One bounded wrk run; the parsed summary (latencies in ms, errors summed)."""
    argv = [
        *taskset(cpus),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "2s",
        "--latency",
        "-s",
        str(lua),
        "-H",
        f"Host: {host}",
    ]
    for header in extra_headers:
        argv += ["-H", header]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("SILEXBENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("SILEXBENCH "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "errors": socket_errors + raw["status"],
        "error_detail": {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")},
        "mbytes_per_s": raw["bytes"] / seconds / 1e6 if seconds else 0.0,
    }


_H2_REQS = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_H2_STATUS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored"
)
_H2_LATENCY = re.compile(
    r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)"
)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_h2load(  # noqa: PLR0917 (internal helper, called positionally)
    url: str,
    host: str,
    connections: int,
    threads: int,
    duration_s: float,
    cpus: str | None,
    streams: int = 10,
) -> dict[str, Any]:
    """One bounded h2load run (HTTP/2 over TLS, ALPN h2). h2load reports no p99: max is kept."""
    argv = [
        *taskset(cpus),
        "h2load",
        f"-t{threads}",
        f"-c{connections}",
        f"-m{streams}",
        f"-D{max(1, round(duration_s))}",
        "--warm-up-time=1",
        "-H",
        f":authority: {host}",
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    rate = _H2_REQS.search(done.stdout)
    status = _H2_STATUS.search(done.stdout)
    if done.returncode != 0 or rate is None or status is None:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stdout[-500:]}")
    latency = _H2_LATENCY.search(done.stdout)
    result: dict[str, Any] = {
        "requests": int(status.group(4)),
        "seconds": duration_s,
        "rps": float(rate.group(3)),
        "errors": int(status.group(5)) + int(status.group(6)),
    }
    if latency:
        result["max_ms"] = float(latency.group(3)) * _UNIT_MS[latency.group(4)]
        result["mean_ms"] = float(latency.group(5)) * _UNIT_MS[latency.group(6)]
    return result
