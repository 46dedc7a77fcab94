"""translate(): Ingress semantics as table-driven tests of the pure function."""

from __future__ import annotations

import pytest
from builders import (
    backend,
    endpoint,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
    snapshot,
)

from silex.objects import Ingress, KubeObject, convert
from silex.problems import Problem
from silex.table import Endpoint, RouteDefaults, RouteOptions, RoutingTable, from_json, to_json
from silex.translate import TranslateOptions, translate

ECHO = (service("echo"), endpoint_slice("echo", endpoint("10.0.0.1")))


def run(
    *objects: KubeObject, options: TranslateOptions | None = None
) -> tuple[RoutingTable, list[Problem]]:
    return translate(snapshot(*objects), options)


def routes_of(table: RoutingTable) -> dict[str, list[tuple[str, str, str]]]:
    return {
        host.name: [(route.path, route.path_match, route.backend) for route in host.routes]
        for host in table.hosts
    }


def messages(found: list[Problem]) -> list[str]:
    return [str(problem) for problem in found]


# --- ingress classes ----------------------------------------------------------------------


SIMPLE_RULE = rule("a.example.com", path("/", "echo"))


@pytest.mark.parametrize(
    ("objects", "options", "served"),
    [
        pytest.param(
            [ingress_class("silex"), ingress("i", SIMPLE_RULE, class_name="silex")],
            TranslateOptions(),
            True,
            id="class-object-ours",
        ),
        pytest.param(
            [
                ingress_class("mine", "silex.dev/ingress-controller"),
                ingress("i", SIMPLE_RULE, class_name="mine"),
            ],
            TranslateOptions(),
            True,
            id="any-class-name-with-our-controller",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name="silex")],
            TranslateOptions(),
            True,
            id="class-name-without-object-equals-ours",
        ),
        pytest.param(
            [
                ingress_class("silex", "k8s.io/ingress-nginx"),
                ingress("i", SIMPLE_RULE, class_name="silex"),
            ],
            TranslateOptions(),
            False,
            id="class-object-contradicts-name",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name="other")],
            TranslateOptions(),
            False,
            id="other-class-ignored",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name="some-invalid-class-name")],
            TranslateOptions(ingress_class="conformance"),
            False,
            id="conformance-invalid-class",
        ),
        pytest.param(
            [
                ingress(
                    "i",
                    SIMPLE_RULE,
                    class_name=None,
                    annotations={"kubernetes.io/ingress.class": "silex"},
                )
            ],
            TranslateOptions(),
            True,
            id="legacy-annotation-ours",
        ),
        pytest.param(
            [
                ingress(
                    "i",
                    SIMPLE_RULE,
                    class_name=None,
                    annotations={"kubernetes.io/ingress.class": "nginx"},
                )
            ],
            TranslateOptions(watch_ingress_without_class=True),
            False,
            id="legacy-annotation-other",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name=None)],
            TranslateOptions(),
            False,
            id="no-class-no-default",
        ),
        pytest.param(
            [ingress_class("silex", default=True), ingress("i", SIMPLE_RULE, class_name=None)],
            TranslateOptions(),
            True,
            id="no-class-our-default-class",
        ),
        pytest.param(
            [
                ingress_class("nginx", "k8s.io/ingress-nginx", default=True),
                ingress("i", SIMPLE_RULE, class_name=None),
            ],
            TranslateOptions(),
            False,
            id="no-class-other-default-class",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name=None)],
            TranslateOptions(watch_ingress_without_class=True),
            True,
            id="no-class-watch-without-class",
        ),
        pytest.param(
            [ingress("i", SIMPLE_RULE, class_name="custom")],
            TranslateOptions(ingress_class="custom"),
            True,
            id="custom-ingress-class-option",
        ),
    ],
)
def test_ingress_class_selection(
    objects: list[KubeObject], options: TranslateOptions, served: bool
) -> None:
    table, found = run(*ECHO, *objects, options=options)
    assert bool(table.hosts) is served
    if not served:
        assert found == []  # other classes are ignored entirely, no problems either


