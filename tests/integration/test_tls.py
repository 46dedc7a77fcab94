"""TLS termination through real sockets: SNI, default certificate, 421, ALPN h2, h2c, redirects,
HSTS, X-Forwarded-Proto, rotation. Certificates are made here with trustme; every client is a
real TLS client (httpx over the ssl module, curl)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from typing import Any

import httpx
import pytest
import trustme
from silex_test_support import LOCALHOST, Echo, ProxyFactory, build_table, route

from silex.dataplane import DataPlane, ServerConfig


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pem_pair(ca: trustme.CA, *names: str) -> dict[str, Any]:
    cert = ca.issue_cert(*names)
    return {
        "cert_pem": "".join(blob.bytes().decode() for blob in cert.cert_chain_pems),
        "key_pem": cert.private_key_pem.bytes().decode(),
    }


class TlsProxy:
    """An in-process data plane with `http` (plain) and `https` listeners."""

    def __init__(self, plane: DataPlane, http_port: int, https_port: int) -> None:
        self.plane = plane
        self.http_port = http_port
        self.https_port = https_port

    def apply(self, table: dict[str, Any]) -> int:
        import json  # noqa: PLC0415

        return self.plane.apply_json(json.dumps(table).encode())


@pytest.fixture
def tls_proxy(proxy_factory: ProxyFactory) -> Any:
    def start(config: ServerConfig | None = None) -> TlsProxy:
        proxy = proxy_factory(config)
        _, https_port = proxy.dataplane.listen("https", LOCALHOST, 0, "https")
        return TlsProxy(proxy.dataplane, proxy.port, https_port)

    return start


def tls_table(echo: Echo, certificates: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    hosts = kwargs.pop("hosts", None) or {
        "a.example.com": [route("/", "b")],
        "*.w.example.com": [route("/", "b")],
        "plain.example.com": [route("/", "b")],
    }
    table = build_table(hosts, {"b": [echo.endpoint]}, **kwargs)
    table["certificates"] = certificates
    return table


def context_for(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def https_get(
    port: int,
    sni: str,
    *,
    host: str | None = None,
    verify: ssl.SSLContext | bool = False,
    http2: bool = False,
    path: str = "/",
) -> tuple[httpx.Response, bytes | None]:
    """GET over TLS with SNI ``sni`` and Host ``host`` (default: the SNI); returns the response
    and the DER certificate the server presented."""
    context = verify if isinstance(verify, ssl.SSLContext) else insecure_context()
    with httpx.Client(verify=context, http2=http2, trust_env=False, timeout=10) as client:
        response = client.get(
            f"https://{LOCALHOST}:{port}{path}",
            headers={"Host": host or sni},
            extensions={"sni_hostname": sni},
        )
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        response.read()
    return response, der


def leaf_der(pair: dict[str, Any]) -> bytes:
    first = pair["cert_pem"].split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first)


def test_sni_exact_wildcard_and_default(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    w = pem_pair(ca, "*.w.example.com")
    proxy = tls_proxy()
    proxy.apply(
        tls_table(
            echo,
            {
                "ns/a": {**a, "hosts": ["a.example.com"]},
                "ns/w": {**w, "hosts": ["*.w.example.com"]},
            },
        )
    )
    trusted = context_for(ca)
    response, der = https_get(proxy.https_port, "a.example.com", verify=trusted)
    assert response.status_code == 200
    assert der == leaf_der(a)
    seen = response.json()
    assert seen["host"] == "a.example.com"
    assert seen["headers"]["X-Forwarded-Proto"] == ["https"]
    assert seen["headers"]["X-Forwarded-Port"] == [str(proxy.https_port)]

    response, der = https_get(proxy.https_port, "x.w.example.com", verify=trusted)
    assert response.status_code == 200
    assert der == leaf_der(w)

    # Unknown SNI (and a name the wildcard does not cover): the self-signed default, never
    # another tenant's certificate.
    for name in ("unknown.example.com", "y.x.w.example.com", "plain.example.com"):
        response, der = https_get(proxy.https_port, name)
        assert der not in (leaf_der(a), leaf_der(w)), name
    with pytest.raises(httpx.ConnectError):
        https_get(proxy.https_port, "unknown.example.com", verify=trusted)


def test_host_not_covered_by_the_sni_certificate_is_421(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    w = pem_pair(ca, "*.w.example.com")
    proxy = tls_proxy()
    proxy.apply(
        tls_table(
            echo,
            {
                "ns/a": {**a, "hosts": ["a.example.com"]},
                "ns/w": {**w, "hosts": ["*.w.example.com"]},
            },
        )
    )
    response, _ = https_get(proxy.https_port, "a.example.com", host="x.w.example.com")
    assert response.status_code == 421
    response, _ = https_get(proxy.https_port, "unknown.example.com", host="a.example.com")
    assert response.status_code == 421
    # Same certificate (default for both): served.
    response, _ = https_get(proxy.https_port, "unknown.example.com", host="plain.example.com")
    assert response.status_code == 200
    # The port in Host does not matter.
    response, _ = https_get(proxy.https_port, "a.example.com", host="A.example.com:443")
    assert response.status_code == 200


def test_alpn_h2_and_http1(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy()
    proxy.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    trusted = context_for(ca)
    response, _ = https_get(proxy.https_port, "a.example.com", verify=trusted, http2=True)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.json()["host"] == "a.example.com"
    response, _ = https_get(proxy.https_port, "a.example.com", verify=trusted)
    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 200


def test_h2_many_streams_on_one_connection(tls_proxy, echo_factory, ca):
    """Concurrent streams over one HTTP/2 connection with the h2 library's client (httpx)."""
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy()
    proxy.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    results: list[int] = []
    with httpx.Client(verify=context_for(ca), http2=True, trust_env=False, timeout=10) as client:

        def one(i: int) -> None:
            response = client.get(
                f"https://{LOCALHOST}:{proxy.https_port}/n/{i}",
                headers={"Host": "a.example.com"},
                extensions={"sni_hostname": "a.example.com"},
            )
            results.append(response.status_code if response.http_version == "HTTP/2" else 0)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert results == [200] * 20


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_resolve_with_sni(tls_proxy, echo_factory, ca, tmp_path):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy()
    proxy.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = f"https://a.example.com:{proxy.https_port}/curl"
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--cacert",
            str(ca_file),
            "--resolve",
            f"a.example.com:{proxy.https_port}:{LOCALHOST}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status, version = result.stdout.split()
    assert status == "200"
    assert version in ("2", "1.1")


