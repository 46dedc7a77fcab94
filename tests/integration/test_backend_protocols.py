"""Backend protocols through real sockets: HTTPS backends (verification with a test CA, SNI,
client certificates), gRPC over h2c and TLS (grpcio client and server, unary, server streaming,
error statuses and trailers), and the send timeout against a backend that stops reading.

Certificates come from trustme; the gRPC services use generic handlers with identity
serializers, so no protoc step is needed."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from silex_test_support import (
    LOCALHOST,
    ProxyFactory,
    RawServer,
    build_table,
    read_request_head,
    read_response,
    route,
    status_of,
)

from silex import dataplane
from silex.dataplane import ServerConfig
from silex.objects import Ingress, Secret, convert
from silex.store import Snapshot
from silex.table import to_json
from silex.translate import TranslateOptions, translate

SERVICE = "silex.test.Echo"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pem(blob: trustme.Blob) -> str:
    return blob.bytes().decode()


# --------------------------------------------------------------------------------------------
# An HTTPS backend that reports what the handshake showed it
# --------------------------------------------------------------------------------------------


class TlsBackend:
    """An HTTP/1.1 server over TLS on 127.0.0.1; answers JSON with the SNI it saw and the
    subject of the client certificate (when one was presented). Counts TLS connections."""

    def __init__(self, ca: trustme.CA, *, require_client_cert: bool = False) -> None:
        self.server_cert = ca.issue_cert("secure.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_cert.configure_cert(context)
        if require_client_cert:
            ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        self.connections = 0
        self.sni: list[str | None] = []
        backend = self

        def on_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            backend.sni.append(name)

        context.sni_callback = on_sni  # type: ignore[assignment]

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                backend.connections += 1
                super().setup()

            def do_GET(self) -> None:
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                subject = dict(x[0] for x in peer["subject"]) if peer else None
                body = json.dumps(
                    {
                        "path": self.path,
                        "sni": backend.sni[-1] if backend.sni else None,
                        "client": subject,
                        "host": self.headers.get("Host"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = self.socket.accept()
                return context.wrap_socket(sock, server_side=True), address

            def handle_error(self, *_args: Any) -> None:
                pass  # failed handshakes are what some tests are about

        self.server = Server((LOCALHOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"address": LOCALHOST, "port": self.port}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_backend(ca: trustme.CA) -> Iterator[Callable[..., TlsBackend]]:
    started: list[TlsBackend] = []

    def start(**kwargs: Any) -> TlsBackend:
        backend = TlsBackend(ca, **kwargs)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()


def backend_table(
    endpoints: list[dict[str, Any]], protocol: str, tls: dict[str, Any] | None = None
) -> dict[str, Any]:
    table = build_table({"*": [route("/", "b")]}, {"b": endpoints})
    table["backends"]["b"]["protocol"] = protocol
    if tls is not None:
        table["backends"]["b"]["tls"] = tls
    return table


def test_https_backend_verified_with_the_right_ca(proxy, tls_backend, ca):
    backend = tls_backend()
    tls = {"verify": True, "ca_pem": pem(ca.cert_pem), "server_name": "secure.test"}
    proxy.apply(backend_table([backend.endpoint], "https", tls))
    response = proxy.get("/hello", host="app.example")
    assert response.status_code == 200
    seen = response.json()
    assert seen["path"] == "/hello"
    assert seen["host"] == "app.example"
    # No SNI unless asked for (proxy-ssl-server-name defaults to off).
    assert seen["sni"] is None


def test_https_backend_with_an_unknown_ca_is_502_and_logged(proxy, tls_backend, capfd):
    backend = tls_backend()
    other = trustme.CA()
    tls = {"verify": True, "ca_pem": pem(other.cert_pem), "server_name": "secure.test"}
    proxy.apply(backend_table([backend.endpoint], "https", tls))
    assert proxy.get("/").status_code == 502
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if "request failed" in line)
    assert "TLS handshake (server name secure.test) failed" in line
    assert "UnknownIssuer" in line


def test_https_backend_name_mismatch_is_502(proxy, tls_backend, ca):
    backend = tls_backend()
    tls = {"verify": True, "ca_pem": pem(ca.cert_pem), "server_name": "other.test"}
    proxy.apply(backend_table([backend.endpoint], "https", tls))
    assert proxy.get("/").status_code == 502


def test_https_backend_verify_on_without_ca_fails_closed(proxy, tls_backend):
    backend = tls_backend()
    proxy.apply(backend_table([backend.endpoint], "https", {"verify": True}))
    assert proxy.get("/").status_code == 502


def test_https_backend_without_verification(proxy, tls_backend):
    backend = tls_backend()
    # No tls settings at all: ingress-nginx's defaults (no verification, no SNI).
    proxy.apply(backend_table([backend.endpoint], "https"))
    assert proxy.get("/x").json()["path"] == "/x"


def test_sni_is_sent_only_when_asked(proxy, tls_backend, ca):
    backend = tls_backend()
    tls = {"verify": True, "ca_pem": pem(ca.cert_pem), "server_name": "secure.test"}
    proxy.apply(backend_table([backend.endpoint], "https", {**tls, "sni": True}))
    assert proxy.get("/").json()["sni"] == "secure.test"


def test_client_certificate_is_presented_when_configured(proxy, tls_backend, ca):
    backend = tls_backend(require_client_cert=True)
    proxy.apply(backend_table([backend.endpoint], "https"))
    # The backend requires a client certificate: without one the handshake fails.
    assert proxy.get("/").status_code == 502
    client = ca.issue_cert("silex-client.test", common_name="silex-client")
    tls = {
        "cert_pem": "".join(pem(blob) for blob in client.cert_chain_pems),
        "key_pem": pem(client.private_key_pem),
    }
    proxy.apply(backend_table([backend.endpoint], "https", tls))
    response = proxy.get("/")
    assert response.status_code == 200
    assert response.json()["client"]["commonName"] == "silex-client"


def test_a_failed_handshake_is_a_connect_failure_and_retried(proxy, tls_backend, ca):
    """An endpoint whose certificate does not verify never got the request: even a POST goes
    to the next endpoint."""
    good = tls_backend()
    untrusted = TlsBackend(trustme.CA())
    try:
        tls = {"verify": True, "ca_pem": pem(ca.cert_pem), "server_name": "secure.test"}
        proxy.apply(backend_table([untrusted.endpoint, good.endpoint], "https", tls))
        with proxy.client() as client:
            statuses = [client.post("/p", content=b"x").status_code for _ in range(4)]
        assert statuses == [501] * 4  # the good backend answers (it has no do_POST)
        assert int(proxy.dataplane.stats().upstream_retries) >= 1
    finally:
        untrusted.close()


def test_tls_pool_survives_a_swap_with_unchanged_settings(proxy, tls_backend, ca):
    backend = tls_backend()
    tls = {"verify": True, "ca_pem": pem(ca.cert_pem), "server_name": "secure.test"}
    table = backend_table([backend.endpoint], "https", tls)
    proxy.apply(table)
    swaps = 8
    with proxy.client() as client:
        for _ in range(swaps):
            proxy.apply(table)
            assert [client.get("/").status_code for _ in range(4)] == [200] * 4
    # A pool dropped at each swap would need a new connection per swap; the pooled ones are
    # reused instead (the client pool may open a spare one while a connection is returned).
    assert 1 <= backend.connections <= 3


def test_core_rejects_bad_upstream_tls_material(proxy, tls_backend):
    backend = tls_backend()
    bad = {
        "verify": True,
        "ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    }
    with pytest.raises(Exception, match=r'\$\.backends\["b"\]\.tls\.ca_pem'):
        proxy.apply(backend_table([backend.endpoint], "https", bad))
    with pytest.raises(Exception, match=r"tls settings need protocol"):
        proxy.apply(backend_table([backend.endpoint], "http", {"verify": False}))


# --------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-trailer", "unary-done"),))
    return b"echo:" + request


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    count = int(request.decode())
    for i in range(count):
        yield f"part-{i}".encode()
    context.set_trailing_metadata((("x-trailer", f"sent-{count}"),))


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-reason", "bad-input"),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rejected: " + request.decode())


def grpc_server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _unary, request_deserializer=_identity, response_serializer=_identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=_identity, response_serializer=_identity
            ),
            "Fail": grpc.unary_unary_rpc_method_handler(
                _fail, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    if credentials is None:
        port = server.add_insecure_port(f"{LOCALHOST}:0")
    else:
        port = server.add_secure_port(f"{LOCALHOST}:0", credentials)
    server.start()
    return server, port


@pytest.fixture
def h2c_grpc_backend() -> Iterator[dict[str, Any]]:
    server, port = grpc_server()
    yield {"address": LOCALHOST, "port": port}
    server.stop(grace=None)


@pytest.fixture
def tls_grpc_backend(ca: trustme.CA) -> Iterator[dict[str, Any]]:
    cert = ca.issue_cert("grpc-backend.test")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(b.bytes() for b in cert.cert_chain_pems))]
    )
    server, port = grpc_server(credentials)
    yield {"address": LOCALHOST, "port": port}
    server.stop(grace=None)


def grpc_front_proxy(proxy_factory: ProxyFactory, ca: trustme.CA, front: str) -> grpc.Channel:
    """A proxy with the given front side and a gRPC channel to it (host ``grpc.test``)."""
    proxy = proxy_factory(ServerConfig(enable_h2c=True))
    options = [("grpc.default_authority", "grpc.test")]
    if front == "h2c":
        channel = grpc.insecure_channel(f"{LOCALHOST}:{proxy.port}", options=options)
    else:
        _, https_port = proxy.dataplane.listen("https", LOCALHOST, 0, "https")
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        channel = grpc.secure_channel(
            f"{LOCALHOST}:{https_port}",
            credentials,
            options=[*options, ("grpc.ssl_target_name_override", "grpc.test")],
        )
    channel.proxy = proxy  # type: ignore[attr-defined]
    return channel


def grpc_table(ca: trustme.CA, backend: dict[str, Any], protocol: str) -> dict[str, Any]:
    table = build_table({"grpc.test": [route("/", "g")]}, {"g": [backend]})
    table["backends"]["g"]["protocol"] = protocol
    cert = ca.issue_cert("grpc.test")
    table["certificates"] = {
        "test/grpc": {
            "cert_pem": "".join(pem(b) for b in cert.cert_chain_pems),
            "key_pem": pem(cert.private_key_pem),
            "hosts": ["grpc.test"],
        }
    }
    return table


def call_all(channel: grpc.Channel) -> None:
    """Unary, server streaming and an error status through ``channel``; asserts each. (The
    grpcio server resets a stream without ``te: trailers``: these calls also prove that the
    proxy forwards it.)"""
    unary = channel.unary_unary(
        f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
    )
    reply, call = unary.with_call(b"ping", timeout=10)
    assert reply == b"echo:ping"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-trailer", "unary-done") in call.trailing_metadata()

    stream = channel.unary_stream(
        f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
    )
    responses = stream(b"50", timeout=10)
    assert list(responses) == [f"part-{i}".encode() for i in range(50)]
    assert responses.code() == grpc.StatusCode.OK
    assert ("x-trailer", "sent-50") in responses.trailing_metadata()

    fail = channel.unary_unary(
        f"/{SERVICE}/Fail", request_serializer=_identity, response_deserializer=_identity
    )
    with pytest.raises(grpc.RpcError) as raised:
        fail(b"x", timeout=10)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "rejected: x"
    assert ("x-reason", "bad-input") in error.trailing_metadata()


@pytest.mark.parametrize("front", ["h2c", "https"])
def test_grpc_to_an_h2c_backend(proxy_factory, ca, h2c_grpc_backend, front):
    channel = grpc_front_proxy(proxy_factory, ca, front)
    with channel:
        channel.proxy.apply(grpc_table(ca, h2c_grpc_backend, "grpc"))  # type: ignore[attr-defined]
        call_all(channel)


def test_grpcs_to_a_tls_backend(proxy_factory, ca, tls_grpc_backend):
    channel = grpc_front_proxy(proxy_factory, ca, "https")
    with channel:
        table = grpc_table(ca, tls_grpc_backend, "grpcs")
        table["backends"]["g"]["tls"] = {
            "verify": True,
            "ca_pem": pem(ca.cert_pem),
            "server_name": "grpc-backend.test",
            "sni": True,
        }
        channel.proxy.apply(table)  # type: ignore[attr-defined]
        call_all(channel)


def test_grpc_server_streaming_is_not_buffered(proxy_factory, ca):
    """The first message reaches the client while the backend still holds the stream open."""
    release = threading.Event()

    def held(_request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        release.wait(timeout=15)
        yield b"second"

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Held": grpc.unary_stream_rpc_method_handler(
                        held, request_deserializer=_identity, response_serializer=_identity
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    server.start()
    channel = grpc_front_proxy(proxy_factory, ca, "h2c")
    try:
        channel.proxy.apply(  # type: ignore[attr-defined]
            grpc_table(ca, {"address": LOCALHOST, "port": port}, "grpc")
        )
        stream = channel.unary_stream(
            f"/{SERVICE}/Held", request_serializer=_identity, response_deserializer=_identity
        )
        responses = stream(b"", timeout=20)
        assert next(responses) == b"first"
        release.set()
        assert list(responses) == [b"second"]
    finally:
        release.set()
        channel.close()
        server.stop(grace=None)


def test_grpc_to_a_dead_backend_is_unavailable(proxy_factory, ca, refused_endpoint):
    channel = grpc_front_proxy(proxy_factory, ca, "h2c")
    with channel:
        channel.proxy.apply(grpc_table(ca, refused_endpoint, "grpc"))  # type: ignore[attr-defined]
        unary = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        with pytest.raises(grpc.RpcError) as raised:
            unary(b"x", timeout=10)
        error: Any = raised.value
        # The proxy answers HTTP 502, which gRPC clients map to UNAVAILABLE.
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "status: 502" in error.details()


# --------------------------------------------------------------------------------------------
# Send timeout
# --------------------------------------------------------------------------------------------


def _stops_reading(conn: socket.socket, server: RawServer) -> None:
    """Reads the request head, then never reads again (holds the connection open)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.heads.append(read_request_head(conn))
    time.sleep(20)