# --- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Foo.Example.COM", "foo.example.com"),
        ("foo.example.com.", "foo.example.com"),
        ("*.Example.com", "*.example.com"),
        (None, "*"),
        ("", "*"),
    ],
)
def test_host_normalization(host: str | None, expected: str) -> None:
    table, found = run(*ECHO, ingress("i", rule(host, path("/", "echo"))))
    assert [vhost.name for vhost in table.hosts] == [expected]
    assert found == []


@pytest.mark.parametrize("host", ["foo.example.com:8080", "foo..com", "-foo.com", "*", "a.*.com"])
def test_invalid_host_drops_rule_only(host: str) -> None:
    table, found = run(
        *ECHO, ingress("i", rule(host, path("/", "echo")), rule("ok.com", path("/", "echo")))
    )
    assert [vhost.name for vhost in table.hosts] == ["ok.com"]
    assert len(found) == 1
    assert found[0].severity == "error"
    assert found[0].field == "spec.rules[0].host"


# --- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_path", "path_type", "expected"),
    [
        ("/foo", "Exact", ("/foo", "exact")),
        ("/foo", "Prefix", ("/foo", "prefix")),
        ("/foo/", "Prefix", ("/foo/", "prefix")),
        ("/foo", "ImplementationSpecific", ("/foo", "prefix")),
        (None, "ImplementationSpecific", ("/", "prefix")),
        ("", "ImplementationSpecific", ("/", "prefix")),
    ],
)
def test_path_types(rule_path: str | None, path_type: str, expected: tuple[str, str]) -> None:
    table, found = run(*ECHO, ingress("i", rule("h.com", path(rule_path, "echo", 80, path_type))))
    assert routes_of(table) == {"h.com": [(*expected, "default/echo:80")]}
    assert found == []


@pytest.mark.parametrize(
    ("rule_path", "path_type", "field"),
    [
        ("foo", "Prefix", "path"),
        ("foo", "Exact", "path"),
        ("", "Prefix", "path"),
        (None, "Exact", "path"),
        ("/a?b", "Prefix", "path"),
        ("/a b", "Exact", "path"),
        ("/foo", "Regex", "pathType"),
    ],
)
def test_bad_path_is_error_dropping_that_path_only(
    rule_path: str | None, path_type: str, field: str
) -> None:
    table, found = run(
        *ECHO,
        ingress("i", rule("h.com", path(rule_path, "echo", 80, path_type), path("/ok", "echo"))),
    )
    assert routes_of(table) == {"h.com": [("/ok", "prefix", "default/echo:80")]}
    assert [(p.severity, p.field) for p in found] == [
        ("error", f"spec.rules[0].http.paths[0].{field}")
    ]


def test_missing_path_type_is_prefix_with_warning() -> None:
    table, found = run(*ECHO, ingress("i", rule("h.com", path("/x", "echo", 80, None))))
    assert routes_of(table) == {"h.com": [("/x", "prefix", "default/echo:80")]}
    assert [(p.severity, p.field) for p in found] == [
        ("warning", "spec.rules[0].http.paths[0].pathType")
    ]


def test_exact_and_prefix_of_same_path_coexist() -> None:
    table, found = run(
        *ECHO,
        ingress(
            "i",
            rule("h.com", path("/foo", "echo", 80, "Prefix"), path("/foo", "echo", 80, "Exact")),
        ),
    )
    assert routes_of(table)["h.com"] == [
        ("/foo", "exact", "default/echo:80"),
        ("/foo", "prefix", "default/echo:80"),
    ]
    assert found == []


# --- merging and conflicts ------------------------------------------------------------------


def test_rules_for_one_host_merge_across_ingresses() -> None:
    table, found = run(
        *ECHO,
        ingress("a", rule("Shop.com", path("/cart", "echo"))),
        ingress("b", rule("shop.com", path("/pay", "echo")), namespace="other"),
        service("echo", namespace="other"),
    )
    assert routes_of(table) == {
        "shop.com": [("/cart", "prefix", "default/echo:80"), ("/pay", "prefix", "other/echo:80")]
    }
    ingresses = {route.path: route.ingress for route in table.hosts[0].routes}
    assert ingresses == {"/cart": "default/a", "/pay": "other/b"}
    assert found == []


