"""The echo backend over a real socket."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from silex.echo import EchoServer, canonical_header_name, start_echo_server


@pytest.fixture
def echo() -> Iterator[str]:
    server, port = start_echo_server("coffee", "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_get_describes_the_request(echo: str) -> None:
    response = httpx.get(f"{echo}/some/path?q=1&r", headers={"X-Test": "yes"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "date" in response.headers
    data = response.json()
    assert data["service"] == "coffee"
    assert data["path"] == "/some/path?q=1&r"
    assert data["method"] == "GET"
    assert data["proto"] == "HTTP/1.1"
    assert data["host"] == echo.removeprefix("http://")
    assert data["headers"]["X-Test"] == ["yes"]
    assert "Host" not in data["headers"]
    assert data["body_bytes"] == 0
    assert data["body_sha256"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_every_method_with_body(echo: str, method: str) -> None:
    body = b"hello " * 50_000
    response = httpx.request(method, f"{echo}/upload", content=body)
    data = response.json()
    assert data["method"] == method
    assert data["body_bytes"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body(echo: str) -> None:
    pieces = [b"a" * 70_000, b"b" * 3, b"c" * 100_000]

    def generate() -> Iterator[bytes]:
        yield from pieces

    response = httpx.post(f"{echo}/", content=generate())
    data = response.json()
    assert data["headers"]["Transfer-Encoding"] == ["chunked"]
    assert data["body_bytes"] == sum(map(len, pieces))
    assert data["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_keep_alive_reuses_the_connection(echo: str) -> None:
    with httpx.Client() as client:
        first = client.get(f"{echo}/1", extensions={})
        second = client.get(f"{echo}/2")
    assert first.json()["path"] == "/1"
    assert second.json()["path"] == "/2"
    assert first.headers.get("connection", "").lower() != "close"


def test_repeated_headers_are_lists(echo: str) -> None:
    host, port = echo.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            b"GET /h HTTP/1.1\r\nHost: x\r\nx-multi: 1\r\nX-Multi: 2\r\nConnection: close\r\n\r\n"
        )
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["headers"]["X-Multi"] == ["1", "2"]


def test_hook_bytes(echo: str) -> None:
    response = httpx.get(f"{echo}/__silex/bytes/200000")
    assert response.content == b"x" * 200_000
    assert response.headers["content-length"] == "200000"
    chunked = httpx.get(f"{echo}/__silex/bytes/70000?chunked=1")
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.content == b"x" * 70_000


def test_hook_sleep(echo: str) -> None:
    response = httpx.get(f"{echo}/__silex/sleep/50")
    assert response.status_code == 200
    assert response.json()["path"] == "/__silex/sleep/50"


@pytest.mark.parametrize("code", [201, 404, 418, 503])
def test_hook_status(echo: str, code: int) -> None:
    response = httpx.post(f"{echo}/__silex/status/{code}", content=b"x")
    assert response.status_code == code
    assert response.json()["service"] == "coffee"


def test_hook_status_without_body(echo: str) -> None:
    response = httpx.get(f"{echo}/__silex/status/204")
    assert response.status_code == 204
    assert response.content == b""


def test_unknown_hook_is_404(echo: str) -> None:
    assert httpx.get(f"{echo}/__silex/nope/1").status_code == 404


def test_head_has_no_body(echo: str) -> None:
    response = httpx.head(f"{echo}/x")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_canonical_header_name() -> None:
    assert canonical_header_name("user-agent") == "User-Agent"
    assert canonical_header_name("X-FORWARDED-FOR") == "X-Forwarded-For"


def test_server_type() -> None:
    server, port = start_echo_server("tea")
    try:
        assert isinstance(server, EchoServer)
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["service"] == "tea"
    finally:
        server.shutdown()
        server.server_close()
