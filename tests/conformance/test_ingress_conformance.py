"""The ingress-controller-conformance features, end to end, driven by the .feature files.

Every scenario of ../shared/conformance/ingress/*.feature runs against ``silex controller``:
its objects are created in the fake Kubernetes API server (tests/fake_apiserver), every backend
Service it names gets real echo backends behind an EndpointSlice, and its requests go through
the controller's proxy. The feature text is the test: the step definitions below match it
word for word (pytest-bdd).

As the conformance harness does (PROVENANCE.txt): an Ingress without a class gets
``spec.ingressClassName: conformance``; requests go to the address written in the Ingress
status with the feature's Host header and ``User-Agent: Go-http-client/1.1``; 3xx answers are
followed but re-sent to that address; response header checks are presence checks.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pytest_bdd import feature as bdd_feature
from pytest_bdd import given, parsers, scenarios, step, then, when
from pytest_bdd.parser import FeatureParser
from silex_test_support import CONFORMANCE_DIR, LOCALHOST, ServeProcess

from e2e.kube_harness import (
    CONVERGE_S,
    GO_USER_AGENT,
    Backends,
    Barrier,
    Cluster,
    first_dns_name,
    has_controller,
    ingress_obj,
    log_tail,
    proxy_client,
    running_cluster,
    self_signed_tls,
    service_names,
    start_controller,
    stop_controller,
    tls_secret_obj,
    wait_controller_ready,
)

FEATURES = ("default_backend", "host_rules", "ingress_class", "load_balancing", "path_rules")
EXPECTED_SCENARIOS = 30
TLS_WAITING = "waiting for the TLS issue"
MAX_REDIRECTS = 5


# --- loading the features ---------------------------------------------------------------------


class _KeepDuplicateScenarios(FeatureParser):
    """pytest-bdd keys a feature's scenarios by name, so a second scenario with the same name
    replaces the first (path_rules.feature has two such pairs). Keep both: a repeated name is
    keyed by name and line; the scenario's own name (the report) is unchanged."""

    def _parse_and_add_scenario(self, scenario_data: Any, feature: Any, rule: Any = None) -> None:
        scenario = self.parse_scenario(scenario_data, feature, rule)
        key = scenario.name
        if key in feature.scenarios:
            key = f"{scenario.name} (line {scenario.line_number})"
        feature.scenarios[key] = scenario


def _feature_paths() -> list[str]:
    paths = []
    for name in FEATURES:
        path = (CONFORMANCE_DIR / f"{name}.feature").resolve()
        # Pre-fill pytest-bdd's parse cache (keyed by absolute path) with the full parse.
        bdd_feature.features[str(path)] = _KeepDuplicateScenarios(
            str(path.parent), path.name
        ).parse()
        paths.append(str(path))
    return paths


scenarios(*_feature_paths())


def test_every_scenario_of_the_features_is_collected() -> None:
    """30 scenarios (outline examples included), by the Gherkin files and by this module."""
    from gherkin.parser import Parser  # noqa: PLC0415

    in_files = 0
    for name in FEATURES:
        document = Parser().parse((CONFORMANCE_DIR / f"{name}.feature").read_text())
        for child in document["feature"]["children"]:
            scenario = child.get("scenario")
            if scenario is None:
                continue
            rows = sum(len(examples["tableBody"]) for examples in scenario["examples"])
            in_files += rows or 1
    generated = 0
    for name, function in globals().items():
        if (
            not name.startswith("test_")
            or name == "test_every_scenario_of_the_features_is_collected"
        ):
            continue
        marks = [m for m in getattr(function, "pytestmark", []) if m.name == "parametrize"]
        generated += sum(len(m.args[1]) for m in marks) if marks else 1
    assert in_files == EXPECTED_SCENARIOS
    assert generated == EXPECTED_SCENARIOS


# --- fixtures: one cluster and one controller for the module, one namespace per scenario -------


@dataclass
class Deployment:
    """The fake cluster, its echo backends and the controller serving it."""

    cluster: Cluster
    backends: Backends
    process: ServeProcess
    barrier: Barrier

    @property
    def http_port(self) -> int:
        return self.process.listening["http"]

    @property
    def https_port(self) -> int | None:
        return self.process.listening.get("https")


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    if not has_controller():
        pytest.fail("`silex controller` is not available (no `controller` command in the CLI)")
    with running_cluster() as cluster:
        backends = Backends(cluster)
        process: ServeProcess | None = None
        try:
            barrier = Barrier(cluster, backends)
            process = start_controller(cluster.kubeconfig, election_id="silex-conformance")
            wait_controller_ready(process)
            deployed = Deployment(cluster, backends, process, barrier)
            barrier.sync(deployed.http_port)
            yield deployed
        finally:
            code = stop_controller(process) if process is not None else 0
            backends.close()
        assert process is not None
        assert code == 0, f"silex controller exited {code} on SIGTERM:\n{log_tail(process)}"