@pytest.mark.parametrize(
    ("older_path", "newer_path"),
    [("/foo", "/foo"), ("/foo", "/foo/"), ("/foo/", "/foo"), ("/foo", "//foo")],
)
def test_conflict_goes_to_oldest_and_loser_is_warned(older_path: str, newer_path: str) -> None:
    older = ingress(
        "zzz-old", rule("h.com", path(older_path, "old")), created="2024-01-01T00:00:00Z"
    )
    newer = ingress(
        "aaa-new", rule("h.com", path(newer_path, "new")), created="2024-06-01T00:00:00Z"
    )
    table, found = run(service("old"), service("new"), newer, older)
    assert routes_of(table) == {"h.com": [(older_path, "prefix", "default/old:80")]}
    assert "default/new:80" not in table.backends
    assert len(found) == 1
    problem = found[0]
    assert (problem.severity, problem.name, problem.field) == (
        "warning",
        "aaa-new",
        "spec.rules[0].http.paths[0]",
    )
    assert "default/zzz-old" in problem.message


def test_conflict_without_timestamps_goes_to_namespace_then_name() -> None:
    first = ingress("b", rule("h.com", path("/", "one")), namespace="a")
    second = ingress("a", rule("h.com", path("/", "two")), namespace="b")
    table, found = run(service("one", namespace="a"), service("two", namespace="b"), second, first)
    assert routes_of(table) == {"h.com": [("/", "prefix", "a/one:80")]}
    assert [(p.namespace, p.name) for p in found] == [("b", "a")]


def test_timestamped_ingress_is_older_than_one_without() -> None:
    stamped = ingress("z", rule("h.com", path("/", "one")), created="2030-01-01T00:00:00Z")
    unstamped = ingress("a", rule("h.com", path("/", "two")))
    table, _ = run(service("one"), service("two"), stamped, unstamped)
    assert routes_of(table) == {"h.com": [("/", "prefix", "default/one:80")]}


def test_duplicate_path_within_one_ingress() -> None:
    table, found = run(
        *ECHO, service("b"), ingress("i", rule("h.com", path("/x", "echo"), path("/x", "b")))
    )
    assert routes_of(table) == {"h.com": [("/x", "prefix", "default/echo:80")]}
    assert [p.field for p in found] == ["spec.rules[0].http.paths[1]"]
    assert "earlier in this Ingress" in found[0].message


def test_one_broken_ingress_does_not_stop_others() -> None:
    table, found = run(
        *ECHO,
        ingress("bad", rule("bad host", path("/", "echo")), rule("x.com", path("nope", "echo"))),
        ingress("good", rule("good.com", path("/", "echo"))),
    )
    assert "good.com" in routes_of(table)
    assert {p.name for p in found} == {"bad"}


# --- default backends -----------------------------------------------------------------------


def test_default_backend_only_ingress_is_table_default() -> None:
    table, found = run(*ECHO, ingress("d", default_backend=backend("echo", 80)))
    assert table.hosts == []
    assert table.default_backend == "default/echo:80"
    assert table.backends["default/echo:80"].endpoints == [Endpoint("10.0.0.1", 8080)]
    assert found == []


def test_default_backend_is_default_of_the_ingress_hosts() -> None:
    table, _ = run(
        *ECHO,
        service("fallback"),
        ingress(
            "i",
            rule("a.com", path("/x", "echo")),
            rule(None, path("/y", "echo")),
            default_backend=backend("fallback"),
        ),
        ingress("j", rule("b.com", path("/z", "echo"))),
    )
    defaults = {host.name: host.default_backend for host in table.hosts}
    assert defaults == {"*": "default/fallback:80", "a.com": "default/fallback:80", "b.com": None}
    assert table.default_backend == "default/fallback:80"


