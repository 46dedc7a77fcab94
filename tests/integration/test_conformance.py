"""The ingress-controller-conformance features, run through silex's own path and real sockets.

For each feature file (read from ../shared/conformance/ingress, never copied), the Ingress of its
Background is written as a manifest together with an IngressClass, and a Service + EndpointSlice
for every backend service it names, each pointing at a real echo backend answering as that
service. The manifests go through ``silex.sources.files`` and ``silex.translate`` into a table
applied to an in-process data plane; every scenario then sends its request through the proxy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from silex_test_support import CONFORMANCE_DIR, LOCALHOST, EchoFactory, ProxyFactory

NAMESPACE = "conformance"
INGRESS_CLASS = "conformance"
CONTROLLER = "silex.dev/ingress-controller"
FEATURES = ("path_rules", "host_rules", "default_backend")
GO_USER_AGENT = "Go-http-client/1.1"
TLS_SECRET = re.compile(r'a self-signed TLS secret named "([^"]+)" for the "([^"]+)" hostname')
MAX_REDIRECTS = 3


# --- a minimal Gherkin reader for these files -------------------------------------------------


@dataclass
class Scenario:
    feature: str
    name: str
    steps: list[str]
    line: int
    examples: dict[str, str] = field(default_factory=dict)
    tables: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    """Data tables of steps, by step index: one dict per row, keyed by the header cells."""

    @property
    def id(self) -> str:
        suffix = ",".join(f"{k}={v}" for k, v in self.examples.items())
        return f"{self.feature}:{self.line}" + (f"[{suffix}]" if suffix else "")


@dataclass
class Feature:
    name: str
    background: list[str]
    docstring: str
    scenarios: list[Scenario]


def _table_rows(lines: list[str]) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def parse_feature(path: Path) -> Feature:
    """Background steps and docstring, scenarios (outlines expanded with their Examples)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    feature = Feature(name=path.stem, background=[], docstring="", scenarios=[])
    section: str | None = None
    current: Scenario | None = None
    outline = False
    in_doc = False
    doc_lines: list[str] = []
    doc_indent = 0
    examples_lines: list[str] | None = None
    step_table: list[str] | None = None

    def finish_step_table() -> None:
        nonlocal step_table
        if step_table and current is not None and current.steps:
            header, *body = _table_rows(step_table)
            current.tables[len(current.steps) - 1] = [
                dict(zip(header, row, strict=True)) for row in body
            ]
        step_table = None

    def finish_scenario() -> None:
        nonlocal current, examples_lines
        if current is None:
            return
        if outline and examples_lines:
            rows = _table_rows(examples_lines)
            header, body = rows[0], rows[1:]
            for row in body:
                values = dict(zip(header, row, strict=True))
                steps = [
                    re.sub(r"<(\w+)>", lambda m, v=values: v.get(m.group(1), m.group(0)), step)
                    for step in current.steps
                ]
                feature.scenarios.append(
                    Scenario(path.stem, current.name, steps, current.line, values, current.tables)
                )
        else:
            feature.scenarios.append(current)
        current = None
        examples_lines = None

    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if in_doc:
            if stripped == '"""':
                in_doc = False
                feature.docstring = "\n".join(line[doc_indent:] for line in doc_lines)
            else:
                doc_lines.append(raw)
            continue
        if stripped == '"""':
            in_doc = True
            doc_indent = len(raw) - len(raw.lstrip())
            doc_lines = []
            continue
        if stripped.startswith("Background:"):
            section = "background"
            continue
        if stripped.startswith(("Scenario:", "Scenario Outline:")):
            finish_scenario()
            section = "scenario"
            outline = stripped.startswith("Scenario Outline:")
            current = Scenario(path.stem, stripped.split(":", 1)[1].strip(), [], number)
            continue
        if stripped.startswith("Examples:"):
            examples_lines = []
            continue
        if stripped.startswith("|"):
            if examples_lines is not None:
                examples_lines.append(stripped)
            else:
                step_table = [*(step_table or []), stripped]
            continue
        finish_step_table()
        if re.match(r"(Given|When|Then|And|But)\b", stripped):
            if section == "background":
                feature.background.append(stripped)
            elif current is not None:
                current.steps.append(stripped)
    finish_step_table()
    finish_scenario()
    return feature


