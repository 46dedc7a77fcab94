"""End-to-end harness: a fake Kubernetes API server, real echo backends and ``silex controller``
processes, shared by tests/conformance and tests/e2e.

Import it as ``e2e.kube_harness`` (pytest puts ``tests/`` on ``sys.path``; ``e2e`` is a namespace
package), never as plain ``kube_harness``, so that there is only one copy of the module.

- :class:`Cluster` wraps a :class:`fake_apiserver.FakeApiServer` running in its own thread, with
  builders for the objects the tests create and bounded waits on what the controller writes back.
- :class:`Backends` starts echo backends and gives each one a Service (port 8080 named ``http``,
  as the conformance features use both) and EndpointSlices pointing at the echo's real port.
- :func:`start_controller` runs ``silex controller`` against a kubeconfig (a ``ServeProcess``
  from tests/conftest.py: stderr collected, ``silex: listening NAME on HOST:PORT`` parsed).
- :class:`Barrier` proves the controller has caught up: it creates a fresh Ingress whose host
  routes to a barrier echo and waits until the proxy serves it (and, on demand, until its
  status is written), so everything written before it has been seen.

Every socket is on 127.0.0.1; every wait is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import json
import os
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from silex_test_support import LOCALHOST, ServeProcess, silex_command, wait_for

from fake_apiserver import FakeApiServer

INGRESS_CLASS = "conformance"
CONTROLLER_NAME = "silex.dev/ingress-controller"
GO_USER_AGENT = "Go-http-client/1.1"
SERVICE_PORT = 8080
SERVICE_PORT_NAME = "http"
INGRESS_API = "networking.k8s.io/v1"
SLICE_API = "discovery.k8s.io/v1"

CONTROLLER_START_S = 30.0
"""How long a controller may take to list everything and apply its first table."""
CONVERGE_S = 20.0
"""How long the controller may take to serve (or write status for) a change."""


def random_suffix() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------------------------
# Object builders
# --------------------------------------------------------------------------------------------


def namespace_obj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "status": {"phase": "Active"},
    }


def ingress_class_obj(name: str = INGRESS_CLASS, controller: str = CONTROLLER_NAME) -> dict:
    return {
        "apiVersion": INGRESS_API,
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    }


def service_obj(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [
                {
                    "name": SERVICE_PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": SERVICE_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def endpoint_slice_obj(
    namespace: str, service: str, name: str, port: int, pod: str, *, ready: bool = True
) -> dict[str, Any]:
    """One slice with one endpoint: every echo replica listens on 127.0.0.1 with its own port,
    and a slice's ports are shared by all its endpoints, so each replica gets its own slice."""
    return {
        "apiVersion": SLICE_API,
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": SERVICE_PORT_NAME, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [LOCALHOST],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
            }
        ],
    }


def ingress_obj(
    namespace: str, name: str, spec: dict[str, Any], *, ingress_class: str | None = INGRESS_CLASS
) -> dict[str, Any]:
    """An Ingress; like the conformance harness, the class is set when the spec names none."""
    spec = dict(spec)
    if ingress_class is not None:
        spec.setdefault("ingressClassName", ingress_class)
    return {
        "apiVersion": INGRESS_API,
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def host_ingress_spec(host: str, service: str, path: str = "/") -> dict[str, Any]:
    return {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": service, "port": {"number": SERVICE_PORT}}
                            },
                        }
                    ]
                },
            }
        ]
    }


def service_names(ingress: dict[str, Any]) -> list[str]:
    """Every Service an Ingress names (defaultBackend and rules)."""
    spec = ingress.get("spec") or {}
    backends = []
    if spec.get("defaultBackend"):
        backends.append(spec["defaultBackend"])
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            backends.append(path.get("backend") or {})
    return sorted({b["service"]["name"] for b in backends if b.get("service", {}).get("name")})