@dataclass
class World:
    """What one scenario created and received."""

    deployment: Deployment
    namespace: str | None = None
    ingresses: list[str] = field(default_factory=list)
    address: str | None = None
    scheme: str = "http"
    response: Any = None
    responses: list[Any] = field(default_factory=list)
    tls_hosts: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        assert self.response is not None, "no request was sent"
        try:
            return dict(self.response.json())
        except ValueError:
            raise AssertionError(
                f"the response is not the echo JSON ({self.response.status_code}): "
                f"{self.response.text[:300]!r}"
            ) from None


@pytest.fixture
def world(deployment: Deployment) -> Iterator[World]:
    state = World(deployment)
    try:
        yield state
    finally:
        if state.namespace is not None:
            deployment.cluster.delete_namespace_objects(state.namespace)
            deployment.backends.stop(state.namespace)


# --- helpers ------------------------------------------------------------------------------------


def _create_ingress(world: World, document: dict[str, Any]) -> None:
    """Backends first (a Service with a ready echo for each backend named), then the Ingress."""
    assert world.namespace is not None, "no namespace yet"
    cluster, backends = world.deployment.cluster, world.deployment.backends
    metadata = document.get("metadata") or {}
    ingress = ingress_obj(world.namespace, metadata["name"], document.get("spec") or {})
    for service in service_names(ingress):
        backends.ensure(world.namespace, service)
    cluster.create(ingress)
    world.ingresses.append(metadata["name"])


def _send(world: World, method: str, url: str) -> httpx.Response:
    """Send to the Ingress address like the harness: Host from the URL, 3xx re-sent to us."""
    assert world.address == LOCALHOST, f"unexpected Ingress address {world.address!r}"
    deployment = world.deployment
    if url.startswith("https:") and deployment.https_port is None:
        pytest.skip(TLS_WAITING)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {"User-Agent": GO_USER_AGENT}
        if host:
            headers["Host"] = host
        if scheme == "https":
            port = deployment.https_port
            assert port is not None, f"redirected to {url} but the controller has no https listener"
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with proxy_client(verify=context) as client:
                response = client.request(
                    method,
                    f"https://{world.address}:{port}{path}",
                    headers=headers,
                    extensions={"sni_hostname": host},
                )
                stream = response.extensions.get("network_stream")
                ssl_object = stream.get_extra_info("ssl_object") if stream else None
                if ssl_object is not None:
                    world.tls_hosts[host] = first_dns_name(ssl_object.getpeercert(True)) or ""
                response.read()
        else:
            with proxy_client() as client:
                response = client.request(
                    method,
                    f"http://{world.address}:{deployment.http_port}{path}",
                    headers=headers,
                )
        world.scheme = scheme
        if response.is_redirect and "location" in response.headers:
            url = str(httpx.URL(url).join(response.headers["location"]))
            continue
        return response
    raise AssertionError(f"more than {MAX_REDIRECTS} redirects for {method} {url}")


def _table(datatable: list[list[str]]) -> dict[str, str]:
    header, *rows = datatable
    assert header == ["key", "value"], header
    return {row[0]: row[1] for row in rows}


# --- Given --------------------------------------------------------------------------------------


@given("a new random namespace")
def new_namespace(world: World) -> None:
    world.namespace = world.deployment.cluster.new_namespace()


@given("an Ingress resource in a new random namespace")
def ingress_in_new_namespace(world: World, docstring: str) -> None:
    world.namespace = world.deployment.cluster.new_namespace()
    _create_ingress(world, yaml.safe_load(docstring))


@given("an Ingress resource")
def ingress_resource(world: World, docstring: str) -> None:
    _create_ingress(world, yaml.safe_load(docstring))


@given(parsers.parse('an Ingress resource named "{name}" with this spec:'))
def ingress_named(world: World, name: str, docstring: str) -> None:
    _create_ingress(world, {"metadata": {"name": name}, "spec": yaml.safe_load(docstring)})


@given(parsers.parse('a self-signed TLS secret named "{name}" for the "{hostname}" hostname'))
def tls_secret(world: World, name: str, hostname: str) -> None:
    assert world.namespace is not None
    cert, key = self_signed_tls(hostname)
    world.deployment.cluster.create(tls_secret_obj(world.namespace, name, cert, key))


# --- Then (status) ------------------------------------------------------------------------------


