"""``silex controller`` as a subprocess against the fake API server, with real echo backends:
an Ingress created in the API is served through the proxy, its status gets the published
address, later changes are served too, and SIGTERM drains and exits 0."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from kube_builders import endpoint_slice, ingress, lb_of, service
from silex_test_support import LOCALHOST, ServeProcess, silex_command, wait_for

from fake_apiserver import FakeApiServer

NET = "networking.k8s.io/v1"


@pytest.fixture
def api_thread() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2).running_in_thread() as server:
        yield server


def start_controller(api: FakeApiServer, *extra: str) -> ServeProcess:
    args = [
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
        LOCALHOST,
        "--publish-status-address",
        "127.0.0.1",
        "--debounce",
        "20ms",
        "--grace-period",
        "5s",
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return ServeProcess(args, env=env)


def get(port: int, host: str, path: str = "/") -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(f"http://{LOCALHOST}:{port}{path}", headers={"Host": host})


def test_controller_serves_an_ingress_and_writes_its_status(
    api_thread: FakeApiServer, echo_factory
) -> None:
    api = api_thread
    shop, blog = echo_factory("shop"), echo_factory("blog")
    for echo in (shop, blog):
        api.create(service(echo.name, target_port=echo.port))
        api.create(endpoint_slice(echo.name, port=echo.port))
    api.create(ingress("shop", host="shop.example", service="shop", port="http"))
    api.create(ingress("theirs", host="theirs.example", service="blog", class_name="other"))

    process = start_controller(api)
    try:
        ports = process.wait_listening(("admin", "http"))
        response = get(ports["http"], "shop.example", "/cart")
        assert response.status_code == 200, process.output()
        assert json.loads(response.text)["service"] == "shop"

        def status_of(name: str) -> list[dict[str, str]]:
            return lb_of(api.get(NET, "Ingress", name, "default"))

        assert wait_for(lambda: status_of("shop") == [{"ip": "127.0.0.1"}], timeout_s=15)
        # An Ingress of another class is neither routed nor touched.
        assert get(ports["http"], "theirs.example").status_code == 404
        assert status_of("theirs") == []

        # A change in the API is served without a restart.
        api.create(ingress("blog", host="blog.example", service="blog", port="http"))
        assert wait_for(lambda: get(ports["http"], "blog.example").status_code == 200, timeout_s=15)
        assert json.loads(get(ports["http"], "blog.example").text)["service"] == "blog"

        # The class changes away from ours: no longer routed, status cleared.
        assert wait_for(lambda: status_of("blog") == [{"ip": "127.0.0.1"}], timeout_s=15)
        api.patch(NET, "Ingress", "blog", {"spec": {"ingressClassName": "other"}}, "default")
        assert wait_for(lambda: get(ports["http"], "blog.example").status_code == 404, timeout_s=15)
        assert wait_for(lambda: status_of("blog") == [], timeout_s=15)

        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=15) == 0
    finally:
        process.kill()
    assert "Traceback" not in process.output()
