"""How an Ingress's backends are spoken to: protocol and upstream TLS annotations (pure).

Supported (ingress-nginx names):

- ``nginx.ingress.kubernetes.io/backend-protocol``: ``HTTP`` (default), ``HTTPS`` (HTTP/1.1
  over TLS), ``GRPC`` (HTTP/2 cleartext, prior knowledge), ``GRPCS`` (HTTP/2 over TLS, ALPN
  ``h2``) and ``H2C`` (HTTP/2 cleartext for any HTTP/2 backend; the same wire as ``GRPC``).
  Case-insensitive. ``AUTO_HTTP`` and ``FCGI`` are not supported.
- ``nginx.ingress.kubernetes.io/proxy-ssl-verify``: ``on``/``off`` (default ``off``, as in
  ingress-nginx): verify the endpoint's certificate against the CA of ``proxy-ssl-secret``.
  ``on`` without a CA fails closed (every request to the backend gets 502).
- ``nginx.ingress.kubernetes.io/proxy-ssl-secret``: ``namespace/name`` (or ``name``) of a
  Secret in the Ingress's own namespace: ``ca.crt`` is the CA verified against, ``tls.crt``
  and ``tls.key`` (when both present) the client certificate presented to the endpoint (mTLS).
  Another namespace is refused: an Ingress must not borrow another tenant's credentials.
- ``nginx.ingress.kubernetes.io/proxy-ssl-name``: the name the certificate is verified
  against and sent as SNI (default ``<service>.<namespace>.svc``).
- ``nginx.ingress.kubernetes.io/proxy-ssl-server-name``: ``on``/``off`` (default ``off``):
  send that name as SNI.

A bad value is an error Problem naming the annotation, and the Ingress's backends keep the
default for it. ``proxy-ssl-*`` on a backend that is not ``HTTPS``/``GRPCS`` is a warning.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from silex import problems
from silex.objects import Ingress, Secret
from silex.problems import Problem
from silex.store import ObjectKey
from silex.table import TLS_PROTOCOLS, BackendProtocol, UpstreamTls
from silex.translate.annotations import PREFIX
from silex.translate.tls import CertificateChecker, structural_check

BACKEND_PROTOCOL: Final = PREFIX + "backend-protocol"
PROXY_SSL_VERIFY: Final = PREFIX + "proxy-ssl-verify"
PROXY_SSL_SECRET: Final = PREFIX + "proxy-ssl-secret"
PROXY_SSL_NAME: Final = PREFIX + "proxy-ssl-name"
PROXY_SSL_SERVER_NAME: Final = PREFIX + "proxy-ssl-server-name"
SSL_ANNOTATIONS: Final = (PROXY_SSL_VERIFY, PROXY_SSL_SECRET, PROXY_SSL_NAME, PROXY_SSL_SERVER_NAME)

CA_KEY: Final = "ca.crt"
CERT_KEY: Final = "tls.crt"
PRIVATE_KEY_KEY: Final = "tls.key"

_T = TypeVar("_T")

_PROTOCOLS: Final[dict[str, BackendProtocol]] = {
    "HTTP": "http",
    "HTTPS": "https",
    "GRPC": "grpc",
    "GRPCS": "grpcs",
    "H2C": "h2c",
}
_DNS_NAME: Final = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True)
class UpstreamSettings:
    """What an Ingress asks for about talking to its backends."""

    protocol: BackendProtocol = "http"
    verify: bool = False
    secret: ObjectKey | None = None
    """The ``proxy-ssl-secret``, validated to be in the Ingress's namespace."""
    server_name: str | None = None
    """``proxy-ssl-name``; ``None``: ``<service>.<namespace>.svc``."""
    sni: bool = False


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "off", "true", "false"):
        return value in ("on", "true")
    raise ValueError(f'{text!r} is not "on" or "off"')


def _protocol(text: str) -> BackendProtocol:
    protocol = _PROTOCOLS.get(text.strip().upper())
    if protocol is None:
        raise ValueError(f"{text!r} is not a supported protocol (HTTP, HTTPS, GRPC, GRPCS, H2C)")
    return protocol


def _server_name(text: str) -> str:
    name = text.strip().lower()
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(name):
        raise ValueError(f"{text!r} is not a DNS name or an IP address")
    return name


def _annotation(annotation: str) -> str:
    return f'metadata.annotations["{annotation}"]'


def _problem(ingress: Ingress, severity: problems.Severity, field: str, message: str) -> Problem:
    return Problem(
        severity=severity,
        kind="Ingress",
        namespace=ingress.metadata.namespace,
        name=ingress.metadata.name,
        field=field,
        message=message,
    )


def _secret_ref(raw: str, namespace: str) -> ObjectKey:
    secret_namespace, slash, secret_name = raw.strip().rpartition("/")
    if not slash:
        secret_namespace = namespace
    if not secret_name or not secret_namespace or "/" in secret_namespace:
        raise ValueError(f"{raw!r} is not namespace/name")
    if secret_namespace != namespace:
        raise ValueError(
            f"Secret {secret_namespace}/{secret_name} is in another namespace than the Ingress; "
            "only Secrets of the Ingress's own namespace can be used"
        )
    return (secret_namespace, secret_name)


