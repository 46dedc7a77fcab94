"""The annotations that choose a backend's load balancing and active health checks.

Load balancing (ingress-nginx names; the first that applies wins, as in ingress-nginx):

1. ``nginx.ingress.kubernetes.io/affinity: cookie``: sticky sessions. The cookie
   (``session-cookie-name``, default ``INGRESSCOOKIE``) holds an opaque token of the endpoint;
   it is set when the client has none or its endpoint is gone or unhealthy.
   ``session-cookie-max-age`` (seconds; ``session-cookie-expires`` is used when it is absent),
   ``session-cookie-path`` (default: the path of the matched route), ``session-cookie-samesite``
   (``Strict``, ``Lax`` or ``None``), ``session-cookie-secure`` (``"true"``/``"false"``).
2. ``nginx.ingress.kubernetes.io/upstream-hash-by``: consistent hashing of ``$remote_addr``
   (or ``$binary_remote_addr``), ``$request_uri``, ``$http_<header>`` or ``$cookie_<name>``;
   a request without the value is balanced round robin.
3. ``silex.dev/load-balance`` (or ``nginx.ingress.kubernetes.io/load-balance``; Silex's wins):
   ``round_robin`` (default), ``least_request`` or ``ewma``.

Active health checks, enabled by ``silex.dev/health-check-path`` (a path starting with ``/``):
``silex.dev/health-check-interval`` (default ``10s``), ``-timeout`` (default ``2s``),
``-healthy-threshold`` (default 2), ``-unhealthy-threshold`` (default 3).

A bad value is an error Problem naming the annotation and the default is used for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeVar, get_args

import msgspec

from silex import problems
from silex.objects import Ingress
from silex.problems import Problem
from silex.table import AffinityCookie, Balance, BalancePolicy, HashBy, HealthCheck, SameSite
from silex.translate.annotations import PREFIX
from silex.units import parse_duration_ms

SILEX_PREFIX: Final = "silex.dev/"
LOAD_BALANCE: Final = PREFIX + "load-balance"
SILEX_LOAD_BALANCE: Final = SILEX_PREFIX + "load-balance"
UPSTREAM_HASH_BY: Final = PREFIX + "upstream-hash-by"
AFFINITY: Final = PREFIX + "affinity"
SESSION_COOKIE_NAME: Final = PREFIX + "session-cookie-name"
SESSION_COOKIE_MAX_AGE: Final = PREFIX + "session-cookie-max-age"
SESSION_COOKIE_EXPIRES: Final = PREFIX + "session-cookie-expires"
SESSION_COOKIE_PATH: Final = PREFIX + "session-cookie-path"
SESSION_COOKIE_SAMESITE: Final = PREFIX + "session-cookie-samesite"
SESSION_COOKIE_SECURE: Final = PREFIX + "session-cookie-secure"
HEALTH_CHECK_PATH: Final = SILEX_PREFIX + "health-check-path"
HEALTH_CHECK_INTERVAL: Final = SILEX_PREFIX + "health-check-interval"
HEALTH_CHECK_TIMEOUT: Final = SILEX_PREFIX + "health-check-timeout"
HEALTH_CHECK_HEALTHY: Final = SILEX_PREFIX + "health-check-healthy-threshold"
HEALTH_CHECK_UNHEALTHY: Final = SILEX_PREFIX + "health-check-unhealthy-threshold"

_T = TypeVar("_T")

DEFAULT_COOKIE_NAME: Final = "INGRESSCOOKIE"
DEFAULT_HEALTH_CHECK = HealthCheck(
    path="/", interval_ms=10_000, timeout_ms=2_000, healthy_threshold=2, unhealthy_threshold=3
)

_POLICIES: Final[tuple[BalancePolicy, ...]] = ("round_robin", "least_request", "ewma")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_PATH: Final = re.compile(r"/[^;\s\x00-\x1f\x7f]*")
_HEALTH_PATH: Final = re.compile(r"/[^\s\x00-\x1f\x7f#]*")


class BackendSettings(msgspec.Struct, frozen=True):
    """What an Ingress's annotations ask of the backends it routes to."""

    balance: Balance | None = None
    """``None``: round robin."""
    health_check: HealthCheck | None = None
    """``None``: passive checks only."""

    def is_default(self) -> bool:
        """True when the backends keep the defaults (round robin, no active checks)."""
        return self.balance is None and self.health_check is None


def _hash_by(text: str) -> HashBy:
    value = text.strip()
    if value in ("$remote_addr", "$binary_remote_addr"):
        return HashBy(source="remote_addr")
    if value == "$request_uri":
        return HashBy(source="request_uri")
    for prefix, source in (("$http_", "header"), ("$cookie_", "cookie")):
        if value.startswith(prefix):
            name = value[len(prefix) :]
            if source == "header":
                name = name.replace("_", "-").lower()
            if _TOKEN.fullmatch(name):
                return HashBy(source="header" if source == "header" else "cookie", name=name)
    raise ValueError(
        f"{text!r} is not supported: use one of $remote_addr, $binary_remote_addr, "
        "$request_uri, $http_<header>, $cookie_<name> (one variable, no combinations)"
    )


def _policy(text: str) -> BalancePolicy:
    value = text.strip().lower()
    for policy in _POLICIES:
        if value == policy:
            return policy
    raise ValueError(f"{text!r} is not a load-balancing policy (use {', '.join(_POLICIES)})")


