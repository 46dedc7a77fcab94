"""The routing table as the Rust core reads it: a mirror of ``rust/silex-routing/src/table.rs``.

The core parses the JSON strictly (unknown fields are rejected), so these types must match the
Rust ones field for field. :func:`to_json` is the one way to serialize a table: it produces a
canonical byte string (hosts sorted by name, routes by path and match, backends and listeners by
key, endpoints by address and port) so that an unchanged table is byte-identical, and it omits
``None`` exactly where the Rust side uses ``skip_serializing_if``.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Literal

import msgspec

TABLE_VERSION = 1
"""The only table version the core understands."""

Scheme = Literal["http", "https"]
PathMatch = Literal["exact", "prefix"]
BackendProtocol = Literal["http", "https", "h2c", "grpc", "grpcs"]
TLS_PROTOCOLS: tuple[BackendProtocol, ...] = ("https", "grpcs")
"""The backend protocols that reach endpoints over TLS (and take :class:`UpstreamTls`)."""


class ListenerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-listener settings carried by the table (the socket itself is bound by the core)."""

    scheme: Scheme = "http"
    """Value sent upstream in ``X-Forwarded-Proto`` for requests on this listener."""


class RouteDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Route options with every value set: the table-wide defaults."""

    max_request_body_bytes: int = 1024 * 1024
    """Largest request body accepted, in bytes (413 above it); 0 means no limit."""
    upstream_read_timeout_ms: int = 60_000
    """Time allowed for the upstream to start its response, in milliseconds (504 after it)."""


class RouteOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-route overrides of :class:`RouteDefaults`; ``None`` falls back to the default."""

    max_request_body_bytes: int | None = None
    upstream_read_timeout_ms: int | None = None
    upstream_send_timeout_ms: int | None = None
    """Time allowed between two writes of the request body to the endpoint; ``None``: the
    core's server-wide setting."""
    upstream_connect_timeout_ms: int | None = None
    """Time allowed to connect to an endpoint; ``None``: the core's server-wide setting."""
    next_upstream_tries: int | None = None
    """Most attempts per request, the first included (core default 3)."""
    next_upstream_timeout_ms: int | None = None
    """No retry starts later than this after the first attempt; 0: no limit (the default)."""

    def is_empty(self) -> bool:
        """True when no option is set (the route uses the table defaults for everything)."""
        return self == RouteOptions()


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One path route of a virtual host."""

    path: str
    """The path; starts with ``/``."""
    path_match: PathMatch = msgspec.field(name="match")
    """How the path is compared with the request path (JSON key ``match``)."""
    backend: str
    """Backend id, a key of :attr:`RoutingTable.backends`."""
    ingress: str | None = None
    """The Ingress this route came from, ``namespace/name``."""
    options: RouteOptions | None = None
    """Overrides of the table defaults; ``None`` (or empty) means none."""
    redirect_https: bool = False
    """Requests matching this route on a plain-HTTP listener get a 308 redirect to HTTPS."""


class VirtualHost(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One virtual host: exact name, one-label wildcard (``*.example.com``) or catch-all ``*``."""

    name: str
    routes: list[Route]
    default_backend: str | None = None
    """Backend id for requests to this host that match none of its routes."""
    redirect_https: bool = False
    """Requests to this host matching none of its routes get a 308 redirect to HTTPS (on a
    plain-HTTP listener)."""


class Endpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One upstream address."""

    address: str
    """IPv4 or IPv6 address."""
    port: int
    """TCP port, 1-65535."""
    weight: int = 1
    """Relative load-balancing weight, at least 1."""


BalancePolicy = Literal["round_robin", "least_request", "ewma", "hash", "cookie"]
HashSource = Literal["remote_addr", "request_uri", "header", "cookie"]
SameSite = Literal["Strict", "Lax", "None"]


class HashBy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The request value a ``hash`` policy hashes."""

    source: HashSource
    name: str | None = None
    """Header or cookie name (``header`` and ``cookie`` sources only)."""


