"""WebSockets through the proxy (HTTP/1.1 Upgrade, and RFC 8441 extended CONNECT on HTTP/2)
with a real `websockets` echo server."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from silex_test_support import (
    LOCALHOST,
    build_table,
    raw_exchange,
    read_request_head,
    route,
    status_of,
    wait_for,
)
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


# --------------------------------------------------------------------------------------------
# WebSockets over HTTP/2 (RFC 8441 extended CONNECT), with the h2 library as the client
# --------------------------------------------------------------------------------------------


def masked_text_frame(text: str) -> bytes:
    """One client WebSocket text frame (FIN, opcode 1, masked, payload < 126 bytes)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class H2Client:
    """An HTTP/2 client connection on a socket, driven by hand with the h2 library."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.events: list[h2.events.Event] = []
        self.data: dict[int, bytes] = {}
        # The server's first SETTINGS say whether it takes extended CONNECT.
        self.wait(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.events))

    def pump(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "proxy closed the connection"
        for event in self.conn.receive_data(chunk):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.sock.sendall(self.conn.data_to_send())

    def wait(self, done: Callable[[], bool]) -> None:
        for _ in range(200):
            if done():
                return
            self.pump()
        raise AssertionError("condition not reached")

    def request(self, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str]]:
        """Sends a head that keeps the stream open; returns the stream and the response head."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers)
        self.sock.sendall(self.conn.data_to_send())
        self.wait(lambda: self.response_head(stream_id) is not None)
        head = self.response_head(stream_id)
        assert head is not None
        return stream_id, head

    def response_head(self, stream_id: int) -> dict[str, str] | None:
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                return {str(name): str(value) for name, value in event.headers}
        return None

    def send(self, stream_id: int, data: bytes) -> None:
        self.conn.send_data(stream_id, data)
        self.sock.sendall(self.conn.data_to_send())

    def receive(self, stream_id: int, size: int) -> bytes:
        self.wait(lambda: len(self.data.get(stream_id, b"")) >= size)
        received = self.data[stream_id][:size]
        self.data[stream_id] = self.data[stream_id][size:]
        return received


def extended_connect(protocol: str, authority: str, scheme: str) -> list[tuple[str, str]]:
    return [
        (":method", "CONNECT"),
        (":protocol", protocol),
        (":scheme", scheme),
        (":path", "/ws"),
        (":authority", authority),
        ("sec-websocket-version", "13"),
    ]


@contextlib.contextmanager
def h2_connection(proxy: Any, front: str, ca: trustme.CA) -> Iterator[H2Client]:
    """HTTP/2 to the proxy: h2c with prior knowledge, or TLS with ALPN h2."""
    if front == "h2c":
        sock = socket.create_connection((LOCALHOST, proxy.port), timeout=10)
    else:
        _, port = proxy.dataplane.listen("https", LOCALHOST, 0, "https")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection((LOCALHOST, port), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="ws.example.com")
        assert sock.selected_alpn_protocol() == "h2"
    with sock:
        yield H2Client(sock)


def h2_ws_table(ca: trustme.CA, endpoint: dict[str, Any]) -> dict[str, Any]:
    table = build_table({"ws.example.com": [route("/ws", "ws")]}, {"ws": [endpoint]})
    cert = ca.issue_cert("ws.example.com")
    table["certificates"] = {
        "test/ws": {
            "cert_pem": "".join(blob.bytes().decode() for blob in cert.cert_chain_pems),
            "key_pem": cert.private_key_pem.bytes().decode(),
            "hosts": ["ws.example.com"],
        }
    }
    return table


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("front", ["h2c", "https"])
def test_websocket_over_http2_extended_connect(proxy_factory, ws_backend, ca, front):
    proxy = proxy_factory(ServerConfig(enable_h2c=True))
    proxy.apply(h2_ws_table(ca, ws_backend))
    scheme = "http" if front == "h2c" else "https"
    with h2_connection(proxy, front, ca) as client:
        # RFC 8441 §3: the proxy announces SETTINGS_ENABLE_CONNECT_PROTOCOL.
        assert client.conn.remote_settings.enable_connect_protocol == 1
        stream_id, head = client.request(extended_connect("websocket", "ws.example.com", scheme))
        assert head[":status"] == "200"
        assert "sec-websocket-accept" not in head
        assert stats(proxy).tunnels_open == 1
        for text in ("hello over h2", "second message"):
            client.send(stream_id, masked_text_frame(text))
            # The server's frame: FIN + text, unmasked, 7-bit length, then the payload.
            frame = client.receive(stream_id, 2 + len(text))
            assert frame[0] == 0x81
            assert frame[1] == len(text)
            assert frame[2:].decode() == text
        # Other streams on the same connection keep working beside the tunnel.
        _, other = client.request(
            [
                (":method", "GET"),
                (":scheme", scheme),
                (":path", "/nowhere"),
                (":authority", "ws.example.com"),
            ]
        )
        assert other[":status"] == "404"
    assert wait_for(lambda: stats(proxy).tunnels_open == 0)


