"""``silex controller`` as a subprocess against the fake API server: watch events and restarts,
leadership and problems on the admin port's /metrics; JSON log lines naming their object."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kube_builders import NET, endpoint_slice, ingress, service
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from silex_test_support import LOCALHOST, ServeProcess, silex_command, wait_for

from fake_apiserver import FakeApiServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def api_thread() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2).running_in_thread() as server:
        yield server


@pytest.fixture
def controller(api_thread: FakeApiServer) -> Iterator[ServeProcess]:
    args = [
        *silex_command(),
        "controller",
        "--kubeconfig",
        str(api_thread.kubeconfig_path),
        "--http-port",
        "0",
        "--https-port",
        "0",
        "--admin-port",
        "0",
        "--listen-address",
        LOCALHOST,
        "--publish-status-address",
        "127.0.0.1",
        "--debounce",
        "20ms",
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
        "--log-format",
        "json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    process = ServeProcess(args, env=env)
    try:
        yield process
    finally:
        process.kill()


def json_lines(process: ServeProcess) -> list[dict[str, Any]]:
    """Every stderr line, each parsed as one JSON object (fails on any other line)."""
    return [json.loads(line) for line in process.output().splitlines() if line]


def admin_port_of(process: ServeProcess) -> int:
    def port() -> int | None:
        for line in json_lines(process):
            if line.get("listener") == "admin":
                return int(str(line["address"]).rpartition(":")[2])
        return None

    assert wait_for(lambda: port() is not None or process.proc.poll() is not None, timeout_s=15)
    found = port()
    assert found is not None, process.output()
    return found


def scrape(admin_port: int) -> Samples:
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.get(f"http://{LOCALHOST}:{admin_port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def events(admin: int, kind: str, event_type: str) -> float:
    key = ("silex_watch_events_total", (("kind", kind), ("type", event_type)))
    return scrape(admin).get(key, 0)


def restarts(admin: int, kind: str, reason: str) -> float:
    key = ("silex_watch_restarts_total", (("kind", kind), ("reason", reason)))
    return scrape(admin).get(key, 0)


def test_controller_metrics_and_json_logs(
    api_thread: FakeApiServer, controller: ServeProcess
) -> None:
    api = api_thread
    api.create(service("web"))
    api.create(endpoint_slice("web"))
    api.create(ingress("shop", service="web", port="http"))
    api.create(ingress("broken", service="missing", port="http"))
    admin = admin_port_of(controller)

    leader = ("silex_leader", ())
    assert wait_for(lambda: scrape(admin).get(leader) == 1, timeout_s=15), controller.output()
    problems = ("silex_translate_problems", (("kind", "Ingress"),))
    assert wait_for(lambda: scrape(admin).get(problems) == 1, timeout_s=15), controller.output()
    assert scrape(admin)["silex_config_generation", ()] >= 1

    # Events by kind and type, as the watches receive them.
    assert wait_for(lambda: events(admin, "Ingress", "BOOKMARK") >= 1, timeout_s=15)
    api.create(ingress("blog", service="web", port="http"))
    assert wait_for(lambda: events(admin, "Ingress", "ADDED") >= 1, timeout_s=15)
    api.patch(NET, "Ingress", "blog", {"metadata": {"labels": {"tier": "front"}}}, "default")
    assert wait_for(lambda: events(admin, "Ingress", "MODIFIED") >= 1, timeout_s=15)
    api.delete(NET, "Ingress", "broken", "default")
    assert wait_for(lambda: events(admin, "Ingress", "DELETED") >= 1, timeout_s=15)
    assert wait_for(lambda: scrape(admin).get(problems) == 0, timeout_s=15)
    assert events(admin, "Service", "ADDED") == 0  # listed before watching, not watched

    # A dropped stream is restarted ("timeout"); a compacted history is relisted ("gone").
    assert api.drop_watches() >= 1
    assert wait_for(lambda: restarts(admin, "Service", "timeout") >= 1, timeout_s=15)
    api.compact(watches="error")
    assert wait_for(lambda: restarts(admin, "EndpointSlice", "gone") >= 1, timeout_s=15)
    assert events(admin, "EndpointSlice", "ERROR") >= 1

    lines = json_lines(controller)
    assert any(line.get("object") == "Ingress default/broken" for line in lines), lines
    became_leader = [line for line in lines if "is now the leader" in line["message"]]
    assert became_leader, controller.output()
    assert became_leader[0]["object"].startswith("Lease default/")
