#!/usr/bin/env python3
"""Load-balancing policies: throughput and proxy CPU per request against round robin, and
requests failed while a backend is killed under load.

Three nginx backends (each its own process, serving a 1 KiB file on 127.0.0.1) behind one
Silex data plane running in this process with one worker thread pinned to CPU 0; wrk (one
thread, 64 connections) and the backends on CPU 1. For each policy (round robin,
least_request, ewma, hash on a header, affinity cookie) the runs are interleaved over
``--reps`` rounds; recorded: requests/s, p99, errors and the proxy's CPU time per request
(this process's utime+stime, which is the data plane: the main thread only waits on wrk).

The kill scenario runs wrk for ``--kill-duration`` seconds per policy while one backend is
SIGKILLed after a third of it (in-flight requests reset, then refused connections); active
health checks (50 ms interval) are on, retries at their default (3 tries). Failed requests
= wrk socket errors + responses with status >= 400. The backend is restarted between runs.

    .venv/bin/python benches/balancing.py                 # ~3 min
    .venv/bin/python benches/balancing.py --duration 3 --reps 1 --kill-duration 4   # ~1 min

Needs nginx, wrk and taskset on PATH; writes JSON to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from silexbench.configs import write_backend
from silexbench.harness import Disturbance
from silexbench.load import run_wrk, write_lua
from silexbench.procs import Proc, free_port

from silex.dataplane import DataPlane, ServerConfig

HOST = "lb.bench.test"
POLICIES: dict[str, dict[str, Any] | None] = {
    "round_robin": None,
    "least_request": {"policy": "least_request"},
    "ewma": {"policy": "ewma"},
    "hash": {"policy": "hash", "hash_by": {"source": "header", "name": "x-user"}},
    "cookie": {"policy": "cookie", "cookie": {"name": "INGRESSCOOKIE"}},
}
HEALTH_CHECK = {
    "path": "/1k",
    "interval_ms": 50,
    "timeout_ms": 500,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}


def table(ports: list[int], balance: dict[str, Any] | None, check: bool) -> bytes:
    backend: dict[str, Any] = {
        "service": "bench/lb",
        "endpoints": [{"address": "127.0.0.1", "port": port} for port in ports],
    }
    if balance is not None:
        backend["balance"] = balance
    if check:
        backend["health_check"] = HEALTH_CHECK
    return json.dumps(
        {
            "version": 1,
            "hosts": [{"name": HOST, "routes": [{"path": "/", "match": "prefix", "backend": "b"}]}],
            "backends": {"b": backend},
        }
    ).encode()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def headers_for(policy: str) -> tuple[str, ...]:
    # Hash: a fixed key would pin everything to one endpoint; wrk sends one header value, so
    # the hash is computed per request but lands on one endpoint (the cost is what we measure).
    return ("X-User: user-42",) if policy == "hash" else ()


def start_backends(tmp: Path, count: int) -> list[Proc]:
    backends = []
    for i in range(count):
        directory = tmp / f"backend-{i}"
        directory.mkdir()
        port = free_port()
        conf = write_backend(directory, port, workers=1)
        proc = Proc(
            name=f"backend-{i}",
            argv=["taskset", "-c", "1", "nginx", "-c", str(conf), "-e", str(directory / "e.log")],
            port=port,
            log=directory / "log",
        )
        proc.start()
        backends.append(proc)
    return backends


def throughput(
    args: argparse.Namespace,
    *,
    dataplane: DataPlane,
    port: int,
    ports: list[int],
    lua: Path,
    backends: list[Proc],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in POLICIES}
    url = f"http://127.0.0.1:{port}/1k"
    for _ in range(args.reps):
        for name, balance in POLICIES.items():
            dataplane.apply_json(table(ports, balance, check=False))
            run_wrk(url, HOST, args.connections, 1, 1, lua, "1", headers_for(name))  # warm-up
            with Disturbance(backends) as disturbance:
                before = cpu_seconds()
                result = run_wrk(
                    url, HOST, args.connections, 1, args.duration, lua, "1", headers_for(name)
                )
                used = cpu_seconds() - before
            result["cpu_us_per_request"] = used * 1e6 / max(1, result["requests"])
            result.update(disturbance.record())
            runs[name].append(result)
            print(
                f"  {name:14} {result['rps']:9.0f} req/s  "
                f"{result['cpu_us_per_request']:5.1f} us/req  "
                f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  "
                f"foreign CPU {disturbance.foreign_cpu_pct:.0f}%",
                file=sys.stderr,
            )
    baseline = statistics.median(r["cpu_us_per_request"] for r in runs["round_robin"])
    baseline_rps = statistics.median(r["rps"] for r in runs["round_robin"])
    summary = {}
    for name, results in runs.items():
        cpu = statistics.median(r["cpu_us_per_request"] for r in results)
        rps = statistics.median(r["rps"] for r in results)
        summary[name] = {
            "rps_median": round(rps),
            "cpu_us_per_request_median": round(cpu, 2),
            "cpu_vs_round_robin_pct": round(100 * (cpu / baseline - 1), 1),
            "rps_vs_round_robin_pct": round(100 * (rps / baseline_rps - 1), 1),
            "errors": sum(r["errors"] for r in results),
            "disturbed_runs": sum(r["disturbed"] for r in results),
            "runs": results,
        }
    return summary


def kill_tree(proc: Proc) -> None:
    """SIGKILL the backend's master and workers (a killed master leaves serving workers)."""
    for pid in proc.pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def kill_under_load(
    args: argparse.Namespace,
    *,
    dataplane: DataPlane,
    port: int,
    ports: list[int],
    lua: Path,
    backends: list[Proc],
) -> dict[str, Any]:
    import threading  # noqa: PLC0415

    url = f"http://127.0.0.1:{port}/1k"
    results = {}
    for name, balance in POLICIES.items():
        victim = backends[-1]
        if victim.popen is None or victim.popen.poll() is not None:
            victim.start()
        dataplane.apply_json(table(ports, balance, check=True))
        time.sleep(0.3)  # a few health checks pass first
        retries_before = dataplane.stats().upstream_retries
        killer = threading.Timer(args.kill_duration / 3, kill_tree, (victim,))
        killer.start()
        result = run_wrk(
            url, HOST, args.kill_connections, 1, args.kill_duration, lua, "1", headers_for(name)
        )
        killer.join()
        victim.stop()
        result["retries"] = dataplane.stats().upstream_retries - retries_before
        results[name] = {
            k: result[k]
            for k in ("requests", "errors", "error_detail", "rps", "p99_ms", "max_ms", "retries")
        }
        print(
            f"  kill/{name:9} {result['requests']} requests, {result['errors']} failed "
            f"({result['error_detail']}), {result['retries']} retries, "
            f"max {result['max_ms']:.0f} ms",
            file=sys.stderr,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds over the policies")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--kill-duration", type=float, default=9.0, help="seconds per kill run")
    parser.add_argument(
        "--kill-connections", type=int, default=64, help="wrk connections in the kill runs"
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=("throughput", "kill"), default=["throughput", "kill"]
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    # The data plane's runtime threads inherit this affinity: the proxy gets CPU 0.
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="silex-lb-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx workers run as nobody when started by root
        backends = start_backends(tmp, 3)
        dataplane = DataPlane(ServerConfig(workers=1, outlier_consecutive_failures=5))
        try:
            _, port = dataplane.listen("http", "127.0.0.1", 0, "proxy")
            ports = [b.port for b in backends]
            lua = write_lua(tmp)
            report: dict[str, Any] = {
                "setup": {
                    "duration_s": args.duration,
                    "reps": args.reps,
                    "connections": args.connections,
                    "kill_connections": args.kill_connections,
                    "cpus": os.cpu_count(),
                    "loadavg": Path("/proc/loadavg").read_text().split()[:3],
                },
            }
            if "throughput" in args.scenarios:
                print("throughput (1 KiB, keep-alive):", file=sys.stderr)
                report["throughput"] = throughput(
                    args, dataplane=dataplane, port=port, ports=ports, lua=lua, backends=backends
                )
            if "kill" in args.scenarios:
                print("one backend killed under load:", file=sys.stderr)
                report["kill"] = kill_under_load(
                    args, dataplane=dataplane, port=port, ports=ports, lua=lua, backends=backends
                )
        finally:
            dataplane.shutdown(1.0)
            for backend in backends:
                backend.stop()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
