"""Data-plane observability through real sockets: per-route metrics on /metrics, the access log
(JSON and combined, a saturated writer drops instead of blocking) and request IDs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import ssl
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from silex_test_support import LOCALHOST, Echo, Proxy, ProxyFactory, build_table, wait_for

from silex.dataplane import ServerConfig

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def scrape(proxy: Proxy) -> list[Sample]:
    with httpx.Client(base_url=proxy.admin_url, trust_env=False, timeout=5) as admin:
        response = admin.get("/metrics")
    assert response.status_code == 200
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def ingress_route(path: str, backend: str, ingress: str) -> dict[str, Any]:
    return {"path": path, "match": "prefix", "backend": backend, "ingress": ingress}


def shop_and_blog(shop: Echo, blog: Echo) -> dict[str, Any]:
    """shop.example -> ns1/shop (Service ns1/shop); *.blog.example -> ns2/blog; nothing else."""
    table = build_table(
        {
            "shop.example": [ingress_route("/", "shop", "ns1/shop")],
            "*.blog.example": [ingress_route("/", "blog", "ns2/blog")],
        },
        {"shop": [shop.endpoint], "blog": [blog.endpoint]},
    )
    table["backends"]["shop"]["service"] = "ns1/shop"
    table["backends"]["blog"]["service"] = "ns2/blog"
    return table


SHOP = {"namespace": "ns1", "ingress": "shop", "service": "shop", "host": "shop.example"}
BLOG = {"namespace": "ns2", "ingress": "blog", "service": "blog", "host": "*.blog.example"}
OTHER = {"namespace": "", "ingress": "", "service": "", "host": "other"}


def test_counters_and_histograms_equal_the_traffic_sent(proxy: Proxy, echo_factory: Any) -> None:
    proxy.apply(shop_and_blog(echo_factory("shop"), echo_factory("blog")))
    body = b"x" * 100
    response_bytes = {"shop": 0, "blog": 0}
    with proxy.client() as client:
        for _ in range(7):
            r = client.get("/", headers={"Host": "shop.example"})
            assert r.status_code == 200
            response_bytes["shop"] += len(r.content)
        for _ in range(3):
            r = client.post("/upload", content=body, headers={"Host": "shop.example"})
            assert r.status_code == 200
            response_bytes["shop"] += len(r.content)
        for _ in range(2):
            r = client.get("/__silex/status/503", headers={"Host": "shop.example"})
            assert r.status_code == 503
            response_bytes["shop"] += len(r.content)
        for i in range(4):
            r = client.get(f"/post/{i}", headers={"Host": f"h{i}.blog.example"})
            assert r.status_code == 200
            response_bytes["blog"] += len(r.content)
        for i in range(5):
            assert client.get("/", headers={"Host": f"unknown{i}.example"}).status_code == 404

    # A request is recorded when its response body has been written: wait for the last ones.
    def total() -> float:
        return value(scrape(proxy), "silex_requests_total")

    assert wait_for(lambda: total() == 21, timeout_s=10)
    samples = scrape(proxy)
    requests = "silex_requests_total"
    assert value(samples, requests, **SHOP, method="GET", status_class="2xx") == 7
    assert value(samples, requests, **SHOP, method="POST", status_class="2xx") == 3
    assert value(samples, requests, **SHOP, method="GET", status_class="5xx") == 2
    assert value(samples, requests, **SHOP) == 12
    assert value(samples, requests, **BLOG, method="GET", status_class="2xx") == 4
    assert value(samples, requests, **OTHER, method="GET", status_class="4xx") == 5

    for labels, count in ((SHOP, 12), (BLOG, 4), (OTHER, 5)):
        for family in ("silex_request_duration_seconds", "silex_request_size_bytes"):
            assert value(samples, f"{family}_count", **labels) == count, (family, labels)
            assert value(samples, f"{family}_bucket", **labels, le="+Inf") == count
        assert value(samples, "silex_response_size_bytes_count", **labels) == count
    # Only requests that reached an upstream have an upstream time.
    assert value(samples, "silex_upstream_duration_seconds_count", **SHOP) == 12
    assert value(samples, "silex_upstream_duration_seconds_count", **BLOG) == 4
    assert value(samples, "silex_upstream_duration_seconds_count", **OTHER) == 0
    # Body bytes, counted as they streamed.
    assert value(samples, "silex_request_size_bytes_sum", **SHOP) == 300
    assert value(samples, "silex_request_size_bytes_bucket", **SHOP, le="10.0") == 9
    assert value(samples, "silex_request_size_bytes_bucket", **SHOP, le="100.0") == 12
    assert value(samples, "silex_response_size_bytes_sum", **SHOP) == response_bytes["shop"]
    assert value(samples, "silex_response_size_bytes_sum", **BLOG) == response_bytes["blog"]
    durations = value(samples, "silex_request_duration_seconds_sum", **SHOP)
    assert durations > 0
    assert value(samples, "silex_upstream_duration_seconds_sum", **SHOP) <= durations


def test_label_sets_survive_a_table_swap_and_removed_routes_disappear(
    proxy: Proxy, echo_factory: Any
) -> None:
    shop, blog = echo_factory("shop"), echo_factory("blog")
    proxy.apply(shop_and_blog(shop, blog))
    assert proxy.get("/", host="shop.example").status_code == 200
    assert proxy.get("/", host="a.blog.example").status_code == 200
    assert wait_for(lambda: value(scrape(proxy), "silex_requests_total", **BLOG) == 1)
    # The same table again (a new generation) keeps the counts; a table without the blog
    # drops its label set.
    proxy.apply(shop_and_blog(shop, blog))
    assert value(scrape(proxy), "silex_requests_total", **SHOP) == 1
    only_shop = shop_and_blog(shop, blog)
    only_shop["hosts"] = only_shop["hosts"][:1]
    del only_shop["backends"]["blog"]
    proxy.apply(only_shop)
    assert proxy.get("/", host="shop.example").status_code == 200
    assert wait_for(lambda: value(scrape(proxy), "silex_requests_total", **SHOP) == 2)
    samples = scrape(proxy)
    assert not [s for s in samples if s.labels.get("host") == BLOG["host"]]


def test_cardinality_stays_bounded_under_random_paths_and_hosts(proxy: Proxy) -> None:
    # shop.example has a backend without endpoints (503 from the proxy, no backend needed).
    table = build_table({"shop.example": [ingress_route("/", "shop", "ns1/shop")]}, {"shop": []})
    table["backends"]["shop"]["service"] = "ns1/shop"
    proxy.apply(table)
    rng = random.Random(6)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase + string.digits, k=12))

    sent = 0
    deadline = time.monotonic() + 120
    with proxy.client() as client:
        for i in range(10_000):
            if time.monotonic() > deadline:
                break
            host = "shop.example" if i % 2 else f"{word()}.{word()}.example"
            client.get(f"/{word()}/{word()}?q={word()}", headers={"Host": host})
            sent += 1
    assert sent >= 1000
    assert wait_for(lambda: value(scrape(proxy), "silex_requests_total") == sent, timeout_s=10)
    samples = scrape(proxy)
    hosts = {s.labels["host"] for s in samples if "host" in s.labels}
    assert hosts == {"shop.example", "other"}
    request_series = {
        tuple(sorted(s.labels.items())) for s in samples if s.name == "silex_requests_total"
    }
    assert len(request_series) == 2
    assert value(samples, "silex_requests_total", **SHOP, status_class="5xx") == sent // 2
    assert value(samples, "silex_requests_total", **OTHER, status_class="4xx") == sent - sent // 2
    assert not any("?" in v or "/" in v for s in samples for v in s.labels.values())


def test_connection_upstream_and_endpoint_health_metrics(
    proxy_factory: ProxyFactory, echo_factory: Any, refused_endpoint: dict[str, Any]
) -> None:
    proxy = proxy_factory(ServerConfig(outlier_consecutive_failures=1))
    echo = echo_factory("shop")
    table = build_table(
        {"shop.example": [ingress_route("/", "shop", "ns1/shop")]},
        {"shop": [refused_endpoint, echo.endpoint]},
    )
    table["backends"]["shop"]["service"] = "ns1/shop"
    proxy.apply(table)
    with proxy.client() as client:
        for _ in range(4):
            assert client.get("/", headers={"Host": "shop.example"}).status_code == 200
        # This keep-alive connection is open and idle.
        samples = scrape(proxy)
        assert value(samples, "silex_connections", state="open") >= 1
    assert value(samples, "silex_upstream_connect_errors_total") >= 1
    assert value(samples, "silex_upstream_retries_total") >= 1
    refused = f"{refused_endpoint['address']}:{refused_endpoint['port']}"
    healthy = "silex_upstream_endpoint_healthy"
    assert value(samples, healthy, service="ns1/shop", endpoint=refused) == 0
    assert value(samples, healthy, service="ns1/shop", endpoint=f"{LOCALHOST}:{echo.port}") == 1
    families = {s.name for s in samples}
    assert {"silex_tls_handshakes_total", "silex_access_log_dropped_total"} <= families
    assert value(samples, "silex_connections", state="active") == 0


# --- access log ---------------------------------------------------------------------------


def read_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` lines of the log, waiting (bounded) for the writer to flush them."""
    lines: list[str] = []

    def ready() -> bool:
        nonlocal lines
        lines = path.read_text().splitlines() if path.exists() else []
        return len(lines) >= count

    assert wait_for(ready, timeout_s=10), lines
    return lines


