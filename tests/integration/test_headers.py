"""Request and response header handling of the proxy, over real sockets."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

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
)


def echo_request(
    port: int, path: str = "/", headers: list[tuple[str, str]] | None = None, host: str = "app"
) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
    """One GET through the proxy with exactly these headers (http.client sends them as given)."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers or []:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response, json.loads(body)
    finally:
        conn.close()


@pytest.fixture
def echo_proxy(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    return proxy


def test_forwarded_headers_are_set(echo_proxy):
    response, seen = echo_request(echo_proxy.port, "/a/b?q=1", host="shop.example.com:8080")
    assert response.status == 200
    headers = seen["headers"]
    assert headers["X-Forwarded-For"] == ["127.0.0.1"]
    assert headers["X-Real-Ip"] == ["127.0.0.1"]
    assert headers["X-Forwarded-Proto"] == ["http"]
    assert headers["X-Forwarded-Host"] == ["shop.example.com:8080"]
    assert headers["X-Forwarded-Port"] == [str(echo_proxy.port)]
    # Host is passed through unchanged (not replaced by the endpoint's ip:port).
    assert seen["host"] == "shop.example.com:8080"
    assert seen["path"] == "/a/b?q=1"
    assert seen["proto"] == "HTTP/1.1"


def test_client_sent_forwarded_headers_are_replaced(echo_proxy):
    spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-For", "7.7.7.7"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "1"),
    ]
    response, seen = echo_request(echo_proxy.port, headers=spoofed, host="app")
    assert response.status == 200
    headers = seen["headers"]
    assert headers["X-Forwarded-For"] == ["127.0.0.1"]
    assert headers["X-Real-Ip"] == ["127.0.0.1"]
    assert headers["X-Forwarded-Proto"] == ["http"]
    assert headers["X-Forwarded-Host"] == ["app"]
    assert headers["X-Forwarded-Port"] == [str(echo_proxy.port)]