def self_signed_tls(hostname: str) -> tuple[bytes, bytes]:
    """A self-signed certificate (first DNS name: ``hostname``) and its key, both PEM."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def first_dns_name(cert_der: bytes) -> str | None:
    from cryptography import x509  # noqa: PLC0415

    cert = x509.load_der_x509_certificate(cert_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    names = san.get_values_for_type(x509.DNSName)
    return names[0] if names else None


def tls_secret_obj(namespace: str, name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    import base64  # noqa: PLC0415

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }


# --------------------------------------------------------------------------------------------
# The fake cluster
# --------------------------------------------------------------------------------------------


class Cluster:
    """A FakeApiServer in a thread plus helpers; objects are plain dicts."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api

    @property
    def kubeconfig(self) -> Path:
        assert self.api.kubeconfig_path is not None
        return self.api.kubeconfig_path

    def kubeconfig_with_token(self, token: str, directory: Path) -> Path:
        """A copy of the kubeconfig with another bearer token (the request log then tells
        which client sent what; needs ``require_token=False``)."""
        config = json.loads(self.kubeconfig.read_text())
        config["users"][0]["user"]["token"] = token
        path = directory / f"kubeconfig-{token}"
        path.write_text(json.dumps(config))
        return path

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.api.create(obj)

    def new_namespace(self, prefix: str = "conformance") -> str:
        name = f"{prefix}-{random_suffix()}"
        self.api.create(namespace_obj(name))
        return name

    def ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get(INGRESS_API, "Ingress", name, namespace)

    def status_addresses(self, namespace: str, name: str) -> list[dict[str, Any]]:
        obj = self.ingress(namespace, name) or {}
        return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])

    def wait_status(
        self, namespace: str, name: str, timeout_s: float = CONVERGE_S
    ) -> list[dict[str, Any]]:
        return wait_for(lambda: self.status_addresses(namespace, name), timeout_s=timeout_s) or []

    def delete_ingresses(self, namespace: str) -> None:
        for obj in self.api.list_objects(INGRESS_API, "Ingress", namespace):
            with contextlib.suppress(Exception):
                self.api.delete(INGRESS_API, "Ingress", obj["metadata"]["name"], namespace)

    def delete_namespace_objects(self, namespace: str) -> None:
        """Ingresses first (so no route points at a stopped backend), then the rest."""
        self.delete_ingresses(namespace)
        for api_version, kind in (
            ("v1", "Service"),
            (SLICE_API, "EndpointSlice"),
            ("v1", "Secret"),
        ):
            for obj in self.api.list_objects(api_version, kind, namespace):
                with contextlib.suppress(Exception):
                    self.api.delete(api_version, kind, obj["metadata"]["name"], namespace)
        with contextlib.suppress(Exception):
            self.api.delete("v1", "Namespace", namespace)

    def warning_events_for(self, namespace: str, name: str, kind: str = "Ingress") -> list[dict]:
        """Warning Events (core/v1 or events.k8s.io/v1) about one object."""
        found = []
        for event in self.api.events(namespace):
            about = event.get("regarding") or event.get("involvedObject") or {}
            if (
                event.get("type") == "Warning"
                and about.get("name") == name
                and about.get("kind", kind) == kind
            ):
                found.append(event)
        return found

    def status_writes(self, namespace: str | None = None) -> list[Any]:
        """Requests of the log that wrote an Ingress's status (PUT/PATCH .../status)."""
        return [
            record
            for record in self.api.requests
            if record.method in ("PUT", "PATCH")
            and "/ingresses/" in record.path
            and record.path.endswith("/status")
            and (namespace is None or f"/namespaces/{namespace}/" in record.path)
            and record.status is not None
            and 200 <= record.status < 300
        ]


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[Cluster]:
    """A fake API server (thread mode) with the conformance IngressClass."""
    kwargs.setdefault("bookmark_interval", 0.5)
    with FakeApiServer(**kwargs).running_in_thread() as api:
        api.create(ingress_class_obj())
        yield Cluster(api)


# --------------------------------------------------------------------------------------------
# Echo backends behind Services and EndpointSlices
# --------------------------------------------------------------------------------------------


@dataclass
class Replica:
    service: str
    pod: str
    port: int
    server: Any