def test_access_log_json_lines_carry_every_field(
    proxy_factory: ProxyFactory, echo_factory: Any, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = proxy_factory(ServerConfig(access_log=str(log)))
    echo = echo_factory("shop")
    proxy.apply(shop_and_blog(echo, echo))
    with proxy.client() as client:
        ok = client.post(
            "/cart/items?id=7",
            content=b"y" * 42,
            headers={
                "Host": "shop.example",
                "User-Agent": "obs-test/1.0",
                "Referer": "https://ref.example/",
                "X-Request-ID": "client-id-1",
            },
        )
        missing = client.get("/nope", headers={"Host": "unknown.example"})
    assert (ok.status_code, missing.status_code) == (200, 404)
    first, second = (json.loads(line) for line in read_lines(log, 2))
    assert set(first) >= {
        "time", "request_id", "client", "method", "host", "path", "query", "protocol",
        "status", "bytes_in", "bytes_out", "duration", "upstream_address", "upstream_status",
        "upstream_duration", "namespace", "ingress", "service", "tls_version", "sni",
        "user_agent",
    }  # fmt: skip
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert first["request_id"] == "client-id-1" == ok.headers["x-request-id"]
    assert first["client"] == LOCALHOST
    assert (first["method"], first["host"]) == ("POST", "shop.example")
    assert (first["path"], first["query"], first["protocol"]) == ("/cart/items", "id=7", "HTTP/1.1")
    assert (first["status"], first["bytes_in"], first["bytes_out"]) == (200, 42, len(ok.content))
    assert first["upstream_address"] == f"{LOCALHOST}:{echo.port}"
    assert first["upstream_status"] == 200
    assert 0 <= first["upstream_duration"] <= first["duration"]
    assert (first["namespace"], first["ingress"], first["service"]) == ("ns1", "shop", "shop")
    assert (first["tls_version"], first["sni"]) == (None, None)
    assert first["user_agent"] == "obs-test/1.0"
    assert first["referer"] == "https://ref.example/"

    assert HEX32.match(second["request_id"])
    assert second["request_id"] == missing.headers["x-request-id"]
    assert (second["status"], second["host"], second["path"]) == (404, "unknown.example", "/nope")
    assert second["upstream_address"] is None
    assert second["upstream_status"] is None
    assert (second["namespace"], second["ingress"], second["vhost"]) == (None, None, "other")


def test_access_log_combined_format(
    proxy_factory: ProxyFactory, echo_factory: Any, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = proxy_factory(ServerConfig(access_log=str(log), access_log_format="combined"))
    echo = echo_factory("shop")
    proxy.apply(shop_and_blog(echo, echo))
    response = proxy.get(
        '/a"b?x=1', host="shop.example", headers={"User-Agent": "ua", "X-Request-ID": "r-1"}
    )
    assert response.status_code == 200
    (line,) = read_lines(log, 1)
    pattern = (
        r"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /a%22b\?x=1 HTTP/1\.1" 200 (\d+) "-" "ua" 0 \d+\.\d{3} \[ns1-shop\] \[\] '
        rf"127\.0\.0\.1:{echo.port} (\d+) \d+\.\d{{3}} 200 r-1$"
    )
    match = re.match(pattern, line)
    assert match, line
    assert int(match.group(1)) == len(response.content) == int(match.group(2))


def test_access_log_over_tls_names_the_version_and_sni(
    proxy_factory: ProxyFactory, echo_factory: Any, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = proxy_factory(ServerConfig(access_log=str(log)))
    _, https_port = proxy.dataplane.listen("https", LOCALHOST, 0, "https")
    echo = echo_factory("shop")
    ca = trustme.CA()
    cert = ca.issue_cert("shop.example")
    table = shop_and_blog(echo, echo)
    table["certificates"] = {
        "shop": {
            "cert_pem": "".join(blob.bytes().decode() for blob in cert.cert_chain_pems),
            "key_pem": cert.private_key_pem.bytes().decode(),
            "hosts": ["shop.example"],
        }
    }
    proxy.apply(table)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        response = client.get(
            f"https://{LOCALHOST}:{https_port}/",
            headers={"Host": "shop.example"},
            extensions={"sni_hostname": "shop.example"},
        )
    assert response.status_code == 200
    (line,) = read_lines(log, 1)
    entry = json.loads(line)
    assert entry["sni"] == "shop.example"
    assert entry["tls_version"] in ("TLSv1.3", "TLSv1.2")
    # A client that does not trust the certificate fails its handshake.
    with (
        httpx.Client(verify=ssl.create_default_context(), trust_env=False, timeout=10) as client,
        contextlib.suppress(httpx.ConnectError),
    ):
        client.get(f"https://{LOCALHOST}:{https_port}/", extensions={"sni_hostname": "x.y"})
    samples = scrape(proxy)
    assert value(samples, "silex_tls_handshakes_total", result="success") == 1
    assert wait_for(
        lambda: value(scrape(proxy), "silex_tls_handshakes_total", result="failure") == 1
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO opened for reading (so writers can open it) that is never read."""
    path = tmp_path / "access.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield path
    finally:
        os.close(reader)


def test_a_saturated_log_writer_drops_and_counts_instead_of_blocking(
    proxy_factory: ProxyFactory, echo_factory: Any, fifo: Path
) -> None:
    proxy = proxy_factory(ServerConfig(access_log=str(fifo), access_log_buffer_lines=8))
    proxy.apply(shop_and_blog(echo_factory("shop"), echo_factory("blog")))
    # ~400-byte lines: the pipe (64 KiB) and the queue (8 lines) fill after a few hundred.
    statuses = []
    with proxy.client() as client:
        for i in range(800):
            statuses.append(client.get(f"/{i}", headers={"Host": "shop.example"}).status_code)
    assert statuses == [200] * 800
    dropped = value(scrape(proxy), "silex_access_log_dropped_total")
    assert 0 < dropped < 800


# --- request IDs --------------------------------------------------------------------------


def test_request_id_generated_preserved_replaced_and_trace_context_untouched(
    proxy: Proxy, echo_factory: Any
) -> None:
    proxy.apply(shop_and_blog(echo_factory("shop"), echo_factory("blog")))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    with proxy.client() as client:

        def send(request_id: str | None) -> tuple[str, dict[str, list[str]]]:
            headers = {"Host": "shop.example", "traceparent": traceparent}
            headers["tracestate"] = tracestate
            if request_id is not None:
                headers["X-Request-ID"] = request_id
            response = client.get("/", headers=headers)
            assert response.status_code == 200
            seen: dict[str, list[str]] = response.json()["headers"]
            assert seen["Traceparent"] == [traceparent]
            assert seen["Tracestate"] == [tracestate]
            return response.headers["x-request-id"], seen

        generated, seen = send(None)
        assert HEX32.match(generated)
        assert seen["X-Request-Id"] == [generated]
        again, _ = send(None)
        assert HEX32.match(again)
        assert again != generated

        kept = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        echoed, seen = send(kept)
        assert echoed == kept
        assert seen["X-Request-Id"] == [kept]

        for malformed in ("has space", "semi;colon", "x" * 129):
            replaced, seen = send(malformed)
            assert HEX32.match(replaced), malformed
            assert seen["X-Request-Id"] == [replaced]

        # Responses the proxy makes itself carry one too.
        missing = client.get("/", headers={"Host": "unknown.example", "X-Request-ID": "abc"})
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "abc"