def test_trusted_proxy_forwarded_headers_are_kept(proxy_factory, echoes):
    from silex.dataplane import ServerConfig  # noqa: PLC0415

    proxy = proxy_factory(ServerConfig(trusted_proxies=("127.0.0.0/8",)))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    sent = [
        ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
        ("X-Real-IP", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
        ("X-Forwarded-Port", "443"),
    ]
    response, seen = echo_request(proxy.port, headers=sent, host="app")
    assert response.status == 200
    headers = seen["headers"]
    assert headers["X-Forwarded-For"] == ["203.0.113.7, 10.0.0.1, 127.0.0.1"]
    assert headers["X-Real-Ip"] == ["203.0.113.7"]
    assert headers["X-Forwarded-Proto"] == ["https"]
    assert headers["X-Forwarded-Host"] == ["public.example"]
    assert headers["X-Forwarded-Port"] == ["443"]


def test_trusted_proxy_without_forwarded_headers_gets_them_set(proxy_factory, echoes):
    from silex.dataplane import ServerConfig  # noqa: PLC0415

    proxy = proxy_factory(ServerConfig(trusted_proxies=("127.0.0.0/8",)))
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    response, seen = echo_request(proxy.port, host="app")
    assert response.status == 200
    headers = seen["headers"]
    assert headers["X-Forwarded-For"] == ["127.0.0.1"]
    assert headers["X-Real-Ip"] == ["127.0.0.1"]
    assert headers["X-Forwarded-Proto"] == ["http"]
    assert headers["X-Forwarded-Host"] == ["app"]


def test_hop_by_hop_request_headers_are_stripped(echo_proxy):
    sent = [
        ("Connection", "keep-alive, X-Secret-One"),
        ("Connection", "x-secret-two"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket-ish/1"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Secret-One", "1"),
        ("X-Secret-Two", "2"),
        ("X-Kept", "yes"),
    ]
    response, seen = echo_request(echo_proxy.port, headers=sent)
    assert response.status == 200
    headers = seen["headers"]
    for name in (
        "Connection",
        "Keep-Alive",
        "Te",
        "Trailer",
        "Upgrade",
        "Proxy-Connection",
        "X-Secret-One",
        "X-Secret-Two",
    ):
        assert name not in headers, f"{name} reached the upstream: {headers}"
    assert headers["X-Kept"] == ["yes"]


def test_connection_cannot_remove_the_proxy_forwarded_headers(echo_proxy):
    sent = [
        ("Connection", "X-Forwarded-For, X-Real-IP, X-Forwarded-Host"),
        ("X-Forwarded-For", "6.6.6.6"),
    ]
    response, seen = echo_request(echo_proxy.port, headers=sent, host="app")
    assert response.status == 200
    headers = seen["headers"]
    assert headers["X-Forwarded-For"] == ["127.0.0.1"]
    assert headers["X-Real-Ip"] == ["127.0.0.1"]
    assert headers["X-Forwarded-Host"] == ["app"]


def _upstream_answering(raw_head: bytes):
    """A raw backend answering every request on a connection with ``raw_head`` + body ``ok``."""

    def handler(conn: socket.socket, server) -> None:
        for _ in range(100):
            head = read_request_head(conn)
            if not head:
                return
            server.heads.append(head)
            conn.sendall(raw_head + b"ok")

    return handler


def test_upstream_hop_by_hop_response_headers_are_stripped(proxy, raw_server):
    backend = raw_server(
        _upstream_answering(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: 2\r\n"
            b"Connection: keep-alive, X-Upstream-Secret\r\n"
            b"Keep-Alive: timeout=5, max=100\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Trailer: X-Checksum\r\n"
            b"Upgrade: something/1\r\n"
            b"X-Upstream-Secret: s3cr3t\r\n"
            b"X-Upstream-Kept: yes\r\n"
            b"Server: raw-backend\r\n"
            b"\r\n"
        )
    )
    proxy.apply(catch_all_table([backend.endpoint]))
    response = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200, response
    headers = headers_of(response)
    for name in ("keep-alive", "proxy-connection", "trailer", "upgrade", "x-upstream-secret"):
        assert name not in headers, f"{name} reached the client: {response!r}"
    # The proxy may set its own Connection header for the client connection, but never the
    # upstream's tokens.
    assert all("x-upstream-secret" not in v.lower() for v in headers.get("connection", []))
    assert headers["x-upstream-kept"] == ["yes"]
    assert headers["server"] == ["raw-backend"], "the backend's own Server header must be kept"
    assert response.endswith(b"\r\n\r\nok")


def test_server_header_added_only_when_backend_sends_none(proxy, raw_server):
    backend = raw_server(
        _upstream_answering(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
        )
    )
    proxy.apply(catch_all_table([backend.endpoint]))
    with proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers.get_list("server") == ["silex"]
    assert "date" in response.headers
    assert response.headers["content-length"] == "2"


def test_backend_server_header_is_kept(echo_proxy):
    with echo_proxy.client() as client:
        response = client.get("/", headers={"Host": "app"})
    assert response.status_code == 200
    servers = response.headers.get_list("server")
    assert len(servers) == 1
    assert servers[0].startswith("silex-echo")
    assert "date" in response.headers


def test_host_header_passed_through_unchanged(echo_proxy):
    for host in ("Mixed.Case.Example", "app.example.com.", "[::1]:8443", "a:1"):
        response, seen = echo_request(echo_proxy.port, host=host)
        assert response.status == 200
        assert seen["host"] == host


def test_host_matching_ignores_case_port_and_trailing_dot(proxy, echoes):
    proxy.apply(
        build_table(
            {"app.example.com": [route("/", "a")], "*.example.com": [route("/", "b")]},
            {"a": [echoes["alpha"].endpoint], "b": [echoes["beta"].endpoint]},
        )
    )
    for host in ("app.example.com", "APP.Example.COM", "app.example.com:8080", "app.example.com."):
        response, seen = echo_request(proxy.port, host=host)
        assert response.status == 200, host
        assert seen["service"] == "alpha", host
        assert seen["host"] == host
    response, seen = echo_request(proxy.port, host="other.example.com")
    assert seen["service"] == "beta"


def test_absolute_form_target_routes_by_its_authority(proxy, echoes):
    proxy.apply(
        build_table(
            {"app": [route("/", "a")], "other": [route("/", "b")]},
            {"a": [echoes["alpha"].endpoint], "b": [echoes["beta"].endpoint]},
        )
    )
    response = raw_exchange(
        proxy.port, b"GET http://app/x?y=1 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200, response
    seen = json.loads(response.partition(b"\r\n\r\n")[2])
    assert seen["service"] == "alpha"
    assert seen["path"] == "/x?y=1"


def test_expect_100_continue_is_answered_and_not_forwarded(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        sock.settimeout(5)
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"hello")
        response = read_response(sock)
        if not response:
            response = interim.partition(b"\r\n\r\n")[2]
    assert status_of(response) == 200, response
    seen = json.loads(response.partition(b"\r\n\r\n")[2])
    assert seen["body_bytes"] == 5
    assert "Expect" not in seen["headers"]


def test_http_1_0_client_gets_an_answer(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    response = raw_exchange(proxy.port, b"GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
    assert status_of(response) == 200, response
    seen = json.loads(response.partition(b"\r\n\r\n")[2])
    assert seen["proto"] == "HTTP/1.1"  # upstream requests are always HTTP/1.1
    assert seen["path"] == "/old"