def upload(port: int, size: int, *, pause_s: float = 0.0) -> bytes:
    """POSTs ``size`` bytes in 64 KiB pieces (pausing between pieces when asked) until the
    proxy stops taking them, then reads the response."""
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: up.test\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        piece = b"x" * 65536
        sent = 0
        sock.settimeout(1.0)
        while sent < size:
            try:
                sock.sendall(piece[: size - sent])
            except (TimeoutError, OSError):
                break  # the proxy took no more: the upstream stopped reading
            sent += len(piece)
            if pause_s:
                time.sleep(pause_s)
        return read_response(sock, timeout_s=15)


def test_send_timeout_when_the_backend_stops_reading(proxy, raw_server, capfd):
    backend = raw_server(_stops_reading)
    table = build_table(
        {"*": [route("/", "b", options={"upstream_send_timeout_ms": 300})]},
        {"b": [backend.endpoint]},
        defaults={"max_request_body_bytes": 0},
    )
    proxy.apply(table)
    response = upload(proxy.port, 256 * 1024 * 1024)
    assert status_of(response) == 504
    assert backend.heads
    assert backend.heads[0].startswith(b"POST /upload")
    assert "send timeout" in capfd.readouterr().err


def test_send_timeout_default_comes_from_the_server_config(proxy_factory, raw_server):
    proxy = proxy_factory(ServerConfig(upstream_send_timeout_ms=300))
    backend = raw_server(_stops_reading)
    proxy.apply(
        build_table(
            {"*": [route("/", "b")]},
            {"b": [backend.endpoint]},
            defaults={"max_request_body_bytes": 0},
        )
    )
    assert status_of(upload(proxy.port, 256 * 1024 * 1024)) == 504