def test_oldest_default_backend_wins_others_warned() -> None:
    older = ingress(
        "old",
        rule("a.com", path("/", "echo")),
        default_backend=backend("one"),
        created="2024-01-01T00:00:00Z",
    )
    newer = ingress(
        "new",
        rule("a.com", path("/n", "echo")),
        default_backend=backend("two"),
        created="2025-01-01T00:00:00Z",
    )
    table, found = run(*ECHO, service("one"), service("two"), newer, older)
    assert table.default_backend == "default/one:80"
    assert table.hosts[0].default_backend == "default/one:80"
    assert "default/two:80" not in table.backends
    assert {(p.name, p.field, p.severity) for p in found} == {
        ("new", "spec.defaultBackend", "warning")
    }
    assert len(found) == 2  # one for the host, one for the table default


def test_no_default_backend_is_null() -> None:
    table, _ = run(*ECHO, ingress("i", rule("a.com", path("/", "echo"))))
    assert table.default_backend is None
    assert b'"default_backend":null' in to_json(table)


# --- backends and endpoints -----------------------------------------------------------------


def test_port_by_number_and_by_name_resolve_to_one_backend() -> None:
    objects = (
        service("web", ("http", 80), ("admin", 9000)),
        endpoint_slice(
            "web",
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2"),
            ports=[("http", 8080), ("admin", 9090)],
        ),
    )
    table, found = run(
        *objects,
        ingress(
            "i",
            rule(
                "h.com",
                path("/a", "web", 80),
                path("/b", "web", "http"),
                path("/c", "web", "admin"),
            ),
        ),
    )
    assert found == []
    assert routes_of(table)["h.com"] == [
        ("/a", "prefix", "default/web:80"),
        ("/b", "prefix", "default/web:80"),
        ("/c", "prefix", "default/web:9000"),
    ]
    assert table.backends["default/web:80"].endpoints == [
        Endpoint("10.0.0.1", 8080),
        Endpoint("10.0.0.2", 8080),
    ]
    assert table.backends["default/web:9000"].endpoints == [
        Endpoint("10.0.0.1", 9090),
        Endpoint("10.0.0.2", 9090),
    ]
    assert table.backends["default/web:80"].service == "default/web"


def test_unnamed_service_port_matches_unnamed_slice_port() -> None:
    table, _ = run(
        service("web", ("", 80)),
        endpoint_slice("web", endpoint("10.0.0.7"), ports=[("", 3000)]),
        ingress("i", rule("h.com", path("/", "web", 80))),
    )
    assert table.backends["default/web:80"].endpoints == [Endpoint("10.0.0.7", 3000)]


@pytest.mark.parametrize(
    ("port", "backend_id", "field", "message"),
    [
        ("web", "default/echo:web", "service.port", 'service "echo" has no port named "web"'),
        (81, "default/echo:81", "service.port", 'service "echo" has no port 81'),
    ],
)
def test_unknown_port_is_503_backend_and_warning(
    port: int | str, backend_id: str, field: str, message: str
) -> None:
    table, found = run(*ECHO, ingress("shop", rule("h.com", path("/", "echo", port))))
    assert routes_of(table)["h.com"] == [("/", "prefix", backend_id)]
    assert table.backends[backend_id].endpoints == []
    assert [str(p) for p in found] == [
        f"warning: Ingress default/shop: spec.rules[0].http.paths[0].backend.{field}: {message}"
    ]


def test_unknown_service_is_503_backend_and_warning() -> None:
    table, found = run(ingress("shop", rule("h.com", path("/", "cart", "web"))))
    assert table.backends["default/cart:web"].endpoints == []
    assert table.backends["default/cart:web"].service == "default/cart"
    assert [(p.severity, p.field) for p in found] == [
        ("warning", "spec.rules[0].http.paths[0].backend.service.name")
    ]


