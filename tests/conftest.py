"""Shared fixtures of the Silex test suite: echo backends, an in-process data plane, raw socket
backends, table builders and a ``silex serve`` subprocess runner.

Every socket here is on 127.0.0.1; every wait is bounded in count and in time.

Test modules import the helpers of this file as ``silex_test_support`` (registered below): the
module name ``conftest`` is shared with tests/unit/conftest.py, so ``from conftest import ...``
would pick whichever conftest pytest imported last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.modules.setdefault("silex_test_support", sys.modules[__name__])

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = (REPO_ROOT / "../shared/conformance/ingress").resolve()


# --------------------------------------------------------------------------------------------
# Bounded waiting
# --------------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float = 5.0, interval_s: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; bounded in time and in count.

    Returns the truthy value, or the last (falsy) value when time runs out.
    """
    deadline = time.monotonic() + timeout_s
    max_polls = int(timeout_s / interval_s) + 2
    value: Any = None
    for _ in range(max_polls):
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)
    return value


def vm_rss_bytes() -> int:
    """Resident set size of this process (the core runs in-process), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


# --------------------------------------------------------------------------------------------
# Echo backends
# --------------------------------------------------------------------------------------------


@dataclass
class Echo:
    """A running echo backend answering as service ``name``."""

    name: str
    port: int
    server: Any

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"address": LOCALHOST, "port": self.port}


class EchoFactory:
    """Starts named echo servers on port 0 and stops them all at teardown."""

    def __init__(self) -> None:
        self._started: list[Echo] = []

    def __call__(self, name: str) -> Echo:
        from silex.echo import start_echo_server  # noqa: PLC0415

        server, port = start_echo_server(name, LOCALHOST, 0)
        echo = Echo(name=name, port=port, server=server)
        self._started.append(echo)
        return echo

    def close(self) -> None:
        # serve_forever polls every 0.5 s: stop every server in parallel.
        def stop(echo: Echo) -> None:
            with contextlib.suppress(Exception):
                echo.server.shutdown()
                echo.server.server_close()

        threads = [threading.Thread(target=stop, args=(echo,)) for echo in self._started]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=5)
        self._started.clear()


@pytest.fixture
def echo_factory() -> Iterator[EchoFactory]:
    """Factory: ``echo_factory(name)`` starts an echo backend, stopped at teardown."""
    factory = EchoFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def echoes() -> Iterator[dict[str, Echo]]:
    """Three named echo backends shared by the session: alpha, beta, gamma."""
    factory = EchoFactory()
    try:
        yield {name: factory(name) for name in ("alpha", "beta", "gamma")}
    finally:
        factory.close()


# --------------------------------------------------------------------------------------------
# Raw socket backends (for misbehaving upstreams)
# --------------------------------------------------------------------------------------------


def read_request_head(conn: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Read bytes until the end of an HTTP request head (bounded)."""
    conn.settimeout(timeout_s)
    data = b""
    for _ in range(10_000):
        if b"\r\n\r\n" in data:
            break
        try:
            piece = conn.recv(65536)
        except (TimeoutError, OSError):
            break
        if not piece:
            break
        data += piece
    return data


class RawServer:
    """A TCP server on 127.0.0.1 whose connections are handled by ``handler(conn)`` in threads.

    ``requests`` counts accepted connections; ``heads`` keeps the request heads seen by the
    default helpers.
    """

    def __init__(self, handler: Callable[[socket.socket, RawServer], None]) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.heads: list[bytes] = []
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name="raw-server")
        self._thread.start()

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"address": LOCALHOST, "port": self.port}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn, self)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    """Factory: ``raw_server(handler)`` starts a RawServer, closed at teardown."""
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket, RawServer], None]) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def refused_endpoint() -> Iterator[dict[str, Any]]:
    """An endpoint whose port is bound but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOCALHOST, 0))
    try:
        yield {"address": LOCALHOST, "port": sock.getsockname()[1]}
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Routing tables (raw JSON, mirroring rust/silex-routing/src/table.rs)
# --------------------------------------------------------------------------------------------


def route(
    path: str, backend: str, match: str = "prefix", options: dict[str, int] | None = None
) -> dict[str, Any]:
    """One route of a virtual host."""
    entry: dict[str, Any] = {"path": path, "match": match, "backend": backend}
    if options:
        entry["options"] = options
    return entry


def build_table(
    hosts: dict[str, list[dict[str, Any]]] | None = None,
    backends: dict[str, list[dict[str, Any]]] | None = None,
    *,
    default_backend: str | None = None,
    defaults: dict[str, int] | None = None,
    host_defaults: dict[str, str] | None = None,
    listeners: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A table dict: ``hosts`` maps a host name to its routes, ``backends`` an id to endpoints."""
    table: dict[str, Any] = {"version": 1}
    if listeners is not None:
        table["listeners"] = listeners
    if defaults is not None:
        table["defaults"] = {
            "max_request_body_bytes": 1024 * 1024,
            "upstream_read_timeout_ms": 60_000,
            **defaults,
        }
    table["hosts"] = []
    for name, routes in (hosts or {}).items():
        vhost: dict[str, Any] = {"name": name, "routes": routes}
        if host_defaults and name in host_defaults:
            vhost["default_backend"] = host_defaults[name]
        table["hosts"].append(vhost)
    table["backends"] = {
        backend_id: {"service": f"test/{backend_id}", "endpoints": list(endpoints)}
        for backend_id, endpoints in (backends or {}).items()
    }
    if default_backend is not None:
        table["default_backend"] = default_backend
    return table


