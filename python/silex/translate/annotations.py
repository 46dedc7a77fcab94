"""The Ingress annotations Silex understands, turned into per-route options.

Supported (ingress-nginx names, so existing manifests keep working):

- ``nginx.ingress.kubernetes.io/proxy-body-size``: nginx size syntax (``"8m"``, ``"1g"``,
  ``"512k"``, ``"1024"``); ``"0"`` means unlimited.
- ``nginx.ingress.kubernetes.io/proxy-read-timeout``: seconds (``"60"``; ``"60s"``, ``"500ms"``,
  ``"2m"`` also accepted), greater than 0. Also the idle timeout of a WebSocket connection.
- ``nginx.ingress.kubernetes.io/proxy-send-timeout``: seconds, greater than 0: time allowed
  between two successive writes of the request body to the endpoint (default: the
  server-wide ``--upstream-send-timeout``); 504 after it.
- ``nginx.ingress.kubernetes.io/proxy-next-upstream-tries``: most attempts per request, the
  first included, at least 1 (default 3; ``"1"`` turns retries off).
- ``nginx.ingress.kubernetes.io/proxy-next-upstream-timeout``: seconds after the first attempt
  when no further retry starts; ``"0"`` (the default) means no limit.

- ``nginx.ingress.kubernetes.io/ssl-redirect``: ``"true"`` (default) / ``"false"``: routes of
  this Ingress on hosts that have TLS answer plain HTTP with a 308 redirect to HTTPS.
- ``nginx.ingress.kubernetes.io/force-ssl-redirect``: ``"true"`` redirects this Ingress's
  routes even on hosts without TLS (default ``"false"``).

- ``nginx.ingress.kubernetes.io/proxy-connect-timeout``: seconds, greater than 0: time allowed to
  connect to an endpoint (default: the server-wide ``--upstream-connect-timeout``).

Backend protocols and upstream TLS (``backend-protocol``, ``proxy-ssl-*``) are read by
:mod:`silex.translate.upstream`.

A bad value is an error Problem naming the annotation, and the Ingress's routes keep the
default for that option. Snippet annotations (``*-snippet``: raw proxy configuration) are
refused with a warning: Silex has no configuration language to inject into. Every other
annotation is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from silex import problems
from silex.objects import Ingress
from silex.problems import Problem
from silex.table import RouteOptions
from silex.units import parse_duration_ms, parse_size

PREFIX: Final = "nginx.ingress.kubernetes.io/"
PROXY_BODY_SIZE: Final = PREFIX + "proxy-body-size"
PROXY_CONNECT_TIMEOUT: Final = PREFIX + "proxy-connect-timeout"
PROXY_READ_TIMEOUT: Final = PREFIX + "proxy-read-timeout"
PROXY_SEND_TIMEOUT: Final = PREFIX + "proxy-send-timeout"
PROXY_NEXT_UPSTREAM_TRIES: Final = PREFIX + "proxy-next-upstream-tries"
PROXY_NEXT_UPSTREAM_TIMEOUT: Final = PREFIX + "proxy-next-upstream-timeout"


SNIPPET_SUFFIX: Final = "-snippet"
SNIPPET_REFUSED: Final = (
    "snippet annotations are not supported, and never will be: they inject raw proxy "
    "configuration written by anyone who can create an Ingress (the IngressNightmare class of "
    "CVEs); the annotation is ignored"
)


def _positive_duration_ms(text: str) -> int:
    value = parse_duration_ms(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration (seconds, e.g. 5 or 5s)")
    return value


def _tries(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number of attempts") from None
    if not 1 <= value <= 100:
        raise ValueError(f"{text!r} is out of range (1-100 attempts)")
    return value


def _duration_or_zero_ms(text: str) -> int:
    if text.strip() == "0":
        return 0
    return _positive_duration_ms(text)


_PARSERS: Final[dict[str, tuple[str, Callable[[str], int]]]] = {
    PROXY_BODY_SIZE: ("max_request_body_bytes", parse_size),
    PROXY_READ_TIMEOUT: ("upstream_read_timeout_ms", _positive_duration_ms),
    PROXY_SEND_TIMEOUT: ("upstream_send_timeout_ms", _positive_duration_ms),
    PROXY_CONNECT_TIMEOUT: ("upstream_connect_timeout_ms", _positive_duration_ms),
    PROXY_NEXT_UPSTREAM_TRIES: ("next_upstream_tries", _tries),
    PROXY_NEXT_UPSTREAM_TIMEOUT: ("next_upstream_timeout_ms", _duration_or_zero_ms),
}


def route_options(ingress: Ingress) -> tuple[RouteOptions, list[Problem]]:
    """The route options an Ingress asks for through its annotations, and bad values found."""
    values: dict[str, int] = {}
    found: list[Problem] = []
    annotations = ingress.metadata.annotations

    def report(make: Callable[..., Problem], annotation: str, message: str) -> None:
        found.append(
            make(
                message,
                kind="Ingress",
                namespace=ingress.metadata.namespace,
                name=ingress.metadata.name,
                field=f'metadata.annotations["{annotation}"]',
            )
        )

    for annotation in sorted(annotations):
        if annotation.startswith(PREFIX) and annotation.endswith(SNIPPET_SUFFIX):
            report(problems.warning, annotation, SNIPPET_REFUSED)
    for annotation, (option, parse) in _PARSERS.items():
        raw = annotations.get(annotation)
        if raw is None:
            continue
        try:
            values[option] = parse(raw)
        except ValueError as exc:
            report(problems.error, annotation, f"{exc}; the default is used")
    return RouteOptions(**values), found


SSL_REDIRECT: Final = PREFIX + "ssl-redirect"
FORCE_SSL_REDIRECT: Final = PREFIX + "force-ssl-redirect"


class RedirectPolicy(msgspec.Struct, frozen=True):
    """What an Ingress's annotations say about HTTP -> HTTPS redirects."""

    ssl_redirect: bool = True
    """``ssl-redirect`` (default true): redirect hosts that have TLS."""
    force_ssl_redirect: bool = False
    """``force-ssl-redirect`` (default false): redirect even without a TLS section."""

    def redirects(self, host_has_tls: bool) -> bool:
        """Whether a route of this Ingress on a host (with TLS or not) redirects to HTTPS."""
        return self.force_ssl_redirect or (self.ssl_redirect and host_has_tls)


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f'{text!r} is not a boolean (use "true" or "false")')


def redirect_policy(ingress: Ingress) -> tuple[RedirectPolicy, list[Problem]]:
    """The redirect annotations of an Ingress (ingress-nginx semantics) and bad values found."""
    annotations = ingress.metadata.annotations
    values: dict[str, bool] = {}
    found: list[Problem] = []
    for annotation, option in (
        (SSL_REDIRECT, "ssl_redirect"),
        (FORCE_SSL_REDIRECT, "force_ssl_redirect"),
    ):
        raw = annotations.get(annotation)
        if raw is None:
            continue
        try:
            values[option] = _boolean(raw)
        except ValueError as exc:
            found.append(
                problems.error(
                    f"{exc}; the default is used",
                    kind="Ingress",
                    namespace=ingress.metadata.namespace,
                    name=ingress.metadata.name,
                    field=f'metadata.annotations["{annotation}"]',
                )
            )
    return RedirectPolicy(**values), found