def test_service_in_another_namespace_is_not_used() -> None:
    table, found = run(
        service("echo", namespace="other"), ingress("i", rule("h.com", path("/", "echo")))
    )
    assert table.backends["default/echo:80"].endpoints == []
    assert len(found) == 1


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        pytest.param([endpoint("10.0.0.1")], ["10.0.0.1"], id="ready-absent-means-ready"),
        pytest.param(
            [endpoint("10.0.0.1", ready=True), endpoint("10.0.0.2", ready=False)],
            ["10.0.0.1"],
            id="not-ready-skipped",
        ),
        pytest.param(
            [
                endpoint("10.0.0.1", ready=True),
                endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
            ],
            ["10.0.0.1"],
            id="terminating-not-used-while-ready-exist",
        ),
        pytest.param(
            [
                endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.3", ready=False, serving=False, terminating=True),
            ],
            ["10.0.0.2"],
            id="serving-terminating-as-last-resort",
        ),
        pytest.param([endpoint("10.0.0.2", ready=False)], [], id="none-ready"),
        pytest.param(
            [endpoint("10.0.0.9"), endpoint("10.0.0.10"), endpoint("10.0.0.9")],
            ["10.0.0.9", "10.0.0.10"],
            id="deduplicated-and-sorted",
        ),
    ],
)
def test_endpoint_readiness(endpoints: list[dict[str, object]], expected: list[str]) -> None:
    table, _ = run(
        service("echo"),
        endpoint_slice("echo", *endpoints),
        ingress("i", rule("h.com", path("/", "echo"))),
    )
    assert [e.address for e in table.backends["default/echo:80"].endpoints] == expected


def test_endpoints_from_several_slices_and_ipv6() -> None:
    table, found = run(
        service("echo"),
        endpoint_slice("echo", endpoint("10.0.0.1"), name="echo-a"),
        endpoint_slice("echo", endpoint("fd00::0001"), name="echo-b", address_type="IPv6"),
        endpoint_slice("echo", endpoint("echo.example.com"), name="echo-c", address_type="FQDN"),
        endpoint_slice("echo", endpoint("not-an-ip"), name="echo-d"),
        ingress("i", rule("h.com", path("/", "echo"))),
    )
    assert [e.address for e in table.backends["default/echo:80"].endpoints] == [
        "10.0.0.1",
        "fd00::1",
    ]
    assert [(p.kind, p.name) for p in found] == [("EndpointSlice", "echo-d")]


def test_slice_port_resolved_by_service_port_name() -> None:
    table, _ = run(
        service("echo", ("web", 80)),
        endpoint_slice("echo", endpoint("10.0.0.1"), ports=[("metrics", 9100)]),
        ingress("i", rule("h.com", path("/", "echo"))),
    )
    assert table.backends["default/echo:80"].endpoints == []


def test_external_name_service_is_503_with_warning() -> None:
    table, found = run(
        service("ext", kind="ExternalName"), ingress("i", rule("h.com", path("/", "ext")))
    )
    assert table.backends["default/ext:80"].endpoints == []
    assert "ExternalName" in found[0].message


def test_resource_backend_is_error() -> None:
    bad = convert(
        {
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {
                "ingressClassName": "silex",
                "defaultBackend": {"resource": {"kind": "Bucket", "name": "b"}},
            },
        },
        Ingress,
    )
    table, found = run(bad)
    assert table.default_backend is None
    assert [(p.severity, p.field) for p in found] == [("error", "spec.defaultBackend")]