class AffinityCookie(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """The cookie of a ``cookie`` (session affinity) policy."""

    name: str
    max_age_s: int | None = None
    """``Max-Age`` (and ``Expires``) in seconds; ``None``: a session cookie."""
    path: str | None = None
    """``Path``; ``None``: the path of the route that matched."""
    samesite: SameSite | None = None
    secure: bool = False


class Balance(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """A backend's load-balancing policy and its settings."""

    policy: BalancePolicy = "round_robin"
    hash_by: HashBy | None = None
    """Required by (and only allowed with) the ``hash`` policy."""
    cookie: AffinityCookie | None = None
    """Required by (and only allowed with) the ``cookie`` policy."""


class HealthCheck(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """Active health checks: a GET to each endpoint every interval; thresholds of failures and
    successes in a row take an endpoint out of load balancing and bring it back."""

    path: str
    interval_ms: int
    timeout_ms: int
    healthy_threshold: int
    unhealthy_threshold: int
    host: str | None = None
    """``Host`` header of the check; ``None``: the endpoint's ``ip:port``."""


class UpstreamTls(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """How the core connects to a backend over TLS (``proxy-ssl-*``)."""

    verify: bool = False
    """Verify the endpoint's certificate against ``ca_pem`` and ``server_name``."""
    ca_pem: str | None = None
    """Trusted roots (``ca.crt``); with ``verify`` and no CA every handshake fails."""
    cert_pem: str | None = None
    """Client certificate chain (mTLS; ``tls.crt``)."""
    key_pem: str | None = None
    """Its private key (``tls.key``)."""
    server_name: str = ""
    """Name verified and sent as SNI; empty: the endpoint's IP address."""
    sni: bool = False
    """Send ``server_name`` as SNI."""


class Backend(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """The endpoints serving one Service port; no endpoints means every request gets 503.

    Keyword-only so that the field order (``service``, ``endpoints``, ...) matches the Rust
    type.
    """

    service: str | None = None
    """The Service, ``namespace/name``."""
    endpoints: list[Endpoint]
    """Ready endpoints (always emitted, possibly empty)."""
    balance: Balance | None = None
    """How requests are spread over the endpoints; ``None``: weighted round robin."""
    health_check: HealthCheck | None = None
    """Active health checks; ``None``: passive checks only."""
    protocol: BackendProtocol = "http"
    """How the core talks to the endpoints."""
    tls: UpstreamTls | None = None
    """TLS settings; only with ``https`` and ``grpcs``."""


class Certificate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A PEM certificate chain and key, and the server names (SNI) it is selected for."""

    cert_pem: str
    """``CERTIFICATE`` blocks, end-entity first."""
    key_pem: str
    """One private key (PKCS#8, PKCS#1 RSA or SEC1 EC) matching the first certificate."""
    hosts: list[str] = []
    """Exact names and one-label wildcards, lower case; each name in at most one certificate."""


class RoutingTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole desired routing state of the data plane, swapped atomically by the core."""

    version: int = TABLE_VERSION
    listeners: dict[str, ListenerSettings] = {}
    defaults: RouteDefaults = msgspec.field(default_factory=RouteDefaults)
    hosts: list[VirtualHost] = []
    backends: dict[str, Backend] = {}
    default_backend: str | None = None
    """Backend id used when nothing else matches; ``None`` answers 404."""
    certificates: dict[str, Certificate] = {}
    """TLS certificates by id (the Secret, ``namespace/name``)."""
    default_certificate: str | None = None
    """Certificate id served for unknown or missing SNI; ``None``: the core's self-signed one."""


def endpoint_order(endpoint: Endpoint) -> tuple[int, int, str, int]:
    """Sort key of endpoints: IPv4 before IPv6, numerically, then by port."""
    version, number = _address_order(endpoint.address)
    return (version, number, endpoint.address, endpoint.port)


@functools.lru_cache(maxsize=65536)
def _address_order(address: str) -> tuple[int, int]:
    # Cached: every reconcile sorts every endpoint again, and parsing an address costs ~10 µs.
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (parsed.version, int(parsed))


def _canonical_route(route: Route) -> Route:
    if route.options is not None and route.options.is_empty():
        return msgspec.structs.replace(route, options=None)
    return route


def canonical(table: RoutingTable) -> RoutingTable:
    """The same table in canonical order, with empty route options removed."""
    hosts = [
        msgspec.structs.replace(
            host,
            routes=sorted(
                (_canonical_route(route) for route in host.routes),
                key=lambda route: (route.path, route.path_match, route.backend),
            ),
        )
        for host in sorted(table.hosts, key=lambda host: host.name)
    ]
    backends = {
        backend_id: msgspec.structs.replace(
            backend, endpoints=sorted(backend.endpoints, key=endpoint_order)
        )
        for backend_id, backend in sorted(table.backends.items())
    }
    certificates = {
        cert_id: msgspec.structs.replace(certificate, hosts=sorted(set(certificate.hosts)))
        for cert_id, certificate in sorted(table.certificates.items())
    }
    return msgspec.structs.replace(
        table,
        listeners=dict(sorted(table.listeners.items())),
        hosts=hosts,
        backends=backends,
        certificates=certificates,
    )


_ENCODER = msgspec.json.Encoder(order="deterministic")


def to_json(table: RoutingTable) -> bytes:
    """The canonical JSON of a table, exactly as the core expects it."""
    return _ENCODER.encode(canonical(table))


def from_json(data: bytes | str) -> RoutingTable:
    """Parse a table (strictly, like the core's serde types); raises msgspec.ValidationError."""
    return msgspec.json.decode(data, type=RoutingTable)
