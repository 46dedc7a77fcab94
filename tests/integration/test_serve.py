"""``silex serve`` as a subprocess: manifests in, proxy and admin listeners out, reload, drain."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
import yaml
from silex_test_support import LOCALHOST, read_request_head, wait_for

try:
    import silex.cli  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the state of the tree
    pytest.skip(f"silex.cli does not import yet: {exc}", allow_module_level=True)

GRACE_S = 10


def manifests(routes: dict[str, str], ports: dict[str, int]) -> str:
    """An Ingress (class silex) for host ``app`` routing each path prefix to a Service, plus a
    Service and an EndpointSlice per backend pointing at an echo port."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ingressClassName": "silex",
                "rules": [
                    {
                        "host": "app",
                        "http": {
                            "paths": [
                                {
                                    "path": path,
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": service, "port": {"name": "http"}}
                                    },
                                }
                                for path, service in routes.items()
                            ]
                        },
                    }
                ],
            },
        }
    ]
    for service, port in ports.items():
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": port}]},
            }
        )
        documents.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-x1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port}],
                "endpoints": [{"addresses": [LOCALHOST], "conditions": {"ready": True}}],
            }
        )
    return yaml.safe_dump_all(documents, sort_keys=False)


def get(port: int, path: str, host: str = "app", timeout: float = 5.0) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        return client.get(f"http://{LOCALHOST}:{port}{path}", headers={"Host": host})