# --- annotations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "options"),
    [
        (
            {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"},
            RouteOptions(max_request_body_bytes=8 * 1024 * 1024),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-body-size": "1g"},
            RouteOptions(max_request_body_bytes=1024**3),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-body-size": "512K"},
            RouteOptions(max_request_body_bytes=512 * 1024),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
            RouteOptions(max_request_body_bytes=0),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-body-size": "1000"},
            RouteOptions(max_request_body_bytes=1000),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": "120"},
            RouteOptions(upstream_read_timeout_ms=120_000),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": "1500ms"},
            RouteOptions(upstream_read_timeout_ms=1500),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-connect-timeout": "3"},
            RouteOptions(upstream_connect_timeout_ms=3000),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-next-upstream-tries": "5"},
            RouteOptions(next_upstream_tries=5),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-next-upstream-tries": "1"},
            RouteOptions(next_upstream_tries=1),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-next-upstream-timeout": "10"},
            RouteOptions(next_upstream_timeout_ms=10_000),
        ),
        (
            {"nginx.ingress.kubernetes.io/proxy-next-upstream-timeout": "0"},
            RouteOptions(next_upstream_timeout_ms=0),
        ),
        ({"nginx.ingress.kubernetes.io/rewrite-target": "/"}, None),
    ],
)
def test_annotations_become_route_options(
    annotations: dict[str, str], options: RouteOptions | None
) -> None:
    table, found = run(
        *ECHO, ingress("i", rule("h.com", path("/", "echo")), annotations=annotations)
    )
    assert table.hosts[0].routes[0].options == options
    assert found == []


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("nginx.ingress.kubernetes.io/proxy-body-size", "8mb"),
        ("nginx.ingress.kubernetes.io/proxy-body-size", "-1"),
        ("nginx.ingress.kubernetes.io/proxy-body-size", "lots"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "0"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon"),
        ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "0"),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "0"),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "three"),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "1000"),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-timeout", "-1"),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-timeout", "later"),
    ],
)
def test_bad_annotation_value_is_error_and_keeps_default(annotation: str, value: str) -> None:
    table, found = run(
        *ECHO, ingress("i", rule("h.com", path("/", "echo")), annotations={annotation: value})
    )
    assert table.hosts[0].routes[0].options is None
    assert [(p.severity, p.field) for p in found] == [
        ("error", f'metadata.annotations["{annotation}"]')
    ]


@pytest.mark.parametrize(
    "annotation",
    [
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/server-snippet",
        "nginx.ingress.kubernetes.io/auth-snippet",
    ],
)
def test_snippet_annotations_are_refused_with_a_warning(annotation: str) -> None:
    table, found = run(
        *ECHO,
        ingress(
            "i",
            rule("h.com", path("/", "echo")),
            annotations={annotation: "proxy_set_header X-Evil 1;"},
        ),
    )
    # The Ingress still serves; the snippet has no effect and is reported.
    assert [route.path for route in table.hosts[0].routes] == ["/"]
    assert table.hosts[0].routes[0].options is None
    assert [(p.severity, p.name, p.field) for p in found] == [
        ("warning", "i", f'metadata.annotations["{annotation}"]')
    ]
    assert "never" in found[0].message


def test_options_are_per_ingress_on_a_merged_host() -> None:
    table, _ = run(
        *ECHO,
        ingress(
            "big",
            rule("h.com", path("/upload", "echo")),
            annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        ),
        ingress("small", rule("h.com", path("/", "echo"))),
    )
    options = {route.path: route.options for route in table.hosts[0].routes}
    assert options == {"/": None, "/upload": RouteOptions(max_request_body_bytes=0)}


# --- determinism and defaults ---------------------------------------------------------------


def test_translation_is_deterministic_whatever_the_input_order() -> None:
    objects: list[KubeObject] = [
        *ECHO,
        service("b"),
        ingress("x", rule("z.com", path("/b", "b"), path("/a", "echo"))),
        ingress("y", rule("a.com", path("/", "b")), default_backend=backend("echo")),
    ]
    first = to_json(run(*objects)[0])
    assert to_json(run(*reversed(objects))[0]) == first


def test_table_defaults_come_from_options() -> None:
    defaults = RouteDefaults(max_request_body_bytes=5, upstream_read_timeout_ms=7)
    table, _ = run(*ECHO, options=TranslateOptions(defaults=defaults))
    assert table.defaults == defaults
    assert table.listeners == {}


def test_translate_output_is_accepted_by_strict_decoding() -> None:
    table, _ = run(*ECHO, ingress("i", rule("h.com", path("/", "echo"))))
    assert to_json(from_json(to_json(table))) == to_json(table)