@dataclass
class Backends:
    """Echo replicas per (namespace, service); all stopped by :meth:`close`."""

    cluster: Cluster
    replicas: dict[tuple[str, str], list[Replica]] = field(default_factory=dict)

    def _start_replica(self, namespace: str, service: str, index: int) -> Replica:
        from silex.echo import start_echo_server  # noqa: PLC0415

        pod = f"{service}-{random_suffix()}-{index}"
        server, port = start_echo_server(service, LOCALHOST, 0, pod=pod)
        return Replica(service=service, pod=pod, port=port, server=server)

    def ensure(self, namespace: str, service: str) -> list[Replica]:
        """A Service with one ready echo replica (created once per namespace and name)."""
        key = (namespace, service)
        if key not in self.replicas:
            self.cluster.create(service_obj(namespace, service))
            self.replicas[key] = []
            self.scale(namespace, service, 1)
        return self.replicas[key]

    def scale(self, namespace: str, service: str, count: int) -> list[Replica]:
        """Grow the service to ``count`` replicas, one EndpointSlice each."""
        replicas = self.replicas.setdefault((namespace, service), [])
        for index in range(len(replicas), count):
            replica = self._start_replica(namespace, service, index)
            replicas.append(replica)
            self.cluster.create(
                endpoint_slice_obj(
                    namespace, service, f"{service}-{index}", replica.port, replica.pod
                )
            )
        return replicas

    def stop(self, namespace: str) -> None:
        for key in [k for k in self.replicas if k[0] == namespace]:
            _stop_servers([r.server for r in self.replicas.pop(key)])

    def close(self) -> None:
        servers = [r.server for replicas in self.replicas.values() for r in replicas]
        self.replicas.clear()
        _stop_servers(servers)