def load_features() -> dict[str, Feature]:
    if not CONFORMANCE_DIR.is_dir():
        return {}
    return {
        name: parse_feature(CONFORMANCE_DIR / f"{name}.feature")
        for name in FEATURES
        if (CONFORMANCE_DIR / f"{name}.feature").is_file()
    }


FEATURE_DATA = load_features()
ALL_SCENARIOS = [scenario for f in FEATURE_DATA.values() for scenario in f.scenarios]


# --- the request and expectations of a scenario -----------------------------------------------

SEND = re.compile(r'I send a "(?P<method>[A-Z]+)" request to "?(?P<url>.+?)"?$')
STATUS = re.compile(r"the response status-code must be (\d+)")
SERVED_BY = re.compile(r'the response must be served by the "([^"]+)" service')
REQUEST_HOST = re.compile(r'the request host must be "([^"]+)"')
REQUEST_METHOD = re.compile(r'the request method must be "([^"]*)"')
REQUEST_PATH = re.compile(r'the request path must be "([^"]*)"')
REQUEST_PROTO = re.compile(r'the request proto must be "([^"]*)"')
RESPONSE_PROTO = re.compile(r'the response proto must be "([^"]*)"')


@dataclass
class Expectation:
    method: str
    scheme: str
    host: str
    path: str
    status: int | None = None
    service: str | None = None
    request_host: str | None = None
    request_method: str | None = None
    request_path: str | None = None
    request_proto: str | None = None
    response_proto: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)


def expectation_of(scenario: Scenario) -> Expectation:
    send = next(SEND.search(step) for step in scenario.steps if SEND.search(step))
    assert send is not None
    url = send.group("url").replace('"', "")
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    expectation = Expectation(
        method=send.group("method"), scheme=scheme, host=host, path="/" + path if slash else "/"
    )
    for index, step in enumerate(scenario.steps):
        table = {row["key"]: row["value"] for row in scenario.tables.get(index, [])}
        if match := STATUS.search(step):
            expectation.status = int(match.group(1))
        elif match := SERVED_BY.search(step):
            expectation.service = match.group(1)
        elif match := REQUEST_HOST.search(step):
            expectation.request_host = match.group(1)
        elif match := REQUEST_METHOD.search(step):
            expectation.request_method = match.group(1)
        elif match := REQUEST_PATH.search(step):
            expectation.request_path = match.group(1)
        elif match := REQUEST_PROTO.search(step):
            expectation.request_proto = match.group(1)
        elif match := RESPONSE_PROTO.search(step):
            expectation.response_proto = match.group(1)
        elif "the response headers must contain" in step:
            assert table, f"no data table under {step!r}"
            expectation.response_headers = table
        elif "the request headers must contain" in step:
            assert table, f"no data table under {step!r}"
            expectation.request_headers = table
    return expectation


# --- manifests for a feature ------------------------------------------------------------------


def ingress_of(feature: Feature) -> dict[str, Any]:
    """The Ingress of the Background: a whole manifest, or a spec with a name in the step."""
    document = yaml.safe_load(feature.docstring)
    if document.get("kind") != "Ingress":
        found = (re.search(r'Ingress resource named "([^"]+)"', s) for s in feature.background)
        named = next((match for match in found if match), None)
        assert named is not None, feature.background
        document = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": named.group(1)},
            "spec": document,
        }
    document.setdefault("metadata", {})["namespace"] = NAMESPACE
    # The conformance harness sets the class when the Ingress names none.
    document.setdefault("spec", {}).setdefault("ingressClassName", INGRESS_CLASS)
    return document


