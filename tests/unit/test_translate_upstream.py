"""Translation of backend-protocol, proxy-ssl-* and proxy-send-timeout annotations (pure)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from builders import endpoint, endpoint_slice, ingress, path, rule, service, snapshot

from silex.objects import Ingress, KubeObject, Secret, convert
from silex.problems import Problem
from silex.table import Backend, RouteOptions, RoutingTable, UpstreamTls
from silex.translate import translate
from silex.translate.endpoints import backend_id

A = "nginx.ingress.kubernetes.io/"
ECHO = (service("echo"), endpoint_slice("echo", endpoint("10.0.0.1")))
CA_PEM = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"


def secret(name: str, namespace: str = "default", **data: str) -> Secret:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return convert(
        {"metadata": {"name": name, "namespace": namespace}, "type": "Opaque", "data": encoded},
        Secret,
    )


def run(*objects: KubeObject) -> tuple[RoutingTable, list[Problem]]:
    return translate(snapshot(*objects))


def one_backend(annotations: dict[str, str], *extra: KubeObject) -> tuple[str, Backend, list]:
    table, found = run(
        *ECHO, *extra, ingress("i", rule("h.com", path("/", "echo")), annotations=annotations)
    )
    (backend_key,) = table.backends
    assert table.hosts[0].routes[0].backend == backend_key
    return backend_key, table.backends[backend_key], found


def fields(found: list[Problem]) -> list[tuple[str, str]]:
    return [(p.severity, p.field) for p in found]


@pytest.mark.parametrize(
    ("value", "protocol"),
    [("HTTP", "http"), ("GRPC", "grpc"), ("grpc", "grpc"), ("H2C", "h2c"), (" Https ", "https")],
)
def test_backend_protocol(value: str, protocol: str) -> None:
    key, backend, found = one_backend({A + "backend-protocol": value})
    assert backend.protocol == protocol
    assert found == []
    if protocol == "http":
        assert key == "default/echo:80"
    elif protocol in ("grpc", "h2c"):
        assert key == f"default/echo:80+{protocol}"
        assert backend.tls is None
    else:
        assert key.startswith("default/echo:80+https-")
        # ingress-nginx's defaults: no verification, no SNI, the Service's cluster name.
        assert backend.tls == UpstreamTls(server_name="echo.default.svc")


@pytest.mark.parametrize("value", ["FCGI", "AUTO_HTTP", "http2", ""])
def test_bad_backend_protocol_is_an_error_and_keeps_http(value: str) -> None:
    key, backend, found = one_backend({A + "backend-protocol": value})
    assert (key, backend.protocol) == ("default/echo:80", "http")
    assert fields(found) == [("error", f'metadata.annotations["{A}backend-protocol"]')]
    assert "not a supported protocol" in found[0].message


def test_full_upstream_tls_from_a_secret() -> None:
    tls_secret = secret("upstream", **{"ca.crt": CA_PEM, "tls.crt": CERT_PEM, "tls.key": KEY_PEM})
    _, backend, found = one_backend(
        {
            A + "backend-protocol": "GRPCS",
            A + "proxy-ssl-secret": "default/upstream",
            A + "proxy-ssl-verify": "on",
            A + "proxy-ssl-name": "Backend.Internal",
            A + "proxy-ssl-server-name": "on",
        },
        tls_secret,
    )
    assert found == []
    assert backend.protocol == "grpcs"
    assert backend.tls == UpstreamTls(
        verify=True,
        ca_pem=CA_PEM,
        cert_pem=CERT_PEM,
        key_pem=KEY_PEM,
        server_name="backend.internal",
        sni=True,
    )


def test_a_bare_secret_name_is_in_the_ingress_namespace() -> None:
    _, backend, found = one_backend(
        {A + "backend-protocol": "HTTPS", A + "proxy-ssl-secret": "upstream"},
        secret("upstream", **{"tls.crt": CERT_PEM, "tls.key": KEY_PEM}),
    )
    assert found == []
    assert backend.tls is not None
    assert (backend.tls.cert_pem, backend.tls.key_pem) == (CERT_PEM, KEY_PEM)
    # Without verification the CA is not needed (and not sent).
    assert backend.tls.ca_pem is None


def test_different_settings_for_one_service_port_are_separate_backends() -> None:
    table, found = run(
        *ECHO,
        ingress("plain", rule("a.com", path("/", "echo"))),
        ingress(
            "grpc", rule("b.com", path("/", "echo")), annotations={A + "backend-protocol": "GRPC"}
        ),
        ingress(
            "tls1", rule("c.com", path("/", "echo")), annotations={A + "backend-protocol": "HTTPS"}
        ),
        ingress(
            "tls2",
            rule("d.com", path("/", "echo")),
            annotations={A + "backend-protocol": "HTTPS", A + "proxy-ssl-server-name": "on"},
        ),
        ingress(
            "tls3", rule("e.com", path("/", "echo")), annotations={A + "backend-protocol": "HTTPS"}
        ),
    )
    assert found == []
    by_host = {host.name: host.routes[0].backend for host in table.hosts}
    assert len(set(by_host.values())) == 4
    # Equal settings share one backend (and one connection pool).
    assert by_host["c.com"] == by_host["e.com"]
    assert by_host["c.com"] != by_host["d.com"]
    assert all(backend.endpoints for backend in table.backends.values())


def test_backend_id_is_stable() -> None:
    tls = UpstreamTls(server_name="echo.default.svc")
    assert backend_id("ns", "svc", 80) == "ns/svc:80"
    assert backend_id("ns", "svc", 80, "grpc") == "ns/svc:80+grpc"
    assert backend_id("ns", "svc", 80, "https", tls) == backend_id("ns", "svc", 80, "https", tls)


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("proxy-ssl-verify", "maybe", 'is not "on" or "off"'),
        ("proxy-ssl-server-name", "yes please", 'is not "on" or "off"'),
        ("proxy-ssl-name", "not a name!", "is not a DNS name or an IP address"),
        ("proxy-ssl-secret", "a/b/c", "is not namespace/name"),
        ("proxy-ssl-secret", "other/upstream", "another namespace"),
    ],
)
def test_bad_ssl_annotation_is_an_error_and_keeps_the_default(
    annotation: str, value: str, message: str
) -> None:
    _, backend, found = one_backend({A + "backend-protocol": "HTTPS", A + annotation: value})
    assert backend.tls == UpstreamTls(server_name="echo.default.svc")
    assert fields(found) == [("error", f'metadata.annotations["{A}{annotation}"]')]
    assert message in found[0].message


def test_missing_secret_is_an_error_naming_the_watch_limit() -> None:
    _, backend, found = one_backend(
        {A + "backend-protocol": "HTTPS", A + "proxy-ssl-secret": "nope"}
    )
    assert backend.tls == UpstreamTls(server_name="echo.default.svc")
    assert fields(found) == [("error", f'metadata.annotations["{A}proxy-ssl-secret"]')]
    assert "default/nope not found" in found[0].message
    assert "kubernetes.io/tls" in found[0].message


def test_verify_without_a_ca_fails_closed_and_says_so() -> None:
    _, backend, found = one_backend({A + "backend-protocol": "HTTPS", A + "proxy-ssl-verify": "on"})
    assert backend.tls == UpstreamTls(verify=True, server_name="echo.default.svc")
    assert fields(found) == [("error", f'metadata.annotations["{A}proxy-ssl-verify"]')]
    assert "502" in found[0].message


def test_half_a_client_certificate_is_a_warning() -> None:
    _, backend, found = one_backend(
        {A + "backend-protocol": "HTTPS", A + "proxy-ssl-secret": "upstream"},
        secret("upstream", **{"tls.crt": CERT_PEM}),
    )
    assert backend.tls == UpstreamTls(server_name="echo.default.svc")
    assert fields(found) == [("warning", f'metadata.annotations["{A}proxy-ssl-secret"]')]


def test_ssl_annotations_without_a_tls_protocol_are_warnings() -> None:
    key, backend, found = one_backend({A + "proxy-ssl-verify": "on", A + "proxy-ssl-name": "x.y"})
    assert (key, backend.tls) == ("default/echo:80", None)
    assert sorted(fields(found)) == [
        ("warning", f'metadata.annotations["{A}proxy-ssl-name"]'),
        ("warning", f'metadata.annotations["{A}proxy-ssl-verify"]'),
    ]


def test_default_backend_of_the_ingress_uses_its_protocol() -> None:
    table, found = run(
        *ECHO,
        ingress(
            "i",
            default_backend={"service": {"name": "echo", "port": {"number": 80}}},
            annotations={A + "backend-protocol": "GRPC"},
        ),
    )
    assert found == []
    assert table.default_backend == "default/echo:80+grpc"
    assert table.backends["default/echo:80+grpc"].protocol == "grpc"


@pytest.mark.parametrize(("value", "expected"), [("30", 30_000), ("500ms", 500), ("2m", 120_000)])
def test_proxy_send_timeout(value: str, expected: int) -> None:
    table, found = run(
        *ECHO,
        ingress(
            "i", rule("h.com", path("/", "echo")), annotations={A + "proxy-send-timeout": value}
        ),
    )
    assert found == []
    assert table.hosts[0].routes[0].options == RouteOptions(upstream_send_timeout_ms=expected)


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_bad_proxy_send_timeout_is_an_error_and_keeps_the_default(value: str) -> None:
    table, found = run(
        *ECHO,
        ingress(
            "i", rule("h.com", path("/", "echo")), annotations={A + "proxy-send-timeout": value}
        ),
    )
    assert table.hosts[0].routes[0].options is None
    assert fields(found) == [("error", f'metadata.annotations["{A}proxy-send-timeout"]')]


def test_docs_example() -> None:
    """The manifest of docs/upstreams.md's example translates as the page says."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "upstreams.md"
    text = docs.read_text(encoding="utf-8")
    block = text.split("<!-- example: backend-protocols -->", 1)[1]
    manifest = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    example = convert(yaml.safe_load(manifest), Ingress)
    table, found = run(
        example,
        service("orders", ("grpc", 8443), namespace="shop"),
        endpoint_slice("orders", endpoint("10.0.3.7"), ports=[("grpc", 8443)], namespace="shop"),
        secret(
            "orders-client",
            namespace="shop",
            **{"ca.crt": CA_PEM, "tls.crt": CERT_PEM, "tls.key": KEY_PEM},
        ),
    )
    assert found == []
    (key,) = table.backends
    assert key.startswith("shop/orders:8443+grpcs-")
    backend = table.backends[key]
    assert backend.protocol == "grpcs"
    assert backend.tls == UpstreamTls(
        verify=True,
        ca_pem=CA_PEM,
        cert_pem=CERT_PEM,
        key_pem=KEY_PEM,
        server_name="orders.shop.svc",
        sni=True,
    )
    assert table.hosts[0].routes[0].options == RouteOptions(upstream_send_timeout_ms=30_000)


def test_material_the_core_would_reject_is_left_out_with_an_error() -> None:
    """A bad Secret must not reach the core (which would reject the whole table)."""
    _, backend, found = one_backend(
        {
            A + "backend-protocol": "HTTPS",
            A + "proxy-ssl-secret": "upstream",
            A + "proxy-ssl-verify": "on",
        },
        secret("upstream", **{"ca.crt": "garbage", "tls.crt": "garbage", "tls.key": KEY_PEM}),
    )
    # No CA: verification fails closed; no client certificate.
    assert backend.tls == UpstreamTls(verify=True, server_name="echo.default.svc")
    messages = {p.message for p in found}
    assert any('data["ca.crt"]: no CERTIFICATE block found' in m for m in messages)
    assert any("no client certificate is presented" in m for m in messages)
    assert all(p.severity == "error" for p in found)
