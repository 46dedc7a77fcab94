"""A small echo backend for tests, demos and the quickstart (``silex echo``).

Every method and path is answered with JSON describing the request, following the
ingress-controller-conformance echo server's contract::

    {"service": NAME, "pod": POD, "host": ..., "path": "/raw/path?with=query", "method": "GET",
     "proto": "HTTP/1.1", "headers": {"User-Agent": ["..."]},
     "body_bytes": 0, "body_sha256": "e3b0..."}

``pod`` identifies the instance (the conformance echo reports its pod there): the ``pod`` given
to :func:`make_echo_server`, else the bound ``address:port``, so replicas of one service differ.

Header names are canonicalized like Go's ``net/http`` (``user-agent`` -> ``User-Agent``) and, as
there, ``Host`` is reported in ``host`` rather than in ``headers``. The request body (sized by
Content-Length or chunked) is read in 64 KiB pieces and only hashed, so a 1 GiB upload uses flat
memory. The server is a threaded stdlib ``http.server`` speaking HTTP/1.1 with keep-alive.

Test hooks (the request body is always read first):

- ``/__silex/bytes/N``: answers N bytes of ``x`` (``application/octet-stream``), written in
  64 KiB pieces; with ``?chunked=1`` it uses ``Transfer-Encoding: chunked`` instead of a
  Content-Length.
- ``/__silex/sleep/MS``: sleeps MS milliseconds, then answers the usual JSON.
- ``/__silex/status/CODE``: answers the usual JSON with status CODE (no body for 1xx, 204, 304).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, urlsplit

CHUNK_SIZE: Final = 64 * 1024
HOOK_PREFIX: Final = "/__silex/"
_FILLER: Final = b"x" * CHUNK_SIZE


class BadRequestBody(ValueError):
    """The request body framing is invalid (bad chunk size, truncated body)."""


def canonical_header_name(name: str) -> str:
    """Go's canonical MIME header key: ``content-type`` -> ``Content-Type``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with a JSON description of it (see the module docstring)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server_version = "silex-echo"
    service_name: ClassVar[str] = "echo"
    pod_name: ClassVar[str] = ""
    quiet: ClassVar[bool] = True

    def handle_one_request(self) -> None:
        """Parse one request and answer it, whatever its method."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._answer()
            self.wfile.flush()
        except (TimeoutError, ConnectionError) as exc:
            self.log_error("connection closed: %r", exc)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to stderr, unless quiet."""
        if not self.quiet:
            super().log_message(format, *args)

    # --- request body ---------------------------------------------------------------------

    def _read_body(self) -> tuple[int, str]:
        """Read the whole request body; returns (length, sha256 hex)."""
        digest = hashlib.sha256()
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            for piece in self._chunks():
                digest.update(piece)
                total += len(piece)
        else:
            length_header = self.headers.get("Content-Length")
            try:
                remaining = int(length_header) if length_header else 0
            except ValueError:
                raise BadRequestBody(f"bad Content-Length {length_header!r}") from None
            if remaining < 0:
                raise BadRequestBody(f"bad Content-Length {length_header!r}")
            while remaining > 0:
                piece = self.rfile.read(min(CHUNK_SIZE, remaining))
                if not piece:
                    raise BadRequestBody("body shorter than Content-Length")
                digest.update(piece)
                total += len(piece)
                remaining -= len(piece)
        return total, digest.hexdigest()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise BadRequestBody("truncated chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequestBody(f"bad chunk size {size_line!r}") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while size > 0:
                piece = self.rfile.read(min(CHUNK_SIZE, size))
                if not piece:
                    raise BadRequestBody("truncated chunked body")
                size -= len(piece)
                yield piece
            self.rfile.readline(3)  # the CRLF after the chunk data

    # --- response ---------------------------------------------------------------------------

    def _answer(self) -> None:
        try:
            body_bytes, body_sha256 = self._read_body()
        except BadRequestBody as exc:
            self.close_connection = True
            self._send_json(400, {"error": str(exc)})
            return
        target = urlsplit(self.path)
        status = 200
        if target.path.startswith(HOOK_PREFIX):
            hook, _, argument = target.path[len(HOOK_PREFIX) :].partition("/")
            try:
                number = int(argument)
            except ValueError:
                number = -1
            if hook == "bytes" and number >= 0:
                chunked = parse_qs(target.query).get("chunked", ["0"])[0] not in ("", "0")
                self._send_bytes(number, chunked=chunked)
                return
            if hook == "sleep" and number >= 0:
                time.sleep(number / 1000)
            elif hook == "status" and 100 <= number <= 999:
                status = number
            else:
                self._send_json(404, {"error": f"unknown test hook {target.path!r}"})
                return
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            canonical = canonical_header_name(name)
            if canonical != "Host":
                headers.setdefault(canonical, []).append(value)
        self._send_json(
            status,
            {
                "service": self.service_name,
                "pod": self.pod_name,
                "host": self.headers.get("Host", ""),
                "path": self.path,
                "method": self.command,
                "proto": self.request_version,
                "headers": headers,
                "body_bytes": body_bytes,
                "body_sha256": body_sha256,
            },
        )

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, indent=1).encode() + b"\n"
        self.send_response(status)
        no_body = status < 200 or status in (204, 304)
        if not no_body:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self._end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_bytes(self, count: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(count))
        self._end_headers()
        if self.command == "HEAD":
            return
        remaining = count
        while remaining > 0:
            piece = _FILLER[: min(CHUNK_SIZE, remaining)]
            if chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            remaining -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _end_headers(self) -> None:
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()


class EchoServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 echo server; one daemon thread per connection."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


def make_echo_server(
    name: str, host: str = "127.0.0.1", port: int = 0, *, pod: str | None = None
) -> EchoServer:
    """A bound (not yet serving) echo server answering as service ``name`` and pod ``pod``
    (default: the bound ``address:port``)."""
    handler: type[EchoHandler] = type("NamedEchoHandler", (EchoHandler,), {"service_name": name})
    server_class: type[EchoServer] = EchoServer
    if ":" in host:
        server_class = type("EchoServer6", (EchoServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    handler.pod_name = pod or f"{bound_host}:{bound_port}"
    return server


def start_echo_server(
    name: str, host: str = "127.0.0.1", port: int = 0, *, pod: str | None = None
) -> tuple[EchoServer, int]:
    """Start an echo server in a daemon thread; returns it and its bound port.

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    server = make_echo_server(name, host, port, pod=pod)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"silex-echo-{name}", daemon=True
    )
    thread.start()
    return server, server.server_address[1]