def status_or_error(port: int, path: str, host: str = "app") -> int | str:
    try:
        return get(port, path, host, timeout=2.0).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def json_service(port: int, path: str) -> str | None:
    try:
        response = get(port, path, timeout=2.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return response.json().get("service")


@pytest.fixture
def served(tmp_path, echoes, silex_serve):
    """``silex serve`` of a folder with one manifest routing app/ to alpha."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = folder / "web.yaml"
    ports = {"alpha": echoes["alpha"].port, "beta": echoes["beta"].port}
    manifest.write_text(manifests({"/": "alpha"}, ports))
    process = silex_serve(folder, "--grace-period", f"{GRACE_S}s", "--debounce", "50ms")
    listening = process.wait_listening(("http", "admin"))
    return process, manifest, ports, listening["http"], listening["admin"]


def test_serve_answers_and_reports_ready(served):
    process, _, _, http_port, admin_port = served
    ready = wait_for(lambda: status_or_error(admin_port, "/readyz") == 200, timeout_s=10)
    assert ready, f"/readyz never turned 200:\n{process.output()}"
    assert get(admin_port, "/healthz").status_code == 200
    response = get(http_port, "/anything")
    assert response.status_code == 200, process.output()
    assert response.json()["service"] == "alpha"
    assert response.json()["host"] == "app"
    assert get(http_port, "/", host="unknown").status_code == 404
    assert process.proc.poll() is None


def test_serve_logs_each_request_as_json_on_stdout_by_default(served):
    process, _, _, http_port, _ = served
    assert wait_for(lambda: json_service(http_port, "/logged") == "alpha", timeout_s=10)

    def logged() -> list[dict[str, Any]]:
        lines = process.output().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith('{"time"')]
        return [e for e in entries if e["path"] == "/logged" and e["status"] == 200]

    assert wait_for(lambda: bool(logged()), timeout_s=10), process.output()
    entry = logged()[0]
    assert (entry["namespace"], entry["ingress"], entry["service"]) == ("default", "web", "alpha")
    assert entry["vhost"] == "app"


def test_editing_the_manifests_reapplies(served):
    process, manifest, ports, http_port, _ = served
    assert wait_for(lambda: json_service(http_port, "/") == "alpha", timeout_s=10), process.output()
    manifest.write_text(manifests({"/": "alpha", "/new": "beta"}, ports))
    switched = wait_for(lambda: json_service(http_port, "/new/x") == "beta", timeout_s=15)
    assert switched, f"the edited manifest was not applied:\n{process.output()}"
    assert json_service(http_port, "/other") == "alpha"


def test_broken_yaml_keeps_the_last_good_table(served):
    process, manifest, ports, http_port, admin_port = served
    assert wait_for(lambda: json_service(http_port, "/") == "alpha", timeout_s=10), process.output()
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata: [unclosed\n  name: x\n")
    logged = wait_for(
        lambda: any(str(manifest) in line or manifest.name in line for line in process.lines),
        timeout_s=15,
        interval_s=0.05,
    )
    assert logged, f"no log line names {manifest}:\n{process.output()}"
    # Still serving the last good table, and still ready.
    for _ in range(5):
        assert json_service(http_port, "/") == "alpha", process.output()
    assert get(admin_port, "/readyz").status_code == 200
    assert process.proc.poll() is None
    # Fixing the file serves again (and the new content applies).
    manifest.write_text(manifests({"/": "beta"}, ports))
    assert wait_for(lambda: json_service(http_port, "/") == "beta", timeout_s=15), process.output()


def _connect_refused(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return True


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    tmp_path, echoes, silex_serve, raw_server
):
    """A request held by its upstream is in flight when SIGTERM arrives: readiness drops and
    the listeners close while it runs, it still completes with 200, then the process exits 0.

    The upstream answers only when the test releases it (after readiness dropped), so the
    order of events is checked without timing assumptions; it sleeps 1.5 s at least, as a
    slow backend would, and never holds more than 10 s."""
    release = threading.Event()

    def held(conn: socket.socket, server) -> None:
        read_request_head(conn)
        started = time.monotonic()
        release.wait(timeout=10)
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        body = b'{"service": "held"}'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    upstream = raw_server(held)
    folder = tmp_path / "manifests"
    folder.mkdir()
    ports = {"alpha": echoes["alpha"].port, "held": upstream.port}
    (folder / "web.yaml").write_text(manifests({"/": "alpha", "/slow": "held"}, ports))
    process = silex_serve(folder, "--grace-period", f"{GRACE_S}s", "--debounce", "50ms")
    listening = process.wait_listening(("http", "admin"))
    http_port, admin_port = listening["http"], listening["admin"]
    assert wait_for(lambda: json_service(http_port, "/") == "alpha", timeout_s=10), process.output()
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["response"] = get(http_port, "/slow", timeout=30)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert wait_for(lambda: upstream.accepted >= 1, timeout_s=5), "request never went upstream"
        process.proc.send_signal(signal.SIGTERM)
        # Readiness drops (503) or the admin listener is gone.
        drained = wait_for(
            lambda: status_or_error(admin_port, "/readyz") != 200, timeout_s=10, interval_s=0.05
        )
        assert drained, f"/readyz stayed 200 after SIGTERM:\n{process.output()}"
        assert wait_for(lambda: _connect_refused(http_port), timeout_s=5, interval_s=0.05), (
            "the proxy still accepts new connections after SIGTERM"
        )
        assert "response" not in result, "the held request ended before it was released"
        assert "error" not in result, f"the held request failed: {result['error']!r}"
    finally:
        release.set()
        thread.join(timeout=20)
    assert "error" not in result, f"{result.get('error')!r}\n{process.output()}"
    assert result["response"].status_code == 200
    assert result["response"].json()["service"] == "held"
    try:
        code = process.proc.wait(timeout=GRACE_S + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"silex serve did not exit within the grace period:\n{process.output()}")
    assert code == 0, process.output()
    assert _connect_refused(http_port)
    assert _connect_refused(admin_port)


@pytest.mark.parametrize(("flags", "ejected"), [((), False), (("1", "120s", "600s"), True)])
def test_outlier_flags_set_passive_ejection(
    tmp_path, silex_serve, refused_endpoint, flags, ejected
):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(manifests({"/": "gone"}, {"gone": refused_endpoint["port"]}))
    args: list[str] = []
    if flags:
        failures, base, longest = flags
        args = [
            "--outlier-consecutive-failures",
            failures,
            "--outlier-base-ejection",
            base,
            "--outlier-max-ejection",
            longest,
        ]
    process = silex_serve(manifest, *args)
    listening = process.wait_listening(("http", "admin"))
    assert get(listening["http"], "/").status_code == 502
    status = httpx.get(f"http://{LOCALHOST}:{listening['admin']}/api/status", trust_env=False)
    [endpoint] = status.json()["backends"][0]["endpoints"]
    # One refused connection ejects only with --outlier-consecutive-failures 1 (default 5),
    # and for the --outlier-base-ejection given.
    assert endpoint["healthy"] is not ejected
    if ejected:
        assert 60 < endpoint["ejected_for_s"] <= 120
