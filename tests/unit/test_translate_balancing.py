"""translate(): load-balancing and active health-check annotations -> table backends."""

from __future__ import annotations

import pytest
from builders import endpoint, endpoint_slice, ingress, path, rule, service, snapshot

from silex.problems import Problem
from silex.table import (
    AffinityCookie,
    Backend,
    Balance,
    HashBy,
    HealthCheck,
    RoutingTable,
    from_json,
    to_json,
)
from silex.translate import translate

ECHO = (service("echo"), endpoint_slice("echo", endpoint("10.0.0.1"), endpoint("10.0.0.2")))
NGINX = "nginx.ingress.kubernetes.io/"
SILEX = "silex.dev/"


def run(annotations: dict[str, str]) -> tuple[RoutingTable, list[Problem]]:
    table, found = translate(
        snapshot(*ECHO, ingress("i", rule("h.com", path("/app", "echo")), annotations=annotations))
    )
    # The JSON the core gets round-trips (the schema test checks it against the Rust types).
    assert from_json(to_json(table)) == table
    return table, found


def only_backend(table: RoutingTable) -> tuple[str, Backend]:
    route = table.hosts[0].routes[0]
    return route.backend, table.backends[route.backend]


@pytest.mark.parametrize(
    ("annotations", "balance"),
    [
        ({}, None),
        ({NGINX + "load-balance": "round_robin"}, None),
        ({NGINX + "load-balance": "ewma"}, Balance(policy="ewma")),
        ({SILEX + "load-balance": "least_request"}, Balance(policy="least_request")),
        # Silex's own annotation wins over ingress-nginx's.
        (
            {SILEX + "load-balance": "least_request", NGINX + "load-balance": "ewma"},
            Balance(policy="least_request"),
        ),
        (
            {NGINX + "upstream-hash-by": "$remote_addr"},
            Balance(policy="hash", hash_by=HashBy(source="remote_addr")),
        ),
        (
            {NGINX + "upstream-hash-by": "$binary_remote_addr"},
            Balance(policy="hash", hash_by=HashBy(source="remote_addr")),
        ),
        (
            {NGINX + "upstream-hash-by": "$request_uri"},
            Balance(policy="hash", hash_by=HashBy(source="request_uri")),
        ),
        (
            {NGINX + "upstream-hash-by": "$http_x_user_id"},
            Balance(policy="hash", hash_by=HashBy(source="header", name="x-user-id")),
        ),
        (
            {NGINX + "upstream-hash-by": "$cookie_session"},
            Balance(policy="hash", hash_by=HashBy(source="cookie", name="session")),
        ),
        (
            {NGINX + "affinity": "cookie"},
            Balance(policy="cookie", cookie=AffinityCookie(name="INGRESSCOOKIE")),
        ),
        (
            {
                NGINX + "affinity": "cookie",
                NGINX + "session-cookie-name": "route",
                NGINX + "session-cookie-max-age": "3600",
                NGINX + "session-cookie-path": "/shop",
                NGINX + "session-cookie-samesite": "lax",
                NGINX + "session-cookie-secure": "true",
            },
            Balance(
                policy="cookie",
                cookie=AffinityCookie(
                    name="route", max_age_s=3600, path="/shop", samesite="Lax", secure=True
                ),
            ),
        ),
        (
            {NGINX + "affinity": "cookie", NGINX + "session-cookie-expires": "60"},
            Balance(policy="cookie", cookie=AffinityCookie(name="INGRESSCOOKIE", max_age_s=60)),
        ),
    ],
)
def test_balancing_annotations(annotations: dict[str, str], balance: Balance | None) -> None:
    table, found = run(annotations)
    backend_id, backend = only_backend(table)
    assert found == []
    assert backend.balance == balance
    assert backend.health_check is None
    if balance is None:
        assert backend_id == "default/echo:80"
    else:
        assert backend_id.startswith(f"default/echo:80~{balance.policy}-")


def test_affinity_wins_over_hash_and_hash_over_policy_with_warnings() -> None:
    table, found = run(
        {
            NGINX + "affinity": "cookie",
            NGINX + "upstream-hash-by": "$request_uri",
            NGINX + "load-balance": "ewma",
        }
    )
    assert only_backend(table)[1].balance == Balance(
        policy="cookie", cookie=AffinityCookie(name="INGRESSCOOKIE")
    )
    assert [(p.severity, p.field) for p in found] == [
        ("warning", f'metadata.annotations["{NGINX}upstream-hash-by"]'),
        ("warning", f'metadata.annotations["{NGINX}load-balance"]'),
    ]
    table, found = run({NGINX + "upstream-hash-by": "$request_uri", SILEX + "load-balance": "ewma"})
    assert only_backend(table)[1].balance == Balance(
        policy="hash", hash_by=HashBy(source="request_uri")
    )
    assert [p.field for p in found] == [f'metadata.annotations["{SILEX}load-balance"]']


