"""``silex serve`` as a subprocess: the operator's metrics on the admin port's /metrics, and
``--log-format json`` (operator and core lines alike, the object named)."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from silex_test_support import LOCALHOST, ServeProcess, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

NOT_AFTER = datetime.datetime(2034, 6, 7, 8, 9, 10, tzinfo=datetime.UTC)


def ingress(name: str, host: str, service: str, tls_secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressClassName": "silex",
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service, "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ],
    }
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def write_manifests(folder: Path, echo_port: int) -> None:
    """A served Ingress with TLS (Secret shop-tls), and an Ingress naming a missing Service."""
    issued = trustme.CA().issue_cert("shop.example", not_after=NOT_AFTER)
    cert = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    documents = [
        ingress("shop", "shop.example", "shop", tls_secret="shop-tls"),
        ingress("broken", "broken.example", "missing"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": echo_port}]},
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
            "ports": [{"port": echo_port}],
            "endpoints": [{"addresses": [LOCALHOST], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-tls", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert).decode(),
                "tls.key": base64.b64encode(issued.private_key_pem.bytes()).decode(),
            },
        },
    ]
    (folder / "all.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))


def scrape(admin_port: int) -> Samples:
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.get(f"http://{LOCALHOST}:{admin_port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def json_lines(process: ServeProcess) -> list[dict[str, Any]]:
    """Every stderr line, each parsed as one JSON object (fails on any other line)."""
    with process._lock:
        lines = list(process.lines)
    return [json.loads(line) for line in lines]


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


def test_serve_exports_operator_metrics_and_logs_json(tmp_path, echoes, silex_serve) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    write_manifests(folder, echoes["alpha"].port)
    started = time.time()
    process = silex_serve(folder, "--log-format", "json", "--debounce", "20ms")
    admin = admin_port_of(process)
    last_apply = ("silex_config_last_apply_timestamp_seconds", ())
    assert wait_for(lambda: scrape(admin).get(last_apply, 0) > 0, timeout_s=15), process.output()
    samples = scrape(admin)

    assert samples["silex_config_generation", ()] == 1  # the core's, not a second family
    assert started - 1 <= samples[last_apply] <= time.time()
    assert samples["silex_config_apply_duration_seconds_count", ()] == 1
    assert samples["silex_translate_problems", (("kind", "Ingress"),)] == 1
    expiry = (
        "silex_ssl_certificate_expiry_timestamp_seconds",
        (("host", "shop.example"), ("secret", "default/shop-tls")),
    )
    assert samples[expiry] == NOT_AFTER.timestamp()
    assert samples["silex_leader", ()] == 0  # file mode: no election

    lines = json_lines(process)  # every line is one JSON object
    about_broken = [line for line in lines if line.get("object") == "Ingress default/broken"]
    assert about_broken, process.output()
    assert about_broken[0]["level"] == "WARN"  # served as 503
    assert 'service "missing"' in about_broken[0]["message"]
    assert about_broken[0]["file"].endswith("all.yaml")
    # The core's own lines are JSON in the same keys.
    core = [line for line in lines if str(line.get("target", "")).startswith("silex_proxy")]
    assert core, process.output()
    assert {"timestamp", "level", "target", "message"} <= core[0].keys()


def test_a_fatal_error_is_a_json_line_too(tmp_path, silex_serve) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = silex_serve(folder, "--log-format", "json", "--admin-port", str(port))
        assert process.proc.wait(timeout=30) == 1
    process.kill()  # joins the readers: every line is in
    lines = json_lines(process)
    assert lines, process.output()
    assert lines[-1]["level"] == "ERROR"
    assert lines[-1]["message"].startswith("error: ")
    assert f"{LOCALHOST}:{port}" in lines[-1]["message"]
