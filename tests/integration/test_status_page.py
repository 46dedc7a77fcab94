"""The admin status page: ``silex serve`` with several hosts and a bad Secret, read as JSON from
``/api/status`` and as HTML in headless Chromium (Debian's chromium-headless-shell)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from cryptography import x509
from silex_test_support import LOCALHOST, Echo, wait_for

CHROMIUM = "chromium-headless-shell"


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }


def ingress(name: str, host: str, paths: list[tuple[str, str]], secret: str) -> dict[str, Any]:
    # Plain HTTP is served too (no redirect), so the tests can send traffic without TLS.
    annotations = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "ingressClassName": "silex",
            "tls": [{"hosts": [host], "secretName": secret}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": path_type,
                                "backend": {"service": {"name": "shop", "port": {"number": 80}}},
                            }
                            for path, path_type in paths
                        ]
                    },
                }
            ],
        },
    }


def service_with_endpoint(echo: Echo) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": echo.port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "shop-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "shop"},
            },
            "addressType": "IPv4",
            "ports": [{"port": echo.port}],
            "endpoints": [{"addresses": [LOCALHOST], "conditions": {"ready": True}}],
        },
    ]


@pytest.fixture
def served(tmp_path: Path, echoes: dict[str, Echo], silex_serve: Any) -> dict[str, Any]:
    """``silex serve`` on two TLS hosts: one with a good Secret, one whose key does not match."""
    ca = trustme.CA()
    good = ca.issue_cert("shop.example.com", "*.apps.example.com")
    other = ca.issue_cert("blog.example.com")
    good_pem = good.cert_chain_pems[0].bytes()
    documents = [
        tls_secret("shop-tls", good_pem, good.private_key_pem.bytes()),
        # blog's certificate with shop's key: a mismatch the operator must report.
        tls_secret("blog-tls", other.cert_chain_pems[0].bytes(), good.private_key_pem.bytes()),
        ingress("shop", "shop.example.com", [("/", "Prefix"), ("/cart", "Exact")], "shop-tls"),
        ingress("apps", "*.apps.example.com", [("/", "Prefix")], "shop-tls"),
        ingress("blog", "blog.example.com", [("/", "Prefix")], "blog-tls"),
        *service_with_endpoint(echoes["alpha"]),
    ]
    manifests = tmp_path / "site.yaml"
    manifests.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    process = silex_serve(manifests)
    ports = process.wait_listening(("admin", "http"))
    admin = f"http://{LOCALHOST}:{ports['admin']}"
    not_after = x509.load_pem_x509_certificate(good_pem).not_valid_after_utc.timestamp()
    return {
        "admin": admin,
        "http": ports["http"],
        "not_after": int(not_after),
        "echo": echoes["alpha"],
    }


def status_of(admin: str) -> dict[str, Any]:
    response = httpx.get(f"{admin}/api/status", trust_env=False, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_api_status_shows_routes_endpoints_certificates_and_problems(served):
    admin = served["admin"]
    assert wait_for(lambda: status_of(admin)["operator"]["problems"], timeout_s=10)
    status = status_of(admin)
    assert status["generation"] >= 1
    assert status["ready"] is True
    assert status["applied_at"] > 0
    hosts = {host["name"]: host for host in status["hosts"]}
    assert set(hosts) == {"shop.example.com", "*.apps.example.com", "blog.example.com"}
    shop = hosts["shop.example.com"]["routes"]
    shop_routes = {(r["path"], r["match"], r["ingress"]) for r in shop}
    assert shop_routes == {("/", "prefix", "default/shop"), ("/cart", "exact", "default/shop")}
    [backend] = status["backends"]
    assert backend["service"] == "default/shop"
    [endpoint] = backend["endpoints"]
    assert endpoint["address"] == f"{LOCALHOST}:{served['echo'].port}"
    assert endpoint["weight"] == 1
    assert endpoint["healthy"] is True
    assert endpoint["ejected_for_s"] is None
    assert endpoint["down_by_checks"] is False
    assert endpoint["active_requests"] == 0
    certificates = {c["id"]: c for c in status["certificates"]}
    assert set(certificates) == {"default/shop-tls"}
    assert certificates["default/shop-tls"]["not_after"] == served["not_after"]
    assert sorted(certificates["default/shop-tls"]["hosts"]) == [
        "*.apps.example.com",
        "shop.example.com",
    ]
    assert status["operator"]["source"].startswith("manifests in ")
    problems = status["operator"]["problems"]
    assert any(
        p["object"] == "Secret default/blog-tls" and p["severity"] == "error" for p in problems
    ), problems


def test_endpoint_request_rate_follows_traffic(served):
    admin = served["admin"]
    proxy = f"http://{LOCALHOST}:{served['http']}"
    with httpx.Client(base_url=proxy, trust_env=False, timeout=5) as client:
        for _ in range(20):  # bounded; each request goes to the one endpoint
            response = client.get("/cart", headers={"host": "shop.example.com"})
            assert response.status_code == 200

    def rate() -> float:
        [backend] = status_of(admin)["backends"]
        value: float = backend["endpoints"][0]["requests_per_s"]
        return value

    # The rate is resampled at most once a second; it turns positive after the traffic.
    assert wait_for(lambda: rate() > 0, timeout_s=10)


def test_status_page_in_headless_chromium(served, tmp_path):
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is not installed (.ci/run installs it with apt)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install {CHROMIUM})")
    admin = served["admin"]
    assert wait_for(lambda: status_of(admin)["operator"]["problems"], timeout_s=10)
    browser = [CHROMIUM, "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"]
    dom = subprocess.run(
        [*browser, "--dump-dom", f"{admin}/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "<h1>Silex</h1>" in dom
    assert 'id="generation"' in dom
    for text in (
        "shop.example.com",
        "*.apps.example.com",
        "/cart",
        "default/shop",
        f"{LOCALHOST}:{served['echo'].port}",
        "healthy",
        "req/s",
        "default/shop-tls",
        "Secret default/blog-tls",
    ):
        assert text in dom, text
    screenshot = tmp_path / "status.png"
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", f"{admin}/"],
        capture_output=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_page_can_be_turned_off(tmp_path, echoes, silex_serve):
    manifests = tmp_path / "site.yaml"
    manifests.write_text(yaml.safe_dump_all(service_with_endpoint(echoes["alpha"])))
    process = silex_serve(manifests, "--no-status-page")
    ports = process.wait_listening(("admin", "http"))
    with httpx.Client(base_url=f"http://{LOCALHOST}:{ports['admin']}", trust_env=False) as admin:
        assert admin.get("/").status_code == 404
        assert admin.get("/api/status").status_code == 404
        assert admin.get("/healthz").status_code == 200