def test_a_slow_client_is_not_a_send_timeout(proxy, echo_factory):
    """Pauses of the client between pieces are not the upstream's: the upload completes."""
    echo = echo_factory("reader")
    proxy.apply(
        build_table(
            {"*": [route("/", "b", options={"upstream_send_timeout_ms": 100})]},
            {"b": [echo.endpoint]},
        )
    )
    response = upload(proxy.port, 4 * 65536, pause_s=0.3)
    assert status_of(response) == 200


# --------------------------------------------------------------------------------------------
# h2c to a plain HTTP/2 backend
# --------------------------------------------------------------------------------------------


def h2_backend(seen: list[dict[bytes, bytes]]) -> Callable[[socket.socket, RawServer], None]:
    """An HTTP/2 (prior knowledge) server that records each request's headers in ``seen`` and
    answers ``ok`` with a trailer."""
    return lambda conn, _server: _serve_h2(conn, seen)


def _serve_h2(conn: socket.socket, seen: list[dict[bytes, bytes]]) -> None:
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2conn.initiate_connection()
    conn.sendall(h2conn.data_to_send())
    conn.settimeout(10)
    for _ in range(1000):
        data = conn.recv(65536)
        if not data:
            return
        for event in h2conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                seen.append(dict(event.headers))
            if isinstance(event, h2.events.StreamEnded):
                stream = event.stream_id
                h2conn.send_headers(stream, [(":status", "200")])
                h2conn.send_data(stream, b"ok")
                h2conn.send_headers(stream, [("x-checksum", "42")], end_stream=True)
        conn.sendall(h2conn.data_to_send())