@step("The Ingress status shows the IP address or FQDN where it is exposed")
def status_shows_address(world: World) -> None:
    deployment = world.deployment
    assert world.namespace is not None
    assert world.ingresses
    name = world.ingresses[-1]
    addresses = deployment.cluster.wait_status(world.namespace, name)
    assert addresses, f"no status.loadBalancer.ingress on {world.namespace}/{name} in {CONVERGE_S}s"
    first = addresses[0]
    world.address = first.get("ip") or first.get("hostname")
    assert world.address, addresses
    # The address is known; make sure the table that carries this Ingress is the one applied.
    deployment.barrier.sync(deployment.http_port)


@step("The Ingress status should not contain the IP address or FQDN")
def status_has_no_address(world: World) -> None:
    deployment = world.deployment
    assert world.namespace is not None
    assert world.ingresses
    # Bounded: a later Ingress of our class is served and has its status written; the
    # controller has then seen this one too (it was created before).
    deployment.barrier.sync(deployment.http_port, with_status=True)
    for name in world.ingresses:
        assert deployment.cluster.status_addresses(world.namespace, name) == [], name


@step(
    parsers.parse(
        'The backend deployment "{service}" for the ingress resource is scaled to {count:d}'
    )
)
def scale_backend(world: World, service: str, count: int) -> None:
    deployment = world.deployment
    assert world.namespace is not None
    replicas = deployment.backends.scale(world.namespace, service, count)
    assert len(replicas) == count
    deployment.barrier.sync(deployment.http_port)


# --- When ---------------------------------------------------------------------------------------


@when(
    parsers.re(
        r'I send a "(?P<method>[A-Z]+)" request to http://"(?P<host>[^"]*)"/"(?P<path>[^"]*)"'
    )
)
def send_outline_request(world: World, method: str, host: str, path: str) -> None:
    world.response = _send(world, method, f"http://{host}/{path}")


@when(parsers.re(r'I send a "(?P<method>[A-Z]+)" request to "(?P<url>[^"]+)"'))
def send_request(world: World, method: str, url: str) -> None:
    world.response = _send(world, method, url)


@when(parsers.parse('I send {count:d} requests to "{url}"'))
def send_requests(world: World, count: int, url: str) -> None:
    world.responses = [_send(world, "GET", url) for _ in range(count)]


# --- Then (responses) ---------------------------------------------------------------------------


@step(parsers.parse('the secure connection must verify the "{hostname}" hostname'))
def secure_connection_verifies(world: World, hostname: str) -> None:
    assert world.scheme == "https"
    assert world.tls_hosts.get(hostname) == hostname, world.tls_hosts


@step(parsers.parse("the response status-code must be {code:d}"))
def response_status(world: World, code: int) -> None:
    response = world.response
    assert response is not None
    assert response.status_code == code, f"{response.status_code}: {response.text[:300]!r}"


@step(parsers.parse('the response must be served by the "{service}" service'))
def served_by_service(world: World, service: str) -> None:
    assert world.body().get("service") == service, world.body()


@step(parsers.parse('the response proto must be "{proto}"'))
def response_proto(world: World, proto: str) -> None:
    assert world.response.http_version == proto


@step("the response headers must contain <key> with matching <value>")
def response_headers(world: World, datatable: list[list[str]]) -> None:
    headers = world.response.headers
    for name, value in _table(datatable).items():
        assert name in headers, f"the response lacks {name}: {dict(headers)}"
        if value != "*":
            assert headers[name] == value, (name, headers[name])


@step(parsers.re(r'the request (?P<field>host|method|path|proto) must be "(?P<value>[^"]*)"'))
def request_field(world: World, field: str, value: str) -> None:
    seen = world.body()
    if field == "path":
        value = "/" + value.lstrip("/")
    assert seen.get(field) == value, f"upstream saw {field}={seen.get(field)!r}, not {value!r}"


@step("the request headers must contain <key> with matching <value>")
def request_headers(world: World, datatable: list[list[str]]) -> None:
    seen = world.body().get("headers") or {}
    for name, value in _table(datatable).items():
        assert seen.get(name), f"the upstream saw no {name}: {seen}"
        if value != "*":
            assert seen[name] == [value], (name, seen[name])


@then(
    parsers.parse(
        "all the responses status-code must be {code:d} and the response body should contain "
        "the IP address of {count:d} different Kubernetes pods"
    )
)
def responses_from_pods(world: World, code: int, count: int) -> None:
    assert world.responses, "no requests were sent"
    statuses = [r.status_code for r in world.responses]
    assert statuses == [code] * len(statuses), statuses
    pods = {r.json().get("pod") for r in world.responses}
    assert len(pods) == count, sorted(map(str, pods))
