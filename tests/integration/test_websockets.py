"""WebSockets through the proxy (HTTP/1.1 Upgrade) with a real `websockets` echo server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from silex_test_support import LOCALHOST, build_table, raw_exchange, route, status_of, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from silex.dataplane import ServerConfig


def echo(websocket: ServerConnection) -> None:
    for message in websocket:
        websocket.send(message)


@pytest.fixture
def ws_backend() -> Iterator[dict[str, Any]]:
    """A websockets echo server on 127.0.0.1; yields its endpoint."""
    with serve(echo, LOCALHOST, 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        try:
            yield {"address": LOCALHOST, "port": port}
        finally:
            server.shutdown()
            thread.join(timeout=5)


def ws_table(
    endpoint: dict[str, Any], other: list[dict[str, Any]], options: dict[str, int] | None = None
) -> dict[str, Any]:
    return build_table(
        {"*": [route("/ws", "ws", options=options), route("/other", "other")]},
        {"ws": [endpoint], "other": other},
    )


def stats(proxy: Any) -> Any:
    return proxy.dataplane.stats()


def test_websocket_echo_survives_table_swaps(proxy, ws_backend, echoes):
    proxy.apply(ws_table(ws_backend, [echoes["alpha"].endpoint]))
    with connect(f"ws://{LOCALHOST}:{proxy.port}/ws", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        assert stats(proxy).tunnels_open == 1
        for index in range(10):
            # Each table keeps the WebSocket's route but changes everything around it.
            others = [echoes["alpha"].endpoint, echoes["beta"].endpoint][: 1 + index % 2]
            proxy.apply(ws_table(ws_backend, others))
            payload = f"message {index}"
            ws.send(payload)
            assert ws.recv(timeout=10) == payload
            ws.send(payload.encode())
            assert ws.recv(timeout=10) == payload.encode()
    assert wait_for(lambda: stats(proxy).tunnels_open == 0)


def test_upgraded_connection_is_not_cut_by_the_client_idle_timeout(proxy_factory, ws_backend):
    proxy = proxy_factory(ServerConfig(client_idle_timeout_ms=100))
    proxy.apply(ws_table(ws_backend, []))
    with connect(f"ws://{LOCALHOST}:{proxy.port}/ws", open_timeout=10, ping_interval=None) as ws:
        for index in range(3):
            # Longer than the client idle timeout: only the tunnel's own idle timeout applies.
            time.sleep(0.3)
            ws.send(str(index))
            assert ws.recv(timeout=10) == str(index)


def test_idle_tunnel_is_closed_after_the_route_read_timeout(proxy, ws_backend):
    proxy.apply(ws_table(ws_backend, [], options={"upstream_read_timeout_ms": 200}))
    with connect(f"ws://{LOCALHOST}:{proxy.port}/ws", open_timeout=10, ping_interval=None) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises((ConnectionClosed, TimeoutError)) as closed:
            ws.recv(timeout=10)
        assert issubclass(closed.type, ConnectionClosed)
    assert wait_for(lambda: stats(proxy).tunnels_open == 0)


def test_refused_upgrade_is_an_ordinary_response(proxy, echoes):
    # The echo backend does not speak WebSocket: it answers the upgrade request with 200.
    proxy.apply(ws_table(echoes["alpha"].endpoint, []))
    request = (
        b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Connection: close\r\n\r\n"
    )
    response = raw_exchange(proxy.port, request)
    assert status_of(response) == 200
    assert stats(proxy).tunnels_open == 0


def test_upgrade_headers_reach_the_backend(proxy, raw_server):
    heads: list[bytes] = []

    def switch(conn: Any, _server: Any) -> None:
        from silex_test_support import read_request_head  # noqa: PLC0415

        head = read_request_head(conn)
        heads.append(head)
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: silly\r\n"
            b"X-Backend: yes\r\n\r\nhello from backend"
        )
        conn.settimeout(5)
        data = conn.recv(100)
        conn.sendall(b"echo:" + data)
        conn.close()

    backend = raw_server(switch)
    proxy.apply(ws_table(backend.endpoint, []))
    import socket  # noqa: PLC0415

    with socket.create_connection((LOCALHOST, proxy.port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, Upgrade\r\n"
            b"Upgrade: silly\r\n\r\n"
        )
        data = b""
        for _ in range(100):
            if b"hello from backend" in data:
                break
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        lowered = head.lower()
        assert b"upgrade: silly" in lowered
        assert b"connection: upgrade" in lowered
        assert b"x-backend: yes" in lowered
        assert rest == b"hello from backend"
        sock.sendall(b"ping")
        reply = b""
        for _ in range(100):
            if reply.endswith(b"echo:ping"):
                break
            piece = sock.recv(4096)
            if not piece:
                break
            reply += piece
        assert reply == b"echo:ping"
    request_head = heads[0].lower()
    assert b"upgrade: silly" in request_head
    assert b"connection: upgrade" in request_head
    assert b"keep-alive" not in request_head