def test_h2c_backend_gets_the_client_host_as_authority(proxy, raw_server):
    seen: list[dict[bytes, bytes]] = []
    backend = raw_server(h2_backend(seen))
    proxy.apply(backend_table([backend.endpoint], "h2c"))
    with proxy.client() as client:
        for _ in range(3):
            response = client.get("/h2", headers={"Host": "app.example"})
            assert (response.status_code, response.text) == (200, "ok")
    # One multiplexed connection carries every request.
    assert backend.accepted == 1
    headers = seen[0]
    assert headers[b":authority"] == b"app.example"
    assert headers[b":path"] == b"/h2"
    assert headers[b"x-forwarded-host"] == b"app.example"
    assert b"host" not in headers
    # Only a client that asked for trailers gets `te: trailers` forwarded.
    assert b"te" not in headers


def test_translation_checks_secrets_with_the_core_parsers(proxy, ca):
    """With the core's checkers (as the CLI wires them), material the core cannot load never
    reaches it: the table applies, the Ingress gets error Problems."""

    client = ca.issue_cert("client.test")
    other_key = trustme.CA().issue_cert("x.test").private_key_pem.bytes().decode()
    broken_ca = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    data = {
        "ca.crt": broken_ca,
        "tls.crt": "".join(pem(b) for b in client.cert_chain_pems),
        "tls.key": other_key,  # does not match the certificate
    }
    secret = convert(
        {
            "metadata": {"name": "upstream", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
        Secret,
    )
    ingress = convert(
        {
            "metadata": {
                "name": "i",
                "namespace": "default",
                "annotations": {
                    "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                    "nginx.ingress.kubernetes.io/proxy-ssl-secret": "upstream",
                    "nginx.ingress.kubernetes.io/proxy-ssl-verify": "on",
                },
            },
            "spec": {
                "ingressClassName": "silex",
                "defaultBackend": {"service": {"name": "svc", "port": {"number": 443}}},
            },
        },
        Ingress,
    )
    options = TranslateOptions(
        check_certificate=dataplane.check_certificate,
        check_ca_certificates=dataplane.check_ca_certificates,
    )
    table, found = translate(Snapshot.of([secret, ingress]), options)
    messages = " | ".join(p.message for p in found)
    assert 'data["ca.crt"]' in messages
    assert "does not match the certificate" in messages
    (backend,) = table.backends.values()
    assert backend.tls is not None
    assert (backend.tls.ca_pem, backend.tls.cert_pem) == (None, None)
    assert proxy.apply(to_json(table)) >= 1
    with pytest.raises(ValueError, match=r"CA certificate|invalid PEM"):
        dataplane.check_ca_certificates(broken_ca.encode())
    dataplane.check_ca_certificates(ca.cert_pem.bytes())