def service_names(ingress: dict[str, Any]) -> list[str]:
    spec = ingress["spec"]
    backends = []
    if "defaultBackend" in spec:
        backends.append(spec["defaultBackend"])
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            backends.append(path["backend"])
    return sorted({backend["service"]["name"] for backend in backends})


def tls_secrets(feature: Feature, ca: Any) -> list[dict[str, Any]]:
    """The Background's self-signed TLS Secrets, issued by the test CA (trustme)."""
    import base64  # noqa: PLC0415

    documents = []
    for step in feature.background:
        match = TLS_SECRET.search(step)
        if match is None:
            continue
        cert = ca.issue_cert(match.group(2))
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": match.group(1), "namespace": NAMESPACE},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(chain).decode(),
                    "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
                },
            }
        )
    return documents


def manifests_for(ingress: dict[str, Any], ports: dict[str, int]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {"controller": CONTROLLER},
        },
        ingress,
    ]
    for name, port in ports.items():
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "ports": [{"name": "http", "port": 8080, "targetPort": port, "protocol": "TCP"}]
                },
            }
        )
        documents.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-abcde",
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [LOCALHOST], "conditions": {"ready": True}}],
            }
        )
    return documents


@dataclass
class Deployment:
    proxy: Any
    problems: list[Any]
    table_json: bytes
    https_port: int
    ca: Any


@pytest.fixture(scope="module")
def deployments(tmp_path_factory) -> Any:
    """Per feature: echo backends, manifests, translate, and a data plane serving the table."""
    import trustme  # noqa: PLC0415

    from silex.dataplane import check_certificate  # noqa: PLC0415
    from silex.sources.files import load_snapshot  # noqa: PLC0415
    from silex.table import to_json  # noqa: PLC0415
    from silex.translate import TranslateOptions, translate  # noqa: PLC0415

    ca = trustme.CA()

    echo_factory = EchoFactory()
    proxy_factory = ProxyFactory()
    built: dict[str, Deployment] = {}
    try:
        for name, feature in FEATURE_DATA.items():
            ingress = ingress_of(feature)
            ports = {svc: echo_factory(svc).port for svc in service_names(ingress)}
            folder = tmp_path_factory.mktemp(name)
            manifest = folder / "manifests.yaml"
            documents = [*tls_secrets(feature, ca), *manifests_for(ingress, ports)]
            manifest.write_text(yaml.safe_dump_all(documents, sort_keys=False))
            snapshot, source_problems = load_snapshot(folder)
            table, problems = translate(
                snapshot, TranslateOptions(check_certificate=check_certificate)
            )
            table_json = to_json(table)
            proxy = proxy_factory()
            _, https_port = proxy.dataplane.listen("https", LOCALHOST, 0, "https")
            # translate -> to_json -> apply, exactly as `silex serve` does (a ConfigError here
            # means silex/table.py and rust/silex-routing/src/table.rs disagree).
            proxy.apply(table_json)
            built[name] = Deployment(
                proxy, [*source_problems, *problems], table_json, https_port, ca
            )
        yield built
    finally:
        proxy_factory.close()
        echo_factory.close()


def test_features_were_found_and_parsed():
    assert CONFORMANCE_DIR.is_dir(), CONFORMANCE_DIR
    assert set(FEATURE_DATA) == set(FEATURES)
    counts = {name: len(feature.scenarios) for name, feature in FEATURE_DATA.items()}
    outline = FEATURE_DATA["default_backend"].scenarios[0]
    assert expectation_of(outline).response_headers == dict.fromkeys(
        ("Content-Length", "Content-Type", "Date", "Server"), "*"
    )
    assert expectation_of(outline).request_headers == {"User-Agent": GO_USER_AGENT}
    assert all(count > 0 for count in counts.values()), counts
    assert counts == {"path_rules": 16, "host_rules": 6, "default_backend": 6}
    assert len(ALL_SCENARIOS) > 0