def catch_all_table(
    backend_endpoints: list[dict[str, Any]], options: dict[str, int] | None = None
) -> dict[str, Any]:
    """Every host and path to one backend ``b``."""
    return build_table({"*": [route("/", "b", options=options)]}, {"b": backend_endpoints})


# --------------------------------------------------------------------------------------------
# The in-process data plane
# --------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    """A DataPlane with a proxy listener ``http`` and an admin listener, on 127.0.0.1:0."""

    dataplane: Any
    port: int
    admin_port: int
    generations: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def apply(self, table: dict[str, Any] | bytes) -> int:
        """Apply a table dict (or JSON bytes); returns the generation."""
        data = table if isinstance(table, bytes) else json.dumps(table).encode()
        generation = int(self.dataplane.apply_json(data))
        self.generations.append(generation)
        return generation

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the proxy (keep-alive, no env proxies, bounded timeouts)."""
        kwargs.setdefault("timeout", httpx.Timeout(15.0))
        return httpx.Client(base_url=self.url, trust_env=False, **kwargs)

    def get(self, path: str, host: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if host is not None:
            headers["Host"] = host
        with self.client() as client:
            return client.get(path, headers=headers, **kwargs)


class ProxyFactory:
    def __init__(self) -> None:
        self._started: list[Proxy] = []

    def __call__(self, config: Any = None) -> Proxy:
        from silex.dataplane import DataPlane  # noqa: PLC0415

        dataplane = DataPlane(config)
        _, port = dataplane.listen("http", LOCALHOST, 0, "proxy")
        _, admin_port = dataplane.listen("admin", LOCALHOST, 0, "admin")
        proxy = Proxy(dataplane=dataplane, port=port, admin_port=admin_port)
        self._started.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self._started:
            with contextlib.suppress(Exception):
                proxy.dataplane.shutdown(1.0)
        self._started.clear()


@pytest.fixture
def proxy_factory() -> Iterator[ProxyFactory]:
    """Factory: ``proxy_factory(ServerConfig(...))`` starts a data plane, shut down at teardown."""
    factory = ProxyFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def proxy(proxy_factory: ProxyFactory) -> Proxy:
    """A data plane with default settings and no table applied yet."""
    return proxy_factory()


# --------------------------------------------------------------------------------------------
# Raw HTTP client helpers
# --------------------------------------------------------------------------------------------


def raw_exchange(port: int, request: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Send raw bytes, read until the peer closes or a full response (Content-Length) arrived."""
    with socket.create_connection((LOCALHOST, port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        return read_response(sock, timeout_s=timeout_s)


def read_response(sock: socket.socket, *, timeout_s: float = 5.0) -> bytes:
    """Read one response with a Content-Length body (or until close); bounded."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    data = b""
    for _ in range(100_000):
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            if match and len(body) >= int(match.group(1)):
                break
        if time.monotonic() >= deadline:
            break
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not piece:
            break
        data += piece
    return data


def status_of(response: bytes) -> int:
    """The status code of a raw response, or 0 if none."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(match.group(1)) if match else 0


def headers_of(response: bytes) -> dict[str, list[str]]:
    """Lower-cased header names -> values of a raw response."""
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    headers: dict[str, list[str]] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers


# --------------------------------------------------------------------------------------------
# `silex serve` as a subprocess
# --------------------------------------------------------------------------------------------

LISTENING = re.compile(r"silex: listening (\S+) on (\S+):(\d+)")


class ServeProcess:
    """A ``silex serve`` subprocess; stderr is collected by a reader thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.listening: dict[str, int] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr, True))
        self._reader.daemon = True
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read, args=(self.proc.stdout, False))
        self._out_reader.daemon = True
        self._out_reader.start()

    def _read(self, stream: Any, is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                (self.lines if is_stderr else self.stdout_lines).append(line)
                match = LISTENING.search(line)
                if match:
                    self.listening[match.group(1)] = int(match.group(3))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines + self.stdout_lines)

    def wait_listening(self, names: tuple[str, ...], timeout_s: float = 15.0) -> dict[str, int]:
        ok = wait_for(
            lambda: all(n in self.listening for n in names) or self.proc.poll() is not None,
            timeout_s=timeout_s,
            interval_s=0.05,
        )
        if not ok or not all(n in self.listening for n in names):
            raise AssertionError(
                f"silex serve did not report listening {names} (rc={self.proc.poll()}):\n"
                + self.output()
            )
        return dict(self.listening)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        self._out_reader.join(timeout=2)


def silex_command() -> list[str]:
    """How to run the ``silex`` CLI of this checkout."""
    script = Path(sys.executable).with_name("silex")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from silex.cli import main; sys.exit(main())"]


@pytest.fixture
def silex_serve() -> Iterator[Callable[..., ServeProcess]]:
    """Factory: ``silex_serve(manifests_path, *extra_args)`` starts ``silex serve`` on port 0.

    The process is always killed at teardown.
    """
    started: list[ServeProcess] = []

    def start(manifests: Path, *extra: str) -> ServeProcess:
        args = [
            *silex_command(),
            "serve",
            "--manifests",
            str(manifests),
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--admin-port",
            "0",
            "--listen-address",
            LOCALHOST,
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        process = ServeProcess(args, env=env)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