def _seconds(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number of seconds") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be above 0 seconds")
    return value


def _cookie_name(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{text!r} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)")
    return text


def _cookie_path(text: str) -> str:
    if not _COOKIE_PATH.fullmatch(text):
        raise ValueError(f"{text!r} is not a cookie path (starts with /, no ; or spaces)")
    return text


def _samesite(text: str) -> SameSite:
    values: tuple[SameSite, ...] = get_args(SameSite)
    for value in values:
        if text.strip().lower() == value.lower():
            return value
    raise ValueError(f"{text!r} is not a SameSite value (use Strict, Lax or None)")


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f'{text!r} is not a boolean (use "true" or "false")')


def _health_path(text: str) -> str:
    if not _HEALTH_PATH.fullmatch(text):
        raise ValueError(f"{text!r} is not a path (starts with /, no spaces)")
    return text


def _positive_ms(text: str) -> int:
    value = parse_duration_ms(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration (seconds, e.g. 5 or 500ms)")
    return value


def _threshold(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100:
        raise ValueError(f"{text!r} is out of range (1-100)")
    return value


class _Reader:
    """Reads an Ingress's annotations, reporting bad values as Problems naming them."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.annotations = ingress.metadata.annotations
        self.problems: list[Problem] = []

    def report(self, make: Callable[..., Problem], annotation: str, message: str) -> None:
        self.problems.append(
            make(
                message,
                kind="Ingress",
                namespace=self.ingress.metadata.namespace,
                name=self.ingress.metadata.name,
                field=f'metadata.annotations["{annotation}"]',
            )
        )

    def read(self, annotation: str, parse: Callable[[str], _T]) -> _T | None:
        raw = self.annotations.get(annotation)
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            self.report(problems.error, annotation, f"{exc}; the default is used")
            return None

    def ignored(self, annotations: tuple[str, ...], why: str) -> None:
        for annotation in annotations:
            if annotation in self.annotations:
                self.report(problems.warning, annotation, f"ignored: {why}")


def backend_settings(ingress: Ingress) -> tuple[BackendSettings, list[Problem]]:
    """The balancing and health-check settings an Ingress's annotations ask for, and problems."""
    reader = _Reader(ingress)
    balance = _affinity(reader)
    hash_by = reader.read(UPSTREAM_HASH_BY, _hash_by)
    policy = reader.read(SILEX_LOAD_BALANCE, _policy) or reader.read(LOAD_BALANCE, _policy)
    if balance is not None:
        reader.ignored(
            (UPSTREAM_HASH_BY, SILEX_LOAD_BALANCE, LOAD_BALANCE),
            "affinity cookie takes precedence",
        )
    elif hash_by is not None:
        balance = Balance(policy="hash", hash_by=hash_by)
        reader.ignored((SILEX_LOAD_BALANCE, LOAD_BALANCE), "upstream-hash-by takes precedence")
    elif policy is not None and policy != "round_robin":
        balance = Balance(policy=policy)
    settings = BackendSettings(balance=balance, health_check=_health_check(reader))
    return settings, reader.problems


def _affinity_kind(text: str) -> str:
    if text.strip().lower() != "cookie":
        raise ValueError(f'{text!r} is not supported (only "cookie")')
    return "cookie"


def _affinity(reader: _Reader) -> Balance | None:
    if reader.read(AFFINITY, _affinity_kind) is None:
        return None
    max_age = reader.read(SESSION_COOKIE_MAX_AGE, _seconds)
    if max_age is None:
        max_age = reader.read(SESSION_COOKIE_EXPIRES, _seconds)
    cookie = AffinityCookie(
        name=reader.read(SESSION_COOKIE_NAME, _cookie_name) or DEFAULT_COOKIE_NAME,
        max_age_s=max_age,
        path=reader.read(SESSION_COOKIE_PATH, _cookie_path),
        samesite=reader.read(SESSION_COOKIE_SAMESITE, _samesite),
        secure=reader.read(SESSION_COOKIE_SECURE, _boolean) is True,
    )
    return Balance(policy="cookie", cookie=cookie)


_HEALTH_SETTINGS: Final = (
    HEALTH_CHECK_INTERVAL,
    HEALTH_CHECK_TIMEOUT,
    HEALTH_CHECK_HEALTHY,
    HEALTH_CHECK_UNHEALTHY,
)


def _health_check(reader: _Reader) -> HealthCheck | None:
    if HEALTH_CHECK_PATH not in reader.annotations:
        reader.ignored(_HEALTH_SETTINGS, f"active health checks are enabled by {HEALTH_CHECK_PATH}")
        return None
    path = reader.read(HEALTH_CHECK_PATH, _health_path)
    if path is None:
        return None
    default = DEFAULT_HEALTH_CHECK
    interval = reader.read(HEALTH_CHECK_INTERVAL, _positive_ms)
    timeout = reader.read(HEALTH_CHECK_TIMEOUT, _positive_ms)
    healthy = reader.read(HEALTH_CHECK_HEALTHY, _threshold)
    unhealthy = reader.read(HEALTH_CHECK_UNHEALTHY, _threshold)
    return HealthCheck(
        path=path,
        interval_ms=default.interval_ms if interval is None else interval,
        timeout_ms=default.timeout_ms if timeout is None else timeout,
        healthy_threshold=default.healthy_threshold if healthy is None else healthy,
        unhealthy_threshold=default.unhealthy_threshold if unhealthy is None else unhealthy,
    )