def test_translation_has_no_errors(deployments):
    for name, deployment in deployments.items():
        errors = [p for p in deployment.problems if getattr(p, "is_error", False)]
        assert not errors, f"{name}: {[str(p) for p in errors]}"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=[s.id for s in ALL_SCENARIOS])
def test_scenario(deployments, scenario: Scenario):
    expectation = expectation_of(scenario)
    assert expectation.scheme in ("http", "https")
    deployment = deployments[scenario.feature]
    response = send(
        deployment, expectation.method, expectation.scheme, expectation.host, expectation.path
    )
    where = f"{scenario.name} ({expectation.method} {expectation.host}{expectation.path})"
    assert expectation.status is not None, scenario.steps
    assert response.status_code == expectation.status, f"{where}: {response.text}"
    if expectation.response_proto:
        assert response.http_version == expectation.response_proto
    for name, value in expectation.response_headers.items():
        assert name in response.headers, f"{where}: response lacks {name}: {response.headers}"
        if value != "*":
            assert response.headers[name] == value, where
    if expectation.status != 200:
        return
    seen = response.json()
    if expectation.service:
        assert seen["service"] == expectation.service, where
    if expectation.request_host:
        assert seen["host"] == expectation.request_host, where
    if expectation.request_method is not None:
        assert seen["method"] == expectation.request_method, where
    if expectation.request_path is not None:
        assert seen["path"] == "/" + expectation.request_path.lstrip("/"), where
    if expectation.request_proto:
        assert seen["proto"] == expectation.request_proto, where
    for name, value in expectation.request_headers.items():
        values = seen["headers"].get(name)
        assert values, f"{where}: upstream saw no {name}: {seen['headers']}"
        if value != "*":
            assert values == [value], f"{where}: {seen['headers']}"


def send(deployment: Deployment, method: str, scheme: str, host: str, path: str) -> Any:
    """Send like the conformance harness's Go client: SNI and Host from the URL, certificate
    verified for that host, redirects (HTTP -> HTTPS 308) followed."""
    import ssl  # noqa: PLC0415

    proxy = deployment.proxy
    for _ in range(MAX_REDIRECTS + 1):
        headers = {"User-Agent": GO_USER_AGENT}
        if host:
            headers["Host"] = host
        if scheme == "https":
            context = ssl.create_default_context()
            deployment.ca.configure_trust(context)
            with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
                # "the secure connection must verify the <host> hostname": verified by the
                # context against the SNI name.
                response = client.request(
                    method,
                    f"https://{LOCALHOST}:{deployment.https_port}{path}",
                    headers=headers,
                    extensions={"sni_hostname": host},
                )
        else:
            with proxy.client(follow_redirects=False) as client:
                response = client.request(method, path, headers=headers)
        if response.status_code == 308 and "location" in response.headers:
            url = httpx.URL(response.headers["location"])
            assert url.port == deployment.https_port, url
            scheme, host, path = url.scheme, url.host, url.raw_path.decode()
            continue
        return response
    raise AssertionError(f"more than {MAX_REDIRECTS} redirects for {method} {host}{path}")


def test_https_scenario_is_run_and_http_redirects(deployments):
    """The TLS host redirects plain HTTP with 308 (followed above); the wildcard host does not."""
    proxy = deployments["host_rules"].proxy
    with proxy.client(follow_redirects=False) as client:
        response = client.get("/x", headers={"Host": "foo.bar.com"})
        assert response.status_code == 308
        port = deployments["host_rules"].https_port
        assert response.headers["location"] == f"https://foo.bar.com:{port}/x"
        assert client.get("/", headers={"Host": "bar.foo.com"}).status_code == 200


def test_no_host_match_falls_back_to_the_default_backend(deployments):
    """default_backend rows with an empty host: a Host no rule names reaches echo-service."""
    proxy = deployments["default_backend"].proxy
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(f"{proxy.url}/resource", headers={"User-Agent": GO_USER_AGENT})
    assert response.status_code == 200
    assert response.json()["service"] == "echo-service"