def test_redirects_to_https_with_308(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy()
    table = tls_table(
        echo,
        {"ns/a": {**a, "hosts": ["a.example.com"]}},
        hosts={
            "a.example.com": [
                {**route("/", "b"), "redirect_https": True},
                route("/.well-known/acme-challenge", "b"),
            ],
            "plain.example.com": [route("/", "b")],
        },
    )
    table["hosts"][0]["redirect_https"] = True
    proxy.apply(table)
    with httpx.Client(trust_env=False, timeout=10, follow_redirects=False) as client:
        base = f"http://{LOCALHOST}:{proxy.http_port}"
        response = client.get(f"{base}/shop/cart?x=1&y=%2F", headers={"Host": "a.example.com:80"})
        assert response.status_code == 308
        assert response.headers["location"] == (
            f"https://a.example.com:{proxy.https_port}/shop/cart?x=1&y=%2F"
        )
        response = client.post(f"{base}/form", headers={"Host": "a.example.com"}, content=b"x")
        assert response.status_code == 308
        # A route without the flag (an opted-out Ingress) and a host without TLS: served.
        response = client.get(
            f"{base}/.well-known/acme-challenge/t", headers={"Host": "a.example.com"}
        )
        assert response.status_code == 200
        response = client.get(f"{base}/", headers={"Host": "plain.example.com"})
        assert response.status_code == 200
    # Over TLS the same request is served.
    response, _ = https_get(proxy.https_port, "a.example.com", verify=context_for(ca))
    assert response.status_code == 200


@pytest.mark.parametrize(("public_port", "expected"), [(443, ""), (9443, ":9443")])
def test_redirect_names_the_public_https_port(tls_proxy, echo_factory, ca, public_port, expected):
    """Behind a Service mapping 443 to the bound port, redirects must name the public port."""
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy(ServerConfig(https_redirect_port=public_port))
    table = tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}})
    for host in table["hosts"]:
        if host["name"] == "a.example.com":
            host["redirect_https"] = True
            for entry in host["routes"]:
                entry["redirect_https"] = True
    proxy.apply(table)
    with httpx.Client(trust_env=False, timeout=10, follow_redirects=False) as client:
        response = client.get(
            f"http://{LOCALHOST}:{proxy.http_port}/p?q=1", headers={"Host": "a.example.com"}
        )
    assert response.status_code == 308
    assert response.headers["location"] == f"https://a.example.com{expected}/p?q=1"


