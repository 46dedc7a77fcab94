"""Settings of a translation: which Ingresses are ours and the table-wide defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from silex.table import ListenerSettings, RouteDefaults

DEFAULT_INGRESS_CLASS = "silex"
DEFAULT_CONTROLLER_NAME = "silex.dev/ingress-controller"
DEFAULT_ELECTION_ID = "silex-leader"
"""Name of the Lease the controllers of one installation elect their leader with."""


def _default_listeners() -> Mapping[str, ListenerSettings]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class TranslateOptions:
    """What :func:`silex.translate.translate` needs besides the snapshot."""

    ingress_class: str = DEFAULT_INGRESS_CLASS
    """Our class name: matched by ``spec.ingressClassName`` when no IngressClass object of that
    name exists, and by the legacy ``kubernetes.io/ingress.class`` annotation."""
    controller_name: str = DEFAULT_CONTROLLER_NAME
    """IngressClasses whose ``spec.controller`` equals this are ours."""
    watch_ingress_without_class: bool = False
    """Also serve Ingresses that name no class at all (even without a default IngressClass)."""
    defaults: RouteDefaults = field(default_factory=RouteDefaults)
    """Route options used where an Ingress does not set its own."""
    listeners: Mapping[str, ListenerSettings] = field(default_factory=_default_listeners)
    """Listener settings written into the table, by listener name. Empty by default: a listener
    not named in the table uses the core's defaults (plain HTTP)."""
    default_ssl_certificate: str | None = None
    """``namespace/name`` of the Secret served for unknown SNI (``--default-ssl-certificate``);
    ``None``: the core's self-signed certificate."""
    check_certificate: Callable[[bytes, bytes, list[str]], list[str]] | None = None
    """Validates a Secret's certificate and key exactly as the core loads them and returns the
    names it does not cover (see :mod:`silex.translate.tls`); the CLI passes the core's
    ``check_certificate``. ``None``: a structural PEM check only."""
    check_ca_certificates: Callable[[bytes], None] | None = None
    """Validates the CA certificates of a ``proxy-ssl-secret`` exactly as the core trusts them
    (raises ValueError saying what is wrong); the CLI passes the core's. ``None``: a structural
    PEM check only."""
