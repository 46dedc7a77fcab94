"""The boundary to the Rust core: the only module that imports ``silex._core``.

Every call into the core releases the GIL; the core runs its own Tokio threads, so nothing here
blocks the operator's event loop for longer than a table validation.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from silex import _core
from silex.table import RoutingTable, to_json

SilexError = _core.SilexError
ConfigError = _core.ConfigError
ListenError = _core.ListenError
CORE_VERSION: str = _core.__version__


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Connection-level settings of the data plane, fixed for the life of the process."""

    workers: int | None = None
    """Tokio worker threads; None means one per CPU."""
    header_read_timeout_ms: int = 10_000
    """A client must send its whole request head within this time (408/close after it)."""
    client_idle_timeout_ms: int = 75_000
    """An idle keep-alive client connection is closed after this time."""
    max_header_bytes: int = 32_768
    """Largest request head (request line + headers) accepted; larger gets 431."""
    max_headers: int = 100
    """Most request header fields accepted; more gets 431."""
    upstream_connect_timeout_ms: int = 5_000
    """Time allowed to connect to an endpoint (502 when refused, 504 after it)."""
    upstream_send_timeout_ms: int = 60_000
    """Time allowed between two writes of a request body to the endpoint (504 after it)."""
    upstream_idle_timeout_ms: int = 60_000
    """Idle upstream keep-alive connections are closed after this time."""
    upstream_max_idle_per_endpoint: int = 320
    """Most idle upstream connections kept per endpoint."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs whose X-Forwarded-* headers are kept (extended) instead of replaced."""
    enable_h2c: bool = False
    """Serve HTTP/2 with prior knowledge (h2c) on plain-HTTP proxy listeners."""
    https_redirect_port: int | None = None
    """Port put into HTTP->HTTPS redirects; None: the bound HTTPS port."""
    hsts_max_age_s: int | None = None
    """Send Strict-Transport-Security with this max-age on HTTPS responses; None: off."""
    hsts_include_subdomains: bool = False
    """Add includeSubDomains to the HSTS header."""
    h2_max_concurrent_streams: int = 128
    """HTTP/2: most concurrent streams per connection."""
    h2_stream_window_bytes: int = 1024 * 1024
    """HTTP/2: initial flow-control window per stream."""
    h2_connection_window_bytes: int = 4 * 1024 * 1024
    """HTTP/2: initial flow-control window per connection."""
    outlier_consecutive_failures: int = 5
    """Consecutive connect failures, resets or 5xx that eject an endpoint; 0: never eject."""
    outlier_base_ejection_ms: int = 10_000
    """First ejection length; doubles with each ejection in a row."""
    outlier_max_ejection_ms: int = 300_000
    """Longest ejection."""
    status_page: bool = True
    """Serve the status page (``/`` and ``/api/status``) on the admin listener."""
    access_log: str = "off"
    """Where the access log goes: "off", "stdout" or a file path (appended to)."""
    access_log_format: Literal["json", "combined"] = "json"
    """One JSON object per line, or nginx's combined format plus ingress-nginx's fields."""
    access_log_buffer_lines: int = 16_384
    """Lines queued for the log writer; when full, lines are dropped and counted."""


def check_certificate(cert_pem: bytes, key_pem: bytes, hosts: list[str]) -> list[str]:
    """Check a certificate and key exactly as the core loads them; returns the names of
    ``hosts`` the certificate does not cover. Raises ValueError saying what is wrong
    (``cert_pem: ...`` or ``key_pem: ...``). Fits ``TranslateOptions.check_certificate``."""
    try:
        return _core.check_certificate(cert_pem, key_pem, hosts)
    except _core.ConfigError as exc:
        raise ValueError(str(exc)) from None


def check_ca_certificates(ca_pem: bytes) -> None:
    """Check CA certificates (PEM) exactly as the core trusts them for upstream TLS. Raises
    ValueError saying what is wrong. Fits ``TranslateOptions.check_ca_certificates``."""
    try:
        _core.check_ca_certificates(ca_pem)
    except _core.ConfigError as exc:
        raise ValueError(str(exc)) from None


def certificate_not_after(cert_pem: bytes) -> int:
    """When the first certificate of ``cert_pem`` expires (Unix seconds). Raises ValueError
    saying what is wrong."""
    try:
        return _core.certificate_not_after(cert_pem)
    except _core.ConfigError as exc:
        raise ValueError(str(exc)) from None


class ListenerStats(msgspec.Struct, frozen=True):
    """One bound listener."""

    kind: str
    address: str


class Stats(msgspec.Struct, frozen=True):
    """A snapshot of the core's counters."""

    generation: int
    ready: bool
    draining: bool
    connections_open: int
    requests_total: int
    responses: dict[str, int]
    upstream_errors: int
    listeners: dict[str, ListenerStats]
    upstream_retries: int = 0
    """Attempts retried on another endpoint."""
    upstream_connect_errors: int = 0
    """Upstream connection attempts that failed."""
    connections_active: int = 0
    """Client connections with a request in flight."""
    tunnels_open: int = 0
    """Upgraded (WebSocket) connections currently tunnelled."""
    health_checkers: int = 0
    """Active health-check tasks running (one per endpoint address and check settings)."""


class DataPlane:
    """A running data plane: sockets, runtime and the current routing table."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self._core = _core.Core(msgspec.json.encode(config or ServerConfig()))

    def listen(
        self,
        name: str,
        host: str,
        port: int,
        kind: Literal["proxy", "https", "admin"] = "proxy",
    ) -> tuple[str, int]:
        """Bind a listener; port 0 picks a free port. Returns the bound (host, port).

        ``"proxy"`` serves plain HTTP, ``"https"`` TLS with the table's certificates.
        """
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self._core.listen(name, address, kind)

    def apply(self, table: RoutingTable) -> int:
        """Swap in a new table; raises ConfigError (previous table keeps serving)."""
        return self.apply_json(to_json(table))

    def apply_json(self, table_json: bytes) -> int:
        """Swap in a table given as JSON bytes."""
        return self._core.apply(table_json)

    @property
    def generation(self) -> int:
        """Generation of the serving table; 0 before the first apply."""
        return self._core.generation()

    def stats(self) -> Stats:
        """Counters and listeners, read without blocking the request path."""
        return msgspec.json.decode(self._core.stats(), type=Stats)

    def set_operator_metrics(self, text: bytes) -> None:
        """Publish the operator's metrics (OpenMetrics text) after the core's on /metrics."""
        self._core.set_operator_metrics(text)

    def set_operator_status(self, status_json: bytes) -> None:
        """Publish the operator's part of the status page (see silex.statuspage)."""
        self._core.set_operator_status(status_json)

    def shutdown(self, grace_s: float) -> bool:
        """Readiness false, stop accepting, drain up to grace_s. True if everything finished."""
        return self._core.shutdown(grace_s)