def upstream_settings(ingress: Ingress) -> tuple[UpstreamSettings, list[Problem]]:
    """The backend protocol and TLS annotations of ``ingress``, and bad values found."""
    annotations = ingress.metadata.annotations
    found: list[Problem] = []

    def parse(annotation: str, parser: Callable[[str], _T], default: _T) -> _T:
        raw = annotations.get(annotation)
        if raw is None:
            return default
        try:
            return parser(raw)
        except ValueError as exc:
            found.append(
                _problem(ingress, "error", _annotation(annotation), f"{exc}; the default is used")
            )
            return default

    namespace = ingress.metadata.namespace
    settings = UpstreamSettings(
        protocol=parse(BACKEND_PROTOCOL, _protocol, "http"),
        verify=parse(PROXY_SSL_VERIFY, _on_off, False),
        secret=parse(PROXY_SSL_SECRET, lambda raw: _secret_ref(raw, namespace), None),
        server_name=parse(PROXY_SSL_NAME, _server_name, None),
        sni=parse(PROXY_SSL_SERVER_NAME, _on_off, False),
    )
    if settings.protocol not in TLS_PROTOCOLS:
        found.extend(
            _problem(
                ingress,
                "warning",
                _annotation(annotation),
                f"has no effect: the backend protocol is {settings.protocol.upper()} "
                "(upstream TLS needs HTTPS or GRPCS)",
            )
            for annotation in SSL_ANNOTATIONS
            if annotation in annotations
        )
    return settings, found


def _decode(secret: Secret, key: str) -> str | None:
    if key in secret.string_data:
        return secret.string_data[key]
    raw = secret.data.get(key)
    if raw is None:
        return None
    return base64.b64decode(raw, validate=True).decode()


CaChecker = Callable[[bytes], None]
"""``check(ca_pem)`` raises ValueError saying what is wrong with CA certificates."""


def structural_ca_check(ca_pem: bytes) -> None:
    """A CA checker for when the core is not available: PEM markers only."""
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise ValueError("no CERTIFICATE block found")


@dataclass(frozen=True)
class Checkers:
    """How Secret material is validated: by the core's own parsers when the CLI runs."""

    ca: CaChecker = structural_ca_check
    pair: CertificateChecker = structural_check


def upstream_tls(
    settings: UpstreamSettings,
    service: ObjectKey,
    secrets: Mapping[ObjectKey, Secret],
    ingress: Ingress,
    checkers: Checkers | None = None,
) -> tuple[UpstreamTls | None, list[Problem]]:
    """The table's TLS settings for a backend of ``service`` (``None`` for plain protocols).

    Material the core would reject is left out with an error Problem (a table the core
    rejects would stop every Ingress): a bad ``ca.crt`` leaves verification without a CA
    (fail closed), a bad client certificate is not presented."""
    check = checkers or Checkers()
    if settings.protocol not in TLS_PROTOCOLS:
        return None, []
    found: list[Problem] = []
    where = _annotation(PROXY_SSL_SECRET)

    def report(severity: problems.Severity, field: str, message: str) -> None:
        found.append(_problem(ingress, severity, field, message))

    ca_pem = cert_pem = key_pem = None
    if settings.secret is not None:
        ref = "/".join(settings.secret)
        secret = secrets.get(settings.secret)
        if secret is None:
            report(
                "error",
                where,
                f"Secret {ref} not found (in cluster mode only Secrets of type "
                "kubernetes.io/tls are watched); no CA and no client certificate are used",
            )
        else:
            try:
                ca_pem = _decode(secret, CA_KEY)
                cert_pem = _decode(secret, CERT_KEY)
                key_pem = _decode(secret, PRIVATE_KEY_KEY)
            except (binascii.Error, ValueError, UnicodeDecodeError):
                report("error", where, f"Secret {ref}: data is not valid base64 PEM")
                ca_pem = cert_pem = key_pem = None
            if (cert_pem is None) != (key_pem is None):
                report(
                    "warning",
                    where,
                    f"Secret {ref} has only one of tls.crt and tls.key; no client certificate "
                    "is presented",
                )
                cert_pem = key_pem = None
            if cert_pem is not None and key_pem is not None:
                try:
                    check.pair(cert_pem.encode(), key_pem.encode(), [])
                except ValueError as exc:
                    report(
                        "error", where, f"Secret {ref}: {exc}; no client certificate is presented"
                    )
                    cert_pem = key_pem = None
            if ca_pem is not None and settings.verify:
                try:
                    check.ca(ca_pem.encode())
                except ValueError as exc:
                    report("error", where, f'Secret {ref}: data["{CA_KEY}"]: {exc}')
                    ca_pem = None
    if settings.verify and ca_pem is None:
        report(
            "error",
            _annotation(PROXY_SSL_VERIFY),
            "verification is on but proxy-ssl-secret gives no ca.crt: no endpoint certificate "
            "can be verified and requests get 502",
        )
    server_name = settings.server_name or f"{service[1]}.{service[0]}.svc"
    return (
        UpstreamTls(
            verify=settings.verify,
            ca_pem=ca_pem if settings.verify else None,
            cert_pem=cert_pem,
            key_pem=key_pem,
            server_name=server_name,
            sni=settings.sni,
        ),
        found,
    )


__all__ = [
    "BACKEND_PROTOCOL",
    "PROXY_SSL_NAME",
    "PROXY_SSL_SECRET",
    "PROXY_SSL_SERVER_NAME",
    "PROXY_SSL_VERIFY",
    "CaChecker",
    "Checkers",
    "UpstreamSettings",
    "structural_ca_check",
    "upstream_settings",
    "upstream_tls",
]
