"""Time from an API change to the new route being served by ``silex controller``.

Runs the fake API server (tests/fake_apiserver) in a thread, one echo backend, and
``silex controller`` as a subprocess; then N times: create an Ingress for a new host in the
fake API server and poll the proxy (every 1 ms) until that host answers 200. Prints p50/p99/max.
Also: time from start to the first table with --ingresses pre-created Ingresses.

    .venv/bin/python benches/controller_latency.py --changes 100 --ingresses 1000

A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "kube"))
sys.path.insert(0, str(ROOT / "tests"))  # first: tests/conftest.py, not tests/kube's

from kube_builders import endpoint_slice, ingress, service  # noqa: E402

from conftest import ServeProcess, silex_command  # noqa: E402  (tests/conftest.py)
from fake_apiserver import FakeApiServer  # noqa: E402
from silex.echo import start_echo_server  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--ingresses", type=int, default=0, help="pre-created before start")
    parser.add_argument("--debounce", default="100ms")
    args = parser.parse_args()

    server, port = start_echo_server("bench", "127.0.0.1", 0)
    with FakeApiServer(bookmark_interval=1.0).running_in_thread() as api:
        api.create(service("bench", target_port=port))
        api.create(endpoint_slice("bench", port=port))
        for index in range(args.ingresses):
            api.create(ingress(f"pre-{index}", service="bench", port="http"))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        started = time.monotonic()
        process = ServeProcess(
            [
                *silex_command(),
                "controller",
                "--kubeconfig",
                str(api.kubeconfig_path),
                "--http-port",
                "0",
                "--https-port",
                "0",
                "--admin-port",
                "0",
                "--listen-address",
                "127.0.0.1",
                "--debounce",
                args.debounce,
                "--log-level",
                "warning",
            ],
            env=env,
        )
        try:
            ports = process.wait_listening(("admin", "http"), timeout_s=300)
            first_table_s = time.monotonic() - started
            print(f"start -> first table ({args.ingresses} Ingresses): {first_table_s:.3f}s")
            latencies: list[float] = []
            with httpx.Client(trust_env=False, timeout=5) as client:
                url = f"http://127.0.0.1:{ports['http']}/"
                for index in range(args.changes):
                    host = f"change-{index}.example"
                    t0 = time.monotonic()
                    api.create(ingress(f"change-{index}", host=host, service="bench", port="http"))
                    for _ in range(100_000):
                        if client.get(url, headers={"Host": host}).status_code == 200:
                            break
                        time.sleep(0.001)
                    latencies.append(time.monotonic() - t0)
            ms = [value * 1000 for value in latencies]
            print(
                f"API change -> route served over {len(ms)} changes (debounce {args.debounce}): "
                f"p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
                f"max {max(ms):.1f} ms"
            )
        finally:
            process.proc.terminate()
            try:
                process.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            server.shutdown()


if __name__ == "__main__":
    main()