def test_health_check_annotations_and_defaults() -> None:
    table, found = run({SILEX + "health-check-path": "/healthz"})
    assert found == []
    assert only_backend(table)[1].health_check == HealthCheck(
        path="/healthz",
        interval_ms=10_000,
        timeout_ms=2_000,
        healthy_threshold=2,
        unhealthy_threshold=3,
    )
    table, found = run(
        {
            SILEX + "health-check-path": "/ready?deep=1",
            SILEX + "health-check-interval": "500ms",
            SILEX + "health-check-timeout": "1",
            SILEX + "health-check-healthy-threshold": "1",
            SILEX + "health-check-unhealthy-threshold": "5",
            SILEX + "load-balance": "ewma",
        }
    )
    assert found == []
    backend_id, backend = only_backend(table)
    assert backend.health_check == HealthCheck(
        path="/ready?deep=1",
        interval_ms=500,
        timeout_ms=1000,
        healthy_threshold=1,
        unhealthy_threshold=5,
    )
    assert backend.balance == Balance(policy="ewma")
    assert backend_id.startswith("default/echo:80~ewma-")


def test_health_check_settings_without_a_path_are_ignored_with_a_warning() -> None:
    table, found = run({SILEX + "health-check-interval": "5s"})
    assert only_backend(table)[1].health_check is None
    assert [(p.severity, p.field) for p in found] == [
        ("warning", f'metadata.annotations["{SILEX}health-check-interval"]')
    ]


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (NGINX + "load-balance", "random"),
        (SILEX + "load-balance", "chash"),
        (NGINX + "upstream-hash-by", "$host"),
        (NGINX + "upstream-hash-by", "$remote_addr$request_uri"),
        (NGINX + "upstream-hash-by", "$http_"),
        (NGINX + "affinity", "ip"),
        (SILEX + "health-check-path", "healthz"),
        (SILEX + "health-check-path", "/a b"),
    ],
)
def test_bad_balancing_value_is_an_error_and_keeps_the_default(annotation: str, value: str) -> None:
    table, found = run({annotation: value})
    backend_id, backend = only_backend(table)
    assert backend_id == "default/echo:80"
    assert backend.balance is None
    assert backend.health_check is None
    assert [(p.severity, p.field) for p in found] == [
        ("error", f'metadata.annotations["{annotation}"]')
    ]
    assert "the default is used" in found[0].message


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (NGINX + "session-cookie-name", "bad name"),
        (NGINX + "session-cookie-max-age", "an hour"),
        (NGINX + "session-cookie-max-age", "0"),
        (NGINX + "session-cookie-path", "shop"),
        (NGINX + "session-cookie-samesite", "sometimes"),
        (NGINX + "session-cookie-secure", "yes"),
    ],
)
def test_bad_cookie_setting_keeps_its_default(annotation: str, value: str) -> None:
    table, found = run({NGINX + "affinity": "cookie", annotation: value})
    assert only_backend(table)[1].balance == Balance(
        policy="cookie", cookie=AffinityCookie(name="INGRESSCOOKIE")
    )
    assert [(p.severity, p.field) for p in found] == [
        ("error", f'metadata.annotations["{annotation}"]')
    ]


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (SILEX + "health-check-interval", "0"),
        (SILEX + "health-check-timeout", "never"),
        (SILEX + "health-check-healthy-threshold", "0"),
        (SILEX + "health-check-unhealthy-threshold", "many"),
    ],
)
def test_bad_health_check_setting_keeps_its_default(annotation: str, value: str) -> None:
    table, found = run({SILEX + "health-check-path": "/healthz", annotation: value})
    check = only_backend(table)[1].health_check
    assert check == HealthCheck(
        path="/healthz",
        interval_ms=10_000,
        timeout_ms=2_000,
        healthy_threshold=2,
        unhealthy_threshold=3,
    )
    assert [(p.severity, p.field) for p in found] == [
        ("error", f'metadata.annotations["{annotation}"]')
    ]


def test_ingresses_sharing_a_service_port_with_different_policies_get_separate_backends() -> None:
    table, found = translate(
        snapshot(
            *ECHO,
            ingress("plain", rule("a.com", path("/", "echo"))),
            ingress(
                "sticky",
                rule("b.com", path("/", "echo")),
                annotations={NGINX + "affinity": "cookie"},
            ),
            ingress(
                "sticky-too",
                rule("c.com", path("/", "echo")),
                annotations={NGINX + "affinity": "cookie"},
            ),
        )
    )
    assert found == []
    by_host = {host.name: host.routes[0].backend for host in table.hosts}
    assert by_host["a.com"] == "default/echo:80"
    # Same settings, same backend (one rotation, one cookie space); the endpoints are shared.
    assert by_host["b.com"] == by_host["c.com"] != by_host["a.com"]
    assert table.backends[by_host["b.com"]].endpoints == table.backends["default/echo:80"].endpoints
