"""spec.tls + Secrets -> certificates, Problems naming the Secret, redirects (pure translate)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trustme

from silex.dataplane import check_certificate
from silex.objects import Ingress, IngressClass, Secret, convert
from silex.store import Snapshot
from silex.translate import TranslateOptions, translate

NS = "shop"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def secret(name: str, cert: bytes, key: bytes, kind: str = "kubernetes.io/tls") -> Secret:
    return convert(
        {
            "metadata": {"name": name, "namespace": NS},
            "type": kind,
            "data": {
                "tls.crt": base64.b64encode(cert).decode(),
                "tls.key": base64.b64encode(key).decode(),
            },
        },
        Secret,
    )


def issued(ca: trustme.CA, *names: str) -> tuple[bytes, bytes]:
    cert = ca.issue_cert(*names)
    return b"".join(b.bytes() for b in cert.cert_chain_pems), cert.private_key_pem.bytes()


def ingress(
    name: str,
    tls: list[dict[str, Any]],
    hosts: list[str],
    annotations: dict[str, str] | None = None,
) -> Ingress:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return convert(
        {
            "metadata": {
                "name": name,
                "namespace": NS,
                "annotations": annotations or {},
                "creationTimestamp": f"2024-01-0{len(name) % 9 + 1}T00:00:00Z",
            },
            "spec": {
                "ingressClassName": "silex",
                "tls": tls,
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]
                        },
                    }
                    for host in hosts
                ],
            },
        },
        Ingress,
    )


def run(*objects: Any, default: str | None = None) -> tuple[Any, list[Any]]:
    klass = convert(
        {"metadata": {"name": "silex"}, "spec": {"controller": "silex.dev/ingress-controller"}},
        IngressClass,
    )
    options = TranslateOptions(check_certificate=check_certificate, default_ssl_certificate=default)
    return translate(Snapshot.of([klass, *objects]), options)


def test_valid_secret_becomes_a_certificate_and_hosts_redirect(ca):
    cert, key = issued(ca, "a.example.com", "*.w.example.com")
    table, problems = run(
        secret("a-tls", cert, key),
        ingress(
            "a",
            [{"hosts": ["a.example.com", "*.w.example.com"], "secretName": "a-tls"}],
            ["a.example.com", "x.w.example.com", "plain.example.com"],
        ),
    )
    assert [p for p in problems if p.is_error] == []
    assert list(table.certificates) == ["shop/a-tls"]
    assert sorted(table.certificates["shop/a-tls"].hosts) == ["*.w.example.com", "a.example.com"]
    redirects = {h.name: (h.redirect_https, h.routes[0].redirect_https) for h in table.hosts}
    assert redirects == {
        "a.example.com": (True, True),
        "x.w.example.com": (True, True),
        "plain.example.com": (False, False),
    }


def test_ssl_redirect_false_and_force_ssl_redirect(ca):
    cert, key = issued(ca, "a.example.com")
    table, problems = run(
        secret("a-tls", cert, key),
        ingress(
            "a",
            [{"hosts": ["a.example.com"], "secretName": "a-tls"}],
            ["a.example.com"],
            {"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
        ),
        ingress(
            "bb",
            [],
            ["plain.example.com"],
            {"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"},
        ),
        ingress(
            "ccc", [], ["bad.example.com"], {"nginx.ingress.kubernetes.io/ssl-redirect": "maybe"}
        ),
    )
    redirects = {h.name: h.redirect_https for h in table.hosts}
    assert redirects == {
        "a.example.com": False,
        "plain.example.com": True,
        "bad.example.com": False,
    }
    assert [p.field for p in problems if p.is_error] == [
        'metadata.annotations["nginx.ingress.kubernetes.io/ssl-redirect"]'
    ]


@pytest.mark.parametrize("case", ["malformed", "mismatch", "wrong-type", "missing"])
def test_bad_secret_is_a_problem_naming_it_and_only_its_host_falls_back(ca, case):
    good_cert, good_key = issued(ca, "good.example.com")
    cert, key = issued(ca, "bad.example.com")
    _, other_key = issued(ca, "other.example.com")
    bad: list[Any] = {
        "malformed": [secret("bad-tls", b"-----BEGIN CERTIFICATE-----\nnope\n", key)],
        "mismatch": [secret("bad-tls", cert, other_key)],
        "wrong-type": [secret("bad-tls", cert, key, kind="Opaque")],
        "missing": [],
    }[case]
    table, problems = run(
        secret("good-tls", good_cert, good_key),
        *bad,
        ingress(
            "good",
            [{"hosts": ["good.example.com"], "secretName": "good-tls"}],
            ["good.example.com"],
        ),
        ingress(
            "bad", [{"hosts": ["bad.example.com"], "secretName": "bad-tls"}], ["bad.example.com"]
        ),
    )
    errors = [p for p in problems if p.is_error]
    assert len(errors) == 1, [str(p) for p in problems]
    assert "shop/bad-tls" in str(errors[0]) or (
        errors[0].kind == "Secret" and errors[0].name == "bad-tls"
    ), str(errors[0])
    assert "default certificate" in str(errors[0])
    # The bad host is served (HTTPS on the default certificate), the good one unaffected.
    assert list(table.certificates) == ["shop/good-tls"]
    assert table.certificates["shop/good-tls"].hosts == ["good.example.com"]
    assert {h.name for h in table.hosts} == {"good.example.com", "bad.example.com"}


def test_uncovered_name_warns_and_uses_the_default(ca):
    cert, key = issued(ca, "a.example.com")
    table, problems = run(
        secret("a-tls", cert, key),
        ingress(
            "a",
            [{"hosts": ["a.example.com", "b.example.com"], "secretName": "a-tls"}],
            ["a.example.com", "b.example.com"],
        ),
    )
    assert table.certificates["shop/a-tls"].hosts == ["a.example.com"]
    assert any("does not cover" in p.message and p.severity == "warning" for p in problems)


def test_default_ssl_certificate(ca):
    cert, key = issued(ca, "default.example.com")
    table, problems = run(secret("default-tls", cert, key), default="shop/default-tls")
    assert problems == []
    assert table.default_certificate == "shop/default-tls"
    assert table.certificates["shop/default-tls"].hosts == []
    table, problems = run(default="shop/nope")
    assert table.default_certificate is None
    assert "Secret shop/nope not found" in str(problems[0])


def test_older_ingress_keeps_a_contested_name(ca):
    first_cert, first_key = issued(ca, "a.example.com")
    second_cert, second_key = issued(ca, "a.example.com")
    table, problems = run(
        secret("one", first_cert, first_key),
        secret("two", second_cert, second_key),
        ingress("a", [{"hosts": ["a.example.com"], "secretName": "one"}], ["a.example.com"]),
        ingress("bb", [{"hosts": ["a.example.com"], "secretName": "two"}], ["a.example.com"]),
    )
    assert list(table.certificates) == ["shop/one"]
    assert any(p.name == "bb" and "already uses Secret shop/one" in p.message for p in problems)