def _stop_servers(servers: list[Any]) -> None:
    import threading  # noqa: PLC0415

    def stop(server: Any) -> None:
        with contextlib.suppress(Exception):
            server.shutdown()
            server.server_close()

    threads = [threading.Thread(target=stop, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# silex controller
# --------------------------------------------------------------------------------------------


@functools.cache
def controller_help() -> str:
    """``silex controller --help`` (empty when the command does not exist)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    try:
        result = subprocess.run(
            [*silex_command(), "controller", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def has_controller() -> bool:
    return "--kubeconfig" in controller_help()


def supports(flag: str) -> bool:
    """Whether ``silex controller`` documents ``flag`` (e.g. a lease timing knob)."""
    return flag in controller_help()


def fast_flags() -> list[str]:
    """Short debounce and lease timings, for the knobs this controller exposes."""
    wanted = {
        "--debounce": "50ms",
        "--lease-duration": "2s",
        "--renew-deadline": "1s",
        "--retry-period": "250ms",
    }
    flags: list[str] = []
    for flag, value in wanted.items():
        if supports(flag):
            flags += [flag, value]
    return flags


def start_controller(
    kubeconfig: Path,
    *,
    election_id: str,
    pod_name: str | None = None,
    extra: tuple[str, ...] = (),
) -> ServeProcess:
    """``silex controller`` on ephemeral 127.0.0.1 ports (not yet waited for)."""
    args = [
        *silex_command(),
        "controller",
        "--kubeconfig",
        str(kubeconfig),
        "--ingress-class",
        INGRESS_CLASS,
        "--publish-status-address",
        LOCALHOST,
        "--http-port",
        "0",
        "--https-port",
        "0",
        "--admin-port",
        "0",
        "--listen-address",
        LOCALHOST,
        "--election-id",
        election_id,
        *(["--pod-name", pod_name] if pod_name else []),
        *(["--https-port", "0"] if supports("--https-port") else []),
        *fast_flags(),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return ServeProcess(args, env=env)


def wait_controller_ready(process: ServeProcess, timeout_s: float = CONTROLLER_START_S) -> None:
    """Both listeners announced (the http one comes after the first table) and /readyz 200."""
    ports = process.wait_listening(("admin", "http"), timeout_s=timeout_s)
    admin = ports["admin"]

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (
                httpx.get(
                    f"http://{LOCALHOST}:{admin}/readyz", timeout=2, trust_env=False
                ).status_code
                == 200
            )
        return False

    assert wait_for(ready, timeout_s=10, interval_s=0.05), (
        "controller /readyz never answered 200:\n" + process.output()
    )


def stop_controller(process: ServeProcess, timeout_s: float = 15.0) -> int | None:
    """SIGTERM, wait (bounded), then SIGKILL if still running; returns the SIGTERM exit code
    (None when it had to be killed)."""
    import signal  # noqa: PLC0415

    code: int | None = process.proc.poll()
    if code is None:
        with contextlib.suppress(ProcessLookupError):
            process.proc.send_signal(signal.SIGTERM)
        try:
            code = process.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
    process.kill()
    return code


# --------------------------------------------------------------------------------------------
# HTTP through the proxy
# --------------------------------------------------------------------------------------------


def proxy_client(**kwargs: Any) -> httpx.Client:
    kwargs.setdefault("timeout", httpx.Timeout(10.0))
    return httpx.Client(trust_env=False, follow_redirects=False, **kwargs)


def request(
    port: int,
    method: str,
    host: str | None,
    path: str,
    *,
    client: httpx.Client | None = None,
    scheme: str = "http",
    sni: str | None = None,
) -> httpx.Response:
    """One request to the proxy at 127.0.0.1:port with ``Host: host`` (none: the default)."""
    headers = {"User-Agent": GO_USER_AGENT}
    if host:
        headers["Host"] = host
    extensions = {"sni_hostname": sni} if sni else None
    url = f"{scheme}://{LOCALHOST}:{port}{path}"
    if client is not None:
        return client.request(method, url, headers=headers, extensions=extensions)
    verify: Any = True
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        verify = context
    with proxy_client(verify=verify) as own:
        return own.request(method, url, headers=headers, extensions=extensions)


def served_by(port: int, host: str | None, path: str = "/") -> str | None:
    """The service that answered a GET (None unless 200 with the echo JSON)."""
    try:
        response = request(port, "GET", host, path)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return str(response.json().get("service"))
    except ValueError:
        return None


def wait_served(port: int, host: str, service: str, timeout_s: float = CONVERGE_S) -> bool:
    return bool(
        wait_for(lambda: served_by(port, host) == service, timeout_s=timeout_s, interval_s=0.05)
    )


def wait_status_code(
    port: int, host: str, code: int, path: str = "/", timeout_s: float = CONVERGE_S
) -> bool:
    def check() -> bool:
        try:
            return request(port, "GET", host, path).status_code == code
        except httpx.HTTPError:
            return False

    return bool(wait_for(check, timeout_s=timeout_s, interval_s=0.05))


# --------------------------------------------------------------------------------------------
# Barrier: "the controller has seen everything written before now"
# --------------------------------------------------------------------------------------------


class Barrier:
    """A namespace with one echo service; :meth:`sync` adds an Ingress for a fresh host and waits
    until the proxy serves it, so every earlier write has reached the applied table."""

    SERVICE = "barrier"

    def __init__(self, cluster: Cluster, backends: Backends) -> None:
        self.cluster = cluster
        self.namespace = cluster.new_namespace("silex-barrier")
        backends.ensure(self.namespace, self.SERVICE)
        self._numbers = itertools.count()
        self.last: str | None = None

    def sync(self, port: int, *, with_status: bool = False, timeout_s: float = CONVERGE_S) -> None:
        number = next(self._numbers)
        name = f"barrier-{number}"
        host = f"{name}.barrier.silex.test"
        self.cluster.create(
            ingress_obj(self.namespace, name, host_ingress_spec(host, self.SERVICE))
        )
        self.last = name
        assert wait_served(port, host, self.SERVICE, timeout_s), (
            f"the controller did not serve barrier Ingress {name} within {timeout_s}s"
        )
        if with_status:
            assert self.cluster.wait_status(self.namespace, name, timeout_s), (
                f"the controller wrote no status on barrier Ingress {name} within {timeout_s}s"
            )


def log_tail(process: ServeProcess, lines: int = 40) -> str:
    return "\n".join(process.output().splitlines()[-lines:])


__all__ = [
    "CONTROLLER_NAME",
    "CONVERGE_S",
    "GO_USER_AGENT",
    "INGRESS_API",
    "INGRESS_CLASS",
    "SLICE_API",
    "Backends",
    "Barrier",
    "Cluster",
    "first_dns_name",
    "has_controller",
    "host_ingress_spec",
    "ingress_obj",
    "log_tail",
    "request",
    "running_cluster",
    "self_signed_tls",
    "service_names",
    "start_controller",
    "stop_controller",
    "tls_secret_obj",
    "wait_controller_ready",
    "wait_served",
    "wait_status_code",
]