def test_hsts_only_when_enabled_and_only_on_https(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    proxy = tls_proxy(ServerConfig(hsts_max_age_s=600, hsts_include_subdomains=True))
    proxy.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    response, _ = https_get(proxy.https_port, "a.example.com", verify=context_for(ca))
    assert response.headers["strict-transport-security"] == "max-age=600; includeSubDomains"
    with httpx.Client(trust_env=False, timeout=10) as client:
        plain = client.get(
            f"http://{LOCALHOST}:{proxy.http_port}/", headers={"Host": "a.example.com"}
        )
    assert "strict-transport-security" not in plain.headers
    other = tls_proxy()
    other.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    response, _ = https_get(other.https_port, "a.example.com", verify=context_for(ca))
    assert "strict-transport-security" not in response.headers


def test_h2c_prior_knowledge_only_with_the_flag(tls_proxy, echo_factory, ca):
    echo = echo_factory("tls")
    on = tls_proxy(ServerConfig(enable_h2c=True))
    off = tls_proxy()
    for proxy in (on, off):
        proxy.apply(tls_table(echo, {}))
    with httpx.Client(http1=False, http2=True, trust_env=False, timeout=10) as client:
        response = client.get(
            f"http://{LOCALHOST}:{on.http_port}/", headers={"Host": "plain.example.com"}
        )
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.json()["headers"]["X-Forwarded-Proto"] == ["http"]
        with pytest.raises(httpx.HTTPError):
            client.get(f"http://{LOCALHOST}:{off.http_port}/", headers={"Host": "x"})
    # HTTP/1.1 still works on the h2c-enabled port.
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(
            f"http://{LOCALHOST}:{on.http_port}/", headers={"Host": "plain.example.com"}
        )
        assert response.http_version == "HTTP/1.1"
        assert response.status_code == 200


def test_rotation_under_load_without_failures(tls_proxy, echo_factory, ca):
    """A bounded client loop (new TLS connections and one keep-alive HTTP/2 connection) while
    the certificate is swapped: no request fails, and new handshakes see the new certificate."""
    echo = echo_factory("tls")
    old = pem_pair(ca, "a.example.com")
    new = pem_pair(ca, "a.example.com")
    proxy = tls_proxy()
    proxy.apply(tls_table(echo, {"ns/a": {**old, "hosts": ["a.example.com"]}}))
    trusted = context_for(ca)
    failures: list[str] = []
    seen: list[bytes] = []
    stop = threading.Event()

    def fresh_connections() -> None:
        for _ in range(200):
            if stop.is_set():
                return
            try:
                response, der = https_get(proxy.https_port, "a.example.com", verify=trusted)
                if response.status_code != 200:
                    failures.append(f"status {response.status_code}")
                if der is not None:
                    seen.append(der)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))

    with httpx.Client(verify=trusted, http2=True, trust_env=False, timeout=10) as keep_alive:

        def on_keep_alive() -> int:
            response = keep_alive.get(
                f"https://{LOCALHOST}:{proxy.https_port}/",
                headers={"Host": "a.example.com"},
                extensions={"sni_hostname": "a.example.com"},
            )
            return response.status_code

        assert on_keep_alive() == 200
        worker = threading.Thread(target=fresh_connections)
        worker.start()
        for _ in range(200):
            if len(seen) >= 3:
                break
            stop.wait(0.01)
        proxy.apply(tls_table(echo, {"ns/a": {**new, "hosts": ["a.example.com"]}}))
        before = len(seen)
        for _ in range(500):
            if len(seen) >= before + 3:
                break
            stop.wait(0.01)
        # The established HTTP/2 connection keeps working across the swap.
        assert on_keep_alive() == 200
        stop.set()
        worker.join(timeout=30)
    assert failures == []
    assert leaf_der(old) in seen
    assert seen[-1] == leaf_der(new)


def test_core_rejects_an_invalid_certificate_entry(tls_proxy, echo_factory, ca):
    from silex.dataplane import ConfigError  # noqa: PLC0415

    echo = echo_factory("tls")
    a = pem_pair(ca, "a.example.com")
    b = pem_pair(ca, "b.example.com")
    proxy = tls_proxy()
    generation = proxy.apply(tls_table(echo, {"ns/a": {**a, "hosts": ["a.example.com"]}}))
    mismatched = {"cert_pem": a["cert_pem"], "key_pem": b["key_pem"], "hosts": []}
    with pytest.raises(ConfigError, match=r'\$\.certificates\["ns/x"\]\.key_pem'):
        proxy.apply(tls_table(echo, {"ns/x": mismatched}))
    assert proxy.plane.generation == generation
    response, _ = https_get(proxy.https_port, "a.example.com", verify=context_for(ca))
    assert response.status_code == 200
