"""Error statuses, limits and timeouts of the proxy, over real sockets."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import httpx
import pytest
from silex_test_support import (
    LOCALHOST,
    build_table,
    catch_all_table,
    headers_of,
    raw_exchange,
    read_request_head,
    read_response,
    route,
    status_of,
    wait_for,
)


def server_config(**fields):
    from silex.dataplane import ServerConfig  # noqa: PLC0415

    return ServerConfig(**fields)


# --- 404 / 502 / 503 / 504 --------------------------------------------------------------------


def test_no_route_is_404(proxy, echoes):
    proxy.apply(build_table({"app": [route("/api", "b")]}, {"b": [echoes["alpha"].endpoint]}))
    with proxy.client() as client:
        for host, path in (("other", "/api"), ("app", "/apix"), ("app", "/"), ("app", "/API")):
            response = client.get(path, headers={"Host": host})
            assert response.status_code == 404, (host, path)
            assert response.text == "404 Not Found\n"
            assert response.headers["server"] == "silex"
            assert response.headers["content-type"].startswith("text/plain")
            assert "date" in response.headers
        assert client.get("/api/x", headers={"Host": "app"}).status_code == 200


def test_no_table_yet_is_404(proxy):
    assert proxy.dataplane.generation == 0
    with proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 404
    assert response.headers["server"] == "silex"


def test_refused_endpoint_is_502(proxy, refused_endpoint):
    proxy.apply(catch_all_table([refused_endpoint]))
    with proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 502
    assert response.text == "502 Bad Gateway\n"
    assert response.headers["server"] == "silex"
    assert proxy.dataplane.stats().upstream_errors >= 1


def _close_after_head(conn: socket.socket, server) -> None:
    read_request_head(conn)
    conn.close()


def _reset_after_head(conn: socket.socket, server) -> None:
    read_request_head(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _partial_head_then_close(conn: socket.socket, server) -> None:
    read_request_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
    conn.close()


def _garbage(conn: socket.socket, server) -> None:
    read_request_head(conn)
    conn.sendall(b"SSH-2.0-OpenSSH_9.6 this is not http\r\n\r\n")
    conn.close()


@pytest.mark.parametrize(
    "handler",
    [_close_after_head, _reset_after_head, _partial_head_then_close, _garbage],
    ids=["close", "reset", "partial-head", "garbage"],
)
def test_broken_upstream_is_502(proxy, raw_server, handler):
    backend = raw_server(handler)
    proxy.apply(catch_all_table([backend.endpoint]))
    with proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 502
    assert response.headers["server"] == "silex"
    assert backend.accepted >= 1


def test_upstream_dying_mid_body_is_not_a_complete_response(proxy, raw_server):
    """Once the head is forwarded the status cannot change: the client must see the body cut."""

    def handler(conn: socket.socket, server) -> None:
        read_request_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        time.sleep(0.1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    backend = raw_server(handler)
    proxy.apply(catch_all_table([backend.endpoint]))
    with proxy.client() as client, pytest.raises(httpx.HTTPError):
        client.get("/", headers={"Host": "app"})


def test_backend_without_endpoints_is_503(proxy):
    proxy.apply(catch_all_table([]))
    with proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 503
    assert response.text == "503 Service Unavailable\n"
    assert response.headers["server"] == "silex"


def test_slow_upstream_route_option_is_504(proxy, echoes):
    proxy.apply(
        build_table(
            {
                "app": [route("/", "b", options={"upstream_read_timeout_ms": 300})],
                "patient": [route("/", "b")],
            },
            {"b": [echoes["alpha"].endpoint]},
        )
    )
    with proxy.client() as client:
        response = client.get("/__silex/sleep/2500", headers={"Host": "app"})
        assert response.status_code == 504
        assert response.text == "504 Gateway Timeout\n"
        assert response.headers["server"] == "silex"
        # A fast request on the same route is fine.
        assert client.get("/__silex/sleep/10", headers={"Host": "app"}).status_code == 200
        # A route without the option uses the table default (60 s).
        response = client.get("/__silex/sleep/800", headers={"Host": "patient"})
        assert response.status_code == 200
        assert response.json()["service"] == "alpha"


def test_slow_upstream_table_default_is_504(proxy, echoes):
    proxy.apply(
        build_table(
            {"app": [route("/", "b")]},
            {"b": [echoes["alpha"].endpoint]},
            defaults={"upstream_read_timeout_ms": 300},
        )
    )
    with proxy.client() as client:
        response = client.get("/__silex/sleep/2500", headers={"Host": "app"})
        assert response.status_code == 504
        # A route option overrides the default.
    proxy.apply(
        build_table(
            {"app": [route("/", "b", options={"upstream_read_timeout_ms": 10_000})]},
            {"b": [echoes["alpha"].endpoint]},
            defaults={"upstream_read_timeout_ms": 300},
        )
    )
    with proxy.client() as client:
        response = client.get("/__silex/sleep/800", headers={"Host": "app"})
        assert response.status_code == 200
        assert response.json()["service"] == "alpha"


# --- 413 ------------------------------------------------------------------------------------


def _counting_ok(conn: socket.socket, server) -> None:
    head = read_request_head(conn)
    server.heads.append(head)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    conn.close()


def test_content_length_above_limit_is_413_without_reaching_upstream(proxy, raw_server):
    backend = raw_server(_counting_ok)
    proxy.apply(catch_all_table([backend.endpoint], options={"max_request_body_bytes": 1024}))
    body = b"y" * 4096
    response = raw_exchange(
        proxy.port,
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 4096\r\n\r\n" + body,
    )
    assert status_of(response) == 413, response
    assert headers_of(response)["server"] == ["silex"]
    assert backend.accepted == 0
    assert backend.heads == []
    # At the limit exactly, the request goes through.
    response = raw_exchange(
        proxy.port,
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1024\r\n\r\n" + b"y" * 1024,
    )
    assert status_of(response) == 200, response
    assert backend.accepted == 1


def test_content_length_above_default_limit_is_413(proxy, raw_server):
    backend = raw_server(_counting_ok)
    proxy.apply(catch_all_table([backend.endpoint]))  # default limit: 1 MiB
    size = 1024 * 1024 + 1
    with proxy.client() as client:
        response = client.post("/", content=b"z" * size, headers={"Host": "app"})
    assert response.status_code == 413
    assert backend.accepted == 0


def test_chunked_body_above_limit_is_413(proxy, echoes):
    proxy.apply(
        catch_all_table([echoes["alpha"].endpoint], options={"max_request_body_bytes": 4096})
    )

    def chunks():
        for _ in range(64):
            yield b"c" * 1024

    with proxy.client() as client:
        try:
            response = client.post("/", content=chunks(), headers={"Host": "app"})
        except httpx.HTTPError as exc:  # pragma: no cover - reported as a failure below
            pytest.fail(f"client saw {exc!r} instead of a 413 response")
    assert response.status_code == 413
    assert response.headers["server"] == "silex"

    # Below the limit, chunked is fine and the echo sees every byte.
    def small():
        for _ in range(4):
            yield b"c" * 1024

    with proxy.client() as client:
        response = client.post("/", content=small(), headers={"Host": "app"})
    assert response.status_code == 200
    assert response.json()["body_bytes"] == 4096


# --- 431 ------------------------------------------------------------------------------------


def test_too_large_header_is_431(proxy_factory, echoes):
    proxy = proxy_factory(server_config(max_header_bytes=8192))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    response = raw_exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n"
    )
    assert status_of(response) == 431, response[:200]
    # A head under the limit passes.
    response = raw_exchange(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n",
    )
    assert status_of(response) == 200, response[:200]


def test_too_many_headers_is_431(proxy_factory, echoes):
    proxy = proxy_factory(server_config(max_headers=10))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
    response = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: app\r\n" + many + b"\r\n")
    assert status_of(response) == 431, response[:200]
    few = b"".join(b"X-H%d: v\r\n" % i for i in range(5))
    response = raw_exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n" + few + b"\r\n"
    )
    assert status_of(response) == 200, response[:200]


# --- connection timeouts ----------------------------------------------------------------------


def _closed_within(sock: socket.socket, timeout_s: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or timeout_s passes (False); bounded."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout_s
    received = b""
    for _ in range(int(timeout_s / 0.2) + 5):
        if time.monotonic() >= deadline:
            return False, received
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not piece:
            return True, received
        received += piece
    return False, received


def test_header_read_timeout_closes_a_slow_head(proxy_factory, echoes):
    proxy = proxy_factory(server_config(header_read_timeout_ms=300))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: ")
        closed, received = _closed_within(sock, 4.0)
    assert closed, "the proxy kept a half-sent request head open"
    assert received == b"" or status_of(received) in (400, 408), received


def test_header_read_timeout_for_a_silent_connection(proxy_factory, echoes):
    proxy = proxy_factory(server_config(header_read_timeout_ms=300))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        closed, _ = _closed_within(sock, 4.0)
    assert closed, "the proxy kept a connection that never sent a byte"


def test_idle_keep_alive_connection_is_closed(proxy_factory, echoes):
    proxy = proxy_factory(server_config(client_idle_timeout_ms=300))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        response = read_response(sock)
        assert status_of(response) == 200
        assert json.loads(response.partition(b"\r\n\r\n")[2])["service"] == "alpha"
        closed, extra = _closed_within(sock, 4.0)
    assert closed, "an idle keep-alive connection stayed open"
    assert extra == b""


def test_slow_request_in_flight_is_not_cut_by_idle_timeout(proxy_factory, echoes):
    proxy = proxy_factory(server_config(client_idle_timeout_ms=300, header_read_timeout_ms=300))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        for _ in range(2):  # twice on the same connection: keep-alive survives a slow request
            sock.sendall(b"GET /__silex/sleep/800 HTTP/1.1\r\nHost: app\r\n\r\n")
            response = read_response(sock, timeout_s=5)
            assert status_of(response) == 200, response
            assert json.loads(response.partition(b"\r\n\r\n")[2])["service"] == "alpha"


def test_slow_response_body_is_not_cut_by_idle_timeout(proxy_factory, raw_server):
    """The response body is still being written: the connection is busy, not idle."""

    def handler(conn: socket.socket, server) -> None:
        read_request_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        time.sleep(0.8)
        conn.sendall(b"def")

    backend = raw_server(handler)
    proxy = proxy_factory(server_config(client_idle_timeout_ms=300))
    proxy.apply(catch_all_table([backend.endpoint]))
    response = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert status_of(response) == 200
    assert response.endswith(b"\r\n\r\nabcdef"), response


# --- bad tables -------------------------------------------------------------------------------


def test_bad_table_raises_config_error_and_previous_table_keeps_serving(proxy, echoes):
    from silex.dataplane import ConfigError  # noqa: PLC0415

    good = build_table({"app": [route("/", "b")]}, {"b": [echoes["alpha"].endpoint]})
    generation = proxy.apply(good)
    bad_tables = {
        "$.hosts[0].routes[0].backend": build_table(
            {"app": [route("/", "missing")]}, {"b": [echoes["beta"].endpoint]}
        ),
        "$.hosts[0].routes[0].match": {
            "version": 1,
            "hosts": [{"name": "app", "routes": [{"path": "/", "match": "regex", "backend": "b"}]}],
            "backends": {"b": {"endpoints": [echoes["beta"].endpoint]}},
        },
        '$.backends["ns/b:80"].endpoints[0].port': {
            "version": 1,
            "hosts": [{"name": "app", "routes": [route("/", "ns/b:80")]}],
            "backends": {"ns/b:80": {"endpoints": [{"address": LOCALHOST, "port": 70000}]}},
        },
        "$.surprise": {"version": 1, "surprise": True},
        "$.version": {"version": 99},
    }
    for json_path, table in bad_tables.items():
        with pytest.raises(ConfigError) as info:
            proxy.apply(table)
        assert json_path in str(info.value), str(info.value)
        assert proxy.dataplane.generation == generation
        response = proxy.get("/", host="app")
        assert response.status_code == 200
        assert response.json()["service"] == "alpha"
    with pytest.raises(ConfigError):
        proxy.apply(b"{not json")
    assert proxy.dataplane.generation == generation
    assert proxy.dataplane.stats().generation == generation
    assert proxy.get("/", host="app").json()["service"] == "alpha"


def test_readiness_follows_the_first_table(proxy, echoes):
    with httpx.Client(base_url=proxy.admin_url, trust_env=False, timeout=5) as admin:
        assert admin.get("/healthz").status_code == 200
        assert admin.get("/readyz").status_code == 503
        proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
        assert admin.get("/readyz").status_code == 200
        assert admin.get("/nope").status_code == 404


def test_concurrent_requests_on_many_connections(proxy, echoes):
    """Sanity: a few parallel clients all get answers (no assertion on speed)."""
    proxy.apply(catch_all_table([echoes["alpha"].endpoint, echoes["beta"].endpoint]))
    failures: list[str] = []
    services: set[str] = set()

    def worker() -> None:
        with proxy.client() as client:
            for _ in range(25):
                try:
                    response = client.get("/", headers={"Host": "app"})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(str(response.status_code))
                else:
                    services.add(response.json()["service"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    assert services == {"alpha", "beta"}
    assert wait_for(lambda: proxy.dataplane.stats().requests_total >= 100, timeout_s=2)


# --- Host header validity (RFC 9112 §3.2; ProxyError::BadHost "missing or invalid Host") -------


def _recording_ok(conn: socket.socket, server) -> None:
    server.heads.append(read_request_head(conn))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    conn.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app\r\nHost: evil\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app evil\r\nConnection: close\r\n\r\n",
    ],
    ids=["missing-host", "two-hosts", "invalid-host"],
)
def test_http11_request_without_one_valid_host_is_400(proxy, raw_server, head):
    """RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request lacking Host, with more
    than one Host line, or with an invalid Host value. Routing on one Host while the upstream
    may read another is a request-smuggling vector."""
    backend = raw_server(_recording_ok)
    proxy.apply(catch_all_table([backend.endpoint]))
    response = raw_exchange(proxy.port, head)
    assert status_of(response) == 400, (response[:120], backend.heads)
    assert backend.accepted == 0


def test_http10_request_without_host_is_routed(proxy, raw_server):
    backend = raw_server(_recording_ok)
    proxy.apply(catch_all_table([backend.endpoint]))
    response = raw_exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
    assert status_of(response) == 200, response