def test_websocket_subprotocol_is_negotiated_over_http2(proxy_factory, ca):
    def chat(websocket: ServerConnection) -> None:
        websocket.send(websocket.subprotocol or "none")

    with serve(chat, LOCALHOST, 0, subprotocols=["chat.v2"]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            proxy = proxy_factory(ServerConfig(enable_h2c=True))
            endpoint = {"address": LOCALHOST, "port": server.socket.getsockname()[1]}
            proxy.apply(h2_ws_table(ca, endpoint))
            with h2_connection(proxy, "h2c", ca) as client:
                headers = extended_connect("websocket", "ws.example.com", "http")
                headers.append(("sec-websocket-protocol", "chat.v1, chat.v2"))
                stream_id, head = client.request(headers)
                assert head[":status"] == "200"
                assert head["sec-websocket-protocol"] == "chat.v2"
                frame = client.receive(stream_id, 2 + len("chat.v2"))
                assert frame == b"\x81\x07chat.v2"
        finally:
            server.shutdown()
            thread.join(timeout=5)


def test_extended_connect_for_another_protocol_is_refused(proxy_factory, ws_backend, ca, capfd):
    proxy = proxy_factory(ServerConfig(enable_h2c=True))
    proxy.apply(h2_ws_table(ca, ws_backend))
    with h2_connection(proxy, "h2c", ca) as client:
        _, head = client.request(extended_connect("connect-udp", "ws.example.com", "http"))
        assert head[":status"] == "501"
        # A plain CONNECT (no :protocol) is no tunnel either: it has no path, so no route.
        _, head = client.request([(":method", "CONNECT"), (":authority", "ws.example.com")])
        assert head[":status"] == "404"
    assert stats(proxy).tunnels_open == 0
    assert wait_for(lambda: "connect-udp" in capfd.readouterr().err)


def test_backend_that_does_not_upgrade_is_502_over_http2(proxy_factory, echoes, ca):
    # The echo backend answers the upgrade GET with 200: no tunnel may open on it.
    proxy = proxy_factory(ServerConfig(enable_h2c=True))
    proxy.apply(h2_ws_table(ca, echoes["alpha"].endpoint))
    with h2_connection(proxy, "h2c", ca) as client:
        _, head = client.request(extended_connect("websocket", "ws.example.com", "http"))
        assert head[":status"] == "502"
    assert stats(proxy).tunnels_open == 0


def test_wrong_sec_websocket_accept_is_502(proxy_factory, raw_server, ca):
    heads: list[bytes] = []

    def switch(conn: Any, _server: Any) -> None:
        heads.append(read_request_head(conn))
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        conn.close()

    backend = raw_server(switch)
    proxy = proxy_factory(ServerConfig(enable_h2c=True))
    proxy.apply(h2_ws_table(ca, backend.endpoint))
    with h2_connection(proxy, "h2c", ca) as client:
        _, head = client.request(extended_connect("websocket", "ws.example.com", "http"))
        assert head[":status"] == "502"
    # What the backend saw: an HTTP/1.1 upgrade GET with a fresh key.
    request_head = heads[0].lower()
    assert request_head.startswith(b"get /ws http/1.1\r\n")
    assert b"upgrade: websocket" in request_head
    assert b"connection: upgrade" in request_head
    assert b"sec-websocket-version: 13" in request_head
    key = [line for line in request_head.split(b"\r\n") if line.startswith(b"sec-websocket-key:")]
    assert len(key) == 1
    assert len(base64.b64decode(key[0].split(b":", 1)[1].strip())) == 16
